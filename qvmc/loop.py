"""The training loop of ``qvmc.train.train`` as one object: the run's state and its services (the
guard's rollbacks, the loggers, the checkpoint policy, the callbacks, stop signals) as attributes and
methods, not closures. ``train`` validates its arguments, takes the run directory's lock and calls
``TrainingLoop(...).run()``."""

import os
import time
from typing import Callable

import jax
import numpy as np

import samplers

from qvmc import checkpoint
from qvmc.checkpoint import CHECKPOINT_NAME
from qvmc.guard import Failure, Guard, StopSignals, TrainingInterrupted, health, nonfinite_leaves
from qvmc.history import BURN_IN_NAME, HISTORY_NAME, CsvAppender, burn_in_rows, truncate_csv
from qvmc.loggers import HistoryCsv, ProgressLine, Record
from qvmc.resume import model_metadata, resume, state_metadata, state_tree

_SWITCH_SALT = 2**31 - 1  # RNG streams of context switches and walker-count changes, apart from steps
_RESIZE_SALT = 2**31 - 2


def every_n_steps(n: int) -> Callable[[int, int], bool]:
    """The default checkpoint policy: a checkpoint every ``n`` steps (and always at the last step)."""
    return lambda step, num_steps: step % n == 0


class TrainingLoop:
    """One call of ``train``: resumes from ``run_dir``, then steps, logs, guards, checkpoints and stops.

    Attributes (while it runs): ``state`` and ``t`` (its step), ``contexts`` (of the walker blocks),
    ``pending`` (dispatched steps not yet fetched), ``guard``, ``loggers`` (built-in ones first),
    ``burn_log``, ``callbacks``, ``checkpoint_due(step, num_steps)``, ``saved_at`` (the last step
    checkpointed), ``stop_at`` (a callback's stop request).
    """

    def __init__(self, vmc, state, rng_key, num_steps, run_dir, *, log_every, print_fn, schedule, total_walkers,
                 keep_checkpoints, burn_opts, run_config, allow_pickle, max_rejections, max_retries,
                 allow_missing_history, callbacks, loggers, checkpoint_due):
        self.vmc, self.num_steps, self.run_dir, self.schedule = vmc, num_steps, run_dir, schedule
        self.total_walkers, self.keep_checkpoints, self.burn_opts = total_walkers, keep_checkpoints, burn_opts
        self.callbacks, self.checkpoint_due = callbacks, checkpoint_due
        self.say = print_fn or (lambda _: None)
        self.metadata = model_metadata(vmc, schedule, run_config)
        resumed, stored = None, {}
        if run_dir is not None and os.path.isdir(run_dir):
            state, rng_key, resumed, stored = resume(vmc, state, rng_key, run_dir, self.metadata, self.say, allow_pickle)
        self.state, self.rng_key, self.t = state, rng_key, int(np.asarray(state.step))
        self.wanted = _walker_target(vmc, state, schedule, total_walkers)  # validated before anything is written
        if not bool(np.asarray(health(state))[0]):
            raise ValueError('The initial state\'s parameters or optimizer state hold non-finite values (NaN or inf); '
                             'start from finite parameters (e.g. vmc.init(key)) or a checkpoint.')
        history_path = burn_path = None
        if run_dir is not None:
            history_path = os.path.join(run_dir, HISTORY_NAME)
            burn_path = os.path.join(run_dir, BURN_IN_NAME)
            _check_history(history_path, resumed, self.t, allow_missing_history, self.say)
            os.makedirs(run_dir, exist_ok=True)
            truncate_csv(history_path, lambda step: step <= self.t)
            truncate_csv(burn_path, lambda step: step < self.t)
        if jax.process_index() != 0:  # in a multi-process run only process 0 writes files
            history_path = burn_path = None
        self.burn_log = CsvAppender(burn_path)
        self.loggers = (HistoryCsv(history_path), ProgressLine(num_steps, log_every, print_fn)) + tuple(loggers)
        self.log_every = log_every
        self.guard = Guard(rng_key, max_rejections, max_retries, stored.get('retry'))
        self.pending = []  # (step, info on device, contexts) not yet fetched
        self.flushed_at = time.time()
        self.saved_at = self.t if resumed else None
        self.contexts = ()
        self.stop_at = None  # the step at which a callback asked for a stop

    def marks(self):
        """The loggers' rewind points and the burn-in log's size: what a rollback returns to."""
        return tuple(_call(logger, 'mark') for logger in self.loggers) + (self.burn_log.size(),)

    def rollback(self, failure: Failure) -> None:
        """Restores the guard's last good state and rewinds the logs to it (or raises, retries used up)."""
        (self.t, self.state, self.contexts, marks), energies = self.guard.fail(failure, self.t)
        for logger, mark in zip(self.loggers, marks):
            _call(logger, 'rewind', mark)
        self.burn_log.truncate(marks[-1])
        self.pending.clear()
        self.say(f'step {failure.step}: {failure.reason} ({energies}); rolled back to step {self.t}, retrying with '
                 f'a new random stream (retry {self.guard.retry} of {self.guard.max_retries})')

    def flush(self) -> bool:
        """Fetches the pending steps, logs them, checks parameter health and runs the callbacks;
        False if it rolled back."""
        if not self.pending:
            return True
        now = time.time()
        seconds = (now - self.flushed_at) / len(self.pending)
        *infos, (params_ok, state_ok) = jax.device_get([p[1] for p in self.pending] + [health(self.state)])
        records = [Record(step, info, ctxs) for (step, _, ctxs), info in zip(self.pending, infos)]
        for logger in self.loggers:
            logger.log(records, seconds)
        failure = self.guard.observe([r.step for r in records], infos, [r.contexts for r in records],
                                     bool(params_ok))
        self.pending.clear()
        self.flushed_at = now
        if failure is not None:
            self.rollback(failure)
            return False
        if self.guard.consecutive == 0 and state_ok:
            self.guard.snapshot(self.t, self.state, self.contexts, self.marks())
        if self.callbacks:
            last = jax.tree.map(np.asarray, records[-1].info)  # already on the host
            if any([cb(self.t, self.state, last, records[-1].contexts) for cb in self.callbacks]):  # all run
                self.stop_at = self.t
        return True

    def save(self) -> bool:
        """Writes the checkpoint of step ``t``; False if refused (non-finite) and rolled back."""
        tree = state_tree(self.state, self.rng_key)  # a collective: every process takes part
        bad = nonfinite_leaves(tree)
        if bad:
            self.say(f'step {self.t}: checkpoint not written: {", ".join(bad[:4])} hold non-finite values')
            self.rollback(Failure(self.t, 'the checkpoint was refused (non-finite values)', self.guard.bad_contexts))
            return False
        if jax.process_index() == 0:
            try:
                checkpoint.save_rotating(self.run_dir, self.t, tree,
                                         state_metadata(self.state, self.metadata, self.schedule,
                                                        self.guard.describe()),
                                         self.keep_checkpoints, CHECKPOINT_NAME)
            except OSError as err:
                self.say(f'step {self.t}: could not write a checkpoint in run directory {self.run_dir!r} ({err}). '
                         'The previous checkpoint is still current; stopping. Free space or fix permissions, then '
                         're-run to resume.')
                raise OSError(err.errno, f'Training stopped at step {self.t}: could not write a checkpoint in run '
                              f'directory {self.run_dir!r} ({err.strerror or err}); the previous checkpoint is '
                              'still current, re-run to resume') from err
        self.saved_at = self.t
        return True

    def _unsaved(self) -> bool:
        return self.run_dir is not None and self.saved_at != self.t

    def run(self):
        """The loop; returns the final state (raises ``TrainingInterrupted`` on a stop signal)."""
        try:
            with StopSignals() as stop:
                if self.wanted is not None:
                    self.state = _resize(self.vmc, self.state, self.rng_key, self.wanted, self.burn_opts,
                                         self.burn_log, self.say)
                self.contexts = self.state.contexts
                self.guard.snapshot(self.t, self.state, self.contexts, self.marks())
                while True:
                    if stop.requested:
                        if not self.flush() or (self._unsaved() and not self.save()):
                            continue  # rolled back: checkpoint the restored state instead
                        self.say(f'{stop.requested}: stopped at step {self.t}' +
                                 (f'; checkpoint written to {self.run_dir}' if self.run_dir is not None else ''))
                        raise TrainingInterrupted(self.t, stop.requested, self.state)
                    if self.t >= self.num_steps:
                        break
                    if self.stop_at == self.t:
                        if self._unsaved() and not self.save():
                            self.stop_at = None
                            continue  # refused and rolled back: go on from the restored state
                        self.say(f'step {self.t}: stopped by a callback' +
                                 (f'; checkpoint written to {self.run_dir}' if self.run_dir else ''))
                        break
                    if not self._advance():
                        continue
        finally:
            for logger in self.loggers:
                _call(logger, 'close')
            self.burn_log.close()
        return self.state

    def _advance(self) -> bool:
        """A context switch if the schedule asks for one, one step, and the fetch and checkpoint
        when due; False if a flush rolled back."""
        if self.schedule is not None and tuple(self.schedule.contexts_at(self.t)) != self.contexts:
            if not self.flush():
                return False
            key = jax.random.fold_in(jax.random.fold_in(self.guard.base_key(self.t), _SWITCH_SALT), self.t)
            self.state = _switch(self.vmc, self.state, key, self.schedule.contexts_at(self.t), self.total_walkers,
                                 self.burn_opts, self.burn_log, self.say)
            self.contexts = self.state.contexts
        self.state, info = self.vmc.step(jax.random.fold_in(self.guard.base_key(self.t), self.t), self.state)
        self.t += 1
        self.pending.append((self.t, info, self.contexts))
        if len(self.pending) > _MAX_IN_FLIGHT:  # bound JAX's run-ahead: a stop signal is served within ~2 steps
            jax.block_until_ready(self.pending[-1 - _MAX_IN_FLIGHT][1].loss)
        for logger in self.loggers:
            _call(logger, 'dispatched', self.t)
        last = self.t == self.num_steps
        due = self.run_dir is not None and (last or bool(self.checkpoint_due(self.t, self.num_steps)))
        if (due or self.t % self.log_every == 0 or last) and not self.flush():
            return False
        if due:
            self.save()
        return True


def _call(logger, method, *args):
    """``logger.method(*args)`` when the logger has it (a duck-typed logger may define ``log`` only)."""
    fn = getattr(logger, method, None)
    return fn(*args) if callable(fn) else None


_MAX_IN_FLIGHT = 2  # dispatched steps allowed to run ahead of the host (async dispatch would queue a whole
# logging interval: a SIGTERM then waited for ~25 steps, 80 s at 5 s/step, beyond a scheduler's grace period)


def _check_history(history_path, resumed, step, allow_missing, say):
    """Refuses to resume a checkpoint at ``step`` > 0 whose history file is gone (unless allowed)."""
    if resumed is None or step == 0 or jax.process_index() != 0 or os.path.exists(history_path):
        return
    if not allow_missing:
        raise ValueError(f'{history_path!r} is missing, but {resumed!r} resumes at step {step}: the history of '
                         f'steps 1..{step} would be lost. Restore the file (e.g. from a backup), or pass '
                         f'allow_missing_history=True to train to start a new history file at step {step}.')
    say(f'{history_path} is missing; starting a new history file at step {step} (allow_missing_history=True)')


def _switch(vmc, state, key, contexts, total_walkers, burn_opts, burn_log, say):
    """Re-points the blocks at ``contexts`` and burns in the changed ones."""
    key_assign, key_burn = jax.random.split(key)
    state, assignment = vmc.reassign(key_assign, state, contexts, total_walkers=total_walkers)
    which = [i for i, need in enumerate(assignment.needs_burn_in) if need]
    state, reports = vmc.equilibrate(key_burn, state, which, **burn_opts)
    burn_log.write(burn_in_rows(int(np.asarray(state.step)), 'switch', contexts, assignment, reports))
    failed = sum(not r.equilibrated for r in reports.values())
    calls = [r.steps for r in reports.values()]
    say(f'step {int(np.asarray(state.step))}: {len(contexts)} context blocks, {len(which)} burned in '
        f'({min(calls, default=0)}-{max(calls, default=0)} sampler calls)'
        + (f'; {failed} hit max_steps without passing the equilibration check' if failed else ''))
    return state


def _walker_target(vmc, state, schedule, total_walkers):
    """The walker total the blocks must be resized to now, or None (unchanged, or the schedule
    switches at this step and sets it); raises ``ValueError`` if it does not divide into the blocks."""
    contexts = state.contexts
    current = sum(int(np.shape(c.walkers)[0]) for c in state.chains)
    wanted = vmc.config.num_walkers * len(contexts) if total_walkers is None else total_walkers
    if wanted == current or (schedule is not None and tuple(schedule.contexts_at(int(np.asarray(state.step)))) != contexts):
        return None
    samplers.block_size(wanted, len(contexts))
    return wanted


def _resize(vmc, state, rng_key, wanted, burn_opts, burn_log, say):
    """Resizes the blocks to ``wanted`` walkers in all (cut to a prefix, or grown and burned in)."""
    contexts = state.contexts
    current = sum(int(np.shape(c.walkers)[0]) for c in state.chains)
    key = jax.random.fold_in(jax.random.fold_in(rng_key, _RESIZE_SALT), int(np.asarray(state.step)))
    key_assign, key_burn = jax.random.split(key)
    state, assignment = vmc.reassign(key_assign, state, contexts, total_walkers=wanted)
    say(f'walker count changed from {current} to {wanted} ({wanted // len(contexts)} per block)')
    if wanted > current:  # duplicated walkers must decorrelate before they are used
        state, reports = vmc.equilibrate(key_burn, state, **burn_opts)
        burn_log.write(burn_in_rows(int(np.asarray(state.step)), 'resize', contexts, assignment, reports))
    return state


