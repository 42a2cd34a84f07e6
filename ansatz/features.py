"""Electron and pair input features for open (trap) and periodic (supercell) geometries.

Geometry is fixed by ``lattice``: ``None`` for open boundaries, otherwise the supercell
lattice ``[D, D]`` whose rows are the lattice vectors ``a_i`` (in the network's length
unit). Positions are ``x = s @ lattice`` with fractional coordinates ``s``. Every periodic
feature is a smooth function of ``s`` with period 1 in each component, so it is exactly
invariant when any single electron moves by a lattice vector.

The smooth periodic distance used for pair features and the cusp is

    d²(Δs) = Σ_i G_ii (1 - cos 2πΔs_i) / (2π²) + Σ_{i≠j} G_ij sin(2πΔs_i) sin(2πΔs_j) / (4π²),

with ``G = lattice @ lattice.T`` the metric. It equals ``|Δr|² (1 + O(|Δr|²))`` near
coincidence (so ``d`` reproduces the Kato cusp exactly), is C^∞ and periodic, and vanishes
only on lattice points: ``d² = u^T G u + Σ_i G_ii sin⁴(πΔs_i)/π²`` with
``u_i = sin(2πΔs_i)/(2π)``.
"""

from typing import Callable, Optional, Union

import jax.numpy as jnp
import numpy as np

from samplers.types import Array

LatticeSpec = Optional[Union[Callable[[int], np.ndarray], np.ndarray]]


def resolve_lattice(lattice: LatticeSpec, n_electrons: int, ndim: int) -> Optional[np.ndarray]:
    """The static lattice ``[D, D]`` for ``n_electrons`` (``None`` for open boundaries).

    Args:
      lattice: ``None``, an array ``[D, D]``, or ``callable(n_electrons) -> [D, D]``.
      n_electrons: N (static).
      ndim: D, the spatial dimension of the walker.
    """
    if lattice is None:
        return None
    value = lattice(n_electrons) if callable(lattice) else lattice
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (ndim, ndim):
        raise ValueError(f'The lattice must be [D, D] = [{ndim}, {ndim}] (rows = lattice vectors), '
                         f'got shape {value.shape}.')
    if not np.all(np.isfinite(value)) or abs(np.linalg.det(value)) < 1e-12:
        raise ValueError(f'The lattice vectors must be finite and linearly independent, got {value.tolist()}.')
    return value


def reciprocal(lattice: np.ndarray) -> np.ndarray:
    """Reciprocal vectors ``[D, D]`` (rows ``b_j``) with ``a_i · b_j = 2π δ_ij``."""
    lattice = np.asarray(lattice, dtype=np.float64)
    return 2.0 * np.pi * np.linalg.inv(lattice).T


def reciprocal_coefficients(lattice: np.ndarray, count: int) -> np.ndarray:
    """Integer coefficients ``[count, D]`` of the shortest ``G = m @ reciprocal(lattice)``.

    One vector of each ``±G`` pair (first non-zero entry positive), ordered by ``|G|``
    and then lexicographically, so degenerate shells come out in a fixed order.
    """
    if count < 0:
        raise ValueError(f'count must be >= 0, got {count}.')
    ndim = lattice.shape[0]
    recip = reciprocal(lattice)
    radius = 1
    while True:
        grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * ndim, indexing='ij'), -1)
        m = grid.reshape(-1, ndim)
        first = np.array([row[np.nonzero(row)[0][0]] if np.any(row) else 0 for row in m])
        m = m[first > 0]
        norms = np.round(np.sum((m @ recip)**2, axis=-1), 9)
        order = np.lexsort(tuple(m.T[::-1]) + (norms,))
        m, norms = m[order], norms[order]
        # Any m outside the grid has |m| > radius, so |m @ recip| > σ_min (radius + 1) bounds it.
        shortest_outside = (radius + 1) * np.linalg.svd(recip, compute_uv=False)[-1]
        if len(m) >= count and (count == 0 or np.sqrt(norms[count - 1]) < shortest_outside):
            return m[:count]
        radius += 1


def fractional(x: Array, lattice: np.ndarray) -> Array:
    """Fractional coordinates ``s [..., D]`` with ``x = s @ lattice``."""
    return x @ jnp.asarray(np.linalg.inv(lattice), x.dtype)


def _phases(s: Array, coefficients: np.ndarray) -> Array:
    """``2π m·s`` ``[..., K]`` (equal to ``G·x``) for integer coefficients ``m [K, D]``."""
    return 2.0 * np.pi * s @ jnp.asarray(coefficients.T, s.dtype)


def electron_features(x: Array, lattice: Optional[np.ndarray] = None, num_kvecs: int = 3) -> Array:
    """One-electron features ``[N, F]``.

    Open: ``(x, √(1 + r²) - 1, r²/(1 + r²))``, ``F = D + 2``.
    Periodic: ``cos G·x, sin G·x`` for the ``num_kvecs`` shortest ``±G`` pairs, ``F = 2 num_kvecs``.

    Args:
      x: one walker ``[N, D]``.
      lattice: ``None`` (open) or the supercell lattice ``[D, D]``.
      num_kvecs: reciprocal vectors used by the periodic features.
    """
    if lattice is None:
        r2 = jnp.sum(x**2, axis=-1, keepdims=True)
        return jnp.concatenate([x, jnp.sqrt(1.0 + r2) - 1.0, r2 / (1.0 + r2)], axis=-1)
    phase = _phases(fractional(x, lattice), reciprocal_coefficients(lattice, num_kvecs))  # [N, K]
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


def periodic_distance_sq(ds: Array, lattice: np.ndarray) -> Array:
    """Smooth periodic squared distance ``[...]`` of fractional differences ``ds [..., D]``."""
    metric = jnp.asarray(lattice @ lattice.T, ds.dtype)
    angle = 2.0 * np.pi * ds
    diag = jnp.sum(jnp.diag(metric) * (1.0 - jnp.cos(angle)), axis=-1) / (2.0 * np.pi**2)
    u = jnp.sin(angle) / (2.0 * np.pi)  # [..., D]
    off = metric - jnp.diag(jnp.diag(metric))
    return diag + jnp.einsum('...i,ij,...j->...', u, off, u)


def _pair_differences(x: Array, lattice: Optional[np.ndarray]) -> Array:
    """``x_i - x_j`` (open) or ``s_i - s_j`` (periodic), ``[N, N, D]``."""
    y = x if lattice is None else fractional(x, lattice)
    return y[:, None, :] - y[None, :, :]


def pair_distance_sq(x: Array, lattice: Optional[np.ndarray] = None) -> Array:
    """Squared (smooth periodic) distances ``[N, N]``, zero on the diagonal."""
    diff = _pair_differences(x, lattice)
    if lattice is None:
        return jnp.sum(diff**2, axis=-1)
    return periodic_distance_sq(diff, lattice)


def pair_displacement(x: Array, lattice: Optional[np.ndarray] = None) -> Array:
    """Displacements ``[N, N, D]``: ``x_i - x_j`` (open) or ``Σ_d sin(2πΔs_d)/(2π) a_d`` (periodic).

    The periodic one is smooth, periodic in each electron and equals ``x_i - x_j`` to
    first order near coincidence; both are antisymmetric in ``(i, j)``.
    """
    diff = _pair_differences(x, lattice)
    if lattice is None:
        return diff
    return (jnp.sin(2.0 * np.pi * diff) / (2.0 * np.pi)) @ jnp.asarray(lattice, x.dtype)


def pair_features(x: Array, lattice: Optional[np.ndarray] = None, num_kvecs: int = 3) -> Array:
    """Smooth pair features ``[N, N, P]`` (no cusp: the Jastrow factor supplies it).

    Open: ``(x_i - x_j, log(1 + d²), exp(-d²))``, ``P = D + 2``.
    Periodic: ``cos G·Δx, sin G·Δx`` for the ``num_kvecs`` shortest ``±G`` pairs, then
    ``log(1 + d²), d²/(1 + d²)`` of the smooth periodic distance, ``P = 2 num_kvecs + 2``.
    """
    d2 = pair_distance_sq(x, lattice)[..., None]  # [N, N, 1]
    if lattice is None:
        return jnp.concatenate([_pair_differences(x, None), jnp.log1p(d2), jnp.exp(-d2)], axis=-1)
    phase = _phases(_pair_differences(x, lattice), reciprocal_coefficients(lattice, num_kvecs))
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase), jnp.log1p(d2), d2 / (1.0 + d2)], axis=-1)


def plane_waves(x: Array, lattice: np.ndarray, count: int) -> Array:
    """The ``count`` lowest real plane waves ``[N, count]``: ``1, cos G₁·x, sin G₁·x, cos G₂·x, ...``.

    These are the periodic envelopes of the orbitals (the free-electron orbitals at Γ).
    """
    if count == 0:
        return jnp.zeros(x.shape[:-1] + (0,), x.dtype)
    coefficients = reciprocal_coefficients(lattice, count // 2)
    phase = _phases(fractional(x, lattice), coefficients)  # [N, K]
    waves = jnp.stack([jnp.cos(phase), jnp.sin(phase)], axis=-1).reshape(x.shape[:-1] + (-1,))
    return jnp.concatenate([jnp.ones(x.shape[:-1] + (1,), x.dtype), waves], axis=-1)[..., :count]
