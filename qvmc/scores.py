"""Per-walker scores O = ∂θ log|ψ| and the micro-batched VJP behind the VMC energy gradient."""

from typing import Callable, Optional

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


def make_vjp_fn(log_psi: LogPsiFn, chunk_size: Optional[int] = None):
    """``Σ_s c_s ∂θ log|ψ(x_s)|`` by one VJP per micro-batch (O is never stored).

    With ``c_s = 2 (E_s - Ē) / n`` this is the VMC energy gradient ``2 cov(O, E)`` of one
    context, the estimator the training step uses for optax optimizers (natural gradients
    use the same formula on the stored rows, ``natgrad.energy_gradient``).

    Args:
      log_psi: ``log_psi(params, x [N, D], values) -> []`` for one walker.
      chunk_size: walkers per micro-batch (None: all at once); memory of one chunk's backward pass.

    Returns:
      ``vjp(params, walkers [W, N, D], values, cotangent [W]) -> [P]`` in float64 under x64 (ordered as
      ``ravel_pytree(params)``).
    """
    _check_chunk_size(chunk_size)

    def vjp_fn(params: Params, walkers: Array, values: ContextValues, cotangent: Array) -> Array:
        def chunk_sum(rows):
            x, c = rows
            logs, vjp = jax.vjp(lambda p: jax.vmap(log_psi, in_axes=(None, 0, None))(p, x, values), params)
            return ravel_pytree(vjp(c.astype(logs.dtype))[0])[0].astype(parallel.reduction_dtype())
        return accumulate(chunk_sum, (walkers, cotangent), chunk_size)
    return vjp_fn
