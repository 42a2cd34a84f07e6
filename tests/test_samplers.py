"""Walker-ensemble kernels (RWM, MALA) sample known densities; tolerances from the MC error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from ansatz import FermiSetsConfig, make_fermi_sets, make_noninteracting_dot
from hamiltonians import QuantumDot
from qvmc import VMCConfig
from qvmc.inference import Predictor
from samplers.stats import compute_stats

SIGMA = np.array([1.0, 2.0])  # an anisotropic 2D Gaussian, one "electron"


def _gaussian_logdensity(x):  # x: [1, 2]
    return -0.5 * jnp.sum((x[0] / SIGMA)**2)


@pytest.mark.parametrize('name', samplers.SAMPLERS)
def test_kernel_samples_gaussian_moments(name):
    """⟨x⟩ = 0 and ⟨x_d²⟩ = σ_d² within 4 autocorrelation-aware standard errors."""
    kernel = jax.jit(samplers.make_kernel(name, num_substeps=4), static_argnums=2)
    spec = samplers.kernel_spec(name)
    state = samplers.init(jnp.zeros((128, 1, 2)), _gaussian_logdensity)
    step = jnp.asarray(0.5)
    draws = []
    for t in range(300):
        state, info = kernel(jax.random.PRNGKey(t), state, _gaussian_logdensity, step)
        if t < 100:
            step = samplers.adapt_step_size(step, info.acceptance, spec.target_acceptance)
        else:
            draws.append(np.asarray(state.position[:, 0, :]))
    x = np.stack(draws, axis=1)  # [W, T, 2]
    for d in range(2):
        first = compute_stats(x[..., d])
        second = compute_stats(x[..., d]**2)
        assert abs(first.mean) < 4 * first.error, (name, d, first)
        assert abs(second.mean - SIGMA[d]**2) < 4 * second.error, (name, d, second)
    assert 0.2 < float(info.acceptance) < 0.95


@pytest.mark.parametrize('name', samplers.SAMPLERS)
def test_kernel_samples_density_with_node(name):
    """p ∝ x₁² exp(-|x|²) has a node at x₁ = 0: ⟨x₁²⟩ = 3/2, ⟨x₂²⟩ = 1/2 (Langevin needs its drift limit)."""
    def logdensity(x):
        return jnp.log(x[0, 0]**2) - jnp.sum(x**2)
    kernel = jax.jit(samplers.make_kernel(name, num_substeps=4), static_argnums=2)
    spec = samplers.kernel_spec(name)
    state = samplers.init(jax.random.normal(jax.random.PRNGKey(0), (256, 1, 2)), logdensity)
    step, draws = jnp.asarray(0.3), []
    for t in range(500):
        state, info = kernel(jax.random.PRNGKey(t), state, logdensity, step)
        if t < 150:
            step = samplers.adapt_step_size(step, info.acceptance, spec.target_acceptance)
        else:
            draws.append(np.asarray(state.position[:, 0, :]**2))
    x2 = np.stack(draws, axis=1)  # [W, T, 2]
    for d, exact in enumerate((1.5, 0.5)):
        st = compute_stats(x2[..., d])
        assert abs(st.mean - exact) < 4 * st.error, (name, d, st)


def test_nonfinite_logdensity_is_rejected():
    """Proposals into a region of -inf / NaN log-density are never accepted; walkers stay finite."""
    def logdensity(x):
        return jnp.where(x[0, 0] > 0.5, jnp.nan, -0.5 * jnp.sum(x**2))
    kernel = samplers.make_kernel('rwm', num_substeps=20)
    state = samplers.init(jnp.zeros((64, 1, 2)), logdensity)
    state, _ = kernel(jax.random.PRNGKey(0), state, logdensity, 1.0)
    assert np.all(np.asarray(state.position[:, 0, 0]) <= 0.5)
    assert np.all(np.isfinite(np.asarray(state.logdensity)))


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match='Unknown sampler'):
        samplers.make_kernel('nuts')
    with pytest.raises(ValueError, match='num_substeps'):
        samplers.make_kernel('rwm', num_substeps=0)
    with pytest.raises(ValueError, match='sampler'):
        VMCConfig(sampler='gibbs')


@pytest.mark.parametrize('name', samplers.SAMPLERS)
def test_oscillator_ground_state_r2(name):
    """|ψ|² of the (3,3) non-interacting ground state: ⟨½ Σ r²⟩ = E/2 = 5 (virial theorem)."""
    dot = QuantumDot()
    predictor = Predictor(make_noninteracting_dot(), dot, VMCConfig(sampler=name, mcmc_substeps=4),
                          density_bins=0)
    est = predictor.estimate({}, dot.context(3, 3, lam=0.0), jax.random.PRNGKey(1), num_walkers=128,
                             num_steps=80, burn_in_chunk=25, min_burn_in=50, max_burn_in=200)
    trap = est.components['trap']
    assert abs(trap.mean - 5.0) < 4 * trap.error, (name, trap)
    assert abs(est.energy.mean - 10.0) < 1e-8


@pytest.mark.slow
def test_samplers_agree_on_fixed_wavefunction():
    """RWM and MALA give energies that agree within error bars for one fixed (untrained) network."""
    dot = QuantumDot()
    ctx = dot.context(2, 1, lam=2.0)
    wf = make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=2, hidden=8))
    x0 = dot.init_walkers(jax.random.PRNGKey(0), ctx, 1)[0]
    params = wf.init(jax.random.PRNGKey(2), x0, dot.context_features(ctx.values, *ctx.spins), ctx.spins, 0.0)
    results = {}
    for name in samplers.SAMPLERS:
        predictor = Predictor(wf, dot, VMCConfig(sampler=name, mcmc_substeps=5), density_bins=0)
        results[name] = predictor.estimate(params, ctx, jax.random.PRNGKey(3), num_walkers=256,
                                           num_steps=300).energy
    for a in samplers.SAMPLERS:
        for b in samplers.SAMPLERS:
            diff = abs(results[a].mean - results[b].mean)
            assert diff < 4 * np.hypot(results[a].error, results[b].error), results
