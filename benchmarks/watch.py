"""Measurements in watched subprocesses: a run whose CPU time stops growing is killed and started again.

jaxlib 0.10.2's XLA CPU runtime can deadlock on 2-core hosts in some programs (every thread parked,
the main thread in ``BlockUntilReady``): the process then neither finishes nor uses CPU. A benchmark
that measures such sizes runs each one as ``python <script> '<json job>'`` (the script prints one
JSON line last) and goes through :func:`measure`, which detects the stall, restarts the run a few
times, and reports a size that never finished instead of hanging the session.

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


def run_watched(cmd, env, stall_seconds, timeout):
    """Runs ``cmd``; kills it when its CPU time stops growing for ``stall_seconds`` (the XLA CPU
    runtime deadlock) or it runs past ``timeout``, and returns None then, else ``(returncode, out, err)``."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last_cpu, last_change, start = -1.0, time.time(), time.time()
    while True:
        try:
            out, err = proc.communicate(timeout=5)
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


def measure(script, job, env):
    """Runs ``python script json(job)`` watched, restarting a stalled run up to ``QVMC_BENCH_RESTARTS``
    times. Returns ``(result, restarts)``: the JSON of its last stdout line (None if every try
    stalled) and how many tries were killed. A run that fails raises ``RuntimeError`` with its output."""
    restarts = env_int('QVMC_BENCH_RESTARTS', 2, minimum=0)
    stall, timeout = env_int('QVMC_BENCH_STALL_SECONDS', 120), env_int('QVMC_BENCH_TIMEOUT', 3600)
    cmd = [sys.executable, os.path.abspath(script), json.dumps(job)]
    for attempt in range(restarts + 1):
        outcome = run_watched(cmd, env, stall, timeout)
        if outcome is None:
            continue
        returncode, out, err = outcome
        if returncode != 0:
            raise RuntimeError(f'{job} failed (exit {returncode}):\n{out[-2000:]}{err[-4000:]}')
        return json.loads(out.strip().splitlines()[-1]), attempt
    return None, restarts + 1
