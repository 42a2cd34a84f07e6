"""Crash safety and resume: SIGKILL a training process (also inside a checkpoint write) or stop it with
SIGTERM, resume, finish, and match one uninterrupted run exactly; one writer per run directory (a second
process refused, a killed owner's lock gone); walker-count changes, bad checkpoints, transfer."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pandas as pd
import pytest

from conftest import CACHE_DIR, tiny_dot_vmc
from hamiltonians import QuantumDot
from qvmc import checkpoint, runlock
from qvmc.train import load_burn_in, load_history, train
from qvmc.transfer import transfer_state
from hamiltonians.system import make_log_psi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 12
STOP_AT = 5  # the SIGTERM test: the worker pauses after logging this step; the signal arrives during the pause

WORKER = os.path.join(ROOT, 'tests', '_train_worker.py')  # the shared training worker
WORKER_FLAGS = ['--block-length', '4', '--checkpoint-every', '2']


def _start(worker, run_dir, cache, **env_extra):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               **env_extra)
    log = open(os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + '.log'), 'a')
    return subprocess.Popen([sys.executable, worker, run_dir, cache, str(NUM_STEPS), *WORKER_FLAGS], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _wait_for(predicate, process, timeout=300.0):
    """Polls until ``predicate()`` holds or the process exits; True if the predicate held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return predicate()
        time.sleep(0.02)
    raise TimeoutError('worker did not reach the expected point in time')


def _kill(process):
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def _newest_step(run_dir):
    found = checkpoint.list_checkpoints(run_dir) if os.path.isdir(run_dir) else []
    return found[0][0] if found else 0


def _assert_all_readable(run_dir):
    """Every checkpoint file on disk (numbered and the ``checkpoint.qvmc`` alias) passes its checksum."""
    names = [n for n in os.listdir(run_dir) if n.endswith('.qvmc')]
    for name in names:
        payload = checkpoint.load_payload(os.path.join(run_dir, name))
        assert payload['leaves']["['step']"] > 0
    return names


def _flat(payload):
    """Every array of the checkpoint (parameters, optimizer state, walkers, step sizes, key) and its metadata."""
    return payload['leaves'], payload['metadata']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The uninterrupted run both crash tests compare with: every worker process runs the same program,
    and neither the stops nor the checkpoint cadence may change the trajectory."""
    directory = tmp_path_factory.mktemp('reference')
    run = str(directory / 'reference')
    p = _start(WORKER, run, CACHE_DIR or str(directory / 'jax_cache'))
    assert p.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    return run


def _leaves(run_dir):
    leaves = checkpoint.load_payload(os.path.join(run_dir, 'checkpoint.qvmc'))['leaves']
    return {k: np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(np.asarray(v).dtype, jax.dtypes.prng_key)
                          else v) for k, v in leaves.items()}


def test_sigterm_stops_cleanly_then_resume_matches_uninterrupted_run(tmp_path, worker_cache, reference):
    run = str(tmp_path / 'stopped')
    p = _start(WORKER, run, worker_cache, PAUSE_AT_STEP=str(STOP_AT))
    assert _wait_for(lambda: os.path.exists(os.path.join(run, 'PAUSED')), p), open(run + '.log').read()[-3000:]
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=120) == 75, open(run + '.log').read()[-3000:]
    log = open(run + '.log').read()
    assert f'stopped at step {STOP_AT}; re-run the same command to resume' in log
    assert f'SIGTERM: stopped at step {STOP_AT}; checkpoint written' in log and 'FINISHED' not in log
    assert checkpoint.list_checkpoints(run)[0][0] == STOP_AT  # not a multiple of checkpoint_every
    assert _leaves(run)["['step']"] == STOP_AT
    assert load_history(run)['step'].max() == STOP_AT
    os.remove(os.path.join(run, 'PAUSED'))

    p = _start(WORKER, run, worker_cache)
    assert p.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    assert f'Resuming from {run}' in open(run + '.log').read()
    ref, got = _leaves(reference), _leaves(run)
    assert sorted(ref) == sorted(got) and got["['step']"] == NUM_STEPS
    for key in ref:  # parameters, optimizer state, walkers, step sizes, key: bit for bit
        np.testing.assert_array_equal(ref[key], got[key], err_msg=key)
    drop = lambda frame: frame.drop(columns=['seconds'])
    pd.testing.assert_frame_equal(drop(load_history(run)), drop(load_history(reference)))


def test_sigkill_anywhere_then_resume_matches_uninterrupted_run(tmp_path, worker_cache, reference):
    worker = WORKER
    cache = worker_cache
    run = str(tmp_path / 'killed')

    # 1. Killed while writing its second checkpoint (step 4), half of the bytes in a temporary file.
    p = _start(worker, run, cache, PAUSE_IN_SAVE_AT='2')
    assert _wait_for(lambda: os.path.exists(os.path.join(run, 'PAUSED')), p), open(run + '.log').read()[-3000:]
    _kill(p)
    os.remove(os.path.join(run, 'PAUSED'))
    assert [n for n in os.listdir(run) if n.startswith(checkpoint.TEMP_PREFIX)]  # the unfinished write
    assert _newest_step(run) == 2 and _assert_all_readable(run)

    # 2. Killed at random moments after it made progress, twice.
    rng = random.Random(0)
    for _ in range(2):
        before = _newest_step(run)
        p = _start(worker, run, cache)
        _wait_for(lambda: _newest_step(run) > before, p)
        time.sleep(rng.uniform(0.0, 0.4))
        _kill(p)
        _assert_all_readable(run)

    # 3. Resumed to the end.
    p = _start(worker, run, cache)
    assert p.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    log = open(run + '.log').read()
    assert log.count('Resuming from') >= 3 and 'removed 1 unfinished checkpoint temporary' in log
    assert not [n for n in os.listdir(run) if n.startswith(checkpoint.TEMP_PREFIX)]
    assert sorted(_assert_all_readable(run)) == ['checkpoint-00000010.qvmc', 'checkpoint-00000012.qvmc',
                                                 'checkpoint.qvmc']

    ref_leaves, ref_meta = _flat(checkpoint.load_payload(os.path.join(reference, 'checkpoint.qvmc')))
    got_leaves, got_meta = _flat(checkpoint.load_payload(os.path.join(run, 'checkpoint.qvmc')))
    assert got_meta['step'] == ref_meta['step'] == NUM_STEPS
    assert got_meta['block_contexts'] == ref_meta['block_contexts']  # the contexts of the last block
    assert sorted(ref_leaves) == sorted(got_leaves)
    for key in ref_leaves:  # parameters, optimizer state, walkers, step sizes, key: bit for bit
        a, b = ref_leaves[key], got_leaves[key]
        if jax.dtypes.issubdtype(np.asarray(a).dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert ref_meta['schedule_position'] == got_meta['schedule_position'] == [0, 3]
    drop = lambda frame: frame.drop(columns=['seconds'], errors='ignore').reset_index(drop=True)
    pd.testing.assert_frame_equal(drop(load_history(run)), drop(load_history(reference)))
    pd.testing.assert_frame_equal(load_burn_in(run), load_burn_in(reference))


def _same_as_reference(run, reference):
    ref, got = _leaves(reference), _leaves(run)
    assert sorted(ref) == sorted(got) and got["['step']"] == NUM_STEPS
    for key in ref:  # parameters, optimizer state, walkers, step sizes, key: bit for bit
        np.testing.assert_array_equal(ref[key], got[key], err_msg=key)
    drop = lambda frame: frame.drop(columns=['seconds']).reset_index(drop=True)
    pd.testing.assert_frame_equal(drop(load_history(run)), drop(load_history(reference)))  # no duplicated rows


def test_second_writer_refused_first_run_intact(tmp_path, worker_cache, reference):
    """The same command started twice on one run directory: the second is refused with the owner's PID
    and host, writes nothing, and the first run ends identical to an uninterrupted one."""
    run = str(tmp_path / 'twice')
    first = _start(WORKER, run, worker_cache, PAUSE_AT_STEP=str(STOP_AT), PAUSE_SECONDS='300')
    assert _wait_for(lambda: os.path.exists(os.path.join(run, 'PAUSED')), first), open(run + '.log').read()[-3000:]
    files = sorted(os.listdir(run))
    second_log = str(tmp_path / 'second.log')
    with open(second_log, 'w') as log:
        second = subprocess.run([sys.executable, WORKER, run, worker_cache, str(NUM_STEPS), *WORKER_FLAGS],
                                env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT), stdout=log,
                                stderr=subprocess.STDOUT, timeout=300, check=False)
    out = open(second_log).read()
    assert second.returncode != 0 and 'RunDirectoryLocked' in out, out[-3000:]
    assert f'in use by process {first.pid} on host {socket.gethostname()}' in out
    assert sorted(os.listdir(run)) == files  # the second writer touched nothing
    open(os.path.join(run, 'CONTINUE'), 'w').close()
    assert first.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    _same_as_reference(run, reference)


def test_lock_of_a_killed_run_does_not_block_its_resume(tmp_path, worker_cache, reference):
    run = str(tmp_path / 'killed_holder')
    p = _start(WORKER, run, worker_cache, PAUSE_AT_STEP=str(STOP_AT), PAUSE_SECONDS='300')
    assert _wait_for(lambda: os.path.exists(os.path.join(run, 'PAUSED')), p), open(run + '.log').read()[-3000:]
    assert runlock.owner(run)['pid'] == p.pid
    _kill(p)  # SIGKILL while holding the lock
    os.remove(os.path.join(run, 'PAUSED'))
    p = _start(WORKER, run, worker_cache)
    assert p.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    assert 'Resuming from' in open(run + '.log').read()
    _same_as_reference(run, reference)


_vmc = tiny_dot_vmc


def test_walker_count_change_bad_checkpoints_and_nothing_overwritten(tmp_path):
    vmc, key = _vmc(), jax.random.PRNGKey(0)
    run = str(tmp_path / 'run')
    burn = dict(chunk=4, min_steps=8, max_steps=16)
    train(vmc, vmc.init(key), key, 2, run_dir=run, checkpoint_every=2, print_fn=None, burn_in_options=burn)
    # More walkers on resume: honoured (blocks grown, then burned in), recorded in burn_in.csv.
    state = train(vmc, vmc.init(key), key, 2, run_dir=run, total_walkers=48, print_fn=None, burn_in_options=burn)
    assert state.step == 2 and [t.walkers.shape[0] for t in state.chains] == [24, 24]
    log = load_burn_in(run)
    assert list(log['event']) == ['resize', 'resize'] and list(log['step']) == [2, 2]
    # Fewer walkers: a prefix of each block, no burn-in needed.
    resumed = checkpoint.load(os.path.join(run, 'checkpoint.qvmc'))  # {leaf path: array}
    state = train(vmc, vmc.init(key), key, 2, run_dir=run, total_walkers=8, print_fn=None)
    assert [t.walkers.shape[0] for t in state.chains] == [4, 4]
    np.testing.assert_array_equal(state.chains[1].walkers, resumed["['chains'][1]['walkers']"][:4])
    assert list(load_history(run)['step']) == [1, 1, 2, 2] and len(load_burn_in(run)) == 0  # resize at 2 redone

    def snapshot():  # the run's data; the lock file records each new owner (host, PID, start time)
        return {n: open(os.path.join(run, n), 'rb').read() for n in sorted(os.listdir(run)) if n != runlock.LOCK_NAME}
    before = snapshot()
    with pytest.raises(ValueError, match='incompatible: param_shapes'):  # another network size
        other = _vmc(width=16)
        train(other, vmc.init(key), key, 6, run_dir=run, print_fn=None)
    with pytest.raises(ValueError, match='incompatible: system'):  # another max_electrons: other context features
        from hamiltonians import QuantumDot
        other = type(vmc)(vmc.wavefunction, QuantumDot(max_electrons=12), vmc.contexts, vmc.optimizer, vmc.config)
        train(other, other.init(key), key, 6, run_dir=run, print_fn=None)
    with pytest.raises(ValueError, match='cannot be split into 2'):
        train(vmc, vmc.init(key), key, 6, run_dir=run, total_walkers=9, print_fn=None)
    assert snapshot() == before
    newest = checkpoint.list_checkpoints(run)[0][1]
    for _, path in checkpoint.list_checkpoints(run):  # corrupt every checkpoint (the alias shares an inode)
        data = bytearray(open(path, 'rb').read())
        data[len(data) // 2] ^= 0xFF
        open(path, 'wb').write(bytes(data))
    before = snapshot()
    with pytest.raises(ValueError, match='No readable checkpoint .* SHA-256 checksum does not match'):
        train(vmc, vmc.init(key), key, 6, run_dir=run, print_fn=None)
    assert snapshot() == before
    with pytest.raises(ValueError, match='unreadable'):
        checkpoint.load(newest)


def test_transfer_from_n6_initializes_n8_model(tmp_path):
    dot = QuantumDot()
    small = _vmc(walkers=8, contexts=[dot.context(3, 3, lam=2.0)])
    key = jax.random.PRNGKey(1)
    trained = train(small, small.init(key), key, 1, run_dir=str(tmp_path / 'n6'), print_fn=None)
    large = _vmc(walkers=8, contexts=[dot.context(4, 4, lam=2.0)])
    state = transfer_state(large, jax.random.PRNGKey(2), str(tmp_path / 'n6'))  # from the run directory
    for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    assert state.step == 0 and state.chains[0].walkers.shape == (8, 8, 2)
    log_psi = jax.jit(jax.vmap(make_log_psi(large.wavefunction, dot, (4, 4)), in_axes=(None, 0, None)))
    assert np.all(np.isfinite(log_psi(state.params, state.chains[0].walkers, large.contexts[0].values)))
    wider = _vmc(width=16, walkers=8, contexts=[dot.context(4, 4, lam=2.0)])
    with pytest.raises(ValueError, match='do not fit this model.*shape'):
        transfer_state(wider, key, trained.params)
