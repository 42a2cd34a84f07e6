"""The training loop: context schedules with burn-in after every switch, statistics fetched at the
logging interval, rotating pickle-free checkpoints, and exact resume. Its services live in
``qvmc.history`` (CSV logs, progress line) and ``qvmc.resume`` (checkpoint trees, resuming)."""

import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

import samplers

from qvmc import checkpoint
from qvmc.config import check_int
from qvmc.history import (BURN_IN_NAME, HISTORY_NAME, CsvAppender, Progress, burn_in_rows, format_seconds,  # noqa: F401
                          history_rows, load_burn_in, load_history, truncate_csv)
from qvmc.resume import CHECKPOINT_NAME, model_metadata, resume, state_metadata, state_tree, vmc_params_template  # noqa: F401
from qvmc.state import TrainState
from qvmc.vmc import VMC

_SWITCH_SALT = 2**31 - 1  # RNG streams of context switches and walker-count changes, apart from steps
_RESIZE_SALT = 2**31 - 2


def train(vmc: VMC, state: TrainState, rng_key, num_steps: int, run_dir: Optional[str] = None,
          checkpoint_every: int = 50, log_every: int = 10,
          print_fn: Optional[Callable[[str], None]] = print, *, schedule=None,
          total_walkers: Optional[int] = None, keep_checkpoints: int = 3,
          burn_in_options: Optional[Dict[str, int]] = None,
          run_config: Optional[Dict[str, Any]] = None, allow_pickle: bool = False) -> TrainState:
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

    A walker count different from the state's (``total_walkers``, or a changed
    ``VMCConfig.num_walkers``) is honoured on resume: blocks are cut to a prefix, or grown
    by duplicating walkers and then burned in (event ``'resize'`` in ``burn_in.csv``).
    From then on the run differs from one with the old count, as it must.

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

    Returns:
      The final ``TrainState``.
    """
    for name, value in (('checkpoint_every', checkpoint_every), ('log_every', log_every),
                        ('keep_checkpoints', keep_checkpoints), ('num_steps', num_steps)):
        check_int(name, value, minimum=0 if name == 'num_steps' else 1)
    burn_opts = dict(burn_in_options or {})
    unknown = set(burn_opts) - {'chunk', 'min_steps', 'max_steps'}
    if unknown:
        raise ValueError(f'Unknown burn_in_options {sorted(unknown)}; use chunk, min_steps, max_steps.')
    if total_walkers is None and schedule is not None:
        total_walkers = vmc.config.num_walkers * len(vmc.contexts)
    if schedule is not None:
        schedule.validate(vmc.system, total_walkers)
    say = print_fn or (lambda _: None)

    metadata = model_metadata(vmc, schedule, run_config)
    history_path = burn_path = None
    if run_dir is not None and os.path.isdir(run_dir):
        state, rng_key, _ = resume(vmc, state, rng_key, run_dir, metadata, say, allow_pickle)
    t = int(np.asarray(state.step))
    wanted = _walker_target(vmc, state, schedule, total_walkers)  # validated before anything is written
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        history_path = os.path.join(run_dir, HISTORY_NAME)
        burn_path = os.path.join(run_dir, BURN_IN_NAME)
        truncate_csv(history_path, lambda step: step <= t)
        truncate_csv(burn_path, lambda step: step < t)

    if jax.process_index() != 0:  # in a multi-process run only process 0 writes files
        history_path = burn_path = None
    history, burn_log = CsvAppender(history_path), CsvAppender(burn_path)
    progress = Progress(num_steps, log_every, print_fn)
    pending = []  # (step, info on device, contexts) not yet written
    flushed_at = time.time()

    def flush():
        nonlocal flushed_at
        if not pending:
            return
        now = time.time()
        seconds = (now - flushed_at) / len(pending)
        infos = jax.device_get([p[1] for p in pending])  # one transfer for all pending steps
        for (step, _, contexts), info in zip(pending, infos):
            history.write(history_rows(step, info, seconds, contexts))
        step, _, contexts = pending[-1]
        progress.update(step, infos[-1], contexts, now=now)
        pending.clear()
        flushed_at = now

    try:
        if wanted is not None:
            state = _resize(vmc, state, rng_key, wanted, burn_opts, burn_log, say)
        contexts = state.contexts
        while t < num_steps:
            if schedule is not None and tuple(schedule.contexts_at(t)) != contexts:
                flush()
                key = jax.random.fold_in(jax.random.fold_in(rng_key, _SWITCH_SALT), t)
                state = _switch(vmc, state, key, schedule.contexts_at(t), total_walkers, burn_opts, burn_log, say)
                contexts = state.contexts
            state, info = vmc.step(jax.random.fold_in(rng_key, t), state)
            t += 1
            pending.append((t, info, contexts))
            progress.tick(t)
            if t % log_every == 0 or t == num_steps:
                flush()
            if run_dir is not None and (t % checkpoint_every == 0 or t == num_steps):
                flush()
                tree = state_tree(state, rng_key)  # a collective: every process takes part
                if jax.process_index() == 0:
                    checkpoint.save_rotating(run_dir, t, tree, state_metadata(state, metadata, schedule),
                                             keep_checkpoints, CHECKPOINT_NAME)
        flush()
    finally:
        history.close()
        burn_log.close()
    return state


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


