"""The one-body density histogram: jit-safe bin counts of walker positions and their normalisation."""

from typing import Optional, Tuple

import jax.numpy as jnp
import numpy as np

from samplers.types import Array


def density_counts(x: Array, bins: int, extent, cell: Optional[np.ndarray] = None,
                   mask: Optional[Array] = None) -> Array:
    """Electron counts on a ``bins × bins`` grid (traceable; call it inside the jitted measurement).

    Open systems use the square ``[-extent, extent]²`` of the first two coordinates; periodic
    systems use the supercell, with positions wrapped into it (so none falls outside).

    Args:
      x: walkers ``[..., N, D]`` (any leading axes, e.g. ``[W, N, D]``).
      bins: B, bins per axis.
      extent: half-width of the open-system grid (a number or a traced scalar; unused with ``cell``).
      cell: the periodic supercell ``[D, D]`` (rows are lattice vectors) or None (open system).
      mask: optional ``[N]`` 0/1, rows that hold electrons (padding rows of ``hamiltonians.padding``
        are 0 and counted nowhere).

    Returns:
      ``[B·B + 1]`` integer counts, row-major (bin ``i·B + j`` is x-bin (or a1-bin) ``i`` and
      y-bin ``j``); the last entry counts electrons outside the grid.
    """
    if cell is None:
        pos = x[..., :2]
        idx = jnp.floor((pos + extent) / (2 * extent) * bins).astype(jnp.int32)
        inside = jnp.all((idx >= 0) & (idx < bins), axis=-1)
        flat = jnp.where(inside, idx[..., 0] * bins + idx[..., 1], bins * bins)
    else:
        frac = jnp.mod(x @ jnp.asarray(np.linalg.inv(cell), x.dtype), 1.0)
        idx = jnp.clip(jnp.floor(frac * bins).astype(jnp.int32), 0, bins - 1)
        flat = idx[..., 0] * bins + idx[..., 1]
    if mask is None:
        return jnp.bincount(flat.ravel(), length=bins * bins + 1)
    flat = jnp.where(jnp.broadcast_to(mask > 0.5, flat.shape), flat, bins * bins + 1)  # a bin that is dropped
    return jnp.bincount(flat.ravel(), length=bins * bins + 2)[:-1]


def density_grid(bins: int, extent: float, cell: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
    """Bin centres ``[B·B, D]`` of the grid of ``density_counts`` (same row-major order) and the bin area."""
    centres = (np.arange(bins) + 0.5) / bins
    u, v = np.meshgrid(centres, centres, indexing='ij')
    frac = np.stack([u.ravel(), v.ravel()], axis=1)
    if cell is None:
        return (2 * frac - 1) * extent, (2 * extent / bins)**2
    return frac @ cell, abs(np.linalg.det(cell)) / bins**2


def normalise_density(counts, num_samples: int, n_electrons: int, bins: int, extent: float,
                      cell: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float, float]:
    """Electrons per unit area from summed ``density_counts``.

    Args:
      counts: ``[B·B + 1]`` counts summed over every measured walker sample.
      num_samples: walker samples counted (walkers × draws), each carrying ``n_electrons``.
      n_electrons: N.
      bins, extent, cell: as given to ``density_counts``.

    Returns:
      ``(density [B·B], bin_area, outside)``: Σ density · bin_area = N · (1 − outside), where
      ``outside`` is the fraction of electron samples beyond the grid.
    """
    counts = np.asarray(counts, np.float64)
    if counts.shape != (bins * bins + 1,):
        raise ValueError(f'counts must be [B·B + 1] = [{bins * bins + 1}] (from density_counts), got {counts.shape}.')
    _, area = density_grid(bins, extent, cell)
    return counts[:-1] / (num_samples * area), area, float(counts[-1] / (num_samples * n_electrons))
