"""The ansatz boundary: a ``Wavefunction`` is ``init``/``apply`` pure functions, Haiku hidden inside.

Every ansatz in this package is written for one walker and returns ``(sign, log|ψ|)``:

* ``init(rng_key, x, cond, spins, coupling) -> params``
* ``apply(params, x, cond, spins, coupling) -> (sign [], log|ψ| [])``

with ``x`` the positions ``[N, D]`` in the system's natural length unit (the VMC glue
divides physical positions by ``system.length_scale``), ``cond`` the context feature
vector ``[C]``, ``spins = (n_up, n_down)`` a static tuple (rows ``0..n_up-1`` are spin up),
and ``coupling`` the strength of the ``1/r`` interaction in those length units (it fixes the
exact electron–electron cusp). Batch with ``jax.vmap`` over ``x``.

A *maskable* ansatz (``Wavefunction.maskable``, so far Fermi Sets) also takes ``mask`` ``[N]``
(1 = electron, 0 = padding row; the active rows of each spin block come first): one compiled
program then serves every particle content up to ``spins`` (``hamiltonians.padding``).
"""

from typing import Callable, NamedTuple, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from samplers.types import Array


class Wavefunction(NamedTuple):
    """A pure-function wavefunction; see the module docstring for the signatures.

    Attributes:
      init: ``init(rng_key, x, cond, spins, coupling) -> params``.
      apply: ``apply(params, x, cond, spins, coupling) -> (sign, log|ψ|)``.
      periodic: True if ψ is built for a periodic cell (periodic features, plane-wave
        orbitals); ``qvmc.VMC``, ``Predictor`` and ``Sweep`` refuse a wavefunction whose
        geometry differs from the system's ``periodic``.
      maskable: True if ``apply`` takes ``mask=[N]`` (padding rows; see the module docstring).
    """
    init: Callable
    apply: Callable
    periodic: bool = False
    maskable: bool = False


def validate_call(x: Array, spins: Tuple[int, int]) -> None:
    """Checks (before tracing) that a walker matches the static particle content."""
    if len(spins) != 2 or any(int(s) < 0 for s in spins):
        raise ValueError(f'spins must be (n_up, n_down) with non-negative entries, got {spins}.')
    if x.ndim != 2 or x.shape[0] != spins[0] + spins[1]:
        raise ValueError(f'x must be one walker of shape [N={spins[0] + spins[1]}, D], got {x.shape}; '
                         'vmap over walkers outside the wavefunction.')


def from_haiku(forward: Callable, periodic: bool = False, maskable: bool = False) -> Wavefunction:
    """Wraps ``forward(x, cond, spins, coupling) -> (sign, logabs)`` into a ``Wavefunction``
    (``periodic``: whether ``forward`` is built for a periodic cell; ``maskable``: whether it
    also takes ``mask=[N]``, padding rows)."""
    transformed = hk.without_apply_rng(hk.transform(forward))

    def init(rng_key, x, cond, spins, coupling=0.0):
        validate_call(x, spins)
        return transformed.init(rng_key, x, cond, tuple(spins), coupling)

    def apply(params, x, cond, spins, coupling=0.0, mask=None):
        validate_call(x, spins)
        if mask is None:
            return transformed.apply(params, x, cond, tuple(spins), coupling)
        if not maskable:
            raise ValueError('This ansatz takes no padding mask; only a maskable one (Fermi Sets) can serve several '
                             'particle contents from one padded program. Leave padding off for it.')
        if mask.shape != x.shape[:1]:
            raise ValueError(f'mask must be [N={x.shape[0]}] (one entry per walker row), got {mask.shape}.')
        return transformed.apply(params, x, cond, tuple(spins), coupling, mask)

    return Wavefunction(init, apply, bool(periodic), bool(maskable))


def log_sum_determinants(coefficients: Array, signs: Array, logdets: Array) -> Tuple[Array, Array]:
    """Stable ``(sign, log|Σ_k c_k s_k exp(l_k)|)`` for K signed determinants.

    Args:
      coefficients: ``[K]`` real weights ``c_k``.
      signs: ``[K]`` determinant signs ``s_k``.
      logdets: ``[K]`` log-magnitudes ``l_k``.
    """
    shift = jax.lax.stop_gradient(jnp.max(logdets))
    total = jnp.sum(coefficients * signs * jnp.exp(logdets - shift))
    return jnp.sign(total), shift + jnp.log(jnp.abs(total))


def slogdet_blocks(orbitals: Sequence[Array]) -> Tuple[Array, Array]:
    """Sign and log|det| of a product of square blocks (e.g. spin up and spin down).

    Args:
      orbitals: square matrices ``[..., n_σ, n_σ]`` (empty blocks are skipped).
    """
    sign, logdet = 1.0, 0.0
    for m in orbitals:
        if m.shape[-1] == 0:
            continue
        s, l = jnp.linalg.slogdet(m)
        sign, logdet = sign * s, logdet + l
    return jnp.asarray(sign), jnp.asarray(logdet)
