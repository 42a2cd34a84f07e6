"""Per-walker scores O = ∂θ log|ψ| and micro-batched sums for the VMC energy gradient."""

from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from qvmc import parallel
from samplers.types import Array, ContextValues, LogPsiFn, Params


def _check_chunk_size(chunk_size: Optional[int]) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f'chunk_size must be a positive int or None (no chunking), got {chunk_size!r}.')


def make_unravel(params: Params) -> Callable[[Array], Params]:
    """``unravel(vector [P]) -> pytree`` shaped like ``params``, each leaf in its own dtype.

    ``jax.flatten_util.ravel_pytree`` orders the leaves; its own unravel keeps the vector's
    dtype when all leaves share one dtype, so a float64 vector would give float64 leaves for
    float32 parameters. This one casts every leaf back to the dtype of ``params``' leaf.
    Only shapes and dtypes of ``params`` are kept (no arrays are closed over).
    """
    flat, unravel = ravel_pytree(params)
    flat_dtype = flat.dtype
    dtypes = jax.tree.map(lambda p: jnp.result_type(p), params)

    def unravel_fn(vector: Array) -> Params:
        tree = unravel(jnp.asarray(vector).astype(flat_dtype))
        return jax.tree.map(lambda leaf, dtype: leaf.astype(dtype), tree, dtypes)
    return unravel_fn


def num_params(params: Params) -> int:
    """Number of scalar parameters ``P`` (the length of the raveled pytree)."""
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))


chunked_vmap = parallel.chunked_vmap  # the one (strided, sharding-friendly) chunking implementation
accumulate = parallel.accumulate


def make_score_fn(log_psi: LogPsiFn, chunk_size: Optional[int] = None):
    """Per-walker scores ``O_s = ∂θ log|ψ(x_s)|``, raveled.

    Args:
      log_psi: ``log_psi(params, x [N, D], values) -> []`` for one walker.
      chunk_size: walkers per micro-batch (None: all at once). Memory peaks at one chunk's
        backward pass; results equal the unchunked ones.

    Returns:
      ``scores(params, walkers [W, N, D], values) -> O [W, P]`` in the parameters' dtype,
      columns ordered as ``jax.flatten_util.ravel_pytree(params)``.
    """
    _check_chunk_size(chunk_size)

    def score_one(params, x, values):
        return ravel_pytree(jax.grad(log_psi)(params, x, values))[0]

    def scores(params: Params, walkers: Array, values: ContextValues) -> Array:
        return chunked_vmap(lambda x: score_one(params, x, values), chunk_size)(walkers)
    return scores


class GradientSums(NamedTuple):
    """Running sums of one context for ``g_c = 2 cov_c(O, E)`` without storing O (float64).

    Energies enter shifted, ``e_s = E_s - shift`` with ``shift`` their mean (known before
    the pass, since clipping needs all of E), so the sums do not cancel catastrophically;
    the covariance formula is exact for any shift.
    """
    sum_oe: Array  # [P] Σ_s O_s e_s
    sum_o: Array  # [P] Σ_s O_s
    sum_e: Array  # [] Σ_s e_s
    sum_ee: Array  # [] Σ_s e_s²
    count: Array  # [] number of walkers n_c


def make_gradient_sums_fn(log_psi: LogPsiFn, chunk_size: Optional[int] = None):
    """Micro-batched ``GradientSums`` of one context (the Adam/optax path; O never stored).

    Each chunk contributes ``Σ O_s e_s`` and ``Σ O_s`` by one batched VJP of
    ``Σ_s c_s log|ψ(x_s)|`` with the two cotangents ``c = e`` and ``c = 1``, so memory is that
    of one chunk's backward pass, never ``[W, P]``.

    Returns:
      ``sums(params, walkers [W, N, D], values, local_energies [W]) -> GradientSums``.
    """
    _check_chunk_size(chunk_size)

    def sums(params: Params, walkers: Array, values: ContextValues, local_energies: Array) -> GradientSums:
        energies = jnp.asarray(local_energies, jnp.float64)
        shifted = energies - jnp.mean(energies)

        def chunk_sums(rows):
            x, e = rows
            logs, vjp = jax.vjp(lambda p: jax.vmap(log_psi, in_axes=(None, 0, None))(p, x, values), params)
            cotangents = jnp.stack([e, jnp.ones_like(e)]).astype(logs.dtype)  # [2, c]
            grads = jax.vmap(lambda c: ravel_pytree(vjp(c)[0])[0])(cotangents).astype(jnp.float64)
            count = jnp.asarray(e.shape[0], jnp.float64)
            return GradientSums(grads[0], grads[1], jnp.sum(e), jnp.sum(e * e), count)
        return accumulate(chunk_sums, (walkers, shifted), chunk_size)
    return sums


def gradient_from_sums(sums: Sequence[GradientSums], context_weights: Optional[Array] = None,
                       normalize_energy_scale: bool = False) -> Array:
    """The energy gradient ``g = Σ_c w_c · 2 cov_c(O, E)`` as a float64 vector ``[P]``.

    Args:
      sums: one ``GradientSums`` per context (contexts of different particle numbers are
        accumulated separately and combined here).
      context_weights: ``[C]`` weights ``w_c`` of the per-context energies in the loss
        (default ``1/C`` each).
      normalize_energy_scale: divide context c's covariance by ``std_c(E)`` (population
        standard deviation; a zero std leaves it undivided), as in ``natgrad``.

    Returns:
      ``g [P]`` equal to ``natgrad.energy_gradient`` on the stacked O and E.
    """
    num_contexts = len(sums)
    weights = (jnp.full((num_contexts,), 1.0 / num_contexts) if context_weights is None
               else jnp.asarray(context_weights, jnp.float64))
    total = 0.0
    for c, s in enumerate(sums):
        n = s.count
        mean_e = s.sum_e / n
        cov = s.sum_oe / n - (s.sum_o / n) * mean_e
        if normalize_energy_scale:
            std = jnp.sqrt(jnp.maximum(s.sum_ee / n - mean_e ** 2, 0.0))
            cov = cov / jnp.where(std > 0, std, 1.0)
        total = total + weights[c] * 2.0 * cov
    return total
