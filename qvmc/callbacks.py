"""Callbacks of the training loop: user code called at every statistics fetch, which may ask for a stop.

A callback is any callable ``callback(step, state, info, contexts) -> bool | None``, passed to
``qvmc.train.train(..., callbacks=[...])``. It is called on the host after the loop has fetched the
statistics (every ``log_every`` steps and at every checkpoint), with

* ``step``: the step just finished (``state.step``),
* ``state``: the ``TrainState`` after it (device arrays; fetch what you need),
* ``info``: that step's ``StepInfo`` as host numpy values (loss, one ``BlockStats`` per walker block:
  energy, variance, acceptance, …),
* ``contexts``: the contexts of the walker blocks (``info.blocks[i]`` belongs to ``contexts[i]``).

Returning True asks for a graceful stop: the loop writes a checkpoint (with a ``run_dir``) and
``train`` returns the state of that step, as if ``num_steps`` had been reached; calling ``train``
again on the same directory resumes from there. A callback must not change the state (the loop
ignores what it returns other than the stop request), so resumed runs stay exact.

Example::

    def print_acceptance(step, state, info, contexts):
        print(step, [round(float(b.acceptance), 2) for b in info.blocks])

    train(vmc, state, key, 1000, run_dir='runs/x', callbacks=[print_acceptance, TimeLimit(3600)])
"""

import math
import time
from typing import Callable, Optional, Sequence

import numpy as np

Callback = Callable[..., Optional[bool]]


class TimeLimit:
    """Stops training gracefully once ``seconds`` of wall time have passed since the callback was
    made (e.g. the batch system's limit minus a margin, so that the last checkpoint is written in time;
    the check runs at every statistics fetch, so leave a margin of a few logging intervals).

    Args:
      seconds: wall-time budget (> 0).
    """

    def __init__(self, seconds: float):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds <= 0:
            raise ValueError(f'TimeLimit(seconds) needs a finite number of seconds > 0, got {seconds!r}.')
        self.seconds = float(seconds)
        self.start = time.monotonic()

    def __call__(self, step, state, info, contexts) -> bool:
        return time.monotonic() - self.start >= self.seconds


class EnergyTarget:
    """Stops training once every walker block's energy (the step's mean local energy) is at or below
    its target.

    Args:
      targets: one target per walker block, or one number for all blocks.
    """

    def __init__(self, targets):
        values = np.atleast_1d(np.asarray(targets, dtype=float))
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise ValueError(f'EnergyTarget needs finite target energies, got {targets!r}.')
        self.targets = values

    def __call__(self, step, state, info, contexts) -> bool:
        energies = np.asarray([float(b.energy) for b in info.blocks])
        targets = np.broadcast_to(self.targets, energies.shape) if self.targets.size == 1 else self.targets
        if targets.shape != energies.shape:
            raise ValueError(f'EnergyTarget has {targets.size} targets but the run has {energies.size} walker blocks.')
        return bool(np.all(energies <= targets))


def check_callbacks(callbacks: Sequence) -> tuple:
    """The callbacks as a tuple; ``ValueError`` if one is not callable."""
    callbacks = tuple(callbacks or ())
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise ValueError(f'callbacks[{i}] must be callable as callback(step, state, info, contexts), '
                             f'got {type(cb).__name__}.')
    return callbacks
