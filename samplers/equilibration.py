"""Deciding from local-energy traces whether walkers are equilibrated (e.g. after a context switch)."""

from typing import NamedTuple

import numpy as np


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
        of its autocorrelation-aware standard error. Passes below ``drift_threshold``.
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
    from qvmc.stats import compute_stats
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] < 8:
        raise ValueError(f'trace must be [chain, draw] with at least 8 draws, got shape {trace.shape}.')
    if not np.all(np.isfinite(trace)):
        return EquilibrationCheck(False, float('nan'), float('inf'))
    half = trace.shape[1] // 2
    early, late = compute_stats(trace[:, :half]), compute_stats(trace[:, half:])
    error = np.hypot(early.error, late.error)
    drift_z = abs(early.mean - late.mean) / error if error > 0 else (0.0 if early.mean == late.mean else np.inf)
    rhat = compute_stats(trace).rhat
    rhat_ok = np.isnan(rhat) or rhat < rhat_threshold  # NaN: constant traces (exact states)
    return EquilibrationCheck(bool(rhat_ok and drift_z < drift_threshold), float(rhat), float(drift_z))
