"""Per-context chains: walker blocks with their own step sizes, and re-assignment of contexts to blocks."""

from typing import Callable, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers.types import Array, PRNGKey



class ChainState(NamedTuple):
    """Sampler state of the walker block of one context.

    Attributes:
      walkers: ``[W, N, D]`` configurations (N is the context's electron number).
      step_size: ``[]`` proposal width in units of the system's length scale (raised to the
        kernel's ``step_size_power``), adapted per context.
    """
    walkers: Array
    step_size: Array


class Assignment(NamedTuple):
    """How the blocks of a new context list were filled by ``reassign``.

    Attributes:
      source: for each new context, the index of the old block whose walkers it took over
        (an index repeats when a block was also copied into a new one), or -1 when its walkers
        were freshly initialized (no old block had its particle content).
      needs_burn_in: for each new context, True unless it kept the walkers of an old block
        with the same context (same spins and parameter values).
    """
    source: Tuple[int, ...]
    needs_burn_in: Tuple[bool, ...]


def block_size(total_walkers: int, num_blocks: int) -> int:
    """Walkers per block when ``total_walkers`` are split evenly into ``num_blocks`` blocks."""
    if num_blocks <= 0:
        raise ValueError(f'num_blocks must be > 0, got {num_blocks}.')
    if total_walkers <= 0 or total_walkers % num_blocks:
        divisors = [d for d in range(1, min(total_walkers, 64) + 1) if total_walkers > 0 and total_walkers % d == 0]
        raise ValueError(f'{total_walkers} walkers cannot be split into {num_blocks} equal context blocks; '
                         f'use a walker count divisible by {num_blocks} (e.g. {num_blocks * max(1, total_walkers // num_blocks)}) '
                         f'or a number of blocks among {divisors}.')
    return total_walkers // num_blocks


def validate_chain(state: ChainState, n_electrons: int) -> None:
    """Raises ``ValueError`` for non-finite walkers, a wrong shape or a step size ≤ 0."""
    walkers = np.asarray(state.walkers)
    if walkers.ndim != 3 or walkers.shape[1] != n_electrons:
        raise ValueError(f'walkers must have shape [W, N={n_electrons}, D], got {walkers.shape}.')
    if not np.all(np.isfinite(walkers)):
        raise ValueError('walkers contain non-finite positions; re-initialize them (system.init_walkers).')
    if not float(state.step_size) > 0:
        raise ValueError(f'step_size must be > 0, got {float(state.step_size)}.')


def _resize(walkers: Array, size: int, rng_key) -> Array:
    """Keeps ``size`` walkers: a prefix, or the block repeated with random duplicates to grow it."""
    have = walkers.shape[0]
    if size <= have:
        return walkers[:size]
    extra = jax.random.choice(rng_key, have, (size - have,))
    return jnp.concatenate([walkers, walkers[extra]], axis=0)


def reassign(chains: Sequence[ChainState], old_contexts: Sequence, new_contexts: Sequence,
             walkers_per_block: int, init_fn: Callable, rng_key, initial_step_size: float
             ) -> Tuple[List[ChainState], Assignment]:
    """Assigns new contexts to walker blocks, carrying walkers over wherever the shapes allow.

    New context ``i`` keeps old block ``i`` when it has the same particle content (the usual
    blockwise schedule: same N, new λ); otherwise it takes an unused old block with the same
    ``(n_up, n_down)``; when every such block is taken (more blocks per N than before, e.g. a
    schedule stage going from 4 to 16 contexts) it starts from walkers drawn at random from an
    already used one (equilibrated configurations of the right N burn in much faster than
    fresh ones); only a particle content no old block has gets fresh walkers from
    ``init_fn``. Carried-over walkers keep
    their step size but sample the *old* context's distribution: they must be burned in (see
    ``Assignment.needs_burn_in`` and ``samplers.equilibration.burn_in``) before their samples
    enter any estimate.

    Args:
      chains: the current blocks, aligned with ``old_contexts``.
      old_contexts, new_contexts: ``qvmc.Context`` lists.
      walkers_per_block: walkers of every new block (blocks are grown or cut to this size).
      init_fn: ``(rng_key, context, num_walkers) -> [W, N, D]`` (e.g. ``system.init_walkers``).
      rng_key: JAX PRNG key.
      initial_step_size: step size of freshly initialized blocks.
    """
    if len(chains) != len(old_contexts):
        raise ValueError(f'{len(chains)} chains for {len(old_contexts)} contexts: they must be aligned.')
    if walkers_per_block <= 0:
        raise ValueError(f'walkers_per_block must be > 0, got {walkers_per_block}.')
    if not new_contexts:
        raise ValueError('new_contexts is empty: give at least one context.')
    used = set()
    blocks, source, needs = [], [], []
    for i, ctx in enumerate(new_contexts):
        candidates = ([i] if i < len(old_contexts) else []) + list(range(len(old_contexts)))
        pick = next((j for j in candidates if j not in used and old_contexts[j].spins == ctx.spins), -1)
        copy = pick < 0 and any(old_contexts[j].spins == ctx.spins for j in used)
        if copy:
            pick = next(j for j in candidates if j in used and old_contexts[j].spins == ctx.spins)
        key = jax.random.fold_in(rng_key, i)
        if copy:
            old = chains[pick]
            drawn = jax.random.choice(key, old.walkers.shape[0], (walkers_per_block,),
                                      replace=walkers_per_block > old.walkers.shape[0])
            blocks.append(ChainState(old.walkers[drawn], old.step_size))
            needs.append(True)
        elif pick >= 0:
            used.add(pick)
            old = chains[pick]
            blocks.append(ChainState(_resize(old.walkers, walkers_per_block, key), old.step_size))
            needs.append(old_contexts[pick] != ctx)
        else:
            walkers = init_fn(key, ctx, walkers_per_block)
            blocks.append(ChainState(walkers, jnp.asarray(initial_step_size, walkers.dtype)))
            needs.append(True)
        source.append(pick)
    return blocks, Assignment(tuple(source), tuple(needs))
