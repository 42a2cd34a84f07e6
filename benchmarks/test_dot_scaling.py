"""Quantum dots at large N: the training step's cost, its parts and memory per walker vs N, and fitted exponents.

Unpolarized closed shells (S_z = 0) at λ = 1, ω = 1, one context per N, trained as the shipped
``foundation_unpolarized`` model was: Fermi Sets (the shipped configuration, and a wider one),
float32 network with float64 reductions, minSR (float64 kernel), random-walk Metropolis.
Every size runs in its own watched subprocess (this file is its entry point; see ``watch.py`` for
the XLA CPU stall it guards against). Per size it reports:

* ``compile s``: compile and first run of the whole training step;
* ``step s``: the median of 3 whole steps; the parts, each jitted alone (median of 3):
  ``sampling s`` (all MCMC sub-steps), ``local energy s`` (forward Laplacian), ``scores s`` (per-walker
  gradients of log|ψ|), ``solve s`` (minSR kernel, solve and update);
* ``MB/walker``: XLA's buffer assignment of the step compiled for W and 2W walkers (arguments +
  outputs + temporaries), the difference per walker; ``max RSS MB`` of the timing process.

Power laws ``y = a·N^b`` are fitted to the step time and the memory per walker over N ≥ 12.

Settings from the environment:

* ``QVMC_BENCH_DOT_N`` (``6,12,20,30,42,56``): electron numbers (closed shells of the 2D dot).
* ``QVMC_BENCH_DOT_WALKERS`` (32): walkers of the timed step (the shipped model trained with 32).
* ``QVMC_BENCH_DOT_SUBSTEPS`` (10): MCMC sub-steps per step (the shipped model's).
* ``QVMC_BENCH_DOT_CONFIGS`` (``shipped,wide``): ``shipped`` = width 32, 2 layers, 4 determinants
  (29K parameters at any N); ``wide`` = width 64, 3 layers, 8 determinants.
* ``QVMC_BENCH_DOT_MEMORY_WALKERS`` (8): W of the memory measurement.
* ``QVMC_BENCH_DOT_ENERGY_PASS`` (``auto``): ``auto`` = the backend's energy passes (on a CPU about
  9216/(N·D)² walkers per pass); ``all`` = every walker in one pass, as on an accelerator, so that
  ``MB/walker`` is the memory a GPU needs per walker (what sizes ``VMCConfig.chunk_size`` there).
"""

import json
import os
import sys

import numpy as np
import pytest

from envvars import env_int, env_list
from test_scaling import CPU_FLAGS, power_law
from watch import measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = env_list('QVMC_BENCH_DOT_N', '6,12,20,30,42,56', minimum=2)
CONFIGS = {'shipped': dict(width=32, num_layers=2, num_determinants=4, hidden=32),
           'wide': dict(width=64, num_layers=3, num_determinants=8, hidden=64)}
CHOSEN = [c for c in os.environ.get('QVMC_BENCH_DOT_CONFIGS', 'shipped,wide').split(',') if c]
if set(CHOSEN) - set(CONFIGS):
    raise ValueError(f'QVMC_BENCH_DOT_CONFIGS: unknown {sorted(set(CHOSEN) - set(CONFIGS))}; use {sorted(CONFIGS)}.')
ENERGY_PASS = os.environ.get('QVMC_BENCH_DOT_ENERGY_PASS', 'auto')
if ENERGY_PASS not in ('auto', 'all'):
    raise ValueError(f"QVMC_BENCH_DOT_ENERGY_PASS must be 'auto' or 'all', got {ENERGY_PASS!r}.")
ROWS = []


def _run(job):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
    if env['JAX_PLATFORMS'] == 'cpu':
        env['XLA_FLAGS'] = os.environ.get('QVMC_BENCH_XLA_FLAGS', CPU_FLAGS)
    result, restarts = measure(__file__, job, env)
    if result is None:
        pytest.fail(f'{job} stalled {restarts} times (XLA CPU deadlock); try QVMC_BENCH_XLA_FLAGS or a GPU.')
    return dict(result, restarts=restarts)


@pytest.mark.parametrize('config', CHOSEN)
@pytest.mark.parametrize('n', SIZES)
def test_dot_step_parts_and_memory_vs_n(n, config, report):
    walkers = env_int('QVMC_BENCH_DOT_WALKERS', 32)
    timed = _run({'mode': 'time', 'n': n, 'config': config, 'walkers': walkers,
                  'substeps': env_int('QVMC_BENCH_DOT_SUBSTEPS', 10), 'energy_pass': ENERGY_PASS})
    memory = _run({'mode': 'memory', 'n': n, 'config': config, 'walkers': env_int('QVMC_BENCH_DOT_MEMORY_WALKERS', 8),
                   'substeps': env_int('QVMC_BENCH_DOT_SUBSTEPS', 10), 'energy_pass': ENERGY_PASS})
    row = {'benchmark': 'dot step vs N', 'N': n, 'config': config, 'energy pass': ENERGY_PASS,
           'parameters': memory['num_params'],
           'walkers': walkers, **{k: round(v, 4) for k, v in timed['seconds'].items()},
           'compile s': round(timed['compile_seconds'], 1), 'MB/walker': round(memory['bytes_per_walker'] / 1e6, 2),
           'max RSS MB': round(timed['max_rss_bytes'] / 1e6), 'restarts': timed['restarts'] + memory['restarts']}
    ROWS.append(row)
    report(row)


@pytest.mark.parametrize('config', CHOSEN)
def test_dot_fitted_exponents(config, report):
    rows = [r for r in ROWS if r['config'] == config and r['N'] >= 12]
    if len(rows) < 2:
        pytest.skip('needs two timed sizes with N ≥ 12 (QVMC_BENCH_DOT_N)')
    n = [r['N'] for r in rows]
    fits = {what: power_law(n, [r[what] for r in rows])[1]
            for what in ('step s', 'sampling s', 'local energy s', 'scores s', 'solve s', 'MB/walker')}
    report({'benchmark': 'dot exponents (N ≥ 12)', 'config': config, 'N': f'{min(n)}-{max(n)}',
            **{f'{k} ~ N^b': round(b, 2) for k, b in fits.items()}})


# ----------------------------------------------------------------------------------------------
# Subprocess side: python benchmarks/test_dot_scaling.py '<json job>' prints one JSON line.

def _setup(job, walkers):
    import jax
    from ansatz import FermiSetsConfig, make_fermi_sets
    from hamiltonians import QuantumDot
    from qvmc import VMC, VMCConfig, natgrad
    n = job['n']
    dot = QuantumDot(max_electrons=max(30, n))
    ctx = dot.context((n + 1) // 2, n // 2, lam=1.0, omega=1.0)
    wavefunction = make_fermi_sets(FermiSetsConfig(**CONFIGS[job['config']]))
    batch = walkers if job.get('energy_pass') == 'all' else None  # all walkers in one energy pass
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=job['substeps'], network_dtype='float32',
                       energy_batch_size=batch)
    optimizer = natgrad.minsr(0.05, 1e-3, max_norm=1e-2, kernel_precision='float64')
    vmc = VMC(wavefunction, dot, [ctx], optimizer, config)
    return vmc, vmc.init(jax.random.PRNGKey(0)), ctx


def _median(fn, *args):
    import time
    import jax
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _time(job):
    """Compile + first step, the median whole step, and each part jitted alone."""
    import resource
    import time
    import jax
    from qvmc.estimator import block_score_rows, estimate_block, make_block_functions
    vmc, state, ctx = _setup(job, job['walkers'])
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    jax.block_until_ready(vmc.step(key, state))
    compile_seconds = time.perf_counter() - start
    seconds = {'step s': _median(vmc.step, key, state)}
    fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, vmc.config)
    params, chain, values = state.params, state.chains[0], state.values[0]
    e_loc, comps = jax.jit(lambda w: fns.energies(params, w, values))(chain.walkers)
    est = estimate_block(e_loc, comps, np.int32(0), vmc.config)
    o, _ = jax.jit(lambda w: block_score_rows(fns, params, w, values, est))(chain.walkers)
    ids, weights = jax.numpy.zeros(o.shape[0], jax.numpy.int32), jax.numpy.ones(1)

    def solve(rows):
        return vmc.optimizer.update(None, state.opt_state, params, scores=rows, local_energies=est.centred,
                                    context_ids=ids, context_weights=weights)[0]
    seconds['sampling s'] = _median(jax.jit(lambda k, c: fns.sample(k, params, c, values)), key, chain)
    seconds['local energy s'] = _median(jax.jit(lambda w: fns.energies(params, w, values)), chain.walkers)
    seconds['scores s'] = _median(jax.jit(lambda w: fns.scores(params, w, values)), chain.walkers)
    seconds['solve s'] = _median(jax.jit(solve), o)
    return {'seconds': seconds, 'compile_seconds': compile_seconds,
            'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _memory(job):
    """Compiles (never runs) the pure step for W and 2W walkers: XLA's buffer sizes per walker."""
    import jax
    from qvmc.scores import num_params
    peaks = []
    for walkers in (job['walkers'], 2 * job['walkers']):
        vmc, state, _ = _setup(job, walkers)
        stats = vmc._step.lower(jax.random.PRNGKey(1), state).compile().memory_analysis()
        peaks.append(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
                     - stats.alias_size_in_bytes)
    return {'bytes_per_walker': (peaks[1] - peaks[0]) / job['walkers'], 'peak_bytes': peaks,
            'num_params': num_params(state.params)}


def _main(job):
    sys.path.insert(0, ROOT)
    import jax
    jax.config.update('jax_enable_x64', True)
    print(json.dumps({'time': _time, 'memory': _memory}[job['mode']](job)))


if __name__ == '__main__':
    _main(json.loads(sys.argv[1]))
