"""The training loop: context schedules with burn-in after every switch, statistics fetched at the
logging interval, rotating pickle-free checkpoints, exact resume, rollback of failed steps and a
graceful stop. Its services live in ``qvmc.history`` (CSV logs, progress line), ``qvmc.resume``
(checkpoint trees, resuming) and ``qvmc.guard`` (parameter health, retries, stop signals)."""

import os
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np

import samplers

from qvmc import checkpoint
from qvmc.callbacks import Callback, check_callbacks
from qvmc.config import check_int
from qvmc.guard import Failure, Guard, StopSignals, TrainingInterrupted, health, nonfinite_leaves  # noqa: F401
from qvmc.history import (BURN_IN_NAME, HISTORY_NAME, CsvAppender, Progress, burn_in_rows, format_seconds,  # noqa: F401
                          history_rows, load_burn_in, load_history, truncate_csv)
from qvmc.checkpoint import CHECKPOINT_NAME
from qvmc.resume import model_metadata, resume, state_metadata, state_tree
from qvmc.runlock import RunLock
from qvmc.state import TrainState
from qvmc.vmc import VMC

_SWITCH_SALT = 2**31 - 1  # RNG streams of context switches and walker-count changes, apart from steps
_RESIZE_SALT = 2**31 - 2


def train(vmc: VMC, state: TrainState, rng_key, num_steps: int, run_dir: Optional[str] = None,
          checkpoint_every: int = 50, log_every: int = 10,
          print_fn: Optional[Callable[[str], None]] = print, *, schedule=None,
          total_walkers: Optional[int] = None, keep_checkpoints: int = 3,
          burn_in_options: Optional[Dict[str, int]] = None,
          run_config: Optional[Dict[str, Any]] = None, allow_pickle: bool = False,
          max_rejections: int = 5, max_retries: int = 2, allow_missing_history: bool = False,
          callbacks: Sequence[Callback] = ()) -> TrainState:
    """Runs ``vmc.step`` until ``state.step == num_steps``, following a context schedule.

    With a ``schedule`` (``qvmc.schedule.DiscreteSchedule`` or ``BlockwiseSchedule``),
    whenever ``schedule.contexts_at(step)`` differs from the contexts of the walker blocks
    (that is, at a block boundary) the blocks are re-pointed with ``vmc.reassign`` and every
    block whose context changed is burned in with ``vmc.equilibrate`` until the sampling
    layer's equilibration check passes; each block's ``BurnInReport`` becomes a row of
    ``burn_in.csv``.

    The step's statistics stay on the device; every ``log_every`` steps (and at every
    checkpoint) they are fetched in one transfer, appended to ``history.csv`` (one row per
    context and step) and summarised in the progress line. Every ``checkpoint_every`` steps
    the state, the RNG key, the schedule position, the total walker count and the run's
    configuration are written to ``checkpoint-<step>.qvmc`` (``qvmc.checkpoint``: arrays in
    a pickle-free archive plus JSON metadata, written atomically with a SHA-256 checksum;
    the newest ``keep_checkpoints`` are kept and ``checkpoint.qvmc`` always names the
    newest). A legacy pickle checkpoint of qvmc 0.1 is resumed only with
    ``allow_pickle=True`` (pickles can run code when loaded). If the directory holds a checkpoint,
    training resumes from the newest readable one with its stored RNG key (a different
    ``rng_key`` is then ignored, with a message) and history rows after it are dropped.
    Checkpoints hold gathered host arrays (``qvmc.parallel.gather_state``), so a run may
    resume on another device count; with ``vmc.mesh`` the loaded state is re-sharded, and in
    a multi-process run only process 0 writes files. The
    key of step ``t`` is ``fold_in(rng_key, t)`` and context draws depend only on the step,
    so a resumed run reproduces an uninterrupted one exactly (only the ``seconds`` column
    and the printed lines differ). A checkpoint from an incompatible model or schedule, or
    a directory whose checkpoints are all corrupted, raises ``ValueError`` before anything
    is written; a corrupted newer checkpoint is renamed ``*.corrupt`` and an older one used.
    A checkpoint at step > 0 without ``history.csv`` next to it raises ``ValueError``
    (restore the file, or pass ``allow_missing_history=True`` to start a new one there).

    A walker count different from the state's (``total_walkers``, or a changed
    ``VMCConfig.num_walkers``) is honoured on resume: blocks are cut to a prefix, or grown
    by duplicating walkers and then burned in (event ``'resize'`` in ``burn_in.csv``).
    From then on the run differs from one with the old count, as it must.

    Parameter health (``qvmc.guard``): the step already rejects a non-finite update. When
    the statistics are fetched, a run of at least ``max_rejections`` rejected updates up to
    that point, or parameters / optimizer state holding NaN or inf, count as a failure, and so does a
    checkpoint refused for a non-finite value (nothing is written). The loop then rolls the
    whole state (parameters, optimizer state, walkers) and the CSV logs back to the last
    good fetch (last update accepted, whole state finite) and runs the steps up to the
    failing one again with a fresh random stream, ``fold_in(fold_in(rng_key, salt), retry)``
    (new walker moves, same learning rate), at most ``max_retries`` times per failure; the
    retry position is stored in checkpoints, so resuming stays exact. If that fails too, it
    raises ``FloatingPointError`` naming the step and the contexts whose energies were
    non-finite.

    Graceful stop: SIGTERM or SIGINT (handled while ``train`` runs in the main thread; the
    previous handlers are restored on return) lets the current step finish, flushes the
    history, writes a checkpoint (with ``run_dir``) and raises
    ``TrainingInterrupted(step)`` (``exit_code`` 75); re-running the same call resumes
    exactly. A second signal is handled by the previous handler. In a multi-process run
    every process must receive the signal.

    Callbacks (``qvmc.callbacks``): each ``callback(step, state, info, contexts)`` is called after
    every fetch of the statistics that rolled nothing back (every ``log_every`` steps and at
    checkpoints), with the host ``StepInfo`` of that step; returning True stops training
    gracefully: a checkpoint is written (with ``run_dir``) and ``train`` returns the state of that
    step. ``qvmc.callbacks.TimeLimit`` and ``EnergyTarget`` are ready-made ones.

    One writer per run directory (``qvmc.runlock``): while ``train`` runs it holds an exclusive
    lock on ``run_dir`` (process 0 only, in a multi-process run); a second process training into
    the same directory is refused with ``RunDirectoryLocked`` (a ``ValueError`` naming the owner's
    host, PID and start time) before anything is read or written. A killed run leaves no lock.

    A failed checkpoint write (``OSError``: disk full, read-only file system) stops training
    with an ``OSError`` naming the run directory, after the history is flushed; the previous
    checkpoint stays current.

    Args:
      vmc: the ``VMC`` trainer.
      state: the initial state (ignored when a checkpoint is resumed).
      rng_key: JAX PRNG key of the run.
      num_steps: train until this step.
      run_dir: directory of history, burn-in log and checkpoints (None: nothing written).
      checkpoint_every, log_every: intervals in steps.
      print_fn: where progress lines go (None: silent).
      schedule: context schedule (None: the state's contexts throughout).
      total_walkers: walkers over all blocks. Default: ``VMCConfig.num_walkers`` per block
        of the state without a schedule, ``VMCConfig.num_walkers · len(vmc.contexts)`` with one.
      keep_checkpoints: numbered checkpoints kept.
      burn_in_options: ``chunk``, ``min_steps``, ``max_steps`` of ``vmc.equilibrate``.
      run_config: the driver's configuration (e.g. ``vars(args)``), stored in checkpoints.
      allow_pickle: resume a legacy pickle checkpoint (see above).
      max_rejections: consecutive rejected updates that count as a failure (>= 1).
      max_retries: retries of one failure from the last good state (>= 0).
      allow_missing_history: resume a checkpoint whose ``history.csv`` is gone, starting a
        new history file at its step.
      callbacks: callables ``callback(step, state, info, contexts) -> bool | None`` (see above).

    Returns:
      The final ``TrainState``.

    Raises:
      ValueError: invalid arguments, incompatible or unreadable checkpoints, a missing
        history, or initial parameters that are not finite.
      RunDirectoryLocked: another process is training into ``run_dir``.
      FloatingPointError: a failure persisted through ``max_retries`` retries.
      TrainingInterrupted: SIGTERM or SIGINT (after a checkpoint).
      OSError: a checkpoint could not be written.
    """
    for name, value in (('checkpoint_every', checkpoint_every), ('log_every', log_every),
                        ('keep_checkpoints', keep_checkpoints), ('num_steps', num_steps),
                        ('max_rejections', max_rejections), ('max_retries', max_retries)):
        check_int(name, value, minimum=0 if name in ('num_steps', 'max_retries') else 1)
    burn_opts = dict(burn_in_options or {})
    unknown = set(burn_opts) - {'chunk', 'min_steps', 'max_steps'}
    if unknown:
        raise ValueError(f'Unknown burn_in_options {sorted(unknown)}; use chunk, min_steps, max_steps.')
    if total_walkers is None and schedule is not None:
        total_walkers = vmc.config.num_walkers * len(vmc.contexts)
    if schedule is not None:
        schedule.validate(vmc.system, total_walkers)
    callbacks = check_callbacks(callbacks)
    say = print_fn or (lambda _: None)
    lock_dir = run_dir if run_dir is not None and jax.process_index() == 0 else None
    with RunLock(lock_dir):  # one writer per run directory, taken before anything is read or compiled
        return _train(vmc, state, rng_key, num_steps, run_dir, checkpoint_every, log_every, print_fn, say,
                      schedule, total_walkers, keep_checkpoints, burn_opts, run_config, allow_pickle,
                      max_rejections, max_retries, allow_missing_history, callbacks)


def _train(vmc, state, rng_key, num_steps, run_dir, checkpoint_every, log_every, print_fn, say, schedule,
           total_walkers, keep_checkpoints, burn_opts, run_config, allow_pickle, max_rejections, max_retries,
           allow_missing_history, callbacks):
    """The loop of ``train``, run while the run directory's lock is held."""
    metadata = model_metadata(vmc, schedule, run_config)
    history_path = burn_path = resumed = None
    stored = {}
    if run_dir is not None and os.path.isdir(run_dir):
        state, rng_key, resumed, stored = resume(vmc, state, rng_key, run_dir, metadata, say, allow_pickle)
    t = int(np.asarray(state.step))
    wanted = _walker_target(vmc, state, schedule, total_walkers)  # validated before anything is written
    if not bool(np.asarray(health(state))[0]):
        raise ValueError('The initial state\'s parameters or optimizer state hold non-finite values (NaN or inf); '
                         'start from finite parameters (e.g. vmc.init(key)) or a checkpoint.')
    if run_dir is not None:
        history_path = os.path.join(run_dir, HISTORY_NAME)
        burn_path = os.path.join(run_dir, BURN_IN_NAME)
        _check_history(history_path, resumed, t, allow_missing_history, say)
        os.makedirs(run_dir, exist_ok=True)
        truncate_csv(history_path, lambda step: step <= t)
        truncate_csv(burn_path, lambda step: step < t)

    if jax.process_index() != 0:  # in a multi-process run only process 0 writes files
        history_path = burn_path = None
    history, burn_log = CsvAppender(history_path), CsvAppender(burn_path)
    progress = Progress(num_steps, log_every, print_fn)
    guard = Guard(rng_key, max_rejections, max_retries, stored.get('retry'))
    pending = []  # (step, info on device, contexts) not yet written
    flushed_at = time.time()
    saved_at = t if resumed else None
    contexts = ()
    asked_to_stop = []  # a callback's stop request: [step]

    def rollback(failure, at):
        nonlocal state, t, contexts
        (t, state, contexts, sizes), energies = guard.fail(failure, at)
        history.truncate(sizes[0])
        burn_log.truncate(sizes[1])
        pending.clear()
        say(f'step {failure.step}: {failure.reason} ({energies}); rolled back to step {t}, retrying with a new '
            f'random stream (retry {guard.retry} of {guard.max_retries})')

    def flush():
        """Writes the pending rows and checks parameter health; False if it rolled back."""
        nonlocal flushed_at
        if not pending:
            return True
        now = time.time()
        seconds = (now - flushed_at) / len(pending)
        *infos, (params_ok, state_ok) = jax.device_get([p[1] for p in pending] + [health(state)])  # one transfer
        for (step, _, ctxs), info in zip(pending, infos):
            history.write(history_rows(step, info, seconds, ctxs))
        progress.update(pending[-1][0], infos[-1], pending[-1][2], now=now)
        pending_contexts = pending[-1][2]
        failure = guard.observe([p[0] for p in pending], infos, [p[2] for p in pending], bool(params_ok))
        pending.clear()
        flushed_at = now
        if failure is not None:
            rollback(failure, t)
            return False
        if guard.consecutive == 0 and state_ok:
            guard.snapshot(t, state, contexts, (history.size(), burn_log.size()))
        last = jax.tree.map(np.asarray, infos[-1]) if callbacks else None  # already on the host
        if any([callback(t, state, last, pending_contexts) for callback in callbacks]):  # every callback runs
            asked_to_stop.append(t)
        return True

    def save():
        """Writes the checkpoint of step ``t``; False if refused (non-finite) and rolled back."""
        nonlocal saved_at
        tree = state_tree(state, rng_key)  # a collective: every process takes part
        bad = nonfinite_leaves(tree)
        if bad:
            say(f'step {t}: checkpoint not written: {", ".join(bad[:4])} hold non-finite values')
            rollback(Failure(t, 'the checkpoint was refused (non-finite values)', guard.bad_contexts), t)
            return False
        if jax.process_index() == 0:
            try:
                checkpoint.save_rotating(run_dir, t, tree, state_metadata(state, metadata, schedule, guard.describe()),
                                         keep_checkpoints, CHECKPOINT_NAME)
            except OSError as err:
                say(f'step {t}: could not write a checkpoint in run directory {run_dir!r} ({err}). The previous '
                    'checkpoint is still current; stopping. Free space or fix permissions, then re-run to resume.')
                raise OSError(err.errno, f'Training stopped at step {t}: could not write a checkpoint in run '
                              f'directory {run_dir!r} ({err.strerror or err}); the previous checkpoint is still '
                              'current, re-run to resume') from err
        saved_at = t
        return True

    try:
        with StopSignals() as stop:
            if wanted is not None:
                state = _resize(vmc, state, rng_key, wanted, burn_opts, burn_log, say)
            contexts = state.contexts
            guard.snapshot(t, state, contexts, (history.size(), burn_log.size()))
            while True:
                if stop.requested:
                    if not flush() or (run_dir is not None and saved_at != t and not save()):
                        continue  # rolled back: checkpoint the restored state instead
                    say(f'{stop.requested}: stopped at step {t}' +
                        (f'; checkpoint written to {run_dir}' if run_dir is not None else ''))
                    raise TrainingInterrupted(t, stop.requested, state)
                if t >= num_steps:
                    break
                if asked_to_stop and asked_to_stop[-1] == t:
                    if run_dir is not None and saved_at != t and not save():
                        asked_to_stop.clear()
                        continue  # refused and rolled back: go on from the restored state
                    say(f'step {t}: stopped by a callback' + (f'; checkpoint written to {run_dir}' if run_dir else ''))
                    break
                if schedule is not None and tuple(schedule.contexts_at(t)) != contexts:
                    if not flush():
                        continue
                    key = jax.random.fold_in(jax.random.fold_in(guard.base_key(t), _SWITCH_SALT), t)
                    state = _switch(vmc, state, key, schedule.contexts_at(t), total_walkers, burn_opts, burn_log, say)
                    contexts = state.contexts
                state, info = vmc.step(jax.random.fold_in(guard.base_key(t), t), state)
                t += 1
                pending.append((t, info, contexts))
                if len(pending) > _MAX_IN_FLIGHT:  # bound JAX's run-ahead: a stop signal is served within ~2 steps
                    jax.block_until_ready(pending[-1 - _MAX_IN_FLIGHT][1].loss)
                progress.tick(t)
                due = run_dir is not None and (t % checkpoint_every == 0 or t == num_steps)
                if (due or t % log_every == 0 or t == num_steps) and not flush():
                    continue
                if due:
                    save()
    finally:
        history.close()
        burn_log.close()
    return state


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


