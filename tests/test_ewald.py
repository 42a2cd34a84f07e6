"""2D Ewald summation: α independence, symmetries, Madelung energies of Wigner lattices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qvmc  # noqa: F401  (imports the packages in an order free of import cycles)
from hamiltonians import lattice as lat
from hamiltonians.ewald import EwaldSum

# Madelung (electrostatic) energies per electron of the 2D Wigner lattices in a uniform
# neutralizing background, in Hartree with r_s in Bohr (π r_s² = area per electron):
# L. Bonsall and A. A. Maradudin, Phys. Rev. B 15, 1959 (1977).
MADELUNG_TRIANGULAR = -1.106103
MADELUNG_SQUARE = -1.100244

TRIANGULAR = lat.triangular_lattice(1.0)
SKEWED = np.array([[1.3, 0.0], [0.4, 0.9]])


def _supercell_sites(primitive, matrix):
    """Primitive lattice points inside the supercell ``matrix @ primitive``, ``[n_cells, 2]``."""
    cell = np.asarray(matrix) @ primitive
    points = lat.lattice_points(primitive, float(np.sum(np.linalg.norm(cell, axis=1))))
    frac = points @ np.linalg.inv(cell)
    return cell, points[np.all((frac >= -1e-9) & (frac < 1 - 1e-9), axis=1)]


def _random_config(key, cell, n):
    return jax.random.uniform(jax.random.PRNGKey(key), (n, 2)) @ jnp.asarray(cell)


@pytest.mark.parametrize('cell,n', [(3 * TRIANGULAR, 6), (SKEWED, 3), (np.diag([2.0, 0.7]), 5)])
def test_energy_is_independent_of_alpha(cell, n):
    """The splitting parameter only moves weight between sums: 1e-8 relative over a 16× range."""
    x = _random_config(n, cell, n)
    reference = EwaldSum(cell, n)
    alpha0 = math.sqrt(math.pi / lat.cell_area(cell))
    energies = [float(EwaldSum(cell, n, alpha=f * alpha0).energy(x)) for f in (0.5, 1.0, 2.0, 4.0, 8.0)]
    e_ref = float(reference.energy(x))
    assert max(abs(e - e_ref) for e in energies) < 1e-8 * abs(e_ref)


def test_symmetries_translation_permutation_lattice_shift():
    """Shifting all charges, permuting them, or moving one by a lattice vector changes nothing."""
    cell = 3 * TRIANGULAR
    ewald = EwaldSum(cell, 6)
    energy = jax.jit(ewald.energy)
    x = _random_config(1, cell, 6)
    e0 = float(energy(x))
    assert abs(float(energy(x + jnp.array([0.37, -1.21]))) - e0) < 1e-10 * abs(e0)
    assert abs(float(energy(x[jnp.array([3, 0, 5, 1, 4, 2])])) - e0) < 1e-10 * abs(e0)
    for i, shift in ((0, cell[0]), (2, cell[1]), (5, -2 * cell[0] + cell[1])):
        moved = x.at[i].add(jnp.asarray(shift))
        assert abs(float(energy(moved)) - e0) < 1e-10 * abs(e0)


def test_two_close_charges_in_a_huge_cell_reduce_to_coulomb():
    """Two charges 1 apart in a 10⁴ × 10⁴ cell: E = 1/d up to O(1/L) image and background terms."""
    cell = 1e4 * np.eye(2)
    x = jnp.array([[0.0, 0.0], [0.6, 0.8]])
    assert abs(float(EwaldSum(cell, 2).energy(x)) - 1.0) < 1e-3


def _madelung_per_electron(primitive, matrix):
    cell, sites = _supercell_sites(primitive, matrix)
    rs = math.sqrt(lat.cell_area(primitive) / math.pi)
    energy = float(EwaldSum(cell, len(sites)).energy(jnp.asarray(sites)))
    return energy / len(sites) * rs  # in units of 1/r_s


@pytest.mark.parametrize('matrix', [np.eye(2, dtype=int), 3 * np.eye(2, dtype=int), [[3, 3], [-3, 6]]])
def test_triangular_wigner_lattice_madelung(matrix):
    """−1.106103/r_s per electron, from the primitive cell, the 3×3 cell and the 3√3×3√3 R30° cell."""
    value = _madelung_per_electron(TRIANGULAR, matrix)
    assert abs(value - MADELUNG_TRIANGULAR) < 1e-6
    assert abs(value - _madelung_per_electron(TRIANGULAR, np.eye(2, dtype=int))) < 1e-9


@pytest.mark.parametrize('matrix', [np.eye(2, dtype=int), 2 * np.eye(2, dtype=int), [[1, 2], [-2, 1]]])
def test_square_wigner_lattice_madelung(matrix):
    """−1.100244/r_s per electron (Bonsall & Maradudin 1977), for 1, 4 and 5 (rotated) cells."""
    value = _madelung_per_electron(np.eye(2), matrix)
    assert abs(value - MADELUNG_SQUARE) < 1e-6
    assert abs(value - _madelung_per_electron(np.eye(2), np.eye(2, dtype=int))) < 1e-9


def test_gradient_is_finite_and_matches_finite_differences():
    """Forces are NaN-free (also with a single charge) and agree with central differences."""
    cell = 3 * TRIANGULAR
    ewald = EwaldSum(cell, 6)
    x = _random_config(3, cell, 6)
    grad = jax.jit(jax.grad(ewald.energy))(x)
    assert np.all(np.isfinite(grad))
    h = 1e-5
    for i, d in ((0, 0), (4, 1)):
        step = jnp.zeros_like(x).at[i, d].set(h)
        numeric = (ewald.energy(x + step) - ewald.energy(x - step)) / (2 * h)
        assert abs(float(numeric) - float(grad[i, d])) < 1e-6 * max(1.0, abs(float(grad[i, d])))
    single = jax.grad(EwaldSum(TRIANGULAR, 1).energy)(jnp.array([[0.3, 0.1]]))
    assert np.all(np.isfinite(single)) and np.allclose(single, 0.0, atol=1e-12)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match='shape'):
        EwaldSum(np.eye(3), 2)
    with pytest.raises(ValueError, match='n_particles'):
        EwaldSum(np.eye(2), 0)
    with pytest.raises(ValueError, match='alpha'):
        EwaldSum(np.eye(2), 2, alpha=-1.0)
    with pytest.raises(ValueError, match='linearly independent'):
        EwaldSum(np.array([[1.0, 0.0], [2.0, 0.0]]), 2)
    with pytest.raises(ValueError, match='N=2'):
        EwaldSum(np.eye(2), 2).energy(jnp.zeros((3, 2)))
