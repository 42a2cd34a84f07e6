"""The training driver: loop, CSV history written as it goes, atomic checkpoints, resume."""

import csv
import os
import time
from typing import Callable, Dict, List, Optional

import jax
import numpy as np
import pandas as pd

from qvmc import checkpoint
from qvmc.vmc import StepInfo, TrainState, VMC

CHECKPOINT_NAME = 'checkpoint.pkl'
HISTORY_NAME = 'history.csv'


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


def _model_metadata(vmc: VMC) -> Dict[str, object]:
    shapes = jax.tree.map(lambda a: tuple(np.shape(a)), vmc_params_template(vmc))
    return {'contexts': [c.label() for c in vmc.contexts], 'param_shapes': str(shapes),
            'num_walkers': vmc.config.num_walkers}


def vmc_params_template(vmc: VMC):
    """Parameter shapes of the model (used to refuse incompatible checkpoints)."""
    ctx = vmc.contexts[0]
    x0 = jax.numpy.asarray(np.arange(ctx.n_electrons * vmc.system.ndim).reshape(ctx.n_electrons, -1) * 0.1)
    cond = vmc.system.context_features(ctx.values, *ctx.spins)
    return jax.eval_shape(lambda k: vmc.wavefunction.init(k, x0, cond, ctx.spins, 0.0), jax.random.PRNGKey(0))


def train(vmc: VMC, state: TrainState, rng_key, num_steps: int, run_dir: Optional[str] = None,
          checkpoint_every: int = 50, log_every: int = 10,
          print_fn: Optional[Callable[[str], None]] = print) -> TrainState:
    """Runs ``vmc.step`` until ``state.step == num_steps``.

    With a ``run_dir``, every step appends one row per context to ``history.csv``
    (flushed at once, so a crash loses at most the step in flight), and every
    ``checkpoint_every`` steps the whole ``TrainState`` is written atomically to
    ``checkpoint.pkl``. If the directory already holds a checkpoint, training resumes
    from it and the history rows after the checkpointed step are dropped, so the CSV
    and the state agree. The key of step ``t`` is ``fold_in(rng_key, t)``: a resumed
    run draws the same random numbers as an uninterrupted one.

    Returns:
      The final ``TrainState``.
    """
    history_path = ckpt_path = None
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        history_path = os.path.join(run_dir, HISTORY_NAME)
        ckpt_path = os.path.join(run_dir, CHECKPOINT_NAME)
        metadata = _model_metadata(vmc)
        if os.path.exists(ckpt_path):
            state = TrainState(*checkpoint.load(ckpt_path, expected_metadata=metadata))
            if print_fn:
                print_fn(f'Resuming from {ckpt_path} at step {state.step}.')
        _truncate_history(history_path, state.step)

    writer_file = open(history_path, 'a', newline='') if history_path else None
    writer, fields = None, None
    try:
        while state.step < num_steps:
            start = time.time()
            state, info = vmc.step(jax.random.fold_in(rng_key, state.step), state)
            rows = history_rows(vmc, state.step, info, time.time() - start, vmc.state_contexts(state))
            if writer_file is not None:
                if writer is None:
                    fields = list(rows[0].keys())
                    writer = csv.DictWriter(writer_file, fieldnames=fields)
                    if writer_file.tell() == 0:
                        writer.writeheader()
                writer.writerows(rows)
                writer_file.flush()
            if print_fn and (state.step % log_every == 0 or state.step == num_steps):
                parts = ' '.join(f'{r["context"]}: {r["energy"]:.4f}' for r in rows)
                print_fn(f'step {state.step:5d}  loss {info.loss:.5f}  {parts}'
                         + ('' if info.accepted else '  [update rejected: non-finite]'))
            if ckpt_path and (state.step % checkpoint_every == 0 or state.step == num_steps):
                checkpoint.save(ckpt_path, tuple(state), metadata)
    finally:
        if writer_file is not None:
            writer_file.close()
    return state


def _truncate_history(path: str, last_step: int) -> None:
    """Drops history rows newer than the checkpoint (they will be recomputed)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    try:  # a line cut by a crash is skipped, never the whole file
        frame = pd.read_csv(path, on_bad_lines='skip')
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        frame = None
    if frame is None or 'step' not in frame:
        os.replace(path, path + '.unreadable')
        return
    steps = pd.to_numeric(frame['step'], errors='coerce')
    keep = frame[steps.notna() & (steps <= last_step)]
    tmp = path + '.tmp'
    keep.to_csv(tmp, index=False)
    os.replace(tmp, path)


def load_history(run_dir: str) -> pd.DataFrame:
    """The training history of a run directory as a DataFrame."""
    return pd.read_csv(os.path.join(run_dir, HISTORY_NAME))
