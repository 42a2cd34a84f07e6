"""Decorrelation per second at large N: RWM and MALA with several sub-step counts on a trained
large-N quantum-dot wavefunction (frozen), the question of issue 32's lever list ("MALA or fewer
sub-steps where decorrelation per second is better at large N").

For every kernel and sub-step count: walkers are burned in with step-size adaptation (frozen
afterwards), ``DRAWS`` sampler calls are timed, and the local energy of every draw gives the
integrated autocorrelation time τ (in calls) and the effective sample size. Two rates are
reported: ESS per second of sampling, and ESS per second of a training step's work, that is
sampling plus one local-energy pass per call (the pass is timed once, it does not depend on the
kernel).

Sizes from the environment:

* ``QVMC_BENCH_LARGE_MODEL`` (``foundation_unpolarized_large``): a shipped model's name, a model file, or
  a run directory whose newest checkpoint is exported to a temporary model file first.
* ``QVMC_BENCH_LARGE_N`` (20), ``QVMC_BENCH_LARGE_LAM`` (1.0), ``QVMC_BENCH_LARGE_OMEGA`` (1.0): the
  unpolarized closed shell sampled.
* ``QVMC_BENCH_LARGE_WALKERS`` (64), ``QVMC_BENCH_LARGE_DRAWS`` (100), ``QVMC_BENCH_LARGE_WARM`` (60
  adapting calls).
* ``QVMC_BENCH_LARGE_KERNELS`` (``rwm:5,rwm:10,rwm:20,mala:5,mala:10``): ``kernel:substeps`` pairs.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from hamiltonians import make_log_psi
from qvmc import VMCConfig, pretrained
from qvmc.estimator import make_block_functions
from samplers.stats import compute_stats
from envvars import env_float, env_int, env_str

MODEL = env_str('QVMC_BENCH_LARGE_MODEL', 'foundation_unpolarized_large')
N = env_int('QVMC_BENCH_LARGE_N', 20)
LAM, OMEGA = env_float('QVMC_BENCH_LARGE_LAM', 1.0, inclusive=True), env_float('QVMC_BENCH_LARGE_OMEGA', 1.0)
WALKERS, DRAWS, WARM = (env_int('QVMC_BENCH_LARGE_WALKERS', 64), env_int('QVMC_BENCH_LARGE_DRAWS', 100),
                        env_int('QVMC_BENCH_LARGE_WARM', 60))


def _kernels():
    pairs = []
    for item in env_str('QVMC_BENCH_LARGE_KERNELS', 'rwm:5,rwm:10,rwm:20,mala:5,mala:10').split(','):
        name, _, count = item.partition(':')
        if name not in samplers.SAMPLERS or not count.isdigit() or int(count) < 1:
            raise ValueError(f'QVMC_BENCH_LARGE_KERNELS: bad entry {item!r}; use kernel:substeps with a kernel of '
                             f'{samplers.SAMPLERS} and substeps >= 1, e.g. rwm:10.')
        pairs.append((name, int(count)))
    return pairs


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    path = MODEL
    if os.path.isdir(path):
        path = str(tmp_path_factory.mktemp('model') / 'large_n.qvmc')
        pretrained.export_model(MODEL, path)
    return pretrained.load(path)


@pytest.fixture(scope='module')
def energy_pass(model):
    """The jitted local energies of one draw, and their seconds (one pass, timed once)."""
    ctx = model.context(N, LAM, OMEGA)
    wf = model.predictor().wavefunction
    energies = make_block_functions(wf, model.system, ctx.spins, VMCConfig()).energies
    e_fn = jax.jit(lambda x: energies(model.params, x, ctx.values)[0])
    x = model.system.init_walkers(jax.random.PRNGKey(0), ctx, WALKERS)
    jax.block_until_ready(e_fn(x))
    start = time.perf_counter()
    jax.block_until_ready(e_fn(x))
    return e_fn, time.perf_counter() - start


@pytest.mark.parametrize('name,substeps', _kernels())
def test_decorrelation_per_second(model, energy_pass, name, substeps, report):
    e_fn, energy_seconds = energy_pass
    ctx = model.context(N, LAM, OMEGA)
    log_psi = make_log_psi(model.predictor().wavefunction, model.system, ctx.spins)
    logdensity = lambda x: 2.0 * log_psi(model.params, x, ctx.values)  # noqa: E731
    kernel, spec = samplers.make_kernel(name, substeps), samplers.kernel_spec(name)
    scale = model.system.length_scale(ctx.values) ** spec.step_size_power

    @jax.jit
    def warm(key, state, step):
        def body(carry, k):
            st, h = carry
            st, info = kernel(k, st, logdensity, h * scale)
            return (st, samplers.adapt_step_size(h, info.acceptance, spec.target_acceptance)), None
        return jax.lax.scan(body, (state, step), jax.random.split(key, WARM))[0]

    @jax.jit
    def measure(key, state, step):
        def body(st, k):
            st, info = kernel(k, st, logdensity, step * scale)
            return st, (st.position, info.acceptance)
        return jax.lax.scan(body, state, jax.random.split(key, DRAWS))

    state = samplers.init(model.system.init_walkers(jax.random.PRNGKey(1), ctx, WALKERS), logdensity)
    state, step = warm(jax.random.PRNGKey(2), state, jnp.asarray(0.5))
    state, step = warm(jax.random.PRNGKey(5), state, step)  # a second round: burned in
    jax.block_until_ready(measure(jax.random.PRNGKey(3), state, step))  # compile
    start = time.perf_counter()
    _, (positions, acceptance) = jax.block_until_ready(measure(jax.random.PRNGKey(4), state, step))
    seconds = time.perf_counter() - start
    trace = np.stack([np.asarray(e_fn(positions[t])) for t in range(DRAWS)], axis=1)  # [W, T]
    with np.errstate(invalid='ignore', divide='ignore'):
        stats = compute_stats(trace)
    per_step = seconds + DRAWS * energy_seconds  # a training step's work: one sampler call + one energy pass
    report({'benchmark': f'sampler decorrelation N={N} λ={LAM:g} ω={OMEGA:g}', 'kernel': name, 'substeps': substeps,
            'walkers': WALKERS, 'draws': DRAWS, 'step size': float(step), 'acceptance': float(np.mean(acceptance)),
            's per call': seconds / DRAWS, 'energy pass s': energy_seconds, 'tau (calls)': stats.tau,
            'ESS': stats.ess, 'ESS/s sampling': stats.ess / seconds, 'ESS/s with energies': stats.ess / per_step,
            'energy': stats.mean, 'error': stats.error})
    assert np.isfinite(stats.mean)
