"""One writer per run directory (``qvmc.runlock``): a lock held by another process refuses a second writer
with the owner's PID and host, re-entrance within a process, the lock gone with a SIGKILLed owner, and the
drivers' exit status 2 before anything compiles."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from qvmc import runlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = ('import sys, time\nfrom qvmc import runlock\nrunlock.acquire(sys.argv[1])\nprint("held", flush=True)\n'
          'time.sleep(600)\n')


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``tmp_path / 'run'`` (killed with SIGKILL at the end)."""
    run = str(tmp_path / 'run')
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, '-c', HOLDER, run], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    yield run, p
    if p.poll() is None:
        p.kill()
    p.wait(timeout=30)


def test_second_writer_refused_with_the_owner(holder):
    run, p = holder
    with pytest.raises(runlock.RunDirectoryLocked, match=f'in use by process {p.pid} on host '
                       f'{socket.gethostname()}, started 20') as err:
        runlock.acquire(run)
    assert isinstance(err.value, ValueError) and err.value.owner['pid'] == p.pid
    assert not runlock.is_held(run)


def test_lock_of_a_sigkilled_owner_is_gone(holder):
    run, p = holder
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    with runlock.RunLock(run):
        assert runlock.is_held(run) and runlock.owner(run)['pid'] == os.getpid()
    assert not runlock.is_held(run)


def test_reentrant_within_a_process(tmp_path):
    run = str(tmp_path / 'new' / 'run')  # created by acquire
    with runlock.RunLock(run):
        with runlock.RunLock(run + '/'):  # the same directory, another spelling
            assert runlock.is_held(run)
        assert runlock.is_held(run)  # still held by the outer holder
    assert not runlock.is_held(run)
    with runlock.RunLock(None):  # no directory, no lock
        pass


@pytest.mark.parametrize('driver', ['quantum_dot_foundation.py', 'moire_transition.py'])
def test_driver_refuses_a_locked_run_dir_before_compiling(holder, driver):
    run, p = holder
    before = sorted(os.listdir(run))
    start = time.time()
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'examples', driver), '--run-dir', run, '--steps', '2'],
                         env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT), capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f'--run-dir: Run directory {run!r} is in use by process {p.pid}' in lines[0]
    assert 'parameters' not in out.stdout  # refused before the network was built
    assert sorted(os.listdir(run)) == before
    assert time.time() - start < 60
