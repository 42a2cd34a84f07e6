"""The NumPyro-style MCMC driver: known moments, agreement with ArviZ, export, bad input."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers.mcmc import MCMC


def _logdensity(x):  # standard normal in 2D, one "electron": [1, 2]
    return -0.5 * jnp.sum(x**2)


def _extra(x):
    return {'x': x[0, 0], 'x2': x[0, 0]**2}


@pytest.fixture(scope='module')
def gaussian_run():
    mcmc = MCMC('rwm', num_warmup=50, num_samples=400, num_chains=32, num_substeps=3, keep_positions=True)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 1, 2))
    return mcmc.run(jax.random.PRNGKey(1), _logdensity, x0, extra_fn=_extra)


def test_moments_and_shapes(gaussian_run):
    """⟨x⟩ = 0 and ⟨x²⟩ = 1 within 4 standard errors; traces are (chain, draw)."""
    fields = gaussian_run.get_extra_fields()
    assert fields['x'].shape == (32, 400) and fields['acceptance'].shape == (400,)
    assert gaussian_run.get_samples()['position'].shape == (32, 400, 1, 2)
    assert gaussian_run.get_samples(group_by_chain=False)['position'].shape == (32 * 400, 1, 2)
    table = gaussian_run.summary().set_index('field')
    assert abs(table.loc['x', 'mean']) < 4 * table.loc['x', 'error']
    assert abs(table.loc['x2', 'mean'] - 1.0) < 4 * table.loc['x2', 'error']


def test_summary_agrees_with_arviz(gaussian_run):
    """Mean and rank-R̂ equal ArviZ's on the same traces; our blocking ESS is within 2× of ArviZ's bulk ESS."""
    idata = gaussian_run.to_arviz()
    assert idata.posterior['x2'].dims == ('chain', 'draw')
    ours = gaussian_run.summary().set_index('field')
    trace = gaussian_run.get_extra_fields()['x2']
    np.testing.assert_allclose(ours.loc['x2', 'mean'], float(idata.posterior['x2'].mean()), rtol=1e-12)
    np.testing.assert_allclose(ours.loc['x2', 'rhat'], float(az.rhat(trace)), rtol=1e-10)
    ess_arviz = float(az.ess(trace))
    assert 0.5 < ours.loc['x2', 'ess'] / ess_arviz < 2.0, (ours.loc['x2', 'ess'], ess_arviz)


def test_bad_input():
    mcmc = MCMC('rwm', num_warmup=1, num_samples=2, num_chains=4)
    with pytest.raises(ValueError, match='non-finite'):
        mcmc.run(jax.random.PRNGKey(0), _logdensity, jnp.full((4, 1, 2), jnp.nan))
    with pytest.raises(ValueError, match='num_chains'):
        mcmc.run(jax.random.PRNGKey(0), _logdensity, jnp.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match='step_size'):
        MCMC('rwm', num_warmup=1, num_samples=2, num_chains=4, step_size=0.0)
    with pytest.raises(ValueError, match='keep_positions'):
        mcmc.run(jax.random.PRNGKey(0), _logdensity, jnp.zeros((4, 1, 2)))
        mcmc.get_samples()


def test_print_summary(gaussian_run, capsys):
    gaussian_run.print_summary()
    out = capsys.readouterr().out
    assert 'x2' in out and 'mean acceptance' in out


def test_local_energy_fields_on_quantum_dot():
    """MCMC over |ψ|² of the exact (2,1) non-interacting determinant with local-energy extra
    fields: E_L = 4 at every draw (zero variance), components sum to it, ⟨trap⟩ = E/2 (virial)."""
    from ansatz import make_noninteracting_dot
    from hamiltonians import QuantumDot
    from qvmc.inference import mcmc_functions
    dot = QuantumDot()
    ctx = dot.context(2, 1, lam=0.0)
    logdensity, extra = mcmc_functions(make_noninteracting_dot(), dot, ctx, {})
    mcmc = MCMC('mala', num_warmup=50, num_samples=150, num_chains=64, num_substeps=3, step_size=0.2)
    mcmc.run(jax.random.PRNGKey(0), logdensity, dot.init_walkers(jax.random.PRNGKey(1), ctx, 64), extra_fn=extra)
    fields = mcmc.get_extra_fields()
    assert fields['energy'].shape == (64, 150)
    np.testing.assert_allclose(fields['energy'], 4.0, atol=1e-8)
    np.testing.assert_allclose(fields['kinetic'] + fields['trap'] + fields['interaction'], fields['energy'], atol=1e-10)
    table = mcmc.summary().set_index('field')
    assert abs(table.loc['trap', 'mean'] - 2.0) < 4 * table.loc['trap', 'error']
    assert set(mcmc.to_arviz().posterior.data_vars) >= {'energy', 'kinetic', 'trap', 'interaction'}
