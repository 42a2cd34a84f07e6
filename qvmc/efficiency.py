"""Architecture efficiency from training runs: steps (or seconds) to an energy threshold, the
stability of a training curve, and the parameter count a family of networks needs for a given
energy, with error bars.

These are the numbers behind a claim such as "network A reaches network B's accuracy with k×
fewer parameters and converges m× faster at matched size": runs of each family at several sizes,
same steps, walkers, optimizer and sampler, each measured at the end with frozen parameters.
Everything here works on plain arrays (a run's ``history.csv`` and its frozen measurement), so
it is cheap and testable without a network.
"""

from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd


def rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (NaN for the first ``window - 1`` steps; pandas' rolling mean).

    Raises:
      ValueError: ``window`` is not a positive integer.
    """
    if int(window) != window or window < 1:
        raise ValueError(f'window must be a positive integer, got {window!r}.')
    return pd.Series(np.asarray(values, dtype=np.float64)).rolling(int(window)).mean().to_numpy()


def first_crossing(times: Sequence[float], values: Sequence[float], threshold: float, window: int) -> Optional[float]:
    """The first ``times`` entry at which the trailing ``window`` mean of ``values`` is ≤ ``threshold``
    (``times`` are step numbers or cumulative seconds); ``None`` if it never gets there."""
    times = np.asarray(times, dtype=np.float64)
    if times.shape != np.shape(values):
        raise ValueError(f'times and values differ in length ({times.shape} vs {np.shape(values)}).')
    below = np.flatnonzero(rolling_mean(values, window) <= threshold)
    return float(times[below[0]]) if below.size else None


class Stability(NamedTuple):
    """How a training curve ends: the mean and standard error of the last ``window`` steps (the
    error from the step-to-step scatter, so an upper bound's worth of caution with correlated
    steps), the scatter itself, and the largest rise of the trailing mean above its running
    minimum (0 for a curve that only goes down; a spike or a drift shows here)."""
    final_mean: float
    final_err: float
    spread: float
    max_rise: float


def stability(values: Sequence[float], window: int) -> Stability:
    """The :class:`Stability` numbers of one training curve.

    Raises:
      ValueError: fewer than ``window`` values, or a non-finite one.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < max(window, 2):
        raise ValueError(f'stability needs at least window = {window} (and 2) values, got {len(values)}.')
    if not np.all(np.isfinite(values)):
        raise ValueError('stability: the curve has non-finite values; drop or repair those steps first.')
    tail = values[-window:]
    smooth = rolling_mean(values, window)[window - 1:]
    # the final mean is the trailing mean's last value (bit for bit), so a curve reaches its own final mean
    return Stability(final_mean=float(smooth[-1]), final_err=float(tail.std(ddof=1) / np.sqrt(window)),
                     spread=float(tail.std(ddof=1)), max_rise=float(np.max(smooth - np.minimum.accumulate(smooth))))


class Interpolated(NamedTuple):
    """A value interpolated from a family's points: ``value`` ± ``err`` (bootstrap standard
    deviation over the draws that fall inside the family's range), ``status`` ``'inside'``,
    ``'below'`` (the target is reached already by the smallest member: ``value`` is an upper bound)
    or ``'above'`` (not reached by the largest: ``value`` is a lower bound), and ``inside_fraction``,
    the share of bootstrap draws that found a crossing."""
    value: float
    err: float
    status: str
    inside_fraction: float


def _crossing(log_p: np.ndarray, energy: np.ndarray, target: float) -> Optional[float]:
    """log-parameters where the piecewise-linear curve energy(log p) first reaches ``target``."""
    if energy[0] <= target:
        return None
    for i in range(len(energy) - 1):
        if energy[i + 1] <= target:
            frac = (energy[i] - target) / (energy[i] - energy[i + 1])
            return float(log_p[i] + frac * (log_p[i + 1] - log_p[i]))
    return None


def parameters_at_energy(params: Sequence[float], energies: Sequence[float], errors: Sequence[float],
                         target: float, target_err: float = 0.0, *, num_bootstrap: int = 2000,
                         seed: int = 0) -> Interpolated:
    """Parameter count at which a family of networks reaches ``target`` energy.

    The family's frozen energies are interpolated linearly in log(parameters), walking up from the
    smallest member to the first that reaches the target. The error comes from redrawing every
    energy, and the target, from a normal distribution with its error bar (``num_bootstrap``
    draws).

    Args:
      params: parameter counts of the members (at least two, distinct).
      energies, errors: their measured energies and standard errors (lower is better).
      target: the energy to reach (e.g. another family's member's energy).
      target_err: its standard error (0 for an exact target).

    Raises:
      ValueError: fewer than two members, mismatched lengths, repeated or non-positive parameter
        counts, or negative errors.
    """
    params, energies, errors = (np.asarray(a, dtype=np.float64) for a in (params, energies, errors))
    if not (params.shape == energies.shape == errors.shape) or params.ndim != 1 or len(params) < 2:
        raise ValueError('parameters_at_energy needs matching 1-D params, energies and errors of at least two '
                         f'members, got shapes {params.shape}, {energies.shape}, {errors.shape}.')
    if np.any(params <= 0) or len(np.unique(params)) != len(params):
        raise ValueError(f'parameter counts must be positive and distinct, got {params.tolist()}.')
    if np.any(errors < 0) or not np.all(np.isfinite(energies)) or not target_err >= 0:
        raise ValueError('energies must be finite and errors non-negative.')
    order = np.argsort(params)
    log_p, energy, err = np.log(params[order]), energies[order], errors[order]
    central = _crossing(log_p, energy, target)
    rng = np.random.default_rng(seed)
    draws = rng.normal(energy, err, size=(num_bootstrap, len(energy)))
    targets = rng.normal(target, target_err, size=num_bootstrap)
    found = np.array([c for c in (_crossing(log_p, d, t) for d, t in zip(draws, targets)) if c is not None])
    fraction = len(found) / num_bootstrap
    if central is None:
        status = 'below' if energy[0] <= target else 'above'
        bound = params[order][0] if status == 'below' else params[order][-1]
        return Interpolated(float(bound), float('nan'), status, fraction)
    spread = float(np.std(np.exp(found))) if len(found) > 1 else float('nan')
    return Interpolated(float(np.exp(central)), spread, 'inside', fraction)
