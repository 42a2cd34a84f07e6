"""Loggers of the training loop: where every step's statistics go when the loop fetches them.

The loop (``qvmc.train.train``) keeps the step statistics on the device and fetches them in one
transfer every ``log_every`` steps and at every checkpoint. Each logger then receives the fetched
steps in order, as ``Record(step, info, contexts)`` with ``info`` a host ``StepInfo``. The history
file (``HistoryCsv``) and the progress line (``ProgressLine``) are the built-in loggers; pass your
own with ``train(..., loggers=[...])``.

A logger may be rolled back: when the loop's guard restores the last good state (``qvmc.guard``),
it calls ``rewind(mark)`` with what ``mark()`` returned at that state, so a file logger can drop the
rows written since (``HistoryCsv`` truncates its file). The defaults do nothing, so a logger that only
prints needs nothing but ``log``::

    class AcceptanceLog(Logger):
        def log(self, records, seconds_per_step):
            for r in records:
                print(r.step, [round(float(b.acceptance), 2) for b in r.info.blocks])

    train(vmc, state, key, 1000, run_dir='runs/x', loggers=[AcceptanceLog()])
"""

import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

from hamiltonians.context import Context
from qvmc.history import CsvAppender, Progress, history_rows
from qvmc.state import StepInfo


class Record(NamedTuple):
    """One fetched step: its number (``state.step`` after it), its host statistics and the contexts
    of the walker blocks (``info.blocks[i]`` belongs to ``contexts[i]``)."""
    step: int
    info: StepInfo
    contexts: Sequence[Context]


class Logger:
    """Base class of the training loop's loggers (every method optional; the defaults do nothing)."""

    def dispatched(self, step: int) -> None:
        """Step ``step`` was dispatched to the device (its statistics are not fetched yet)."""

    def log(self, records: Sequence[Record], seconds_per_step: float) -> None:
        """The steps fetched since the last call, in order; ``seconds_per_step`` is the wall time
        since that call divided by their number."""

    def mark(self) -> Any:
        """A point ``rewind`` can return to (taken when the guard records a good state)."""
        return None

    def rewind(self, mark: Any) -> None:
        """Drops what was logged after ``mark`` (the loop rolled back to the state of that mark)."""

    def close(self) -> None:
        """The loop ends (also after an exception)."""


class HistoryCsv(Logger):
    """``history.csv``: one row per walker block and step (``qvmc.history.history_rows``); None: no file."""

    def __init__(self, path: Optional[str]):
        self.csv = CsvAppender(path)

    def log(self, records, seconds_per_step):
        for r in records:
            self.csv.write(history_rows(r.step, r.info, seconds_per_step, r.contexts))

    def mark(self) -> int:
        return self.csv.size()

    def rewind(self, mark: int) -> None:
        self.csv.truncate(mark)

    def close(self) -> None:
        self.csv.close()


class ProgressLine(Logger):
    """The progress line every ``every`` steps (``qvmc.history.Progress``): energy, variance,
    acceptance, speed from the first dispatched step on, ETA."""

    def __init__(self, num_steps: int, every: int, print_fn: Optional[Callable[[str], None]]):
        self.progress = Progress(num_steps, every, print_fn)

    def dispatched(self, step):
        self.progress.tick(step)

    def log(self, records, seconds_per_step):
        last = records[-1]
        self.progress.update(last.step, last.info, last.contexts, now=time.time())


def check_loggers(loggers: Sequence) -> tuple:
    """The loggers as a tuple; ``ValueError`` if one lacks a callable ``log``."""
    loggers = tuple(loggers or ())
    for i, logger in enumerate(loggers):
        if not callable(getattr(logger, 'log', None)):
            raise ValueError(f'loggers[{i}] must have a method log(records, seconds_per_step) (subclass '
                             f'qvmc.loggers.Logger), got {type(logger).__name__}.')
    return loggers
