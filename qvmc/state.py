"""The training state (a JAX pytree whose only static part is the particle content of its walker
blocks) and the per-step statistics the training step returns."""

import dataclasses
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hamiltonians import padding
from hamiltonians.context import Context
from samplers.chains import ChainState
from samplers.types import Array, Params


def context_values(ctx: Context, layout: padding.Layout = padding.UNPADDED) -> Dict[str, Array]:
    """A context's parameters as float64 arrays (the dynamic part the step is traced over), in the
    walker ``layout`` (a padded one adds the padding mask of ``hamiltonians.padding``)."""
    values = layout.values(ctx)
    return {k: jnp.asarray(v, jnp.float64) if jax.config.jax_enable_x64 else np.asarray(v, np.float64)
            for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that evolves during training (checkpointed as a whole).

    A pytree: ``spins`` (the particle content ``(n_up, n_down)`` of every walker block) is
    static, so a jitted step compiles once per layout of particle contents; every other
    field is traced, so new context *values* (a blockwise schedule's next λ draw) never
    recompile. A padded state (``create(..., layout=PaddedLayout(pad))``, ``hamiltonians.padding``) has the padded
    content as every block's ``spins`` and the padding mask in its values: contexts of any N
    that fits then share one program.

    Attributes:
      step: ``[]`` int32, optimization steps done.
      params: network parameters.
      opt_state: optimizer state.
      chains: one ``samplers.ChainState`` per walker block (walkers ``[W, N, D]``, step size).
      values: one ``{name: []}`` dict of context values per block.
      num_rejected: ``[]`` int32, updates rejected because they were not finite.
      spins: static, ``(n_up, n_down)`` per block.
    """
    step: Any
    params: Params
    opt_state: Any
    chains: Tuple[ChainState, ...]
    values: Tuple[Dict[str, Array], ...]
    num_rejected: Any
    spins: Tuple[Tuple[int, int], ...]

    @staticmethod
    def create(params: Params, opt_state: Any, chains: Sequence[ChainState], contexts: Sequence[Context],
               step: int = 0, num_rejected: int = 0, layout: padding.Layout = padding.UNPADDED) -> 'TrainState':
        """A state whose blocks sample ``contexts`` (aligned with ``chains``, whose walkers are in ``layout``)."""
        if len(chains) != len(contexts):
            raise ValueError(f'{len(chains)} walker blocks for {len(contexts)} contexts: they must be aligned.')
        return TrainState(jnp.asarray(step, jnp.int32), params, opt_state, tuple(chains),
                          tuple(context_values(c, layout) for c in contexts), jnp.asarray(num_rejected, jnp.int32),
                          tuple(layout.spins(c) for c in contexts))

    @property
    def layout(self) -> padding.Layout:
        """The walker layout of the blocks (padded when the values carry the padding mask)."""
        return padding.layout_of_values(self.spins[0], self.values[0])

    @property
    def pad(self) -> Optional[Tuple[int, int]]:
        """The padded content of a padded state, else None (``layout.pad``)."""
        return self.layout.pad

    @property
    def contexts(self) -> Tuple[Context, ...]:
        """The contexts of the walker blocks, rebuilt on the host (not for use under ``jit``)."""
        layout = self.layout
        return tuple(layout.context(s, vals) for s, vals in zip(self.spins, self.values))

    def _replace(self, **changes) -> 'TrainState':
        """A copy with fields changed (NamedTuple style); only the dataclass's fields are accepted."""
        return dataclasses.replace(self, **changes)

    def with_contexts(self, contexts: Sequence[Context]) -> 'TrainState':
        """A copy whose walker blocks sample ``contexts`` (their values and particle contents; the
        state's padding, if any, is kept)."""
        contexts, layout = tuple(contexts), self.layout
        return dataclasses.replace(self, values=tuple(context_values(c, layout) for c in contexts),
                                   spins=tuple(layout.spins(c) for c in contexts))

    def as_dict(self) -> Dict[str, Any]:
        """The arrays of the state as a plain nested dict (for checkpoints), spins included."""
        return {'step': self.step, 'params': self.params, 'opt_state': self.opt_state,
                'chains': [{'walkers': c.walkers, 'step_size': c.step_size} for c in self.chains],
                'values': [dict(v) for v in self.values], 'num_rejected': self.num_rejected,
                'spins': [list(s) for s in self.spins]}


jax.tree_util.register_dataclass(TrainState, data_fields=['step', 'params', 'opt_state', 'chains', 'values',
                                                          'num_rejected'], meta_fields=['spins'])


class BlockStats(NamedTuple):
    """Per-step statistics of one walker block (means over healthy walkers, unclipped)."""
    energy: Array
    variance: Array
    acceptance: Array
    components: Dict[str, Array]
    num_nonfinite: Array  # proposals with a non-finite log-density (rejected by the sampler)
    num_bad_walkers: Array = 0  # walkers re-seeded or left out of this step's estimates


class StepInfo(NamedTuple):
    """What one training step measured: per-block stats, the loss and whether the update was applied.

    All fields are device arrays: a training loop fetches them (``jax.device_get``) only
    when it logs, so steps are not synchronised with the host.
    """
    loss: Array
    blocks: Tuple[BlockStats, ...]  # one per walker block, in the order of the state's chains
    accepted: Array
    optimizer: Any = None  # natural gradients: this update's natgrad.NaturalGradientInfo, else None
