"""The pure training step ``step(rng_key, state) -> (state, info)`` for a family of contexts."""

from typing import Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import samplers
from hamiltonians import padding
from qvmc import natgrad, parallel
from qvmc.config import VMCConfig
from qvmc.estimator import (BlockFunctions, block_gradient, block_score_rows, estimate_block,
                            make_block_functions)
from qvmc.scores import make_unravel
from qvmc.state import BlockStats, StepInfo, TrainState
from samplers.types import Params, PRNGKey


def group_blocks(spins: Tuple[Tuple[int, int], ...]) -> Dict[Tuple[int, int], List[int]]:
    """Block indices grouped by particle content, in order of first appearance."""
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, s in enumerate(spins):
        groups.setdefault(tuple(s), []).append(i)
    return groups


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, n):
    return [jax.tree.map(lambda a: a[i], tree) for i in range(n)]


def make_train_step(wavefunction, system, optimizer: optax.GradientTransformation,
                    config: VMCConfig = VMCConfig()) -> Callable[[PRNGKey, TrainState], Tuple[TrainState, StepInfo]]:
    """Builds the pure training step (not jitted: wrap it in ``jax.jit``).

    ``step(rng_key, state)`` moves every walker block with the sampler (walkers that became
    non-finite are re-seeded from healthy ones of the same block), computes local energies
    and, in one computation per particle content, vmapped over the blocks that share it,
    either per-walker scores (when the optimizer state holds a natural-gradient state, see
    ``natgrad.uses_scores``) or the energy gradient by one VJP. The loss is the mean of the
    per-block energies; the gradient ``Σ_c (1/C) · 2 cov_c(O, E_clip)`` goes to
    ``optimizer.update`` together with the extra arguments ``scores``, ``local_energies``,
    ``context_ids`` and ``context_weights`` (ignored by plain optax transformations). An
    update that would make parameters or optimizer state non-finite is rejected (both stay
    unchanged) and counted in ``num_rejected``.

    Args:
      wavefunction: an ``ansatz.Wavefunction``.
      system: a ``hamiltonians.System``.
      optimizer: an ``optax.GradientTransformation`` (plain, chained, or from ``qvmc.natgrad``).
      config: ``VMCConfig``.

    Returns:
      ``step(rng_key, state) -> (state, StepInfo)``; every output is a device array.
    """
    tx = optax.with_extra_args_support(optimizer)
    cache: Dict[Tuple[int, int], BlockFunctions] = {}

    def functions(spins) -> BlockFunctions:
        if spins not in cache:
            cache[spins] = make_block_functions(wavefunction, system, spins, config)
        return cache[spins]

    def step(rng_key: PRNGKey, state: TrainState) -> Tuple[TrainState, StepInfo]:
        num_blocks = len(state.chains)
        params = state.params
        with_scores = natgrad.uses_scores(state.opt_state)
        chains, stats = [None] * num_blocks, [None] * num_blocks
        grads, rows = [None] * num_blocks, [None] * num_blocks
        for spins, idx in group_blocks(state.spins).items():
            fns = functions(spins)

            def block(key, chain, values, fns=fns):
                chain, info = fns.sample(key, params, chain, values)
                e_loc, components = fns.energies(params, chain.walkers, values)
                est = estimate_block(e_loc, components, info.num_reseeded, config)
                if with_scores:
                    out = block_score_rows(fns, params, chain.walkers, values, est)
                else:
                    out = block_gradient(fns, params, chain.walkers, values, est)
                st = BlockStats(est.energy, est.variance, info.acceptance, est.components, info.num_nonfinite,
                               est.num_bad_walkers)
                return chain, st, out

            keys = jnp.stack([jax.random.fold_in(rng_key, i) for i in idx])
            args = (keys, _stack([state.chains[i] for i in idx]), _stack([state.values[i] for i in idx]))
            if len(idx) == 1:  # no batch axis of size one in the compiled program
                out = block(*jax.tree.map(lambda a: a[0], args))
                group_chain, group_stats, group_out = jax.tree.map(lambda a: a[None], out)
            else:
                group_chain, group_stats, group_out = jax.vmap(block)(*args)
            for j, i in enumerate(idx):
                chains[i] = jax.tree.map(lambda a: a[j], group_chain)
                stats[i] = jax.tree.map(lambda a: a[j], group_stats)
                if with_scores:
                    rows[i] = (group_out[0][j], group_out[1][j])
                else:
                    grads[i] = group_out[j]

        weights = jnp.full((num_blocks,), 1.0 / num_blocks, parallel.reduction_dtype())
        unravel = make_unravel(params)
        extra = {}
        if with_scores:
            if num_blocks == 1:  # no [B, P] copy for the concatenation
                (o, e), ids = rows[0], jnp.zeros(rows[0][1].shape[0], jnp.int32)
            else:
                o, e, ids = natgrad.stack_contexts([r[0] for r in rows], [r[1] for r in rows])
            # e is centred per block, so Oᵀē = Ōᵀē: the gradient needs no centred copy of O.
            counts = jnp.asarray([rows[i][1].shape[0] for i in range(num_blocks)], weights.dtype)
            coeff = (2.0 * e * (weights / counts)[ids]).astype(o.dtype)
            g = (o.T @ coeff).astype(weights.dtype)
            extra = dict(scores=o, local_energies=e, context_ids=ids, context_weights=weights)
        else:
            g = sum(w * gi for w, gi in zip(np.full(num_blocks, 1.0 / num_blocks), grads))
        updates, proposed_opt_state = tx.update(unravel(g), state.opt_state, params, **extra)
        new_params, new_opt_state, accepted = natgrad.apply_if_finite(params, state.opt_state, updates,
                                                                      proposed_opt_state)
        new_state = TrainState(state.step + 1, new_params, new_opt_state, tuple(chains), state.values,
                               state.num_rejected + jnp.where(accepted, 0, 1).astype(jnp.int32), state.spins)
        loss = jnp.mean(jnp.stack([s.energy for s in stats]))
        return new_state, StepInfo(loss, tuple(stats), accepted, natgrad.last_info(proposed_opt_state))

    return step


def init_state(wavefunction, system, optimizer: optax.GradientTransformation, config: VMCConfig,
               contexts, rng_key: PRNGKey, params: Params = None,
               layout: padding.Layout = padding.UNPADDED) -> TrainState:
    """A fresh ``TrainState``: parameters (unless given), optimizer state and walkers per context
    in the walker ``layout`` (``hamiltonians.padding``)."""
    key_params, key_walkers = jax.random.split(rng_key)
    if params is None:
        ctx = contexts[0]
        x0 = system.init_walkers(key_walkers, ctx, 1)[0] / system.length_scale(ctx.values)
        cond = system.context_features(ctx.values, *ctx.spins)
        params = wavefunction.init(key_params, x0, cond, ctx.spins, system.coupling(ctx.values))
    if config.network_dtype is not None:
        params = parallel.cast_params(params, config.network_dtype)
    chains = []
    init_walkers = layout.init_walkers(system)
    for i, ctx in enumerate(contexts):
        walkers = init_walkers(jax.random.fold_in(key_walkers, i), ctx, config.num_walkers)
        chains.append(samplers.ChainState(walkers, jnp.asarray(config.initial_step_size, walkers.dtype)))
    return TrainState.create(params, optimizer.init(params), chains, contexts, layout=layout)
