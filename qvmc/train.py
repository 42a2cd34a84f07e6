"""The training loop: context schedules with burn-in after every switch, statistics fetched at the
logging interval, rotating pickle-free checkpoints, exact resume, rollback of failed steps and a
graceful stop. ``train`` validates its arguments and runs ``qvmc.loop.TrainingLoop``; the services
live in ``qvmc.loggers`` (history file, progress line, your loggers), ``qvmc.callbacks`` (stop
requests), ``qvmc.resume`` (checkpoint trees, resuming) and ``qvmc.guard`` (parameter health,
retries, stop signals). ``load_history``, ``load_burn_in`` and ``TrainingInterrupted`` are
importable from here, as drivers use them next to ``train``."""

from typing import Any, Callable, Dict, Optional, Sequence

import jax

from qvmc.callbacks import Callback, check_callbacks
from qvmc.config import check_int
from qvmc.guard import TrainingInterrupted  # noqa: F401  (raised by train)
from qvmc.history import load_burn_in, load_history  # noqa: F401  (used with train)
from qvmc.loggers import Logger, check_loggers
from qvmc.loop import TrainingLoop, every_n_steps
from qvmc.runlock import RunLock
from qvmc.state import TrainState
from qvmc.vmc import VMC


def train(vmc: VMC, state: TrainState, rng_key, num_steps: int, run_dir: Optional[str] = None,
          checkpoint_every: int = 50, log_every: int = 10,
          print_fn: Optional[Callable[[str], None]] = print, *, schedule=None,
          total_walkers: Optional[int] = None, keep_checkpoints: int = 3,
          burn_in_options: Optional[Dict[str, int]] = None,
          run_config: Optional[Dict[str, Any]] = None, allow_pickle: bool = False,
          max_rejections: int = 5, max_retries: int = 2, allow_missing_history: bool = False,
          callbacks: Sequence[Callback] = (), loggers: Sequence[Logger] = (),
          checkpoint_policy: Optional[Callable[[int, int], bool]] = None) -> TrainState:
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

    Loggers (``qvmc.loggers``): at every fetch each logger's ``log(records, seconds_per_step)``
    receives the fetched steps (``Record(step, info, contexts)``, host statistics); a rollback
    rewinds them to the good state (``mark``/``rewind``). ``history.csv`` (``HistoryCsv``) and the
    progress line (``ProgressLine``) are the built-in ones; ``loggers`` are added after them.

    Checkpoint policy: ``checkpoint_policy(step, num_steps) -> bool`` says after which steps a
    checkpoint is written (default ``loop.every_n_steps(checkpoint_every)``); the last step and
    every stop are checkpointed whatever it says.

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
      loggers: ``qvmc.loggers.Logger`` objects (see above), after the built-in ones.
      checkpoint_policy: ``policy(step, num_steps) -> bool`` (see above); replaces ``checkpoint_every``.

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
    callbacks, loggers = check_callbacks(callbacks), check_loggers(loggers)
    if checkpoint_policy is not None and not callable(checkpoint_policy):
        raise ValueError(f'checkpoint_policy must be callable as policy(step, num_steps) -> bool, '
                         f'got {type(checkpoint_policy).__name__}.')
    lock_dir = run_dir if run_dir is not None and jax.process_index() == 0 else None
    with RunLock(lock_dir):  # one writer per run directory, taken before anything is read or compiled
        loop = TrainingLoop(vmc, state, rng_key, num_steps, run_dir, log_every=log_every, print_fn=print_fn,
                            schedule=schedule, total_walkers=total_walkers, keep_checkpoints=keep_checkpoints,
                            burn_opts=burn_opts, run_config=run_config, allow_pickle=allow_pickle,
                            max_rejections=max_rejections, max_retries=max_retries,
                            allow_missing_history=allow_missing_history, callbacks=callbacks, loggers=loggers,
                            checkpoint_due=checkpoint_policy or every_n_steps(checkpoint_every))
        return loop.run()
