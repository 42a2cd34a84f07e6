"""Sampler efficiency at N = 6 for a fixed, briefly trained Fermi Sets wavefunction: throughput
(walker-steps/s), integrated autocorrelation time of the local energy and effective samples per
second for every kernel, all in one run.

Sizes from the environment: QVMC_BENCH_SAMPLER_TRAIN (150 training steps), QVMC_BENCH_WALKERS
(256), QVMC_BENCH_DRAWS (200 recorded calls), QVMC_BENCH_SUBSTEPS (10 transitions per call).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import samplers
from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from qvmc import VMC, VMCConfig
from samplers.stats import compute_stats
from hamiltonians import make_log_psi
from qvmc.estimator import make_block_functions
from envvars import env_int


@pytest.fixture(scope='module')
def trained():
    dot = QuantumDot()
    ctx = dot.context(3, 3, lam=1.0)
    wf = make_fermi_sets(FermiSetsConfig(width=16, num_layers=1, num_heads=2, num_determinants=2, hidden=16))
    vmc = VMC(wf, dot, [ctx], optax.adam(3e-3), VMCConfig(num_walkers=128, mcmc_substeps=5))
    state = vmc.run_mcmc(jax.random.PRNGKey(0), vmc.init(jax.random.PRNGKey(0)), 20)
    for t in range(env_int('QVMC_BENCH_SAMPLER_TRAIN', 150)):
        state, _ = vmc.step(jax.random.PRNGKey(t), state)
    return dot, ctx, wf, state.params


@pytest.mark.parametrize('name', samplers.SAMPLERS)
def test_sampler_efficiency(trained, name, report):
    dot, ctx, wf, params = trained
    walkers, draws, substeps = (env_int('QVMC_BENCH_WALKERS', 256), env_int('QVMC_BENCH_DRAWS', 200),
                                env_int('QVMC_BENCH_SUBSTEPS', 10))
    log_psi = make_log_psi(wf, dot, ctx.spins)
    logdensity = lambda x: 2.0 * log_psi(params, x, ctx.values)
    kernel = samplers.make_kernel(name, substeps)
    spec = samplers.kernel_spec(name)
    energies = make_block_functions(wf, dot, ctx.spins, VMCConfig(chunk_size=64)).energies

    @jax.jit
    def warm(key, state, step):
        def body(carry, k):
            st, h = carry
            st, info = kernel(k, st, logdensity, h)
            return (st, samplers.adapt_step_size(h, info.acceptance, spec.target_acceptance)), None
        return jax.lax.scan(body, (state, step), jax.random.split(key, 100))[0]

    @jax.jit
    def measure(key, state, step):
        def body(st, k):
            st, info = kernel(k, st, logdensity, step)
            return st, (st.position, info.acceptance)
        return jax.lax.scan(body, state, jax.random.split(key, draws))

    state = samplers.init(dot.init_walkers(jax.random.PRNGKey(1), ctx, walkers), logdensity)
    state, step = warm(jax.random.PRNGKey(2), state, jnp.asarray(0.3 ** spec.step_size_power))
    jax.block_until_ready(measure(jax.random.PRNGKey(3), state, step))  # compile
    start = time.perf_counter()
    _, (positions, acceptance) = jax.block_until_ready(measure(jax.random.PRNGKey(4), state, step))
    seconds = time.perf_counter() - start

    e_fn = jax.jit(lambda x: energies(params, x, ctx.values)[0])
    trace = np.stack([np.asarray(e_fn(positions[t])) for t in range(draws)], axis=1)  # [W, T]
    stats = compute_stats(trace)
    report({'benchmark': 'sampler efficiency N=6 (3,3) λ=1', 'kernel': name, 'walkers': walkers,
            'draws': draws, 'substeps': substeps, 'step size': float(step),
            'acceptance': float(np.mean(acceptance)),
            'walker-steps/s': walkers * draws * substeps / seconds, 'tau (calls)': stats.tau,
            'ESS': stats.ess, 'ESS/s': stats.ess / seconds, 'energy': stats.mean, 'error': stats.error})
    assert np.isfinite(stats.mean)
