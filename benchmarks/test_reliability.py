"""Reliability: kills survived with an exact resume, non-finite walkers, a NaN parameter mid-run, and
invalid inputs rejected up front.

(a) a training process is SIGKILLed ``QVMC_BENCH_KILLS`` (20) times and resumed: at random moments,
    and every fourth kill inside a checkpoint write (half of its bytes on disk); its final checkpoint
    must equal an uninterrupted run's bit for bit, its history must have no duplicated row;
(e) two writers: the same command started twice on one run directory; the second must be refused
    (the owner named) and write nothing, the first must end identical to an uninterrupted run;
(f) SIGTERM mid-run: exit status 75 with a checkpoint, then an exact resume;
(g) a lost host (tests/test_lost_host.py): two processes joined by ``jax.distributed``, one
    SIGKILLed; the survivor must exit by itself and both, restarted, resume bit-identically;
(b) 2 electrons at λ = 1 (exact E = 3): a run in which 15 % of the walkers are set to NaN every 50
    steps is compared with a clean run by ``Predictor`` (energies within 3σ);
(c) one parameter is set to NaN at the first step of a second ``train`` call on the same run
    directory: the run rolls back, finishes finite, and no checkpoint holds a NaN;
(d) the invalid driver flags of tests/test_driver_flags.py and the invalid ``VMCConfig`` / ``train``
    arguments of tests/test_reliability.py are tried and must all be rejected before any training.

Sizes: QVMC_BENCH_KILLS (20), QVMC_BENCH_STEPS (300), QVMC_BENCH_WALKERS (256), QVMC_BENCH_WIDTH (16),
QVMC_BENCH_EVAL_STEPS (100). About 15 minutes on a 2-core CPU.
"""

import contextlib
import importlib.util
import io
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from qvmc import VMC, VMCConfig, checkpoint
from qvmc.guard import nonfinite_leaves
from qvmc.inference import Predictor
from qvmc.train import load_history, train
from envvars import env_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_STEPS = 120  # room for 20 kills: a kill inside a write leaves the newest checkpoint where it was

WORKER = os.path.join(ROOT, 'tests', '_train_worker.py')  # the shared training worker
WORKER_FLAGS = ['--block-length', '8', '--checkpoint-every', '3', '--log-sleep', '0.03',  # as before the
                '--full-optimization']  # shared worker: longer blocks, all XLA optimizations


def _start(worker, run_dir, cache, **env_extra):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               **env_extra)
    log = open(run_dir + '.log', 'a')
    return subprocess.Popen([sys.executable, worker, run_dir, cache, str(KILL_STEPS), *WORKER_FLAGS], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _wait_file(path, process, timeout=300):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None and time.time() < deadline, f'{path} did not appear'
        time.sleep(0.02)


def _newest(run_dir):
    found = checkpoint.list_checkpoints(run_dir) if os.path.isdir(run_dir) else []
    return found[0][0] if found else 0


def _all_readable(run_dir):
    try:
        for name in os.listdir(run_dir):
            if name.endswith('.qvmc'):
                checkpoint.load_payload(os.path.join(run_dir, name))
        return True
    except ValueError:
        return False


def _leaves(run_dir):
    leaves = checkpoint.load_payload(os.path.join(run_dir, 'checkpoint.qvmc'))['leaves']
    return {k: np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(np.asarray(v).dtype, jax.dtypes.prng_key)
                          else v) for k, v in leaves.items()}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """``(cache, reference run directory)``: the uninterrupted run every case is compared with."""
    tmp = tmp_path_factory.mktemp('reliability')
    cache, reference = str(tmp / 'cache'), str(tmp / 'reference')
    assert _start(WORKER, reference, cache).wait(timeout=900) == 0, open(reference + '.log').read()[-3000:]
    return cache, reference


def _identical(run, reference):
    """``(final state bit-identical, history identical without duplicated rows)``."""
    ref, got = _leaves(reference), _leaves(run)
    equal = sorted(ref) == sorted(got) and all(np.array_equal(ref[k], got[k]) for k in ref)
    drop = lambda frame: frame.drop(columns=['seconds']).reset_index(drop=True)
    history = load_history(run)
    no_duplicates = not history.duplicated(['step', 'context']).any()
    return equal, no_duplicates and drop(history).equals(drop(load_history(reference)))


def test_kills_survived(tmp_path, uninterrupted, report):
    kills = env_int('QVMC_BENCH_KILLS', 20)
    cache, reference = uninterrupted
    run = str(tmp_path / 'killed')
    start = time.time()
    rng, tried, survived, steps_at_kill, in_write = random.Random(0), 0, 0, [], 0
    for i in range(kills):
        before = _newest(run)
        if i % 4 == 3:  # inside the first checkpoint write of this process: half of the bytes written
            p = _start(WORKER, run, cache, PAUSE_IN_SAVE_AT='1')
            _wait_file(os.path.join(run, 'PAUSED'), p)
            os.remove(os.path.join(run, 'PAUSED'))
            in_write += 1
        else:
            p = _start(WORKER, run, cache)
            deadline = time.time() + 300
            while _newest(run) <= before and p.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.6))
            if p.poll() is not None:  # finished before the kill: nothing left to interrupt
                break
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        tried += 1
        survived += _all_readable(run)
        steps_at_kill.append(_newest(run))
    p = _start(WORKER, run, cache)
    assert p.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    equal, history_equal = _identical(run, reference)
    report({'benchmark': 'reliability (a) SIGKILL + resume', 'kills survived': f'{survived}/{tried}',
            'kills inside a checkpoint write': in_write, 'checkpoint steps at kills': str(steps_at_kill),
            'final state bit-identical': equal, 'history identical, no duplicates': history_equal,
            'seconds': round(time.time() - start)})
    assert tried >= min(kills, 15) and survived == tried and equal and history_equal


def test_second_writer_refused(tmp_path, uninterrupted, report):
    cache, reference = uninterrupted
    run = str(tmp_path / 'twice')
    first = _start(WORKER, run, cache, PAUSE_AT_STEP='5', PAUSE_SECONDS='300')
    _wait_file(os.path.join(run, 'PAUSED'), first)
    files = sorted(os.listdir(run))
    second = _start(WORKER, run, cache)
    code = second.wait(timeout=300)
    refused = code != 0 and f'in use by process {first.pid}' in open(run + '.log').read()
    untouched = sorted(os.listdir(run)) == files
    open(os.path.join(run, 'CONTINUE'), 'w').close()
    assert first.wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    equal, history_equal = _identical(run, reference)
    report({'benchmark': 'reliability (e) two writers', 'second refused': refused, 'second status': code,
            'directory untouched by the second': untouched, 'first run bit-identical': equal,
            'history identical, no duplicates': history_equal})
    assert refused and untouched and equal and history_equal


def test_sigterm_then_resume(tmp_path, uninterrupted, report):
    cache, reference = uninterrupted
    run = str(tmp_path / 'terminated')
    p = _start(WORKER, run, cache, PAUSE_AT_STEP='7')
    _wait_file(os.path.join(run, 'PAUSED'), p)
    os.kill(p.pid, signal.SIGTERM)
    code = p.wait(timeout=120)
    at = _newest(run)
    os.remove(os.path.join(run, 'PAUSED'))
    assert _start(WORKER, run, cache).wait(timeout=600) == 0, open(run + '.log').read()[-3000:]
    equal, history_equal = _identical(run, reference)
    report({'benchmark': 'reliability (f) SIGTERM', 'exit status': code, 'checkpoint at stop': at,
            'resumed bit-identical': equal, 'history identical, no duplicates': history_equal})
    assert code == 75 and at == 7 and equal and history_equal


def test_lost_host(tmp_path, report):
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from test_lost_host import lost_host
    facts = lost_host(tmp_path)
    report({'benchmark': 'reliability (g) lost host', **facts})


def _dot_run(steps, walkers, width, poison_every=0, fraction=0.15):
    dot = QuantumDot()
    ctx = dot.context(1, 1, lam=1.0)
    wf = make_fermi_sets(FermiSetsConfig(width=width, num_layers=1, num_heads=2, num_determinants=2, hidden=width))
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=5)
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, steps, end_value=1e-4)
    vmc = VMC(wf, dot, [ctx], optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)), config)
    bad = int(round(fraction * walkers))
    if poison_every:
        real = vmc.step

        def step(key, state):  # NaN positions for the first `bad` walkers every `poison_every` steps
            if int(np.asarray(state.step)) % poison_every == 10 % poison_every:
                chain = state.chains[0]
                chain = chain._replace(walkers=chain.walkers.at[:bad].set(jnp.nan))
                state = state._replace(chains=(chain,))
            return real(key, state)
        vmc.step = step
    key = jax.random.PRNGKey(0)
    return wf, dot, ctx, config, vmc, vmc.run_mcmc(key, vmc.init(key), 10), key, bad


def test_nonfinite_walkers_do_not_bias_the_energy(tmp_path, report):
    steps, walkers = env_int('QVMC_BENCH_STEPS', 300), env_int('QVMC_BENCH_WALKERS', 256)
    width, eval_steps = env_int('QVMC_BENCH_WIDTH', 16), env_int('QVMC_BENCH_EVAL_STEPS', 100)
    results = {}
    for name, every in (('clean', 0), ('15% NaN walkers', 50)):
        start = time.time()
        wf, dot, ctx, config, vmc, state, key, bad = _dot_run(steps, walkers, width, every)
        run = str(tmp_path / name.split()[0])
        state = train(vmc, state, key, steps, run_dir=run, log_every=50, checkpoint_every=steps, print_fn=None)
        history = load_history(run)
        est = Predictor(wf, dot, config, density_bins=0).estimate(state.params, ctx, jax.random.PRNGKey(1),
                                                                  num_walkers=512, num_steps=eval_steps)
        results[name] = est.energy
        report({'benchmark': 'reliability (b) N=2 λ=1 (exact 3)', 'run': name, 'steps': steps,
                'walkers': walkers, 'NaN walkers injected': bad * len(range(10, steps, 50)) if every else 0,
                'bad walkers seen': int(history['num_bad_walkers'].sum()), 'rejected updates':
                int(np.asarray(state.num_rejected)), 'energy': est.energy.mean, 'error': est.energy.error,
                'seconds': round(time.time() - start)})
    clean, poisoned = results['clean'], results['15% NaN walkers']
    sigma = float(np.hypot(clean.error, poisoned.error))
    report({'benchmark': 'reliability (b) N=2 λ=1 (exact 3)', 'run': 'difference',
            'energy': poisoned.mean - clean.mean, 'error': sigma})
    assert abs(poisoned.mean - clean.mean) < 3 * sigma, (clean, poisoned)


def test_nan_parameter_mid_run_rolls_back(tmp_path, report):
    dot = QuantumDot()
    vmc = VMC(make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)),
              dot, [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=3.0)], optax.adam(1e-3),
              VMCConfig(num_walkers=32, mcmc_substeps=3, kinetic_method='hessian'))
    run, key, lines = str(tmp_path / 'run'), jax.random.PRNGKey(0), []
    start = time.time()
    train(vmc, vmc.init(key), key, 20, run_dir=run, checkpoint_every=5, log_every=5, print_fn=None)
    real, fired = vmc.step, []

    def step(k, state):  # one NaN in one parameter, once, at the first step of the second call
        if not fired:
            fired.append(int(np.asarray(state.step)))
            leaves, treedef = jax.tree.flatten(state.params)
            leaves[0] = jnp.asarray(leaves[0]).at[(0,) * np.ndim(leaves[0])].set(jnp.nan)
            state = state._replace(params=jax.tree.unflatten(treedef, leaves))
        return real(k, state)
    vmc.step = step
    state = train(vmc, vmc.init(key), key, 40, run_dir=run, checkpoint_every=5, log_every=5, print_fn=lines.append)
    rollbacks = sum('rolled back' in line for line in lines)
    written = checkpoint.list_checkpoints(run)
    nan_checkpoints = sum(bool(nonfinite_leaves({k: v for k, v in checkpoint.load_payload(p)['leaves'].items()
                                                 if 'rng_key' not in k})) for _, p in written)
    finite = not nonfinite_leaves(jax.device_get(state.params))
    report({'benchmark': 'reliability (c) NaN parameter at step 20', 'injected at step': fired[0],
            'rollbacks': rollbacks, 'final step': int(np.asarray(state.step)), 'final parameters finite': finite,
            'checkpoints with NaN': f'{nan_checkpoints}/{len(written)}', 'seconds': round(time.time() - start)})
    assert rollbacks >= 1 and int(np.asarray(state.step)) == 40 and finite and nan_checkpoints == 0


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_invalid_inputs_rejected_up_front(report):
    flags = _module('bench_driver_flags', os.path.join(ROOT, 'tests', 'test_driver_flags.py'))
    rel = _module('bench_reliability_cases', os.path.join(ROOT, 'tests', 'test_reliability.py'))
    counts = {}
    for name, driver, cases in (('quantum dot flags', flags.quantum_dot_foundation, flags.DOT_BAD),
                                ('moiré flags', flags.moire_transition, flags.MOIRE_BAD)):
        rejected = 0
        for argv, _, _ in cases:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
                driver.parse_args(argv)
                continue
            rejected += 1
        counts[name] = (rejected, len(cases))
    rejected = 0
    for kwargs, _ in rel.VMC_CONFIG_BAD:
        with contextlib.suppress(ValueError):
            VMCConfig(**kwargs)
            continue
        rejected += 1
    counts['VMCConfig'] = (rejected, len(rel.VMC_CONFIG_BAD))
    dot = QuantumDot()
    vmc = VMC(make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)),
              dot, [dot.context(1, 1, lam=1.0)], optax.adam(1e-3), VMCConfig(num_walkers=8))
    rejected = 0
    for kwargs, _ in rel.TRAIN_BAD:
        with contextlib.suppress(ValueError):
            train(vmc, None, jax.random.PRNGKey(0), **dict(dict(num_steps=2), **kwargs))
            continue
        rejected += 1
    counts['train arguments'] = (rejected, len(rel.TRAIN_BAD))
    for name, (got, total) in counts.items():
        report({'benchmark': 'reliability (d) invalid inputs', 'inputs': name, 'rejected': f'{got}/{total}'})
    total = sum(t for _, t in counts.values())
    report({'benchmark': 'reliability (d) invalid inputs', 'inputs': 'all', 'rejected':
            f'{sum(g for g, _ in counts.values())}/{total}'})
    assert all(got == total for got, total in counts.values()), counts
