"""The training driver: context schedules with burn-in after every switch, CSV history written as it
goes, a progress line with ETA, rotating checksummed checkpoints, and exact resume."""

import csv
import dataclasses
import io
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np
import pandas as pd

import samplers
from qvmc import checkpoint, parallel
from qvmc.vmc import StepInfo, TrainState, VMC

CHECKPOINT_NAME = 'checkpoint.pkl'  # always the newest checkpoint (a hard link to a numbered one)
HISTORY_NAME = 'history.csv'
BURN_IN_NAME = 'burn_in.csv'
_SWITCH_SALT = 2**31 - 1  # RNG streams of context switches and walker-count changes, apart from steps
_RESIZE_SALT = 2**31 - 2


def history_rows(vmc: VMC, step: int, info: StepInfo, seconds: float, contexts=None) -> List[Dict[str, float]]:
    """One row per context for a finished step (energies are walker means, unclipped).

    ``contexts`` are the contexts of the step's walker blocks (default ``vmc.contexts``).
    """
    rows = []
    for ctx, st in zip(vmc.contexts if contexts is None else contexts, info.tasks):
        row = {'step': step, 'context': ctx.label()}
        row.update(ctx.as_dict())
        row.update(energy=float(st.energy), variance=float(st.variance), acceptance=float(st.acceptance),
                   num_nonfinite=int(st.num_nonfinite), loss=info.loss, accepted=info.accepted,
                   seconds=seconds)
        row.update({k: float(v) for k, v in st.components.items()})
        rows.append(row)
    return rows


def burn_in_rows(step: int, event: str, contexts, assignment: Optional[samplers.Assignment],
                 reports: Dict[int, samplers.BurnInReport]) -> List[Dict[str, Any]]:
    """One row per burned-in block: when, why, how long, and the last equilibration check."""
    rows = []
    for i, report in sorted(reports.items()):
        last = report.checks[-1] if report.checks else None
        row = {'step': step, 'event': event, 'block': i, 'context': contexts[i].label()}
        row.update(contexts[i].as_dict())
        row.update(source=assignment.source[i] if assignment else i, burn_in_steps=report.steps,
                   equilibrated=report.equilibrated, num_checks=len(report.checks),
                   rhat=last.rhat if last else np.nan, drift_z=last.drift_z if last else np.nan)
        rows.append(row)
    return rows


def vmc_params_template(vmc: VMC):
    """Parameter shapes of the model (used to refuse incompatible checkpoints)."""
    ctx = vmc.contexts[0]
    x0 = jax.numpy.asarray(np.arange(ctx.n_electrons * vmc.system.ndim).reshape(ctx.n_electrons, -1) * 0.1)
    cond = vmc.system.context_features(ctx.values, *ctx.spins)
    return jax.eval_shape(lambda k: vmc.wavefunction.init(k, x0, cond, ctx.spins, 0.0), jax.random.PRNGKey(0))


def model_metadata(vmc: VMC, schedule=None, run_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a checkpoint records about the run; ``param_shapes``, ``contexts`` and ``schedule``
    must match on resume, the rest (VMC settings, the driver's configuration) is for the record."""
    shapes = jax.tree.map(lambda a: tuple(np.shape(a)), vmc_params_template(vmc))
    return {'contexts': [c.label() for c in vmc.contexts], 'param_shapes': str(shapes),
            'schedule': None if schedule is None else schedule.describe(),
            'vmc_config': dataclasses.asdict(vmc.config), 'run_config': dict(run_config or {})}


_CHECKED_KEYS = ('param_shapes', 'contexts', 'schedule')


class Progress:
    """A progress line every ``every`` steps: energy, variance, acceptance, speed and ETA.

    Energy, variance and acceptance are means over the step's contexts. The speed is
    measured from the first step of this session on (which includes compilation), so
    the ETA also accounts for burn-in after context switches.
    """

    def __init__(self, num_steps: int, every: int, print_fn: Optional[Callable[[str], None]]):
        self.num_steps, self.every, self.print_fn = num_steps, every, print_fn
        self._first_step = self._first_time = None

    def update(self, step: int, info: StepInfo, contexts: Sequence) -> Optional[str]:
        """Records a finished step; returns (and prints) the line when one is due."""
        now = time.time()
        if self._first_step is None:
            self._first_step, self._first_time = step, now
        if self.print_fn is None or not (step % self.every == 0 or step == self.num_steps):
            return None
        done = step - self._first_step
        rate = (now - self._first_time) / done if done > 0 else float('nan')
        eta = rate * (self.num_steps - step)
        variance = np.mean([float(t.variance) for t in info.tasks])
        acceptance = np.mean([float(t.acceptance) for t in info.tasks])
        line = (f'step {step:{len(str(self.num_steps))}d}/{self.num_steps} {100 * step / self.num_steps:3.0f}%  '
                f'E {info.loss:.5f}  var {variance:.3e}  acc {acceptance:.2f}  '
                f'{rate:.3f} s/step  ETA {format_seconds(eta)}')
        if len(contexts) <= 6:
            line += '  | ' + ' '.join(f'{c.label()}: {float(t.energy):.4f}' for c, t in zip(contexts, info.tasks))
        if not info.accepted:
            line += '  [update rejected: non-finite]'
        self.print_fn(line)
        return line


def format_seconds(seconds: float) -> str:
    """``'1:02:03'``, ``'4:05'`` or ``'?'`` (not yet known)."""
    if not np.isfinite(seconds):
        return '?'
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f'{hours}:{rest // 60:02d}:{rest % 60:02d}' if hours else f'{rest // 60}:{rest % 60:02d}'


class _CsvAppender:
    """Appends rows to a CSV file, flushing after each write; reuses an existing header."""

    def __init__(self, path: Optional[str]):
        self.path, self._file, self._writer = path, None, None

    def write(self, rows: List[Dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        if self._writer is None:
            fields = None
            if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
                with open(self.path, newline='') as f:
                    fields = next(csv.reader(f), None)
            self._file = open(self.path, 'a', newline='')
            if not fields:
                fields = list(dict.fromkeys(k for row in rows for k in row))
                self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction='ignore')
                self._writer.writeheader()
            else:
                self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction='ignore')
        self._writer.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def train(vmc: VMC, state: TrainState, rng_key, num_steps: int, run_dir: Optional[str] = None,
          checkpoint_every: int = 50, log_every: int = 10,
          print_fn: Optional[Callable[[str], None]] = print, *, schedule=None,
          total_walkers: Optional[int] = None, keep_checkpoints: int = 3,
          burn_in_options: Optional[Dict[str, int]] = None,
          run_config: Optional[Dict[str, Any]] = None) -> TrainState:
    """Runs ``vmc.step`` until ``state.step == num_steps``, following a context schedule.

    With a ``schedule`` (``qvmc.schedule.DiscreteSchedule`` or ``BlockwiseSchedule``),
    whenever ``schedule.contexts_at(step)`` differs from the contexts of the walker blocks
    (that is, at a block boundary) the blocks are re-pointed with ``vmc.reassign`` and every
    block whose context changed is burned in with ``vmc.equilibrate`` until the sampling
    layer's equilibration check passes; each block's ``BurnInReport`` becomes a row of
    ``burn_in.csv``.

    With a ``run_dir``, every step appends one row per context to ``history.csv``
    (flushed at once, so a crash loses at most the step in flight), and every
    ``checkpoint_every`` steps the state, the RNG key, the schedule position, the total
    walker count and the run's configuration are written to ``checkpoint-<step>.pkl``
    (atomically, with a SHA-256 checksum; the newest ``keep_checkpoints`` are kept and
    ``checkpoint.pkl`` always names the newest). If the directory holds a checkpoint,
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
                        ('keep_checkpoints', keep_checkpoints)):
        if value < 1:
            raise ValueError(f'{name} must be >= 1, got {value}.')
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
        state, rng_key = _resume(vmc, state, rng_key, run_dir, metadata, say)
    wanted = _walker_target(vmc, state, schedule, total_walkers)  # validated before anything is written
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        history_path = os.path.join(run_dir, HISTORY_NAME)
        burn_path = os.path.join(run_dir, BURN_IN_NAME)
        _truncate_csv(history_path, lambda step: step <= state.step)
        _truncate_csv(burn_path, lambda step: step < state.step)

    if jax.process_index() != 0:  # in a multi-process run only process 0 writes files
        history_path = burn_path = None
    history, burn_log = _CsvAppender(history_path), _CsvAppender(burn_path)
    progress = Progress(num_steps, log_every, print_fn)
    try:
        if wanted is not None:
            state = _resize(vmc, state, rng_key, wanted, burn_opts, burn_log, say)
        while state.step < num_steps:
            t = state.step
            if schedule is not None and tuple(schedule.contexts_at(t)) != vmc.state_contexts(state):
                key = jax.random.fold_in(jax.random.fold_in(rng_key, _SWITCH_SALT), t)
                state = _switch(vmc, state, key, schedule.contexts_at(t), total_walkers, burn_opts, burn_log, say)
            start = time.time()
            state, info = vmc.step(jax.random.fold_in(rng_key, t), state)
            contexts = vmc.state_contexts(state)
            history.write(history_rows(vmc, state.step, info, time.time() - start, contexts))
            progress.update(state.step, info, contexts)
            if run_dir is not None and (state.step % checkpoint_every == 0 or state.step == num_steps):
                host = parallel.gather_state(state)  # a collective: every process takes part
                payload = {'train_state': tuple(host), 'rng_key': _key_to_host(rng_key),
                           'schedule_position': None if schedule is None else schedule.block_index(state.step),
                           'total_walkers': sum(int(np.shape(b.walkers)[0]) for b in state.tasks)}
                if jax.process_index() == 0:
                    checkpoint.save_rotating(run_dir, state.step, payload, metadata, keep_checkpoints,
                                             CHECKPOINT_NAME)
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
    burn_log.write(burn_in_rows(state.step, 'switch', contexts, assignment, reports))
    failed = sum(not r.equilibrated for r in reports.values())
    calls = [r.steps for r in reports.values()]
    say(f'step {state.step}: {len(contexts)} context blocks, {len(which)} burned in '
        f'({min(calls, default=0)}-{max(calls, default=0)} sampler calls)'
        + (f'; {failed} hit max_steps without passing the equilibration check' if failed else ''))
    return state


def _walker_target(vmc, state, schedule, total_walkers):
    """The walker total the blocks must be resized to now, or None (unchanged, or the schedule
    switches at this step and sets it); raises ``ValueError`` if it does not divide into the blocks."""
    contexts = vmc.state_contexts(state)
    current = sum(int(np.shape(b.walkers)[0]) for b in state.tasks)
    wanted = vmc.config.num_walkers * len(contexts) if total_walkers is None else total_walkers
    if wanted == current or (schedule is not None and tuple(schedule.contexts_at(state.step)) != contexts):
        return None
    samplers.block_size(wanted, len(contexts))
    return wanted


def _resize(vmc, state, rng_key, wanted, burn_opts, burn_log, say):
    """Resizes the blocks to ``wanted`` walkers in all (cut to a prefix, or grown and burned in)."""
    contexts = vmc.state_contexts(state)
    current = sum(int(np.shape(b.walkers)[0]) for b in state.tasks)
    key = jax.random.fold_in(jax.random.fold_in(rng_key, _RESIZE_SALT), state.step)
    key_assign, key_burn = jax.random.split(key)
    state, assignment = vmc.reassign(key_assign, state, contexts, total_walkers=wanted)
    say(f'walker count changed from {current} to {wanted} ({wanted // len(contexts)} per block)')
    if wanted > current:  # duplicated walkers must decorrelate before they are used
        state, reports = vmc.equilibrate(key_burn, state, **burn_opts)
        burn_log.write(burn_in_rows(state.step, 'resize', contexts, assignment, reports))
    return state


def _resume(vmc, state, rng_key, run_dir, metadata, say):
    """The newest readable checkpoint's state and key, or the given ones; refuses bad files."""
    removed = checkpoint.remove_temporaries(run_dir)
    if removed:
        say(f'removed {removed} unfinished checkpoint temporary file(s) from {run_dir}')
    path, payload, failures = checkpoint.latest_readable(run_dir, CHECKPOINT_NAME)
    if path is None:
        if failures:
            raise ValueError(f'No readable checkpoint in {run_dir!r}; nothing was changed. '
                             + ' '.join(reason for _, reason in failures))
        return state, rng_key
    checkpoint.check_metadata(path, payload['metadata'], {k: metadata[k] for k in _CHECKED_KEYS})
    stored = payload['state']
    if isinstance(stored, dict):
        loaded, stored_key = TrainState(*stored['train_state']), _key_from_host(stored['rng_key'])
    else:  # written by an older qvmc: the bare TrainState tuple
        loaded, stored_key = TrainState(*stored), None
    _check_optimizer_state(vmc, loaded, path)
    loaded = parallel.place_state(loaded, getattr(vmc, 'mesh', None), getattr(vmc.config, 'network_dtype', None))
    for bad, reason in failures:
        os.replace(bad, bad + '.corrupt')
        say(f'{reason} Renamed it to {os.path.basename(bad)}.corrupt.')
    if stored_key is not None:
        if not np.array_equal(_key_to_host(stored_key)['data'], _key_to_host(rng_key)['data']):
            say('the given rng_key differs from the run\'s; resuming with the run\'s stored key')
        rng_key = stored_key
    say(f'Resuming from {path} at step {loaded.step}.')
    return loaded, rng_key


def _check_optimizer_state(vmc, state, path):
    expected = jax.eval_shape(vmc.optimizer.init, state.params)
    same = jax.tree.structure(expected) == jax.tree.structure(state.opt_state) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state.opt_state)))
    if not same:
        raise ValueError(f'Checkpoint {path!r} is incompatible: its optimizer state does not match this run\'s '
                         'optimizer. Use the optimizer it was trained with, or a new run directory.')


def _key_to_host(key) -> Dict[str, Any]:
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {'typed': True, 'impl': str(jax.random.key_impl(key)), 'data': np.asarray(jax.random.key_data(key))}
    return {'typed': False, 'impl': None, 'data': np.asarray(key)}


def _key_from_host(stored: Dict[str, Any]):
    if stored['typed']:
        return jax.random.wrap_key_data(stored['data'], impl=stored['impl'])
    return jax.numpy.asarray(stored['data'])


def _truncate_csv(path: str, keep_step: Callable[[float], bool]) -> None:
    """Keeps the rows whose ``step`` passes ``keep_step`` (the rest will be recomputed).

    A last line without its newline (cut by a crash) is dropped. The file is rewritten
    (atomically) only when something is dropped; one without a ``step`` column is renamed
    ``*.unreadable``.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, newline='') as f:
        text = f.read()
    whole = text if text.endswith('\n') else text[:text.rfind('\n') + 1]
    rows = list(csv.reader(io.StringIO(whole)))
    if not rows or 'step' not in rows[0]:
        os.replace(path, path + '.unreadable')
        return
    column, width = rows[0].index('step'), len(rows[0])
    keep = [rows[0]] + [r for r in rows[1:] if len(r) == width and _is_number(r[column])
                        and keep_step(float(r[column]))]
    if len(keep) == len(rows) and whole == text:
        return
    tmp = path + '.tmp'
    with open(tmp, 'w', newline='') as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _truncate_history(path: str, last_step: int) -> None:
    """Drops history rows newer than the checkpoint (kept for callers of older versions)."""
    _truncate_csv(path, lambda step: step <= last_step)


def load_history(run_dir: str) -> pd.DataFrame:
    """The training history of a run directory as a DataFrame."""
    return pd.read_csv(os.path.join(run_dir, HISTORY_NAME))


def load_burn_in(run_dir: str) -> pd.DataFrame:
    """The burn-in log (one row per burned-in block after a switch or resize) as a DataFrame."""
    return pd.read_csv(os.path.join(run_dir, BURN_IN_NAME))
