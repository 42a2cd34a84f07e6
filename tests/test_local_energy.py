"""Kinetic and local energy: forward Laplacian vs Hessian, and closed-form cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ansatz
from hamiltonians import KINETIC_METHODS, QuantumDot, make_kinetic_energy, make_local_energy
from hamiltonians.system import make_log_psi

SMALL_CONFIG = ansatz.FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=2, hidden=8)


@pytest.fixture(scope='module')
def fermi_sets():
    """A small randomly initialized Fermi Sets wavefunction (one parameter set for all N)."""
    wf = ansatz.make_fermi_sets(SMALL_CONFIG)
    dot = QuantumDot()
    ctx = dot.context(2, 1, lam=2.0)
    cond = dot.context_features(ctx.values, 2, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    params = jax.jit(wf.init, static_argnums=(3,))(jax.random.PRNGKey(1), x, cond, (2, 1), 2.0)
    return wf, params


@pytest.mark.parametrize('spins, thresholds', [((2, 1), (0,)), ((3, 3), (0,)), ((4, 0), (0,)), ((4, 4), (0, 8))])
def test_folx_matches_hessian_on_fermi_sets(fermi_sets, spins, thresholds):
    """The forward-Laplacian kinetic energy, dense and (at N = 8) with folx's sparse Jacobians (threshold 8,
    the automatic choice at large N), equals the Hessian-diagonal one (same ∇²logψ + |∇logψ|²)."""
    wf, params = fermi_sets
    dot = QuantumDot()
    ctx = dot.context(*spins, lam=2.0, omega=1.0)
    log_psi = make_log_psi(wf, dot, spins)
    walkers = dot.init_walkers(jax.random.PRNGKey(sum(spins)), ctx, 4)

    def both(p, x, values):
        kinetic = {}
        for method, threshold in [('folx', t) for t in thresholds] + [('hessian', 0)]:
            local_energy = make_local_energy(log_psi, dot.potential_components, method, sparsity_threshold=threshold)
            kinetic[method, threshold] = local_energy(p, x, values)[1]['kinetic']
        return kinetic

    kinetic = jax.jit(jax.vmap(both, in_axes=(None, 0, None)))(params, walkers, ctx.values)
    folx_ke, hessian_ke = np.asarray(kinetic['folx', 0]), np.asarray(kinetic['hessian', 0])
    assert np.all(np.isfinite(folx_ke))
    np.testing.assert_allclose(folx_ke, hessian_ke, rtol=1e-8, atol=1e-10)
    for threshold in thresholds[1:]:
        np.testing.assert_allclose(np.asarray(kinetic['folx', threshold]), hessian_ke, rtol=1e-8, atol=1e-10)


def test_laplacian_sparsity_setting():
    """``VMCConfig.laplacian_sparsity``: automatic by N (dense below 12 electrons), a fixed value
    everywhere, and bad values refused with the field's name (also by the factories)."""
    from qvmc import VMCConfig
    assert [VMCConfig().sparsity_for(n) for n in (2, 6, 11, 12, 30)] == [0, 0, 0, 8, 8]
    assert VMCConfig(laplacian_sparsity=0).sparsity_for(30) == 0
    assert VMCConfig(laplacian_sparsity=4).sparsity_for(2) == 4
    for bad in (-1, 2.5, True, '8'):
        with pytest.raises(ValueError, match='laplacian_sparsity'):
            VMCConfig(laplacian_sparsity=bad)
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match='sparsity_threshold'):
            make_kinetic_energy(lambda x: jnp.sum(x), 'folx', sparsity_threshold=bad)
        with pytest.raises(ValueError, match='sparsity_threshold'):
            make_local_energy(lambda p, x, v: jnp.sum(x), QuantumDot().potential_components, 'folx',
                              sparsity_threshold=bad)


def test_unknown_kinetic_method_rejected():
    """An unknown kinetic method raises ValueError naming it, in both factories."""
    with pytest.raises(ValueError, match='kinetic method'):
        make_kinetic_energy(lambda x: jnp.sum(x), 'finite_differences')
    with pytest.raises(ValueError, match='kinetic method'):
        make_local_energy(lambda p, x, v: jnp.sum(x), QuantumDot().potential_components, 'laplace')


@pytest.mark.parametrize('method', ['folx', 'hessian'])
def test_gaussian_kinetic_energy_closed_form(method):
    """For log ψ = -|x|²/2 of one 2D particle: -½(∇²logψ + |∇logψ|²) = -½(-2 + r²) = 1 - r²/2."""
    kinetic = jax.jit(jax.vmap(make_kinetic_energy(lambda x: -0.5 * jnp.sum(x**2), method)))
    walkers = jax.random.normal(jax.random.PRNGKey(0), (16, 1, 2)) * 2.0
    r2 = np.sum(np.asarray(walkers)**2, axis=(1, 2))
    np.testing.assert_allclose(kinetic(walkers), 1.0 - 0.5 * r2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('method', ['folx', 'hessian'])
def test_local_energy_components_sum_to_total(method):
    """E_L equals kinetic + trap + interaction; a Gaussian at ω=1, λ=0 gives E_L = 1 per particle in 2D."""
    dot = QuantumDot()
    ctx = dot.context(2, 0, lam=0.0)
    local_energy = make_local_energy(lambda p, x, v: -0.5 * jnp.sum(x**2), dot.potential_components, method)
    walkers = jax.random.normal(jax.random.PRNGKey(1), (8, 2, 2))
    total, comps = jax.jit(jax.vmap(local_energy, in_axes=(None, 0, None)))(None, walkers, ctx.values)
    assert set(comps) == {'kinetic', 'trap', 'interaction'}
    np.testing.assert_allclose(total, comps['kinetic'] + comps['trap'] + comps['interaction'], rtol=1e-14)
    np.testing.assert_allclose(total, 2.0, rtol=1e-12)


def test_energy_batches_equal_one_pass(fermi_sets):
    """``VMCConfig.energy_batch_size`` only changes how many walkers share a pass: 11 walkers in
    passes of 4 (two strided passes and a remainder) give the one-pass energies to rounding; the
    automatic batch on a CPU follows ``CPU_ENERGY_WORKSET``, and a smaller ``chunk_size`` wins."""
    from qvmc.config import VMCConfig
    from qvmc.parallel import CPU_ENERGY_WORKSET
    from qvmc.estimator import make_block_functions
    wf, params = fermi_sets
    dot = QuantumDot()
    ctx = dot.context(2, 1, lam=2.0)
    walkers = dot.init_walkers(jax.random.PRNGKey(5), ctx, 11)
    energies = {}
    for batch in (4, 11):
        fns = make_block_functions(wf, dot, ctx.spins, VMCConfig(energy_batch_size=batch))
        energies[batch] = jax.jit(fns.energies)(params, walkers, ctx.values)
    np.testing.assert_allclose(np.asarray(energies[4][0]), np.asarray(energies[11][0]), rtol=1e-12)
    for name in energies[11][1]:
        np.testing.assert_allclose(np.asarray(energies[4][1][name]), np.asarray(energies[11][1][name]),
                                   rtol=1e-12, atol=1e-12)
    assert VMCConfig(energy_batch_size=32, chunk_size=5).energy_chunk(12, 1024) == 5
    assert VMCConfig(energy_batch_size=3, chunk_size=5).energy_chunk(12, 1024) == 3
    assert VMCConfig(energy_batch_size=48).energy_chunk(12, 100) == 48  # explicit: a remainder pass is allowed
    if jax.default_backend() == 'cpu':
        assert CPU_ENERGY_WORKSET == 9216  # walkers × (N·D)²
        assert [VMCConfig().energy_chunk(c, 4096) for c in (1, 12, 20, 32, 48, 1000)] == [256, 64, 32, 8, 4, 4]
        # equal passes that divide the walkers (no second program for a remainder), or one pass
        assert [VMCConfig().energy_chunk(12, w) for w in (64, 100, 192, 1000, 97)] == [None, 50, 64, 50, None]
        assert VMCConfig(chunk_size=16).energy_chunk(12, 1024) == 16
