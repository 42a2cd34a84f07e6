"""Optimizers: Adam vs SR vs minSR on the N = 6 (3↑3↓), ω = 1, λ = 1 dot (DMC 20.1597(2)), same
network, walkers and seed, in one run; and the cost of one minSR update vs parameter count.

Sizes from the environment: QVMC_BENCH_OPT_STEPS (300), QVMC_BENCH_WALKERS (256),
QVMC_BENCH_WIDTH (16), QVMC_BENCH_MINSR_BATCH (256), QVMC_BENCH_MINSR_PARAMS
(comma-separated, default 10000,100000,1000000).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from qvmc import VMC, VMCConfig, natgrad
from qvmc.scores import num_params
from envvars import env_int, env_list

DMC = 20.1597
WINDOW = 20  # training energies are averaged over this many steps before comparing


def _optimizers():
    return {
        'adam': optax.adam(3e-3),
        'sr (cg)': natgrad.sr(0.05, 1e-3, max_norm=1e-2, solver='cg', cg_maxiter=100),
        'minsr': natgrad.minsr(0.05, 1e-3, max_norm=1e-2),
    }


@pytest.mark.parametrize('name', list(_optimizers()))
def test_steps_to_dmc(name, report):
    steps, walkers, width = (env_int('QVMC_BENCH_OPT_STEPS', 300), env_int('QVMC_BENCH_WALKERS', 256),
                             env_int('QVMC_BENCH_WIDTH', 16))
    dot = QuantumDot()
    ctx = dot.context(3, 3, lam=1.0)
    wf = make_fermi_sets(FermiSetsConfig(width=width, hidden=width, num_layers=2, num_determinants=2))
    vmc = VMC(wf, dot, [ctx], _optimizers()[name], VMCConfig(num_walkers=walkers, mcmc_substeps=10))
    state = vmc.run_mcmc(jax.random.PRNGKey(1), vmc.init(jax.random.PRNGKey(0)), 30)
    energies, times, reached = [], [], None
    for t in range(steps):
        start = time.perf_counter()
        state, info = vmc.step(jax.random.PRNGKey(100 + t), state)
        times.append(time.perf_counter() - start)
        energies.append(float(info.loss))
        if reached is None and t + 1 >= WINDOW and np.mean(energies[-WINDOW:]) - DMC < 5e-3:
            reached = (t + 1, float(np.sum(times)))
    final = float(np.mean(energies[-WINDOW:]))
    report({'benchmark': 'optimizer N=6 (3,3) λ=1', 'optimizer': name, 'params': num_params(state.params),
            'walkers': walkers, 'steps': steps, 'steps to DMC+5mHa': reached[0] if reached else None,
            'seconds to DMC+5mHa': reached[1] if reached else None,
            f'final {WINDOW}-step mean': final, 'minus DMC (mHa)': 1e3 * (final - DMC),
            's/step (after compile)': float(np.median(times[1:])), 'rejected': int(state.num_rejected)})
    assert np.isfinite(final)


@pytest.mark.parametrize('num_parameters', env_list('QVMC_BENCH_MINSR_PARAMS', '10000,100000,1000000', minimum=1))
def test_minsr_update_cost(num_parameters, report):
    """One minSR update (float32 scores, float64 kernel and solve) at fixed batch: time and XLA's
    compiled memory estimate (arguments + temporaries)."""
    batch = env_int('QVMC_BENCH_MINSR_BATCH', 256)
    params = {'w': jnp.zeros((num_parameters,), jnp.float32)}
    tx = natgrad.minsr(1e-2, 1e-3)
    scores = jax.random.normal(jax.random.PRNGKey(0), (batch, num_parameters), jnp.float32)
    energies = jax.random.normal(jax.random.PRNGKey(1), (batch,), jnp.float64)
    ids = jnp.zeros((batch,), jnp.int32)

    def update(state, o, e):
        return tx.update(None, state, params, scores=o, local_energies=e, context_ids=ids, num_contexts=1)[0]
    state = tx.init(params)
    compiled = jax.jit(update).lower(state, scores, energies).compile()
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(state, scores, energies))
    start = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(compiled(state, scores, energies))
    seconds = (time.perf_counter() - start) / 3
    row = {'benchmark': 'minSR update', 'params': num_parameters, 'batch': batch, 'seconds': seconds}
    if memory is not None:
        row.update({'argument MB': memory.argument_size_in_bytes / 2**20,
                    'temp MB': memory.temp_size_in_bytes / 2**20})
    report(row)


@pytest.mark.parametrize('normalize', [False, True])
def test_per_context_normalization(normalize, report):
    """Two contexts with very different energy scales, N = 2 (E = 3) and N = 6 (DMC 20.1597) at λ = 1,
    trained together by Adam with and without per-context normalization of the centred energies."""
    steps, walkers, width = (env_int('QVMC_BENCH_OPT_STEPS', 300), env_int('QVMC_BENCH_WALKERS', 256),
                             env_int('QVMC_BENCH_WIDTH', 16))
    dot = QuantumDot()
    contexts = [dot.context(1, 1, lam=1.0), dot.context(3, 3, lam=1.0)]
    wf = make_fermi_sets(FermiSetsConfig(width=width, hidden=width, num_layers=2, num_determinants=2))
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=10, normalize_energy_scale=normalize)
    vmc = VMC(wf, dot, contexts, optax.adam(3e-3), config)
    state = vmc.run_mcmc(jax.random.PRNGKey(1), vmc.init(jax.random.PRNGKey(0)), 30)
    energies = []
    for t in range(steps):
        state, info = vmc.step(jax.random.PRNGKey(100 + t), state)
        energies.append([float(s.energy) for s in info.blocks])
    final = np.mean(np.asarray(energies)[-WINDOW:], axis=0)
    report({'benchmark': 'per-context normalization (Adam)', 'normalize': normalize, 'steps': steps,
            'N=2 minus exact (mHa)': 1e3 * (final[0] - 3.0), 'N=6 minus DMC (mHa)': 1e3 * (final[1] - DMC)})
