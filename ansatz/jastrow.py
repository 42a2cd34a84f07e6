"""Jastrow factors: the exact 2D electron–electron cusp (open or periodic) and a neural pair Jastrow."""

from typing import Optional, Tuple

import haiku as hk
import jax.numpy as jnp
import numpy as np

from ansatz import features
from ansatz.layers import MLP
from samplers.types import Array


def spin_labels(spins: Tuple[int, int]) -> np.ndarray:
    """Static spin index per electron ``[N]``: 0 for rows ``0..n_up-1``, 1 after."""
    return np.array([0] * spins[0] + [1] * spins[1], dtype=np.int32)


def cusp_jastrow(x: Array, spins: Tuple[int, int], coupling, log_range: Array,
                 lattice: Optional[np.ndarray] = None, mask: Optional[Array] = None) -> Array:
    """``Σ_{i<j} c_σσ' · coupling · β r_ij/(β + r_ij)``: exact 2D cusps, ``c = 1`` (↑↓), ``1/3`` (↑↑).

    The slope at ``r = 0`` is ``c · coupling`` (Kato in two dimensions: ``1/(d-1)`` for
    opposite and ``1/(d+1)`` for parallel spins); ``β = exp(log_range)`` sets the range
    (``log_range [2]``: parallel, antiparallel). With a lattice, ``r_ij`` is the smooth
    periodic distance of ``ansatz.features`` (equal to ``|Δr|`` to third order near
    coincidence), so the factor is exactly periodic and the cusp is unchanged.

    Args:
      x: one walker ``[N, D]``.
      spins: ``(n_up, n_down)`` (static).
      coupling: strength of ``1/r`` in the network's length unit (traced).
      log_range: ``[2]`` log-ranges β for parallel and antiparallel pairs.
      lattice: ``None`` (open) or the supercell lattice ``[D, D]``.
      mask: optional ``[N]`` 0/1, padding rows (0) take part in no pair.
    """
    n = spins[0] + spins[1]
    if n < 2:
        return jnp.zeros((), x.dtype)
    spin = spin_labels(spins)
    same = spin[:, None] == spin[None, :]
    c = np.where(same, 1.0 / 3.0, 1.0)
    beta = jnp.where(same, jnp.exp(log_range[0]), jnp.exp(log_range[1]))
    iu = np.triu_indices(n, k=1)
    d2 = features.pair_distance_sq(x, lattice)[iu]
    if mask is not None:  # a padding row may sit on an electron: keep sqrt away from 0 there
        pair = (mask[:, None] * mask[None, :])[iu].astype(d2.dtype)
        d2 = jnp.where(pair > 0.5, d2, jnp.ones_like(d2))
    r = jnp.sqrt(d2)  # off-diagonal: > 0 where |ψ| > 0
    terms = jnp.asarray(c[iu], r.dtype) * beta[iu] * r / (beta[iu] + r)  # r's dtype throughout
    if mask is not None:
        terms = terms * pair
    return coupling * jnp.sum(terms)


class CuspJastrow(hk.Module):
    """The cusp factor with learnable ranges (parameter ``log_range [2]``, zero at init)."""

    def __call__(self, x: Array, spins: Tuple[int, int], coupling,
                 lattice: Optional[np.ndarray] = None) -> Array:
        log_range = hk.get_parameter('log_range', (2,), x.dtype, init=jnp.zeros)
        return cusp_jastrow(x, spins, coupling, log_range, lattice)


class PairJastrow(hk.Module):
    """Symmetric neural Jastrow ``J = ½ Σ_{i≠j} u(f_ij, [σ_i = σ_j], c)``, zero at init.

    Summing ``u`` over ordered pairs makes ``J`` invariant under every permutation that
    keeps spins, whatever the symmetry of the pair features ``f_ij``.

    Args (constructor):
      hidden: width of the two hidden tanh layers of ``u``.

    Args (call):
      pair: pair features ``[N, N, P]``.
      spins: ``(n_up, n_down)`` (static).
      cond: context features ``[C]`` or ``None`` (unconditioned).
    """

    def __init__(self, hidden: int, name: Optional[str] = None):
        if hidden <= 0:
            raise ValueError(f'PairJastrow hidden must be > 0, got {hidden}.')
        super().__init__(name=name)
        self.hidden = hidden

    def __call__(self, pair: Array, spins: Tuple[int, int], cond: Optional[Array] = None) -> Array:
        n = pair.shape[0]
        spin = spin_labels(spins)
        same = jnp.asarray(spin[:, None] == spin[None, :], pair.dtype)[..., None]  # [N, N, 1]
        inputs = [pair, same]
        if cond is not None:
            inputs.append(jnp.broadcast_to(cond, (n, n, cond.shape[-1])))
        u = MLP([self.hidden, self.hidden, 1], final_w_init=jnp.zeros, name='pair_mlp')(
            jnp.concatenate(inputs, axis=-1))[..., 0]  # [N, N]
        off_diagonal = 1.0 - jnp.eye(n, dtype=pair.dtype)
        return 0.5 * jnp.sum(u * off_diagonal)
