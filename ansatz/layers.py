"""Shared Haiku layers: MLP, FiLM conditioning, and self-attention with a pairwise bias."""

import math
from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from samplers.types import Array


class MLP(hk.Module):
    """A tanh MLP over the last axis; the final layer is linear."""

    def __init__(self, sizes: Sequence[int], final_w_init: Optional[hk.initializers.Initializer] = None,
                 final_b_init: Optional[hk.initializers.Initializer] = None, name: Optional[str] = None):
        super().__init__(name=name)
        if not sizes or any(s <= 0 for s in sizes):
            raise ValueError(f'MLP sizes must be positive, got {list(sizes)}.')
        self.sizes = tuple(sizes)
        self.final_w_init = final_w_init
        self.final_b_init = final_b_init

    def __call__(self, h: Array) -> Array:
        for i, size in enumerate(self.sizes):
            last = i == len(self.sizes) - 1
            h = hk.Linear(size, w_init=self.final_w_init if last else None,
                          b_init=self.final_b_init if last else None, name=f'linear_{i}')(h)
            if not last:
                h = jnp.tanh(h)
        return h


class FiLM(hk.Module):
    """Feature-wise linear modulation ``h ← h ⊙ (1 + γ(c)) + β(c)``, identity at initialization.

    Args (call):
      h: per-electron stream ``[N, F]``.
      cond: context feature vector ``[C]``.
    """

    def __call__(self, h: Array, cond: Array) -> Array:
        width = h.shape[-1]
        gamma_beta = hk.Linear(2 * width, w_init=jnp.zeros, b_init=jnp.zeros, name='to_scale_shift')(cond)
        gamma, beta = jnp.split(gamma_beta, 2)
        return h * (1.0 + gamma) + beta


class PairBiasedSelfAttention(hk.Module):
    """Multi-head self-attention over electrons with an additive pairwise bias per head.

    Permutation-equivariant: no positional encoding; the bias is a function of pair
    features only, so permuting electrons permutes rows and columns consistently.

    Arguments of a call:

    * ``h``: per-electron stream ``[N, F]``.
    * ``pair_bias``: ``[H, N, N]`` logits added before the softmax.
    * ``key_mask``: optional ``[N]`` bool, the electrons that may be attended to (padding rows are
      False: their weight is exactly zero, so they change no other row).
    """

    def __init__(self, num_heads: int, head_dim: int, name: Optional[str] = None):
        super().__init__(name=name)
        if num_heads <= 0 or head_dim <= 0:
            raise ValueError(f'num_heads and head_dim must be > 0, got {num_heads}, {head_dim}.')
        self.num_heads = num_heads
        self.head_dim = head_dim

    def __call__(self, h: Array, pair_bias: Array, key_mask: Optional[Array] = None) -> Array:
        n, width = h.shape
        proj = hk.Linear(3 * self.num_heads * self.head_dim, with_bias=False, name='qkv')(h)
        q, k, v = jnp.split(proj.reshape(n, 3, self.num_heads, self.head_dim), 3, axis=1)
        q, k, v = q[:, 0], k[:, 0], v[:, 0]  # [N, H, Dh]
        logits = jnp.einsum('ihd,jhd->hij', q, k) / math.sqrt(self.head_dim) + pair_bias
        if key_mask is not None:
            logits = jnp.where(key_mask[None, None, :], logits, jnp.asarray(-1e30, logits.dtype))
        weights = jax.nn.softmax(logits, axis=-1)  # [H, N, N]
        out = jnp.einsum('hij,jhd->ihd', weights, v).reshape(n, self.num_heads * self.head_dim)
        return hk.Linear(width, name='out')(out)
