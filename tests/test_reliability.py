"""Training that heals itself or stops cleanly: graceful stop on SIGINT (then an exact resume; SIGTERM to a
real training process is tested in tests/test_resume.py), rollback and retries after non-finite steps,
checkpoint write failures, a missing history, geometry checks and up-front validation of ``VMCConfig``
and ``train``."""

import errno
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ansatz
from ansatz import FermiSetsConfig, make_fermi_sets
from ansatz.registry import make_ansatz
from hamiltonians import MoireSystem, QuantumDot
from qvmc import VMC, VMCConfig, checkpoint
from qvmc.guard import nonfinite_leaves
from qvmc.inference import Predictor
from qvmc.sweep import Sweep
from qvmc.train import TrainingInterrupted, load_history, train
from conftest import tiny_dot_vmc

TINY = FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)


@pytest.fixture(scope='module')
def vmc():
    return tiny_dot_vmc()


def _poison(vmc, monkeypatch, when):
    """Replaces ``vmc.step``: before call number ``c`` (1-based) with ``when(c, step)`` true the
    parameters are set to NaN (a transient fault when it fires once)."""
    real, calls = vmc.step, [0]

    def step(key, state):
        calls[0] += 1
        if when(calls[0], int(np.asarray(state.step))):
            state = state._replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
        return real(key, state)
    monkeypatch.setattr(vmc, 'step', step)
    return calls


def _all_checkpoints_finite(run):
    for _, path in checkpoint.list_checkpoints(run):
        leaves = checkpoint.load_payload(path)['leaves']
        assert not nonfinite_leaves({k: v for k, v in leaves.items() if 'rng_key' not in k}), path


@pytest.fixture
def sigint_delivered():
    """SIGINT handled as in an interactive run. A test process started as a background job of a
    non-interactive shell (``pytest ... &``, ``nohup``) inherits SIGINT ignored, and ``train`` rightly
    leaves an ignored signal alone; these tests need it delivered."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_in_process_checkpoints_and_restores_handlers(vmc, tmp_path, sigint_delivered):
    run, key = str(tmp_path / 'run'), jax.random.PRNGKey(0)
    before = signal.getsignal(signal.SIGINT)

    def interrupt(line):
        if re.match(r'step +3/', line):
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        train(vmc, vmc.init(key), key, 10, run_dir=run, checkpoint_every=4, log_every=1, print_fn=interrupt)
    assert stop.value.step == 3 and stop.value.exit_code == 75 and stop.value.signal_name == 'SIGINT'
    assert int(stop.value.state.step) == 3
    assert checkpoint.list_checkpoints(run)[0][0] == 3 and list(load_history(run)['step']) == [1, 1, 2, 2, 3, 3]
    assert signal.getsignal(signal.SIGINT) is before
    state = train(vmc, vmc.init(key), key, 5, run_dir=run, checkpoint_every=4, print_fn=None)
    assert int(state.step) == 5 and list(load_history(run)['step']) == [s for s in range(1, 6) for _ in range(2)]


def test_transient_nan_rolls_back_and_recovers(vmc, tmp_path, monkeypatch):
    run, key, lines = str(tmp_path / 'run'), jax.random.PRNGKey(0), []
    _poison(vmc, monkeypatch, lambda call, step: call == 5)  # NaN parameters from step 5 on, once
    state = train(vmc, vmc.init(key), key, 12, run_dir=run, checkpoint_every=4, log_every=2, max_rejections=3,
                  print_fn=lines.append)
    assert int(state.step) == 12 and not nonfinite_leaves(jax.device_get(state.params))
    assert any(re.match(r'step 5: the parameters or optimizer state hold non-finite values \(non-finite energies '
                        r'in N=2\(1,1\) lam=1 omega=1, N=2\(1,1\) lam=3 omega=1\); rolled back to step 4, retrying '
                        r'with a new random stream \(retry 1 of 2\)', line) for line in lines), lines
    history = load_history(run)
    assert list(history['step']) == [s for s in range(1, 13) for _ in range(2)]  # the failed rows were dropped
    assert history['energy'].notna().all() and history['accepted'].all()
    _all_checkpoints_finite(run)


def test_resume_inside_a_retry_matches_uninterrupted_run(vmc, tmp_path, monkeypatch, sigint_delivered):
    """A stop while failed steps are being retried stores the retry position in the checkpoint, so the
    resumed run takes the same random streams as an uninterrupted one."""
    key, finals = jax.random.PRNGKey(4), {}
    for name in ('uninterrupted', 'stopped'):
        run, fired = str(tmp_path / name), []
        monkeypatch.undo()
        _poison(vmc, monkeypatch, lambda call, step: step == 5 and not fired and not fired.append(step))

        def stop_on_rollback(line):
            if name == 'stopped' and 'rolled back to step 4' in line:
                os.kill(os.getpid(), signal.SIGINT)
        kwargs = dict(run_dir=run, checkpoint_every=3, log_every=2, print_fn=stop_on_rollback)
        if name == 'stopped':
            with pytest.raises(TrainingInterrupted) as stop:
                train(vmc, vmc.init(key), key, 10, **kwargs)
            assert stop.value.step == 4
            meta = checkpoint.load_payload(os.path.join(run, 'checkpoint.qvmc'))['metadata']
            assert meta['step'] == 4 and meta['retry'] == {'count': 1, 'until': 6}
        finals[name] = train(vmc, vmc.init(key), key, 10, **kwargs)
        assert fired == [5]
    for a, b in zip(jax.tree.leaves(finals['uninterrupted']), jax.tree.leaves(finals['stopped'])):
        np.testing.assert_array_equal(a, b)
    assert load_history(str(tmp_path / 'stopped')).drop(columns='seconds').equals(
        load_history(str(tmp_path / 'uninterrupted')).drop(columns='seconds'))


def test_refused_checkpoint_rolls_back(vmc, tmp_path, monkeypatch):
    """A non-finite step size right before a checkpoint: nothing is written, the run rolls back."""
    real, calls, lines = vmc.step, [0], []

    def step(key, state):
        calls[0] += 1
        state, info = real(key, state)
        if calls[0] == 4:
            chains = (state.chains[0]._replace(step_size=state.chains[0].step_size * jnp.nan),) + state.chains[1:]
            state = state._replace(chains=chains)
        return state, info
    monkeypatch.setattr(vmc, 'step', step)
    run, key = str(tmp_path / 'run'), jax.random.PRNGKey(1)
    state = train(vmc, vmc.init(key), key, 8, run_dir=run, checkpoint_every=4, log_every=2, print_fn=lines.append)
    assert int(state.step) == 8
    assert any("step 4: checkpoint not written: ['chains'][0]['step_size'] hold non-finite values" in x for x in lines)
    assert any('rolled back to step 2' in x for x in lines), lines
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [8, 4]
    _all_checkpoints_finite(run)


def test_persistent_nan_raises_floating_point_error(vmc, tmp_path, monkeypatch):
    run, key, lines = str(tmp_path / 'run'), jax.random.PRNGKey(0), []
    _poison(vmc, monkeypatch, lambda call, step: step >= 3)  # every attempt fails at step 4
    with pytest.raises(FloatingPointError, match=r'Training failed at step 4 after 2 retries from step 2: the '
                       r'parameters .* non-finite energies in N=2\(1,1\) lam=1 omega=1, N=2\(1,1\) lam=3 omega=1'):
        train(vmc, vmc.init(key), key, 10, run_dir=run, checkpoint_every=2, log_every=2, print_fn=lines.append)
    assert sum('rolled back to step 2' in x for x in lines) == 2
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [2]  # the last good one; no NaN written
    _all_checkpoints_finite(run)


def test_rejection_streak_with_finite_parameters_raises(tmp_path):
    """An optimizer whose updates turn NaN after two steps: the step rejects them, parameters stay
    finite, and ``max_rejections`` consecutive rejections are a failure."""
    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        scale = jnp.where(count >= 2, jnp.nan, -1e-3)
        return jax.tree.map(lambda g: scale * g, grads), count + 1
    dot = QuantumDot()
    vmc = VMC(make_fermi_sets(TINY), dot, [dot.context(1, 1, lam=1.0)], optax.GradientTransformation(init, update),
              VMCConfig(num_walkers=16, mcmc_substeps=3, kinetic_method='hessian'))
    key, lines = jax.random.PRNGKey(0), []
    with pytest.raises(FloatingPointError, match='failed at step 3 after 1 retry from step 2: 4 consecutive updates '
                       'were rejected as non-finite; all context energies were finite'):
        train(vmc, vmc.init(key), key, 20, log_every=2, max_rejections=4, max_retries=1, print_fn=lines.append)
    assert any('retry 1 of 1' in x for x in lines)
    with pytest.raises(ValueError, match='max_rejections must be >= 1'):
        train(vmc, vmc.init(key), key, 2, max_rejections=0)
    with pytest.raises(ValueError, match='initial state.*non-finite'):
        state = vmc.init(key)
        train(vmc, state._replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params)), key, 2)


def test_checkpoint_write_failure_raises_and_keeps_previous(vmc, tmp_path, monkeypatch):
    run, key, lines = str(tmp_path / 'run'), jax.random.PRNGKey(2), []
    original, calls = checkpoint._write, [0]

    def failing_write(f, data):
        calls[0] += 1
        if calls[0] >= 2:
            raise OSError(errno.EROFS, 'Read-only file system')
        original(f, data)
    monkeypatch.setattr(checkpoint, '_write', failing_write)
    with pytest.raises(OSError, match=rf'stopped at step 4: could not write a checkpoint in run directory '
                       rf"'{re.escape(run)}'.*previous checkpoint is still current") as err:
        train(vmc, vmc.init(key), key, 8, run_dir=run, checkpoint_every=2, log_every=1, print_fn=lines.append)
    assert err.value.errno == errno.EROFS
    assert any(f'could not write a checkpoint in run directory {run!r}' in x for x in lines)
    assert list(load_history(run)['step']) == [1, 1, 2, 2, 3, 3, 4, 4]  # flushed before the write
    assert checkpoint.load_payload(os.path.join(run, 'checkpoint.qvmc'))['metadata']['step'] == 2
    assert not [n for n in os.listdir(run) if n.startswith(checkpoint.TEMP_PREFIX)]
    monkeypatch.setattr(checkpoint, '_write', original)
    state = train(vmc, vmc.init(key), key, 4, run_dir=run, checkpoint_every=2, print_fn=None)
    assert int(state.step) == 4 and list(load_history(run)['step']) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_missing_history_is_refused_unless_allowed(vmc, tmp_path):
    run, key, lines = str(tmp_path / 'run'), jax.random.PRNGKey(3), []
    train(vmc, vmc.init(key), key, 2, run_dir=run, checkpoint_every=2, print_fn=None)
    os.remove(os.path.join(run, 'history.csv'))
    before = sorted(os.listdir(run))
    with pytest.raises(ValueError, match=r"history.csv' is missing, but .* resumes at step 2.*Restore the file.*"
                       'allow_missing_history=True'):
        train(vmc, vmc.init(key), key, 4, run_dir=run, print_fn=None)
    assert sorted(os.listdir(run)) == before
    state = train(vmc, vmc.init(key), key, 3, run_dir=run, allow_missing_history=True, print_fn=lines.append)
    assert int(state.step) == 3 and list(load_history(run)['step']) == [3, 3]
    assert any('starting a new history file at step 2' in x for x in lines)


def test_geometry_mismatch_is_refused():
    dot, moire = QuantumDot(), MoireSystem(coulomb=False)
    open_wf = make_fermi_sets(TINY)
    periodic_wf = make_ansatz('slater_jastrow', lattice=moire.network_lattice)
    assert not open_wf.periodic and periodic_wf.periodic and not make_ansatz('qernel').periodic
    assert ansatz.make_plane_wave_slater(moire.network_lattice(6), allow_open_shell=True).periodic
    tx, config = optax.adam(1e-3), VMCConfig(num_walkers=8)
    dot_ctx, moire_ctx = [dot.context(1, 1, lam=1.0)], [moire.context(6, 0, lam=1.0)]
    for where, build in (('VMC', lambda wf, s, c: VMC(wf, s, c, tx, config)),
                         ('Predictor', lambda wf, s, c: Predictor(wf, s, config)),
                         ('Sweep', lambda wf, s, c: Sweep(wf, s, config))):
        with pytest.raises(ValueError, match=f'{where}: MoireSystem is periodic but the wavefunction is built for '
                           'open geometry.*lattice=system.network_lattice'):
            build(open_wf, moire, moire_ctx)
        with pytest.raises(ValueError, match=f'{where}: QuantumDot has open boundaries but the wavefunction is '
                           'periodic.*without lattice='):
            build(periodic_wf, dot, dot_ctx)
        build(open_wf, dot, dot_ctx)  # matching geometries construct (nothing compiles here)
        build(periodic_wf, moire, moire_ctx)


VMC_CONFIG_BAD = [
    (dict(initial_step_size=float('nan')), 'initial_step_size must be finite'),
    (dict(initial_step_size=float('inf')), 'initial_step_size must be finite'),
    (dict(initial_step_size=0.0), 'initial_step_size must be > 0'),
    (dict(clip_scale=float('nan')), 'clip_scale must be finite'),
    (dict(clip_scale=-1.0), 'clip_scale must be > 0'),
    (dict(num_walkers=2.5), 'num_walkers must be an integer'),
    (dict(num_walkers=0), 'num_walkers must be >= 1'),
    (dict(num_walkers=True), 'num_walkers must be an integer'),
    (dict(mcmc_substeps=-1), 'mcmc_substeps must be >= 1'),
    (dict(chunk_size=0), 'chunk_size must be >= 1'),
    (dict(energy_batch_size=0), 'energy_batch_size must be >= 1'),
    (dict(energy_batch_size=4.0), 'energy_batch_size must be an integer'),
    (dict(target_acceptance=1.5), r'target_acceptance must be in \(0, 1\)'),
    (dict(target_acceptance=float('nan')), 'target_acceptance must be finite'),
    (dict(sampler='x'), "sampler must be one of .*got 'x'"),
    (dict(kinetic_method='fd'), "kinetic_method must be one of .*got 'fd'"),
    (dict(reseed_bad_walkers=1), 'reseed_bad_walkers must be True or False'),
    (dict(network_dtype='float16'), 'network dtype must be one of'),
]


@pytest.mark.parametrize('kwargs, message', VMC_CONFIG_BAD, ids=[str(k) for k, _ in VMC_CONFIG_BAD])
def test_vmc_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VMCConfig(**kwargs)


TRAIN_BAD = [
    (dict(num_steps=-1), 'num_steps must be >= 0'),
    (dict(num_steps=2.0), 'num_steps must be an integer'),
    (dict(log_every=0), 'log_every must be >= 1'),
    (dict(checkpoint_every=0), 'checkpoint_every must be >= 1'),
    (dict(max_rejections=0), 'max_rejections must be >= 1'),
    (dict(max_retries=-1), 'max_retries must be >= 0'),
    (dict(keep_checkpoints=0), 'keep_checkpoints must be >= 1'),
    (dict(burn_in_options={'chunks': 4}), 'Unknown burn_in_options'),
]


@pytest.mark.parametrize('kwargs, message', TRAIN_BAD, ids=[str(k) for k, _ in TRAIN_BAD])
def test_train_rejects(kwargs, message):
    dot = QuantumDot()
    vmc = VMC(make_fermi_sets(TINY), dot, [dot.context(1, 1, lam=1.0)], optax.adam(1e-3), VMCConfig(num_walkers=8))
    kwargs = dict(dict(num_steps=2), **kwargs)
    with pytest.raises(ValueError, match=message):
        train(vmc, None, jax.random.PRNGKey(0), **kwargs)  # refused before the state is touched
