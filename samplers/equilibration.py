"""Deciding from local-energy traces whether walkers are equilibrated (e.g. after a context switch)."""

from typing import Any, Callable, NamedTuple, Tuple

import numpy as np

from samplers.stats import compute_stats


class EquilibrationCheck(NamedTuple):
    """Verdict on one window of traces ``[chain, draw]``.

    Attributes:
      equilibrated: both criteria below pass.
      rhat: rank-normalized split-R̂ over walkers (ArviZ; walker groups beyond 64 walkers);
        flags trends inside chains and walkers that disagree, e.g. stuck ones. Passes below
        ``rhat_threshold``. Individual walkers are autocorrelated over windows shorter than
        their τ_int even at stationarity, which lifts R̂ above 1; VMC needs the *ensemble* to
        be stationary, so the default threshold is a loose 1.2 and the drift test below is the
        main criterion for relaxation.
      drift_z: difference of the means of the first and second half of the window in units
        of the autocorrelation-aware standard error of that difference (from the second half,
        see ``check_equilibrium``). Passes below ``drift_threshold``.
    """
    equilibrated: bool
    rhat: float
    drift_z: float


def check_equilibrium(trace, rhat_threshold: float = 1.2, drift_threshold: float = 3.0) -> EquilibrationCheck:
    """Checks a window of traces ``[chain, draw]`` (chain = walker, draw = MCMC call).

    Args:
      trace: e.g. local energies of the last burn-in window; at least 8 draws.
      rhat_threshold: largest acceptable split-R̂.
      drift_threshold: largest acceptable early/late difference in standard errors.
    """
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] < 8:
        raise ValueError(f'trace must be [chain, draw] with at least 8 draws, got shape {trace.shape}.')
    if not np.all(np.isfinite(trace)):
        return EquilibrationCheck(False, float('nan'), float('inf'))
    half = trace.shape[1] // 2
    early, late = compute_stats(trace[:, :half]), compute_stats(trace[:, half:])
    # Under the null hypothesis (stationary chains) both halves share one variance and τ; the
    # late half estimates it. The early half's own blocking error would be inflated by the very
    # trend the test looks for, which hides the drift.
    error = np.sqrt(2.0) * late.error
    drift_z = abs(early.mean - late.mean) / error if error > 0 else (0.0 if early.mean == late.mean else np.inf)
    rhat = compute_stats(trace).rhat
    rhat_ok = np.isnan(rhat) or rhat < rhat_threshold  # NaN: constant traces (exact states)
    return EquilibrationCheck(bool(rhat_ok and drift_z < drift_threshold), float(rhat), float(drift_z))


class BurnInReport(NamedTuple):
    """What ``burn_in`` decided.

    Attributes:
      steps: sampler calls spent.
      equilibrated: the check passed before ``max_steps``.
      checks: the ``EquilibrationCheck`` of every window tested, in order (the last one decided).
    """
    steps: int
    equilibrated: bool
    checks: Tuple[EquilibrationCheck, ...]


def burn_in(run_chunk: Callable, state: Any, *, chunk: int = 25, min_steps: int = 50, max_steps: int = 500,
            rhat_threshold: float = 1.2, drift_threshold: float = 3.0) -> Tuple[Any, BurnInReport]:
    """Runs the sampler in chunks until the local-energy traces pass ``check_equilibrium``.

    After every chunk (once ``min_steps`` calls are done) the window made of the last two
    chunks is checked; burn-in stops at the first window that passes, or at ``max_steps``.

    Args:
      run_chunk: ``(state, start, n) -> (state, trace [W, n])``: ``n`` sampler calls (with
        step-size adaptation) from call index ``start`` (use it to derive RNG keys), returning
        the local energies of every walker after each call.
      state: whatever ``run_chunk`` carries (walkers, step size).
      chunk: calls per chunk (the window is ``2 · chunk`` draws, at least 8).
      min_steps, max_steps: bounds on the calls spent.
      rhat_threshold, drift_threshold: see ``check_equilibrium``.
    """
    if chunk < 4:
        raise ValueError(f'chunk must be >= 4 (the checked window is two chunks, >= 8 draws), got {chunk}.')
    if min_steps < 0 or max_steps < max(min_steps, 2 * chunk):
        raise ValueError(f'need 0 <= min_steps <= max_steps and max_steps >= 2·chunk; got min_steps={min_steps}, '
                         f'max_steps={max_steps}, chunk={chunk}.')
    previous, steps, checks = None, 0, []
    while steps < max_steps:
        n = min(chunk, max_steps - steps)
        state, current = run_chunk(state, steps, n)
        current = np.asarray(current, np.float64)
        steps += n
        if previous is not None and steps >= min_steps:
            window = np.concatenate([previous, current], axis=1)
            checks.append(check_equilibrium(window, rhat_threshold, drift_threshold))
            if checks[-1].equilibrated:
                return state, BurnInReport(steps, True, tuple(checks))
        previous = current
    return state, BurnInReport(steps, False, tuple(checks))
