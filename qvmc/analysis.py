"""Locating a first-order transition in a sweep: two linear branches, a scanned break, bootstrap errors."""

from typing import NamedTuple, Tuple

import numpy as np
import pandas as pd


class Transition(NamedTuple):
    """Where and how large the jump between two linear branches is.

    Attributes:
      position: midpoint of the gap between the last point of the left branch and the first
        of the right one (the data cannot place the jump more finely than that gap).
      position_err: half that gap added in quadrature to the parametric-bootstrap standard
        deviation of ``position`` (the spread over which gap the break falls in).
      interval: ``(x_left, x_right)``, the gap that holds the best break.
      jump: right branch minus left branch at ``position``.
      jump_err: bootstrap standard deviation of ``jump``, with the spread of the two branches'
        difference across the gap added in quadrature.
      left, right: ``(intercept, slope)`` of each branch (weighted least squares).
      chi2, dof: the two-branch fit's χ² and degrees of freedom (points − 4).
      delta_chi2: χ² of one straight line through all points minus ``chi2``: the evidence
        for a jump (large values: a jump; a few units: none).
      error_scale: factor applied to the given errors, ``max(1, √(χ²/dof))``, when the
        branches do not fit within them (bootstrap replicas use the scaled errors).
      scan: DataFrame with one row per candidate break: ``split`` (points on the left),
        ``position`` (gap midpoint), ``chi2``.
    """
    position: float
    position_err: float
    interval: Tuple[float, float]
    jump: float
    jump_err: float
    left: Tuple[float, float]
    right: Tuple[float, float]
    chi2: float
    dof: int
    delta_chi2: float
    error_scale: float
    scan: pd.DataFrame


def fit_line(x: np.ndarray, y: np.ndarray, yerr: np.ndarray) -> Tuple[np.ndarray, float]:
    """Weighted least-squares line: ``((intercept, slope), χ²)``; ``x, y, yerr`` are ``[..., P]``."""
    w = 1.0 / yerr**2
    s, sx, sy = w.sum(-1), (w * x).sum(-1), (w * y).sum(-1)
    sxx, sxy = (w * x * x).sum(-1), (w * x * y).sum(-1)
    det = s * sxx - sx**2
    slope = (s * sxy - sx * sy) / det
    intercept = (sxx * sy - sx * sxy) / det
    chi2 = (w * (y - intercept[..., None] - slope[..., None] * x)**2).sum(-1)
    return np.stack([intercept, slope], axis=-1), chi2


def _best_splits(x, ys, yerr, splits):
    """χ² of every split for replicas ``ys [R, P]``: ``chi2 [R, S]``, and the line fits."""
    chi2, fits = [], []
    for k in splits:
        left, c_left = fit_line(x[:k], ys[:, :k], yerr[:k])
        right, c_right = fit_line(x[k:], ys[:, k:], yerr[k:])
        chi2.append(c_left + c_right)
        fits.append((left, right))
    return np.stack(chi2, axis=1), fits


def locate_transition(x, y, yerr, *, min_points: int = 2, num_bootstrap: int = 2000,
                      seed: int = 0) -> Transition:
    """Fits two straight lines with a jump between them and locates the jump.

    Every split of the sorted points into a left branch (first ``k`` points) and a right
    branch (the rest, each with at least ``min_points``) is fitted by weighted least
    squares; the split with the lowest total χ² wins. Uncertainties come from a parametric
    bootstrap: replicas drawn from the best fit with Gaussian noise of the given errors
    (scaled up if the fit's χ²/dof exceeds 1) are refitted, split scan included.

    Args:
      x: ``[P]`` control parameter (e.g. λ), distinct values.
      y: ``[P]`` observable (e.g. interaction energy per electron).
      yerr: ``[P]`` standard errors of ``y`` (> 0).
      min_points: least points per branch (≥ 2).
      num_bootstrap: bootstrap replicas.
      seed: seed of the bootstrap.
    """
    x, y, yerr = (np.asarray(a, np.float64).ravel() for a in (x, y, yerr))
    if not (x.shape == y.shape == yerr.shape):
        raise ValueError(f'x, y and yerr must have equal lengths, got {x.size}, {y.size}, {yerr.size}.')
    if min_points < 2:
        raise ValueError(f'min_points must be >= 2 (a line needs two points), got {min_points}.')
    if x.size < 2 * min_points + 1:
        raise ValueError(f'need at least {2 * min_points + 1} points for two branches of {min_points}, '
                         f'got {x.size}.')
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(yerr)) and np.all(yerr > 0)):
        raise ValueError('x, y must be finite and yerr finite and > 0.')
    order = np.argsort(x, kind='stable')
    x, y, yerr = x[order], y[order], yerr[order]
    if np.any(np.diff(x) == 0):
        raise ValueError('x values must be distinct (average repeated points first).')
    splits = np.arange(min_points, x.size - min_points + 1)
    midpoints = 0.5 * (x[splits - 1] + x[splits])

    chi2, fits = _best_splits(x, y[None], yerr, splits)
    best = int(np.argmin(chi2[0]))
    k = splits[best]
    left, right = fits[best][0][0], fits[best][1][0]
    dof = x.size - 4
    total = float(chi2[0, best])
    scale = max(1.0, np.sqrt(total / dof)) if dof > 0 else 1.0
    _, single = fit_line(x, y, yerr)
    position, half_gap = float(midpoints[best]), 0.5 * float(x[k] - x[k - 1])

    rng = np.random.default_rng(seed)
    model = np.where(np.arange(x.size) < k, left[0] + left[1] * x, right[0] + right[1] * x)
    replicas = model + scale * yerr * rng.standard_normal((num_bootstrap, x.size))
    chi2_b, fits_b = _best_splits(x, replicas, yerr, splits)
    pick = np.argmin(chi2_b, axis=1)
    positions = midpoints[pick]
    lefts = np.stack([f[0] for f in fits_b], axis=1)[np.arange(num_bootstrap), pick]  # [R, 2]
    rights = np.stack([f[1] for f in fits_b], axis=1)[np.arange(num_bootstrap), pick]
    jumps = (rights[:, 0] - lefts[:, 0]) + (rights[:, 1] - lefts[:, 1]) * positions
    jump = float((right[0] - left[0]) + (right[1] - left[1]) * position)
    across_gap = abs(right[1] - left[1]) * half_gap / np.sqrt(3.0)  # jump varies across the gap
    scan = pd.DataFrame({'split': splits, 'position': midpoints, 'chi2': chi2[0]})
    return Transition(position=position, position_err=float(np.hypot(half_gap, np.std(positions))),
                      interval=(float(x[k - 1]), float(x[k])), jump=jump,
                      jump_err=float(np.hypot(np.std(jumps), across_gap)),
                      left=(float(left[0]), float(left[1])), right=(float(right[0]), float(right[1])),
                      chi2=total, dof=dof, delta_chi2=float(single) - total, error_scale=float(scale), scan=scan)


def transition_from_sweep(frame: pd.DataFrame, x: str = 'lam', y: str = 'interaction_per_electron',
                          yerr: str = None, **kwargs) -> Transition:
    """``locate_transition`` on columns of a sweep table (``yerr`` defaults to ``y + '_err'``)."""
    yerr = yerr or f'{y}_err'
    missing = [c for c in (x, y, yerr) if c not in frame]
    if missing:
        raise ValueError(f'The sweep table has no column(s) {missing}; it has {list(frame.columns)}.')
    return locate_transition(frame[x].to_numpy(), frame[y].to_numpy(), frame[yerr].to_numpy(), **kwargs)


def compare_to_references(conditional: pd.DataFrame, references: pd.DataFrame, columns=('energy_per_electron',),
                          x: str = 'lam', tolerance: float = 1e-9) -> pd.DataFrame:
    """A conditional model's sweep against separately trained fixed-context runs, point by point.

    Both tables are sweep tables (``Sweep``/``moire_transition.py``'s ``energies.csv``: one row per
    context with ``x``, every column and its ``_err``); a reference row is matched to the conditional
    row at the same ``x`` (within ``tolerance``). Errors are independent (different runs), so the
    difference's error is their quadrature sum.

    Returns:
      One row per matched point: ``x``, then for each column ``c``: ``c`` (conditional), ``c_err``,
      ``c_reference``, ``c_reference_err``, ``c_difference`` (conditional − reference),
      ``c_difference_err`` and ``c_z`` (difference / its error).

    Raises:
      ValueError: a column or its ``_err`` is missing, or a reference point has no conditional row.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    for name, frame in (('conditional', conditional), ('references', references)):
        missing = [c for c in [x] + columns + [f'{c}_err' for c in columns] if c not in frame]
        if missing:
            raise ValueError(f'The {name} table has no column(s) {missing}; pass sweep tables (energies.csv).')
    xs = conditional[x].to_numpy(dtype=float)
    rows = []
    for _, ref in references.sort_values(x).iterrows():
        hits = np.flatnonzero(np.abs(xs - float(ref[x])) <= tolerance)
        if len(hits) != 1:
            raise ValueError(f'The conditional sweep has {len(hits)} rows at {x} = {ref[x]:g} (needs exactly one); '
                             f'its points are {sorted(xs.tolist())}. Sweep the conditional model at the '
                             'references\' points.')
        row = {x: float(ref[x])}
        cond = conditional.iloc[hits[0]]
        for c in columns:
            diff = float(cond[c]) - float(ref[c])
            err = float(np.hypot(cond[f'{c}_err'], ref[f'{c}_err']))
            row.update({c: float(cond[c]), f'{c}_err': float(cond[f'{c}_err']), f'{c}_reference': float(ref[c]),
                        f'{c}_reference_err': float(ref[f'{c}_err']), f'{c}_difference': diff,
                        f'{c}_difference_err': err, f'{c}_z': diff / err if err > 0 else float('nan')})
        rows.append(row)
    return pd.DataFrame(rows)
