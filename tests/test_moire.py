"""Moiré heterobilayer: units, supercells, periodicity, exact non-interacting determinants, VMC smoke run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ansatz
from hamiltonians import MoireSystem, make_local_energy, per_electron
from hamiltonians import lattice as lat
from hamiltonians.system import make_log_psi
from qvmc.config import VMCConfig
from qvmc.estimator import make_block_functions
from samplers import ChainState

HBAR2_OVER_2ME = 38.0998212  # meV nm², CODATA 2018 (0.0380998212 eV nm²), restated independently


def _local_energies(wf, system, spins, values, walkers):
    """Local energies ``[W]`` and components of a parameter-free wavefunction (jitted, folx)."""
    log_psi = make_log_psi(wf, system, spins)
    local_energy = make_local_energy(log_psi, system.potential_components, 'folx', system.kinetic_scale)
    return jax.jit(jax.vmap(local_energy, in_axes=(None, 0, None)))({}, walkers, values)


def test_units_and_couplings():
    """ħ²/m* = 2 · 38.0998212/0.35 meV nm², e²/ε = 1439.964548/ε meV nm, coupling (e²/ε) a_M m*/ħ²."""
    system = MoireSystem()
    values = {'lam': jnp.asarray(1.0)}
    assert system.kinetic_scale == pytest.approx(2 * HBAR2_OVER_2ME / 0.35, rel=1e-12)
    assert system.coulomb_strength == pytest.approx(1439.964548 / 5.0, rel=1e-12)
    assert float(system.coupling(values)) == pytest.approx(287.9929096 * 8.031 / 217.713264, rel=1e-9)
    assert float(system.length_scale(values)) == 8.031
    assert float(MoireSystem(coulomb=False).coupling(values)) == 0.0
    g = system.moire_vectors()
    assert np.allclose(np.linalg.norm(g, axis=1), 4 * math.pi / (math.sqrt(3) * 8.031))
    assert np.allclose(g.sum(axis=0), 0.0)
    projections = g @ system.primitive_lattice().T / (2 * math.pi)  # g_j · a_i / 2π must be integers
    assert np.allclose(projections, np.round(projections))
    assert system.context_features(values, 6, 0).shape == (4,)
    parts = per_electron({'moire': jnp.asarray(-60.0), 'interaction': jnp.asarray(30.0)}, 6)
    assert float(parts['total']) == pytest.approx(-5.0)


@pytest.mark.parametrize('n,cells,shortest', [(6, 9, 3.0), (18, 27, math.sqrt(27)), (24, 36, 6.0),
                                              (54, 81, 9.0), (96, 144, 12.0), (150, 225, 15.0)])
def test_supercells_are_the_most_compact_hexagonal_ones(n, cells, shortest):
    """ν = 2/3: N/ν cells, hexagonal supercells (3×3, 3√3×3√3 R30°, 6×6, 9×9, 12×12, 15×15)."""
    system = MoireSystem()
    cell = system.network_lattice(n)
    matrix = lat.commensurate_matrix(lat.triangular_lattice(1.0), cell)
    assert round(abs(np.linalg.det(matrix))) == cells == system.num_cells(n)
    assert np.allclose(np.linalg.norm(cell, axis=1), shortest)
    assert cell[0] @ cell[1] == pytest.approx(0.5 * shortest**2)  # 60°: hexagonal
    assert np.allclose(system.supercell(n), cell * 8.031)


def test_bad_input_is_rejected():
    for kwargs in ({'epsilon': 0.0}, {'epsilon': -5.0}, {'a_m': 0.0}, {'a_m': -1.0}, {'m_star': 0.0},
                   {'filling': 0.0}, {'filling': math.pi}):
        with pytest.raises(ValueError):
            MoireSystem(**kwargs)
    system = MoireSystem()
    with pytest.raises(ValueError, match=r'nearby valid N: 6, 8'):
        system.context(7)
    with pytest.raises(ValueError, match='lam'):
        system.context(6, lam=-0.5)
    with pytest.raises(ValueError, match='max_electrons'):
        system.context(202)
    with pytest.raises(ValueError, match='not commensurate'):
        system.band_spectrum(np.array([[20.0, 0.0], [0.0, 20.0]]), 1.0)
    with pytest.raises(ValueError, match='not commensurate'):
        lat.commensurate_matrix(lat.triangular_lattice(1.0), np.array([[1.5, 0.0], [0.5, 0.866]]))
    with pytest.raises(ValueError, match='shape'):
        system.validate_walkers(np.zeros((4, 5, 2)), system.context(6))
    with pytest.raises(ValueError, match='shell'):
        wf = ansatz.make_plane_wave_slater(system.network_lattice(6))
        wf.init(jax.random.PRNGKey(0), jnp.zeros((6, 2)), jnp.zeros(4), (6, 0))


def test_potential_minimum_and_curvature():
    """V is lowest at the origin, −6 λ V0 cos φ, with curvature k = 3 λ V0 cos φ |g|² (isotropic)."""
    system = MoireSystem()
    lam = 1.3
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 121), np.linspace(0, 1, 121)), -1).reshape(-1, 2)
    points = jnp.asarray(grid @ system.primitive_lattice())
    values = jax.vmap(lambda r: system.moire_potential(r[None], lam))(points)
    v_min = -6 * lam * 15.0 * math.cos(math.pi / 4)
    assert float(jnp.min(values)) >= v_min - 1e-9
    assert np.allclose(system.potential_minimum(), 0.0)
    hessian = jax.hessian(lambda r: system.moire_potential(r[None], lam))(jnp.zeros(2))
    k = 3 * lam * 15.0 * math.cos(math.pi / 4) * (4 * math.pi / (math.sqrt(3) * 8.031))**2
    assert np.allclose(hessian, k * np.eye(2), rtol=1e-12)


def test_potential_is_periodic_for_single_electron_translations():
    """Moving any one electron by a supercell (or moiré) vector leaves V and the Ewald energy unchanged."""
    system = MoireSystem()
    ctx = system.context(6, lam=1.0)
    cell = system.supercell(6)
    x = system.init_walkers(jax.random.PRNGKey(2), ctx, 1)[0]
    potential = jax.jit(system.potential_components)
    base = potential(x, ctx.values)
    for i, shift in ((0, cell[0]), (3, cell[1] - cell[0]), (5, system.primitive_lattice()[1])):
        moved = potential(x.at[i].add(jnp.asarray(shift)), ctx.values)
        same_cell = i != 5  # a moiré vector is not a supercell vector: only V is invariant
        assert abs(float(moved['moire'] - base['moire'])) < 1e-10
        if same_cell:
            assert abs(float(moved['interaction'] - base['interaction'])) < 1e-9


def test_spectrum_of_the_3x3_supercell():
    """λ = 1, 3×3: Γ level, then sixfold and twofold levels; converged in the cutoff; real orthonormal."""
    system = MoireSystem()
    spectrum = system.noninteracting_spectrum(6, 1.0, cutoff=4.0)
    e = spectrum.energies
    assert np.allclose(e[1:7], e[1], atol=1e-9) and e[1] - e[0] > 1.0 and e[7] - e[6] > 1.0
    assert np.allclose(e[7:9], e[7], atol=1e-9) and e[9] - e[8] > 1.0
    finer = system.noninteracting_spectrum(6, 1.0, cutoff=6.0, num_states=12).energies
    assert np.allclose(e[:12], finer, atol=1e-7)
    assert np.allclose(e[:3], [-11.98965316, -4.70947951, -4.70947951], atol=1e-7)
    c = spectrum.coefficients
    assert c.dtype == np.float64 and np.allclose(c.T @ c, np.eye(c.shape[1]), atol=1e-10)
    free = system.noninteracting_spectrum(6, 0.0, cutoff=2.0).energies
    unit = system.kinetic_scale / 2 * (4 * math.pi / (math.sqrt(3) * 8.031 * 3))**2  # ħ²|G|²/2m*, |G| = g/3
    assert np.allclose(free[:7], [0.0] + [unit] * 6)


def test_band_determinant_is_exact_without_interaction():
    """λ = 1, no Coulomb, N = 7 in the 3×3 cell (ν = 7/9, closed shells 1 + 6): the determinant of the
    lowest real eigen-orbitals has a constant local energy Σ ε_k (zero variance up to the basis cutoff).
    """
    system = MoireSystem(filling=7 / 9, coulomb=False)
    ctx = system.context(7, lam=1.0)
    spectrum = system.noninteracting_spectrum(7, 1.0, cutoff=8.0, num_states=9)
    wf = ansatz.make_band_slater(spectrum, system.a_m)
    walkers = system.init_walkers(jax.random.PRNGKey(0), ctx, 16)
    e_loc, components = _local_energies(wf, system, (7, 0), ctx.values, walkers)
    exact = float(np.sum(spectrum.energies[:7]))
    assert exact == pytest.approx(-40.24653, abs=1e-4)
    assert np.all(np.isfinite(e_loc))
    assert np.max(np.abs(np.asarray(e_loc) - exact)) < 1e-5  # ≈ 1e-7 measured; 2e-4 at cutoff 6
    assert np.all(np.asarray(components['interaction']) == 0.0)


@pytest.mark.parametrize('spins,filling', [((7, 0), 7 / 9), ((13, 0), 13 / 9), ((7, 7), 14 / 9)])
def test_plane_wave_determinant_is_exact_for_free_electrons(spins, filling):
    """λ = 0, no Coulomb, closed shells: E_L ≡ Σ ħ²|G|²/2m* over occupied plane waves (and spins)."""
    system = MoireSystem(filling=filling, coulomb=False)
    n = sum(spins)
    ctx = system.context(*spins, lam=0.0)
    wf = ansatz.make_plane_wave_slater(system.network_lattice(n))
    walkers = system.init_walkers(jax.random.PRNGKey(1), ctx, 8)
    e_loc, _ = _local_energies(wf, system, spins, ctx.values, walkers)
    g = lat.real_plane_waves(system.supercell(n), 3.0).gvecs
    exact = sum(system.kinetic_scale / 2 * np.sum(g[:count]**2) for count in spins)
    assert np.allclose(np.asarray(e_loc), exact, rtol=1e-10)


def test_wavefunctions_are_periodic_under_supercell_translations():
    """log|ψ| and sign of both determinants are unchanged when one electron moves by L1, L2 or L1 − L2."""
    system = MoireSystem(filling=7 / 9, coulomb=False)
    ctx = system.context(7, lam=1.0)
    cell = jnp.asarray(system.supercell(7))
    x = system.init_walkers(jax.random.PRNGKey(3), ctx, 1)[0]
    spectrum = system.noninteracting_spectrum(7, 1.0, cutoff=4.0, num_states=7)
    for wf in (ansatz.make_plane_wave_slater(system.network_lattice(7)),
               ansatz.make_band_slater(spectrum, system.a_m)):
        apply = jax.jit(lambda y: wf.apply({}, y / system.a_m, jnp.zeros(4), (7, 0)))
        sign, logabs = apply(x)
        for i, shift in ((0, cell[0]), (4, cell[1]), (6, cell[0] - cell[1])):
            s2, l2 = apply(x.at[i].add(shift))
            assert float(s2) == float(sign) and abs(float(l2 - logabs)) < 1e-9


def test_deep_well_zero_point_energy():
    """One electron, λ = 100, no Coulomb (ν = 1, primitive cell): the plane-wave ground state E0 against
    the oscillator at the minimum, E0 = V_min + ħω + C + O(λ^-1/2), with ħω = √(k ħ²/m*) and the
    λ-independent anharmonic shift C = −(1/16 + tan²φ/144) ħ²|g|²/m* (first-order quartic plus
    second-order cubic perturbation theory).

    At λ = 100: ħω ≈ 752 meV, C ≈ −12.34 meV, measured E0 − (V_min + ħω + C) ≈ −0.22 meV; it shrinks
    as λ^-1/2 (−0.43 meV at λ = 30). The tolerance 0.5 meV checks ħ²/m*, |g| and V0 to < 0.1 %.
    """
    system = MoireSystem(filling=1.0, coulomb=False)
    hbar2_over_m = 2 * HBAR2_OVER_2ME / 0.35
    g2 = (4 * math.pi / (math.sqrt(3) * 8.031))**2
    anharmonic = -(1 / 16 + math.tan(math.pi / 4)**2 / 144) * hbar2_over_m * g2
    residuals = {}
    for lam in (30.0, 100.0):
        e0 = system.noninteracting_spectrum(1, lam, cutoff=10.0, num_states=1).energies[0]
        k = 3 * lam * 15.0 * math.cos(math.pi / 4) * g2
        v_min = -6 * lam * 15.0 * math.cos(math.pi / 4)
        residuals[lam] = e0 - (v_min + math.sqrt(k * hbar2_over_m) + anharmonic)
    assert abs(residuals[100.0]) < 0.5
    assert 1.4 < residuals[30.0] / residuals[100.0] < 2.3  # ≈ √(100/30) = 1.83


def test_vmc_smoke_run_with_coulomb():
    """ν = 2/3, N = 6, ε = 5: sampling and local energies (folx) through the VMC task functions are finite."""
    system = MoireSystem()
    ctx = system.context(6, lam=1.0)
    wf = ansatz.make_plane_wave_slater(system.network_lattice(6), allow_open_shell=True)
    fns = make_block_functions(wf, system, ctx.spins, VMCConfig(num_walkers=8, kinetic_method='folx',
                                                                mcmc_substeps=2))
    sample, energies = fns[0], fns[1]
    walkers = system.init_walkers(jax.random.PRNGKey(0), ctx, 8)
    state = ChainState(walkers, jnp.asarray(0.1))
    state, info = jax.jit(sample)(jax.random.PRNGKey(1), {}, state, ctx.values)
    e_loc, components = jax.jit(energies)({}, state.walkers, ctx.values)
    assert e_loc.shape == (8,) and np.all(np.isfinite(e_loc))
    for name in ('kinetic', 'moire', 'interaction'):
        assert np.all(np.isfinite(components[name]))
    # The Coulomb energy per electron (background included) is of order e²/(ε a_M).
    interaction = np.asarray(components['interaction']) / 6
    assert np.all(np.abs(interaction) < 10 * system.coulomb_strength / system.a_m)
