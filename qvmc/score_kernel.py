"""Products with the centred score matrix ``Ō [B, P]`` of the natural gradients, chunk by chunk.

``Ō`` is the float64 matrix of centred, weighted per-walker scores (conventions in
``qvmc.natgrad``). For a network of 10⁵ parameters and 10³ walkers its float64 copy is about a
gigabyte, and forming it costs more memory traffic than the products that use it. The sample-space
optimizers (minSR, SPRING) only need

* the kernel ``ŌŌᵀ [B, B]`` (and, for SPRING, ``Ō v`` for the previous direction ``v``), and
* after the ``[B, B]`` solve, ``Ōᵀ ζ [P]``;

so both are formed from column chunks of ``Ō`` of ``SCORE_CHUNK`` parameters. Each chunk is cast to
float64, centred and scaled where it is used (the same float64 arithmetic per element as centring
the whole matrix first), and the full float64 copy is never materialised. Only the summation
order of the kernel differs from the one-piece product.
"""

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from samplers.types import Array

GRAM_BLOCK_ROWS = 256  # rows per block of the symmetric Gram product (fewer rows: one product)
SCORE_CHUNK = 2048  # parameter columns per chunk of Ō (2-core CPU: 1.3 s → 0.9 s at 512 × 108K)


def gram(rows: Array, max_blocks: int = 4) -> Array:
    """``rows @ rows.T`` computed from its lower block triangle only.

    The ``B`` rows are split into ``nb = min(max_blocks, B // GRAM_BLOCK_ROWS)`` slices; the
    ``nb(nb+1)/2`` products ``R_i R_jᵀ`` (j ≤ i) are formed and the upper blocks are their
    transposes, so the ``B²P`` kernel build of minSR / SPRING costs ``(nb+1)/(2nb)`` of the full
    product (5/8 for nb = 4) in the same precision, and the result is exactly symmetric.
    """
    num_rows = rows.shape[0]
    nb = max(1, min(int(max_blocks), num_rows // GRAM_BLOCK_ROWS))
    if nb == 1:
        return rows @ rows.T
    edges = [round(i * num_rows / nb) for i in range(nb + 1)]
    blocks = [rows[edges[i]:edges[i + 1]] for i in range(nb)]
    lower = {(i, j): blocks[i] @ blocks[j].T for i in range(nb) for j in range(i + 1)}
    return jnp.block([[lower[i, j] if j <= i else lower[j, i].T for j in range(nb)] for i in range(nb)])


def centring(scores: Array, local_energies: Array, context_ids: Array, weights: Array,
             normalize_energy_scale: bool = False) -> Tuple[Callable[[Array], Array], Array]:
    """``(centre, ē)``: ``centre(O[:, cols])`` is ``Ō[:, cols]`` in float64 for any column block of
    ``scores``; ``ē [B]`` the centred, weighted energies (float64)."""
    e = jnp.asarray(local_energies).astype(jnp.float64)
    ids = jnp.asarray(context_ids)
    num_contexts = weights.shape[0]
    counts = jnp.maximum(jax.ops.segment_sum(jnp.ones_like(e), ids, num_segments=num_contexts), 1.0)
    e = e - (jax.ops.segment_sum(e, ids, num_segments=num_contexts) / counts)[ids]
    if normalize_energy_scale:
        std = jnp.sqrt(jax.ops.segment_sum(e * e, ids, num_segments=num_contexts) / counts)
        e = e / jnp.where(std > 0, std, 1.0)[ids]
    row_scale = jnp.sqrt(weights / counts)[ids]

    def centre(block):
        block = jnp.asarray(block).astype(jnp.float64)
        block = block - (jax.ops.segment_sum(block, ids, num_segments=num_contexts) / counts[:, None])[ids]
        return block * row_scale[:, None]
    return centre, e * row_scale


def _chunks(num_cols: int, chunk: Optional[int]) -> Tuple[int, int, int]:
    """``(chunk width, full chunks, width of the remainder)`` of ``num_cols`` columns."""
    chunk = max(1, int(SCORE_CHUNK if chunk is None else chunk))
    return chunk, num_cols // chunk, num_cols % chunk


KERNEL_PRECISIONS = ('float64', 'float32')


def kernel(scores: Array, centre: Callable[[Array], Array], vector: Optional[Array] = None,
           chunk: Optional[int] = None, precision: str = 'float64') -> Tuple[Array, Optional[Array]]:
    """``(ŌŌᵀ [B, B], Ō v [B] or None)`` accumulated over column chunks of ``scores [B, P]``
    (``chunk`` columns each, default ``SCORE_CHUNK``).

    ``precision='float32'``: each centred float64 chunk is rounded to float32 and its Gram product
    formed in float32, the chunk products summed in float64. Rounding the inputs keeps every chunk's
    product positive semidefinite; only the float32 summation inside a chunk (``chunk`` terms, not
    ``P``) adds error, measured at 5e-6–1e-5 of the mean diagonal for 512–1024 walkers × 108K
    QERNEL parameters (largest negative eigenvalue of the difference −4e-5 at 1024 walkers: far below
    the usual 1e-3 shift). The product costs half as much on a CPU. ``Ō v`` stays float64.
    """
    if precision not in KERNEL_PRECISIONS:
        raise ValueError(f"kernel precision must be one of {KERNEL_PRECISIONS}, got {precision!r}.")
    num_rows, num_cols = scores.shape
    chunk, full, tail = _chunks(num_cols, chunk)
    carry = (jnp.zeros((num_rows, num_rows), jnp.float64),
             None if vector is None else jnp.zeros((num_rows,), jnp.float64))

    def add(carry, block, part):
        o_bar = centre(block)
        product = gram(o_bar) if precision == 'float64' else gram(o_bar.astype(jnp.float32)).astype(jnp.float64)
        return carry[0] + product, None if part is None else carry[1] + o_bar @ part

    if full:
        def body(carry, i):
            start = i * chunk
            part = None if vector is None else jax.lax.dynamic_slice_in_dim(vector, start, chunk)
            return add(carry, jax.lax.dynamic_slice_in_dim(scores, start, chunk, axis=1), part), None
        carry, _ = jax.lax.scan(body, carry, jnp.arange(full))
    if tail:
        carry = add(carry, scores[:, full * chunk:], None if vector is None else vector[full * chunk:])
    return carry


def transpose_product(scores: Array, centre: Callable[[Array], Array], z: Array,
                      chunk: Optional[int] = None) -> Array:
    """``Ōᵀ z [P]`` (float64) over column chunks of ``scores [B, P]`` (default ``SCORE_CHUNK`` wide)."""
    chunk, full, tail = _chunks(scores.shape[1], chunk)
    parts = []
    if full:
        def body(_, i):
            return None, centre(jax.lax.dynamic_slice_in_dim(scores, i * chunk, chunk, axis=1)).T @ z
        _, stacked = jax.lax.scan(body, None, jnp.arange(full))
        parts.append(stacked.reshape(-1))
    if tail:
        parts.append(centre(scores[:, full * chunk:]).T @ z)
    if not parts:  # a wavefunction without parameters
        return jnp.zeros((0,), jnp.float64)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)
