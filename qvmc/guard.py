"""Services of the training loop that keep a run alive or stop it cleanly: the parameter-health
guard (rollback to the last good state and retries with fresh random streams) and the graceful
stop on SIGTERM / SIGINT."""

import signal
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qvmc.natgrad import all_finite

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure, try again" — re-running resumes
_RETRY_SALT = 2**31 - 3  # RNG streams of retried steps, apart from steps, switches and resizes


class TrainingInterrupted(Exception):
    """Training stopped on request (SIGTERM or SIGINT) after a clean checkpoint.

    Attributes:
      step: the step the run reached (and, with a run directory, checkpointed).
      signal_name: ``'SIGTERM'`` or ``'SIGINT'``.
      state: the ``TrainState`` at ``step`` (to continue in memory).
      exit_code: 75 (``EX_TEMPFAIL``): what a driver should exit with; re-running resumes.
    """
    exit_code = EX_TEMPFAIL

    def __init__(self, step: int, signal_name: str = 'signal', state: Any = None):
        super().__init__(f'training stopped at step {step} on {signal_name}; re-run to resume')
        self.step, self.signal_name, self.state = step, signal_name, state


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set ``requested`` instead of killing.

    Handlers are installed only in the main thread (Python delivers signals there) and not
    for a signal the process ignores; the previous ones are restored on exit. A second
    signal while a stop is pending is handled by the previous handler (SIGINT raises
    ``KeyboardInterrupt``, SIGTERM terminates).
    """
    SIGNALS = ('SIGTERM', 'SIGINT')

    def __init__(self):
        self.requested: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signal.Signals(signum).name
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.__exit__()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.raise_signal(signum)

    def __enter__(self) -> 'StopSignals':
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                if signal.getsignal(signum) != signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


class Failure(NamedTuple):
    """A detected failure: the step it is dated to, why, and the contexts with non-finite energies."""
    step: int
    reason: str
    bad_contexts: List[str]


@jax.jit
def _health(params, opt_state, chains, values):
    params_ok = all_finite((params, opt_state))
    return jnp.stack([params_ok, params_ok & all_finite((chains, values))])


def health(state) -> jax.Array:
    """``[2]`` device bools (no host sync): parameters and optimizer state are finite; the whole
    state (walkers and step sizes too) is finite, as a checkpoint requires."""
    return _health(state.params, state.opt_state, state.chains, state.values)


def nonfinite_leaves(tree) -> List[str]:
    """Paths (``keystr``) of the floating leaves of a host tree that hold NaN or inf."""
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, 'dtype') and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            continue
        array = np.asarray(leaf)
        if array.dtype.kind in 'fc' and not np.all(np.isfinite(array)):
            bad.append(jax.tree_util.keystr(path))
    return bad


class Guard:
    """Parameter health of the loop: detection, the last good state, rollbacks and retry streams.

    A failure is ``max_rejections`` consecutive rejected updates (read from the step
    infos when the loop fetches them), parameters or optimizer state holding a non-finite
    value, or a checkpoint refused for a non-finite value. The loop then restores the last
    good snapshot (taken at a fetch whose last update was accepted and whose whole state,
    walkers included, was finite) and runs the steps up to the failing one again
    with the key ``fold_in(fold_in(rng_key, _RETRY_SALT), retry)`` in place of ``rng_key``;
    the retry counter is reset once the run passes that step healthy. After ``max_retries``
    retries of one failure it raises ``FloatingPointError``.

    Snapshots are references to the device state (the jitted step does not donate its
    inputs), so they cost no transfer.
    """

    def __init__(self, rng_key, max_rejections: int, max_retries: int, retry: Optional[Dict[str, int]] = None):
        self.rng_key, self.max_rejections, self.max_retries = rng_key, max_rejections, max_retries
        self.retry, self.retry_until = (int(retry['count']), int(retry['until'])) if retry else (0, -1)
        self.consecutive, self.streak_start, self.bad_contexts = 0, None, []
        self.good = None  # (step, state, contexts, file sizes)

    def base_key(self, t: int):
        """The run key for step ``t`` (the retry stream while a failure is being retried)."""
        if self.retry and t < self.retry_until:
            return jax.random.fold_in(jax.random.fold_in(self.rng_key, _RETRY_SALT), self.retry)
        return self.rng_key

    def describe(self) -> Optional[Dict[str, int]]:
        """The retry position (stored in checkpoints so a resumed run uses the same streams)."""
        return {'count': self.retry, 'until': self.retry_until} if self.retry else None

    def observe(self, steps: Sequence[int], infos: Sequence[Any], contexts: Sequence[Sequence],
                finite: bool) -> Optional[Failure]:
        """Reads fetched step infos (host) and the finiteness flag; returns a ``Failure`` or None."""
        for step, info, ctxs in zip(steps, infos, contexts):
            if bool(info.accepted):
                self.consecutive, self.streak_start, self.bad_contexts = 0, None, []
                continue
            self.consecutive += 1
            self.streak_start = step if self.streak_start is None else self.streak_start
            for ctx, stats in zip(ctxs, info.blocks):
                if not np.isfinite(float(stats.energy)) and ctx.label() not in self.bad_contexts:
                    self.bad_contexts.append(ctx.label())
        if not finite:
            first = self.streak_start if self.streak_start is not None else steps[-1]
            return Failure(first, 'the parameters or optimizer state hold non-finite values', self.bad_contexts)
        if self.consecutive >= self.max_rejections:
            return Failure(self.streak_start, f'{self.consecutive} consecutive updates were rejected as non-finite',
                           self.bad_contexts)
        return None

    def snapshot(self, t: int, state, contexts, sizes) -> None:
        """Records the last good point; a retried failure counts as passed beyond its step."""
        self.good = (t, state, contexts, sizes)
        if self.retry and t >= self.retry_until:
            self.retry, self.retry_until = 0, -1

    def fail(self, failure: Failure, t: int):
        """Registers ``failure`` (detected at step ``t``); returns the snapshot to restore, or raises
        ``FloatingPointError`` when the retries of this failure are used up."""
        good_step = self.good[0]
        labels = failure.bad_contexts
        energies = f'non-finite energies in {", ".join(labels)}' if labels else 'all context energies were finite'
        if self.retry >= self.max_retries:
            tries = f'after {self.retry} retr{"y" if self.retry == 1 else "ies"} ' if self.retry else ''
            raise FloatingPointError(
                f'Training failed at step {failure.step} {tries}from step {good_step}: {failure.reason}; '
                f'{energies}. Lower the learning rate, clip updates (optax.clip_by_global_norm), or '
                'check the model for overflow; checkpoints already written are kept.')
        self.retry += 1
        self.retry_until = max(self.retry_until, t)
        self.consecutive, self.streak_start, self.bad_contexts = 0, None, []
        return self.good, energies
