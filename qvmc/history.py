"""Services of the training loop: the CSV history and burn-in log written as training goes, the
progress line with ETA, and readers of a run directory's logs."""

import csv
import io
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np
import pandas as pd

import samplers
from qvmc.state import StepInfo

HISTORY_NAME = 'history.csv'
BURN_IN_NAME = 'burn_in.csv'


def history_rows(step: int, info: StepInfo, seconds: float, contexts: Sequence) -> List[Dict[str, float]]:
    """One row per walker block for a finished step (energies are walker means, unclipped).

    Args:
      step: the step number the row records (the state's step after the update).
      info: the step's ``StepInfo`` (device or host arrays; read once here).
      seconds: wall time per step.
      contexts: the contexts of the step's walker blocks.
    """
    info = jax.device_get(info)
    rows = []
    for ctx, st in zip(contexts, info.blocks):
        row = {'step': step, 'context': ctx.label()}
        row.update(ctx.as_dict())
        row.update(energy=float(st.energy), variance=float(st.variance), acceptance=float(st.acceptance),
                   num_nonfinite=int(st.num_nonfinite), num_bad_walkers=int(st.num_bad_walkers),
                   loss=float(info.loss), accepted=bool(info.accepted), seconds=seconds)
        row.update({k: float(v) for k, v in st.components.items()})
        if info.optimizer is not None:  # natural gradient: lr, ε, Fisher norm² before the cap, cap factor
            row.update({k: float(v) for k, v in info.optimizer._asdict().items()})
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


class Progress:
    """A progress line every ``every`` steps: energy, variance, acceptance, speed and ETA.

    Energy, variance and acceptance are means over the step's contexts. The speed is
    measured from the first step of this session on (which includes compilation), so
    the ETA also accounts for burn-in after context switches.
    """

    def __init__(self, num_steps: int, every: int, print_fn: Optional[Callable[[str], None]]):
        self.num_steps, self.every, self.print_fn = num_steps, every, print_fn
        self._first_step = self._first_time = None

    def tick(self, step: int, now: Optional[float] = None) -> None:
        """Records that ``step`` was dispatched (the first call starts the clock)."""
        if self._first_step is None:
            self._first_step, self._first_time = step, time.time() if now is None else now

    def update(self, step: int, info: StepInfo, contexts: Sequence, now: Optional[float] = None) -> Optional[str]:
        """Records a finished step; returns (and prints) the line when one is due (``info`` is
        fetched from the device only then)."""
        now = time.time() if now is None else now
        self.tick(step, now)
        if self.print_fn is None or not (step % self.every == 0 or step == self.num_steps):
            return None
        done = step - self._first_step
        rate = (now - self._first_time) / done if done > 0 else float('nan')
        eta = rate * (self.num_steps - step)
        info = jax.device_get(info)
        variance = np.mean([float(t.variance) for t in info.blocks])
        acceptance = np.mean([float(t.acceptance) for t in info.blocks])
        line = (f'step {step:{len(str(self.num_steps))}d}/{self.num_steps} {100 * step / self.num_steps:3.0f}%  '
                f'E {float(info.loss):.5f}  var {variance:.3e}  acc {acceptance:.2f}  '
                f'{rate:.3f} s/step  ETA {format_seconds(eta)}')
        if info.optimizer is not None:  # natural gradient: the factor the Fisher-norm cap applied (1: not bound)
            line += f'  cap {float(info.optimizer.norm_scale):.2f}'
        if len(contexts) <= 6:
            line += '  | ' + ' '.join(f'{c.label()}: {float(t.energy):.4f}' for c, t in zip(contexts, info.blocks))
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


class CsvAppender:
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

    def size(self) -> int:
        """Bytes written so far (0 without a file): a point ``truncate`` can return to."""
        if self.path is None or not os.path.exists(self.path):
            return 0
        return os.path.getsize(self.path)

    def truncate(self, size: int) -> None:
        """Drops everything written after ``size`` bytes (a rollback of the training loop)."""
        self.close()
        if self.path is not None and os.path.exists(self.path) and os.path.getsize(self.path) > size:
            os.truncate(self.path, size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


def truncate_csv(path: str, keep_step: Callable[[float], bool]) -> None:
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


def load_history(run_dir: str) -> pd.DataFrame:
    """The training history of a run directory as a DataFrame."""
    return pd.read_csv(os.path.join(run_dir, HISTORY_NAME))


def load_burn_in(run_dir: str) -> pd.DataFrame:
    """The burn-in log (one row per burned-in block after a switch or resize) as a DataFrame."""
    return pd.read_csv(os.path.join(run_dir, BURN_IN_NAME))
