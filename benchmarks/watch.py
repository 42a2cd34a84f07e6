"""Measurements in watched subprocesses: a run whose CPU time stops growing is killed and started again.

jaxlib 0.10.2's XLA CPU runtime can deadlock on 2-core hosts in some programs (every thread parked,
the main thread in ``BlockUntilReady``): the process then neither finishes nor uses CPU. A benchmark
that measures such sizes runs each one as ``python <script> '<json job>'`` (the script prints one
JSON line last) and goes through :func:`measure`, which detects the stall, restarts the run a few
times (optionally pinned to one CPU, where the deadlock has not been seen), and reports a size that
never finished instead of hanging the session.

Settings (checked by ``envvars``): ``QVMC_BENCH_RESTARTS`` (2), ``QVMC_BENCH_STALL_SECONDS`` (120),
``QVMC_BENCH_TIMEOUT`` (3600 s per run).
"""

import json
import os
import subprocess
import sys
import time

from envvars import env_int


def cpu_seconds(pid):
    """User + system CPU seconds of a process from /proc (None where there is no /proc)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


# Pins itself to the lowest CPU it may use, then becomes the command (no fork of a threaded parent).
_PIN = 'import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); os.execv(sys.argv[1], sys.argv[1:])'


def run_watched(cmd, env, stall_seconds, timeout, one_core=False):
    """Runs ``cmd`` (pinned to one CPU with ``one_core``); kills it when its CPU time stops growing for
    ``stall_seconds`` (the XLA CPU runtime deadlock) or it runs past ``timeout``, and returns None then,
    else ``(returncode, out, err)``."""
    if one_core:
        cmd = [sys.executable, '-c', _PIN] + list(cmd)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last_cpu, last_change, start = -1.0, time.time(), time.time()
    poll = min(5.0, stall_seconds / 4)  # several looks per stall window: a stall is caught within ~1.25 windows
    while True:
        try:
            out, err = proc.communicate(timeout=poll)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            pass
        cpu, now = cpu_seconds(proc.pid), time.time()
        if cpu is not None and cpu > last_cpu + 0.5:
            last_cpu, last_change = cpu, now
        if now - last_change > stall_seconds or now - start > timeout:
            proc.kill()
            proc.communicate()
            return None


def measure(script, job, env, one_core_after_stall=False):
    """Runs ``python script json(job)`` watched, restarting a stalled run up to ``QVMC_BENCH_RESTARTS``
    times. Returns ``(result, restarts)``: the JSON of its last stdout line (None if every try
    stalled) and how many tries were killed. A run that fails raises ``RuntimeError`` with its output.

    With ``one_core_after_stall`` the restarts are pinned to one CPU (``result['one_core']`` says so):
    the deadlock needs XLA's multi-threaded execution, and a single-core run of a size that stalled
    every time on two cores (the folx/Hessian N = 30 program) finished on the first pinned try.
    Only for measurements that compare things within one run (ratios): absolute times then are
    single-core times."""
    restarts = env_int('QVMC_BENCH_RESTARTS', 2, minimum=0)
    stall, timeout = env_int('QVMC_BENCH_STALL_SECONDS', 120), env_int('QVMC_BENCH_TIMEOUT', 3600)
    cmd = [sys.executable, os.path.abspath(script), json.dumps(job)]
    for attempt in range(restarts + 1):
        pinned = one_core_after_stall and attempt > 0 and hasattr(os, 'sched_setaffinity')
        outcome = run_watched(cmd, env, stall, timeout, one_core=pinned)
        if outcome is None:
            continue
        returncode, out, err = outcome
        if returncode != 0:
            raise RuntimeError(f'{job} failed (exit {returncode}):\n{out[-2000:]}{err[-4000:]}')
        return dict(json.loads(out.strip().splitlines()[-1]), one_core=pinned), attempt
    return None, restarts + 1
