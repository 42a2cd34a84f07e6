"""Order parameters of the moiré generalized Wigner crystal: sublattice occupations of the moiré minima and S(K).

Geometry. The minima of the moiré potential form the triangular lattice ``r0 + n1 a1 + n2 a2``
(one per moiré cell; ``MoireSystem.potential_minimum`` gives ``r0``). Its √3×√3 R30° superlattice
splits the minima into three sublattices labelled ``s = (n1 − n2) mod 3``; equivalently
``exp(i K·(R − r0)) = ω^s`` with ``ω = exp(2πi/3)`` and ``K = (b1 − b2)/3`` a corner of the moiré
Brillouin zone (the three C3-related corners ``K, RK, R²K`` differ by moiré reciprocal vectors).
At ν = 2/3 the generalized Wigner crystal is a honeycomb: two sublattices occupied, one empty.
All of this needs a supercell commensurate with the superlattice (``K`` a reciprocal vector of
the supercell); ``sublattice_geometry`` checks it (true for N = 6, 24, 54, 96, 150, …).

Per configuration ``x [N, 2]`` (nm), each electron is assigned to its nearest minimum (its
hexagonal Voronoi cell), which gives the sublattice counts ``c_s`` and the per-site occupations
``o_s = c_s / (sites per sublattice)`` (Σ_s o_s = 3ν; ν = 2/3: Σ_s o_s = 2). Observables:

* ``occupations [3]``: ``o_s`` for the labels s = 0, 1, 2 (fixed to the origin's minimum). In a
  finite cell the exact ground state is translation invariant, so their average is ν for
  each s; a sampled ensemble shows which pattern its walkers sit in.
* ``occupations_sorted [3]``: the same, sorted per configuration (largest first): the average
  density of the "two occupied" and of the "empty" sublattice.
* ``honeycomb_contrast``: ``(o_(1) + o_(2))/2 − o_(3)`` (sorted): the occupation contrast between
  the two most and the least occupied sublattice. 1 for a perfect honeycomb at ν = 2/3 (every
  electron on a minimum of the two occupied sublattices), 0 for equal occupations. For
  uncorrelated electrons it is ≥ 0 with a bias of order ``1/√N`` (the minimum of three
  fluctuating counts), so read it against ``honeycomb_order``.
* ``honeycomb_order``: ``Φ = |m|² / |m_honeycomb|²`` with ``m = (1/N) Σ_i ω^{s_i}`` (the
  site-resolved Fourier component of the density at K; ``|m_honeycomb| = 1/2`` at ν = 2/3).
  1 for a perfect honeycomb (any of the three translated patterns), the largest value possible
  with at most one electron per minimum; 0 for equal occupations; ``E[Φ] = 4/N`` exactly for
  uncorrelated electrons (labels i.i.d. uniform), so Φ → 0 in a liquid as N grows.
* ``structure_factor_k``: ``S(K) = |Σ_i exp(i K·r_i)|² / N`` of the continuous positions,
  averaged over the three C3-related K (they differ off the minima). ``N/4`` for the perfect
  honeycomb at ν = 2/3, ``E[S] = 1`` for uncorrelated electrons; it is periodic in the supercell
  and invariant under any common translation of all electrons.

Every function of one walker is pure and jit-safe (vmap it outside); the geometry is built
once in numpy from the system and the electron number.
"""

import math
from typing import Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hamiltonians import lattice as lat
from samplers.types import Array

NUM_SUBLATTICES = 3
# Names (and trailing shapes) of the per-walker observables of ``honeycomb_observables``.
# |m| of the perfect ν = 2/3 honeycomb: half the electrons on each of two sublattices, |(1 + ω)/2| = 1/2.
HONEYCOMB_M = 0.5
OBSERVABLES = {'honeycomb_contrast': (), 'honeycomb_order': (), 'structure_factor_k': (),
               'occupations': (NUM_SUBLATTICES,), 'occupations_sorted': (NUM_SUBLATTICES,)}


class SublatticeGeometry(NamedTuple):
    """The moiré minima of one supercell, split into the three √3×√3 sublattices (numpy, static).

    Attributes:
      primitive: ``[2, 2]`` moiré lattice vectors (rows), nm.
      origin: ``[2]`` one potential minimum ``r0`` (nm); its sublattice is 0.
      supercell: ``[2, 2]`` supercell vectors (rows), nm.
      k_points: ``[3, 2]`` the C3-related zone corners K (nm⁻¹), reciprocal vectors of the supercell.
      sites: ``[M, 2]`` the minima inside the supercell (nm), M = N/ν.
      labels: ``[M]`` sublattice of each site (0, 1, 2).
      sites_per_sublattice: M / 3.
      n_electrons: N.
      filling: ν = N / M.
    """
    primitive: np.ndarray
    origin: np.ndarray
    supercell: np.ndarray
    k_points: np.ndarray
    sites: np.ndarray
    labels: np.ndarray
    sites_per_sublattice: int
    n_electrons: int
    filling: float


def zone_corners(primitive: np.ndarray) -> np.ndarray:
    """``[3, 2]``: ``K = (b1 − b2)/3`` and its 120° and 240° rotations, with ``K·a1 = 2π/3 = −K·a2``."""
    b1, b2 = lat.reciprocal_lattice(primitive)
    k = (b1 - b2) / 3.0
    turns = [np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
             for t in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return np.stack([r @ k for r in turns])


def sublattice_geometry(system, n_electrons: int) -> SublatticeGeometry:
    """The sublattice geometry of ``system`` (a ``MoireSystem``) with N electrons.

    Raises:
      ValueError: if N does not fit the filling, or the supercell is not commensurate with
        the √3×√3 superlattice of minima (no three-sublattice order fits in it), naming the
        electron numbers for which it is.
    """
    primitive = np.asarray(system.primitive_lattice(), np.float64)
    cell = np.asarray(system.supercell(n_electrons), np.float64)
    matrix = lat.commensurate_matrix(primitive, cell)
    if any((m1 - m2) % NUM_SUBLATTICES for m1, m2 in matrix):
        raise ValueError(f'The supercell of N = {n_electrons} (moiré coefficients {matrix.tolist()}) is not '
                         'commensurate with the √3×√3 superlattice of moiré minima, so the three-sublattice '
                         '(honeycomb) order does not fit in it; at ν = 2/3 use e.g. N = 6, 8, 14, 18, 24, 54, 96, '
                         '150.')
    origin = np.asarray(system.potential_minimum(), np.float64)
    bound = int(np.sum(np.abs(matrix)))  # n = f @ matrix with f in [0, 1)²
    n1, n2 = np.meshgrid(np.arange(-bound, bound + 1), np.arange(-bound, bound + 1), indexing='ij')
    integers = np.stack([n1.ravel(), n2.ravel()], axis=1)
    frac = (integers @ primitive) @ np.linalg.inv(cell)
    inside = np.all((frac >= -1e-9) & (frac < 1 - 1e-9), axis=1)
    coords = integers[inside]
    sites = coords @ primitive + origin
    labels = np.mod(coords[:, 0] - coords[:, 1], NUM_SUBLATTICES)
    num_cells = int(round(lat.cell_area(cell) / lat.cell_area(primitive)))
    if len(sites) != num_cells or np.any(np.bincount(labels, minlength=3) != num_cells // 3):
        raise RuntimeError(f'Found {len(sites)} minima ({np.bincount(labels, minlength=3)} per sublattice) '
                           f'in a supercell of {num_cells} moiré cells.')
    return SublatticeGeometry(primitive, origin, cell, zone_corners(primitive), sites, labels, num_cells // 3,
                              int(n_electrons), float(n_electrons) / num_cells)


# ----- pure functions of one walker x [N, 2] (nm) -----

def nearest_minimum(x: Array, geometry: SublatticeGeometry) -> Array:
    """Integer coordinates ``[N, 2]`` (n1, n2) of each electron's nearest minimum ``r0 + n1 a1 + n2 a2``.

    Positions are first wrapped into the supercell (labels are periodic there); the nearest
    point of the triangular lattice is one of the four corners of the parallelogram cell that
    holds the electron.
    """
    dtype = x.dtype
    cell = jnp.asarray(geometry.supercell, dtype)
    rel = x - jnp.asarray(geometry.origin, dtype)
    rel = rel - jnp.floor(rel @ jnp.asarray(np.linalg.inv(geometry.supercell), dtype)) @ cell
    primitive = jnp.asarray(geometry.primitive, dtype)
    base = jnp.floor(rel @ jnp.asarray(np.linalg.inv(geometry.primitive), dtype))  # [N, 2]
    corners = jnp.asarray([[0, 0], [1, 0], [0, 1], [1, 1]], dtype)  # [4, 2]
    candidates = base[:, None, :] + corners  # [N, 4, 2]
    dist2 = jnp.sum((candidates @ primitive - rel[:, None, :]) ** 2, axis=-1)  # [N, 4]
    best = jnp.argmin(dist2, axis=-1)
    return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0].astype(jnp.int32)


def sublattice_labels(x: Array, geometry: SublatticeGeometry) -> Array:
    """``[N]`` int32 sublattice (0, 1, 2) of each electron's nearest minimum."""
    n = nearest_minimum(x, geometry)
    return jnp.mod(n[:, 0] - n[:, 1], NUM_SUBLATTICES)


def sublattice_occupations(x: Array, geometry: SublatticeGeometry) -> Array:
    """``[3]`` electrons per site on sublattices 0, 1, 2 (Σ = 3ν)."""
    counts = jnp.sum(jax.nn.one_hot(sublattice_labels(x, geometry), NUM_SUBLATTICES, dtype=x.dtype), axis=0)
    return counts / geometry.sites_per_sublattice


def structure_factor(x: Array, k_points: Array) -> Array:
    """``[K]`` structure factors ``|Σ_i exp(i k·r_i)|² / N`` of one walker at wave vectors ``k_points [K, 2]``."""
    phase = x @ jnp.asarray(k_points, x.dtype).T  # [N, K]
    return (jnp.sum(jnp.cos(phase), axis=0) ** 2 + jnp.sum(jnp.sin(phase), axis=0) ** 2) / x.shape[0]


def honeycomb_observables(x: Array, geometry: SublatticeGeometry) -> Dict[str, Array]:
    """All order parameters of one walker (see the module docstring); shapes in ``OBSERVABLES``.

    Args:
      x: ``[N, 2]`` positions in nm (any real dtype; results in that dtype).
      geometry: from ``sublattice_geometry`` for this N.
    """
    labels = sublattice_labels(x, geometry)
    counts = jnp.sum(jax.nn.one_hot(labels, NUM_SUBLATTICES, dtype=x.dtype), axis=0)  # [3]
    occupations = counts / geometry.sites_per_sublattice
    ranked = -jnp.sort(-occupations)
    angle = (2.0 * math.pi / NUM_SUBLATTICES) * labels.astype(x.dtype)
    m2 = jnp.mean(jnp.cos(angle)) ** 2 + jnp.mean(jnp.sin(angle)) ** 2
    return {'honeycomb_contrast': 0.5 * (ranked[0] + ranked[1]) - ranked[2],
            'honeycomb_order': m2 / HONEYCOMB_M ** 2,
            'structure_factor_k': jnp.mean(structure_factor(x, geometry.k_points)),
            'occupations': occupations,
            'occupations_sorted': ranked}


def make_order_parameter_fn(system, n_electrons: int):
    """``fn(x [N, 2]) -> dict`` of ``honeycomb_observables`` for this system and N (geometry built once)."""
    geometry = sublattice_geometry(system, n_electrons)
    return lambda x: honeycomb_observables(x, geometry)
