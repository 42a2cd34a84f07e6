"""A host lost in a multi-process run: two processes joined by ``jax.distributed`` train with checkpoints;
one is SIGKILLed mid-run, the survivor exits on its own (JAX's coordination service aborts it, no hang);
restarting both resumes from the last checkpoint bit-identically to an uninterrupted two-process run,
and the same checkpoint also resumes on a single process (within the 1-vs-4-device tolerance).
Slow: the survivor waits for the coordination heartbeat to time out (about 100 s)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from qvmc import checkpoint
from qvmc.train import load_history

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', '_distributed_train_worker.py')
NUM_STEPS = 12
DEVICE_ATOL = 1e-8  # tests/test_parallel.py: one device vs four, float64


def _port():
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _start(run_dir, log, *extra, host_devices=2):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, WORKER, run_dir, str(NUM_STEPS), str(host_devices), *map(str, extra)],
                            env=env, stdout=open(log, 'a'), stderr=subprocess.STDOUT)


def _pair(run_dir, tmp_path, name):
    port = _port()
    return [_start(run_dir, str(tmp_path / f'{name}{i}.log'), i, 2, port) for i in range(2)]


def _wait_all(procs, logs, timeout=600):
    for p, log in zip(procs, logs):
        assert p.wait(timeout=timeout) == 0, open(log).read()[-3000:]


def _leaves(run_dir):
    return checkpoint.load_payload(os.path.join(run_dir, 'checkpoint.qvmc'))['leaves']


def _key_data(v):
    import jax
    a = np.asarray(v)
    return np.asarray(jax.random.key_data(v)) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a


def lost_host(tmp_path):
    """The whole scenario (asserting as it goes); returns what it measured (also used by
    benchmarks/test_reliability.py)."""
    reference = str(tmp_path / 'reference')
    procs = _pair(reference, tmp_path, 'ref')
    _wait_all(procs, [str(tmp_path / f'ref{i}.log') for i in range(2)])

    run = str(tmp_path / 'run')
    procs = _pair(run, tmp_path, 'run')
    deadline = time.time() + 600
    while not (os.path.isdir(run) and checkpoint.list_checkpoints(run) and checkpoint.list_checkpoints(run)[0][0] >= 4):
        assert time.time() < deadline and procs[0].poll() is None, open(tmp_path / 'run0.log').read()[-3000:]
        time.sleep(0.1)
    os.kill(procs[1].pid, signal.SIGKILL)  # host 1 lost mid-run
    procs[1].wait(timeout=60)
    start = time.time()
    code = procs[0].wait(timeout=400)  # the survivor must not hang
    survived = time.time() - start
    assert code != 0 and 'FINISHED' not in open(tmp_path / 'run0.log').read()
    stopped_at = checkpoint.list_checkpoints(run)[0][0]
    assert 4 <= stopped_at < NUM_STEPS
    single = str(tmp_path / 'single')
    shutil.copytree(run, single)

    procs = _pair(run, tmp_path, 'run')  # the same command on both hosts again
    _wait_all(procs, [str(tmp_path / f'run{i}.log') for i in range(2)])
    assert f'Resuming from {run}' in open(tmp_path / 'run0.log').read()
    ref, got = _leaves(reference), _leaves(run)
    assert sorted(ref) == sorted(got)
    for key in ref:  # parameters, optimizer state, walkers, step sizes, key: bit for bit
        np.testing.assert_array_equal(_key_data(ref[key]), _key_data(got[key]), err_msg=key)
    drop = lambda frame: frame.drop(columns=['seconds']).reset_index(drop=True)
    pd.testing.assert_frame_equal(drop(load_history(run)), drop(load_history(reference)))

    p = _start(single, str(tmp_path / 'single.log'), host_devices=1)  # the checkpoint on one process, one device
    assert p.wait(timeout=600) == 0, open(tmp_path / 'single.log').read()[-3000:]
    got = _leaves(single)
    assert int(got["['step']"]) == NUM_STEPS
    for key in ref:
        if 'params' in key or 'walkers' in key:
            np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), rtol=0, atol=DEVICE_ATOL,
                                       err_msg=key)
    return {'survivor exit seconds': round(survived), 'survivor status': code, 'resumed from step': stopped_at,
            'bit-identical (same layout)': True, 'single process within 1e-8': True}


def test_lost_host_resumes_exactly(tmp_path):
    facts = lost_host(tmp_path)
    print(facts)
