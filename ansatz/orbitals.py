"""Generalized orbitals with open (Gaussian) or periodic (plane-wave) envelopes, and their
determinants combined in log space."""

from typing import Optional, Tuple

import haiku as hk
import jax.numpy as jnp
import numpy as np

from ansatz import features
from ansatz.base import log_sum_determinants, slogdet_blocks
from samplers.types import Array


class OrbitalHead(hk.Module):
    """``ψ = Σ_k w_k det[φ^k_j(x_i)]_↑ det[φ^k_j(x_i)]_↓`` from a per-electron stream.

    Orbital ``j`` of determinant ``k`` in spin channel σ is ``φ^k_j(x_i) = (W_σ h_i + b_σ)_{kj} e_j(x_i)``:
    a linear map of the final stream (``orbitals_up`` / ``orbitals_down``, ``K × max_orbitals``
    outputs, of which the first ``n_σ`` are used, so one parameter set serves any
    ``n_σ ≤ max_orbitals``) times an envelope ``e_j``:

    * open: ``exp(-½ α^k_{σj} |x_i|²)`` with ``α = exp(log_alpha)``, ``log_alpha`` zero at init
      (the oscillator ground-state width in units of ``1/√ω``);
    * periodic: the ``j``-th lowest real plane wave ``1, cos G₁·x, sin G₁·x, ...`` of the
      supercell, so ψ is exactly periodic and starts near the free-electron determinant.

    Determinants are combined stably by ``log_sum_determinants`` with weights ``w_k``
    (parameter ``det_weights``, ones at init).

    Args (constructor):
      num_determinants: K.
      max_orbitals: largest number of electrons per spin channel.

    Args (call):
      h: final per-electron stream ``[N, F]``.
      x: the positions the envelopes see ``[N, D]``.
      spins: ``(n_up, n_down)`` (static).
      lattice: ``None`` (open) or the supercell lattice ``[D, D]``.

    Returns:
      ``(sign [], log|ψ| [])``.
    """

    def __init__(self, num_determinants: int, max_orbitals: int, name: Optional[str] = None):
        if num_determinants <= 0 or max_orbitals <= 0:
            raise ValueError(f'num_determinants and max_orbitals must be > 0, got {num_determinants}, '
                             f'{max_orbitals}.')
        super().__init__(name=name)
        self.num_determinants, self.max_orbitals = num_determinants, max_orbitals

    def __call__(self, h: Array, x: Array, spins: Tuple[int, int],
                 lattice: Optional[np.ndarray] = None) -> Tuple[Array, Array]:
        k, m = self.num_determinants, self.max_orbitals
        if max(spins) > m:
            raise ValueError(f'spins={tuple(spins)} need {max(spins)} orbitals per channel but the ansatz was '
                             f'built with max_orbitals={m}; raise max_orbitals in its config.')
        blocks = []
        start = 0
        for channel, count in zip(('up', 'down'), spins):
            xs, hs = x[start:start + count], h[start:start + count]  # [n_σ, D], [n_σ, F]
            start += count
            if count == 0:
                continue
            out = hk.Linear(k * m, name=f'orbitals_{channel}')(hs).reshape(count, k, m)[..., :count]
            if lattice is None:
                log_alpha = hk.get_parameter(f'log_alpha_{channel}', (k, m), x.dtype, init=jnp.zeros)
                r2 = jnp.sum(xs**2, axis=-1)[:, None, None]  # [n_σ, 1, 1]
                envelope = jnp.exp(-0.5 * jnp.exp(log_alpha[:, :count])[None] * r2)  # [n_σ, K, n_σ]
            else:
                envelope = features.plane_waves(xs, lattice, count)[:, None, :]  # [n_σ, 1, n_σ]
            blocks.append(jnp.moveaxis(out * envelope, 1, 0))  # [K, n_σ(electron), n_σ(orbital)]
        signs, logdets = slogdet_blocks(blocks)  # [K] each
        weights = hk.get_parameter('det_weights', (k,), x.dtype, init=jnp.ones)
        return log_sum_determinants(weights, signs * jnp.ones(k, x.dtype), logdets * jnp.ones(k, x.dtype))
