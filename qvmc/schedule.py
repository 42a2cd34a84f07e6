"""Context schedules for conditional training: a fixed set of contexts, or blockwise draws over an interval."""

import itertools
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from hamiltonians.context import Context
import samplers


class Stage(NamedTuple):
    """A stage of a ``BlockwiseSchedule``: from step ``start`` on, draw ``num_contexts`` values per base."""
    start: int
    num_contexts: int


class DiscreteSchedule:
    """A fixed training set: the same contexts at every step (one boundary, at step 0).

    Args:
      contexts: the training contexts, in walker-block order.
    """

    def __init__(self, contexts: Sequence[Context]):
        contexts = tuple(contexts)
        if not contexts:
            raise ValueError('DiscreteSchedule needs at least one context.')
        if len(set(contexts)) != len(contexts):
            raise ValueError('DiscreteSchedule got duplicate contexts; each context needs its own walker block once.')
        self.contexts = contexts

    @classmethod
    def grid(cls, make_context: Callable[..., Context], spins: Sequence[Tuple[int, int]],
             **param_values: Sequence[float]) -> 'DiscreteSchedule':
        """The product of particle contents and parameter values, e.g.
        ``DiscreteSchedule.grid(dot.context, [(3, 3), (4, 4)], lam=[0, 1, 2, 5, 8, 10])``.

        Args:
          make_context: ``(n_up, n_down, **params) -> Context`` (a system's ``context`` method).
          spins: ``(n_up, n_down)`` pairs.
          **param_values: a list of values for every context parameter to vary.
        """
        names = sorted(param_values)
        contexts = []
        for (n_up, n_down), combo in itertools.product(spins, itertools.product(*(param_values[n] for n in names))):
            contexts.append(make_context(n_up, n_down, **dict(zip(names, combo))))
        return cls(contexts)

    def contexts_at(self, step: int) -> Tuple[Context, ...]:
        """The contexts trained at ``step`` (always the same)."""
        _check_step(step)
        return self.contexts

    def is_boundary(self, step: int) -> bool:
        """Whether the contexts may change at ``step`` (only at 0)."""
        return step == 0

    def boundaries(self, num_steps: int) -> List[int]:
        """Steps below ``num_steps`` at which contexts are (re)assigned."""
        return [0] if num_steps > 0 else []

    def max_blocks(self) -> int:
        """Largest number of walker blocks this schedule ever uses."""
        return len(self.contexts)

    def validate(self, system=None, total_walkers: Optional[int] = None) -> None:
        """Raises ``ValueError`` for contexts the system rejects or walkers that do not divide into blocks."""
        if system is not None:
            for ctx in self.contexts:
                system.validate(ctx)
        if total_walkers is not None:
            samplers.block_size(total_walkers, len(self.contexts))

    def describe(self) -> Dict[str, object]:
        """A plain description (stored in checkpoints; a resumed run must describe the same schedule)."""
        return {'kind': 'discrete', 'contexts': [c.label() for c in self.contexts]}


class BlockwiseSchedule:
    """Every ``block_length`` steps, draw new values of one context parameter from an interval.

    The walkers are split into ``len(bases) · num_contexts`` blocks; each block trains one
    drawn context and keeps it for a whole block of steps. A draw depends only on
    ``(seed, stage, block index)``, never on history, so a resumed run sees the same
    contexts as an uninterrupted one. Draws are stratified: value ``i`` of a block lies in
    the ``i``-th of ``num_contexts`` equal sub-intervals, so every block covers the whole
    interval and block ``i`` stays near the same part of it from one block to the next
    (walkers carried over by ``VMC.reassign`` then need little burn-in). ``stratified=False``
    draws independent uniform values instead (sorted, for the same reason).

    Stages change ``num_contexts`` during training (e.g. 4 then 16 as in the study):
    ``stages=[(0, 4), (2000, 16)]``. A stage start is always a boundary.

    Args:
      bases: one context or several (e.g. one per N); drawn contexts are
        ``base.replace(**{param: value})``, ``num_contexts`` per base.
      param: the parameter drawn, e.g. ``'lam'``; it must be one of the bases' parameters.
      interval: ``(low, high)`` with ``low < high``.
      block_length: K, steps per block (> 0).
      num_contexts: N_λ of a single-stage schedule (ignored when ``stages`` is given).
      stages: ``[(start_step, num_contexts), ...]``, the first starting at 0.
      seed: seed of the draws.
      stratified: stratified (default) or independent uniform draws.
    """

    def __init__(self, bases, param: str, interval: Tuple[float, float], block_length: int = 500,
                 num_contexts: int = 4, stages: Optional[Sequence[Tuple[int, int]]] = None, seed: int = 0,
                 stratified: bool = True):
        bases = (bases,) if isinstance(bases, Context) else tuple(bases)
        if not bases or not all(isinstance(b, Context) for b in bases):
            raise ValueError('bases must be a Context or a non-empty sequence of Contexts.')
        for base in bases:
            names = [k for k, _ in base.params]
            if param not in names:
                raise ValueError(f'Unknown context parameter {param!r}: the base context {base.label()} has '
                                 f'parameters {names}; pick one of them.')
        low, high = (float(v) for v in interval)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f'interval must be (low, high) with finite low < high, got {tuple(interval)}.')
        if isinstance(block_length, bool) or int(block_length) != block_length or block_length <= 0:
            raise ValueError(f'block_length must be a positive integer, got {block_length!r}.')
        stages = [(0, num_contexts)] if stages is None else [tuple(s) for s in stages]
        parsed = []
        for start, count in stages:
            if int(start) != start or int(count) != count or start < 0 or count <= 0:
                raise ValueError(f'each stage must be (start_step >= 0, num_contexts > 0), got {(start, count)}.')
            parsed.append(Stage(int(start), int(count)))
        if not parsed or parsed[0].start != 0 or any(b.start <= a.start for a, b in zip(parsed, parsed[1:])):
            raise ValueError(f'stages must start at step 0 and have increasing start steps, got {stages}.')
        self.bases, self.param, self.interval = bases, param, (low, high)
        self.block_length, self.stages, self.seed = int(block_length), tuple(parsed), int(seed)
        self.stratified = bool(stratified)
        self._cache: Dict[Tuple[int, int], Tuple[Context, ...]] = {}

    def stage_index(self, step: int) -> int:
        """Index of the stage that contains ``step``."""
        _check_step(step)
        return max(i for i, s in enumerate(self.stages) if s.start <= step)

    def block_index(self, step: int) -> Tuple[int, int]:
        """``(stage, block within the stage)`` of ``step``: the schedule position."""
        stage = self.stage_index(step)
        return stage, (step - self.stages[stage].start) // self.block_length

    def is_boundary(self, step: int) -> bool:
        """Whether a new block (new contexts) starts at ``step``."""
        stage = self.stage_index(step)
        return (step - self.stages[stage].start) % self.block_length == 0

    def boundaries(self, num_steps: int) -> List[int]:
        """Steps below ``num_steps`` at which a block starts."""
        return [t for t in range(num_steps) if self.is_boundary(t)]

    def values(self, stage: int, block: int) -> np.ndarray:
        """The drawn parameter values ``[len(bases), num_contexts]`` of one block (each row ascending)."""
        count = self.stages[stage].num_contexts
        rng = np.random.default_rng([self.seed, stage, block])
        u = rng.random((len(self.bases), count))
        low, high = self.interval
        if self.stratified:
            fractions = (np.arange(count) + u) / count
        else:
            fractions = np.sort(u, axis=1)
        return low + (high - low) * fractions

    def contexts_at(self, step: int) -> Tuple[Context, ...]:
        """The contexts of the block containing ``step``: base-major, values ascending within a base."""
        position = self.block_index(step)
        if position not in self._cache:
            values = self.values(*position)
            self._cache[position] = tuple(base.replace(**{self.param: float(v)})
                                          for base, row in zip(self.bases, values) for v in row)
        return self._cache[position]

    def max_blocks(self) -> int:
        """Largest number of walker blocks any stage uses."""
        return len(self.bases) * max(s.num_contexts for s in self.stages)

    def validate(self, system=None, total_walkers: Optional[int] = None) -> None:
        """Raises ``ValueError`` if the system rejects the interval's ends or a stage's blocks
        do not divide ``total_walkers``."""
        if system is not None:
            for base in self.bases:
                for value in self.interval:
                    system.validate(base.replace(**{self.param: value}))
        if total_walkers is not None:
            for i, stage in enumerate(self.stages):
                blocks = len(self.bases) * stage.num_contexts
                try:
                    samplers.block_size(total_walkers, blocks)
                except ValueError as err:
                    raise ValueError(f'Stage {i} (from step {stage.start}, {stage.num_contexts} contexts per base '
                                     f'× {len(self.bases)} bases): {err}') from None

    def describe(self) -> Dict[str, object]:
        """A plain description (stored in checkpoints; a resumed run must describe the same schedule)."""
        return {'kind': 'blockwise', 'bases': [b.label() for b in self.bases], 'param': self.param,
                'interval': list(self.interval), 'block_length': self.block_length,
                'stages': [list(s) for s in self.stages], 'seed': self.seed, 'stratified': self.stratified}


def _check_step(step: int) -> None:
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f'step must be a non-negative integer, got {step!r}.')
