"""Error bars and convergence diagnostics for MCMC samples shaped (chain, draw)."""

import decimal
import math
from typing import Any, Dict, NamedTuple, Tuple

import numpy as np

from samplers.reporting import import_arviz, stats_frame  # noqa: F401  (stats_frame: re-export)

# Below this many steps blocking has too few levels to find a plateau.
_MIN_BLOCKING_LENGTH = 16
# Sokal's window constant: the smallest window M with M >= c * tau(M).
_SOKAL_C = 5.0
# Largest number of padded series elements transformed by one FFT call.
_FFT_CHUNK_ELEMENTS = 1 << 22
# Significance of the M-test of the automated blocking method.
_MTEST_CONFIDENCE = 0.99
# R-hat is computed on walker groups when there are more walkers than this.
_RHAT_MAX_CHAINS = 64
_RHAT_GROUPS = 16
# arviz needs at least this many draws per chain for split R-hat.
_RHAT_MIN_DRAWS = 4

# Suffixes of the keys written by ``Stats.to_row`` when a prefix is given.
_ROW_SUFFIXES = {
    'mean': '',
    'error': '_err',
    'variance': '_var',
    'tau': '_tau',
    'rhat': '_rhat',
    'num_samples': '_n',
    'ess': '_ess',
}


class Stats(NamedTuple):
    """Summary statistics of one scalar observable sampled by MCMC.

    Attributes:
        mean: mean over all samples (all chains and draws).
        error: standard error of ``mean``, accounting for the autocorrelation
            in time (from blocking of the walker-averaged series, see
            ``compute_stats``).
        variance: variance of the individual samples (unbiased, ddof=1),
            e.g. the local-energy variance. NaN for a single sample.
        tau: integrated autocorrelation time of the walker-averaged series,
            in units of MCMC steps; 1.0 means uncorrelated. NaN if undefined
            (fewer than 2 draws or a constant series).
        rhat: rank-normalized split-R-hat over chains (``arviz.rhat``); NaN
            with fewer than 2 chains or fewer than 4 draws.
        num_samples: total number of samples, chains * draws.
        ess: effective sample size of the mean, ``variance / error**2``
            (equals ``num_samples`` for uncorrelated samples); NaN if
            undefined.
    """

    mean: float
    error: float
    variance: float
    tau: float
    rhat: float
    num_samples: int
    ess: float

    def to_row(self, prefix: str = '') -> Dict[str, Any]:
        """Returns the fields as a flat dict, e.g. one row of a pandas table.

        Args:
            prefix: name of the observable. If empty, the keys are the field
                names ('mean', 'error', 'variance', 'tau', 'rhat',
                'num_samples', 'ess'). Otherwise they are ``prefix`` for the
                mean and ``prefix`` + '_err', '_var', '_tau', '_rhat', '_n',
                '_ess' for the others, e.g. 'energy', 'energy_err', ...

        Returns:
            Dict from column name to a Python float (int for the sample count).
        """
        row = {}
        for field, value in zip(self._fields, self):
            key = field if not prefix else prefix + _ROW_SUFFIXES[field]
            row[key] = int(value) if field == 'num_samples' else float(value)
        return row

    def __str__(self) -> str:
        return format_value_error(self.mean, self.error)


def format_value_error(mean: float, error: float) -> str:
    """Formats a value with its error in parentheses, e.g. '3.0012(15)'.

    The error is rounded (half up, on its shortest decimal representation) to
    two significant digits, and to one if the second is a zero; the mean is
    rounded to the same decimal place and the error digits are written in
    parentheses, applying to the last digits of the mean. Examples:
    (20.1597, 0.0002) -> '20.1597(2)', (3.00123, 0.00145) -> '3.0012(15)',
    (1234.5, 123) -> '1230(120)'. A zero or non-finite error is written as
    the mean to 12 significant digits followed by '(0)', '(nan)' or '(inf)'.

    Args:
        mean: the value.
        error: its (non-negative) standard error.

    Returns:
        The formatted string.

    Raises:
        ValueError: if ``error`` is negative.
    """
    mean = float(mean)
    error = float(error)
    if error < 0:
        raise ValueError(f'error must be non-negative; got {error}')
    if not math.isfinite(mean) or not math.isfinite(error) or error == 0:
        error_text = '0' if error == 0 else f'{error}'
        return f'{mean:.12g}({error_text})'
    # Enough precision for any float, so quantize never overflows the context.
    decimal_context = decimal.Context(prec=800)
    err = decimal.Decimal(repr(error))
    # Place of the second significant digit of the error.
    place = err.adjusted() - 1
    digits = int(err.scaleb(-place).quantize(decimal.Decimal(1), decimal.ROUND_HALF_UP,
                                             decimal_context))
    if digits >= 100:  # rounding carried into a new leading digit, e.g. 0.0996
        digits //= 10
        place += 1
    if digits % 10 == 0:
        digits //= 10
        place += 1
    quantum = decimal.Decimal(1).scaleb(place)
    value = decimal.Decimal(repr(mean)).quantize(quantum, decimal.ROUND_HALF_UP,
                                                 decimal_context)
    if value.is_zero():
        value = abs(value)  # no '-0.000'
    error_text = str(digits) if place <= 0 else str(digits * 10**place)
    return f'{value:f}({error_text})'


def _blocking_levels(series: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocking transformations of a 1D series [T] (T >= 2).

    Returns:
        (n, var, gamma), each [K] over levels k = 0..K-1: the number of blocks
        n_k, their variance (ddof=0) and their lag-1 autocovariance
        (1/n_k) sum_i (x_i - m)(x_{i+1} - m). Level k averages blocks of 2^k
        steps; an odd element is dropped from the end before halving.
    """
    x = series
    n, var, gamma = [], [], []
    while x.shape[0] >= 2:
        size = x.shape[0]
        d = x - x.mean()
        n.append(size)
        var.append(np.mean(d * d))
        gamma.append(np.sum(d[:-1] * d[1:]) / size)
        x = x[:size - size % 2]
        x = 0.5 * (x[0::2] + x[1::2])
    return np.array(n, dtype=np.float64), np.array(var), np.array(gamma)


def blocking_error(series) -> Tuple[float, int]:
    """Standard error of the mean of a correlated series by blocking analysis.

    Flyvbjerg-Petersen blocking (J. Chem. Phys. 91, 461 (1989)): the series
    is repeatedly transformed by averaging adjacent pairs. At level k
    (blocks of 2^k steps, n_k blocks of variance s_k^2 with ddof=0) the
    standard error estimate is sqrt(s_k^2 / (n_k - 1)), with uncertainty
    about that value / sqrt(2 (n_k - 1)). The estimate grows with k until the
    blocks are longer than the correlation time and then plateaus.

    The plateau is chosen by the M-test of Jonsson, "Standard error
    estimation by an automated blocking method", Phys. Rev. E 98, 043304
    (2018): with gamma_k the lag-1 autocovariance of the blocks at level k,

        M_j = sum_{k >= j} n_k ((n_k - 1) s_k^2 / n_k^2 + gamma_k)^2 / s_k^4,

    which for blocks uncorrelated from level j on is chi-squared distributed
    with (number of levels - j) degrees of freedom (the first term removes
    the bias of gamma_k for uncorrelated data). The level used is the first j
    with M_j below the 99% quantile of that distribution. If no level passes
    (series much too short for its correlation time) the deepest level is
    used; its estimate is then noisy and likely still too small.

    Lengths that are not powers of two are handled by dropping the last
    element of a level whose length is odd.

    For T < 16 there are too few levels to find a plateau and the naive
    error sqrt(s^2 / (T - 1)) of level 0 is returned (this ignores any
    autocorrelation). For T < 2 the error is NaN.

    Args:
        series: 1D time series [T], e.g. the walker-averaged local energy.

    Returns:
        (error, level): the standard error of the mean and the blocking level
        k it was read at (0 means unblocked).

    Raises:
        ValueError: if ``series`` is not 1D.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f'series must be 1D [T]; got shape {x.shape}')
    length = x.shape[0]
    if length < 2:
        return math.nan, 0
    if np.ptp(x) == 0:
        return 0.0, 0
    n, var, gamma = _blocking_levels(x)
    if length < _MIN_BLOCKING_LENGTH:
        return float(np.sqrt(var[0] / (n[0] - 1))), 0
    from scipy import stats as scipy_stats  # arviz dependency; imported lazily
    with np.errstate(divide='ignore', invalid='ignore'):
        terms = n * ((n - 1) * var / n**2 + gamma)**2 / var**2
    # Zero-variance levels (constant blocks) carry no sign of correlation.
    terms = np.where(var > 0, terms, 0.0)
    m_stat = np.cumsum(terms[::-1])[::-1]
    num_levels = n.shape[0]
    dof = num_levels - np.arange(num_levels)
    quantiles = scipy_stats.chi2.ppf(_MTEST_CONFIDENCE, dof)
    passed = np.nonzero(m_stat < quantiles)[0]
    level = int(passed[0]) if passed.size else num_levels - 1
    return float(np.sqrt(var[level] / (n[level] - 1))), level


def integrated_autocorr_time(series) -> float:
    """Integrated autocorrelation time by Sokal's automatic windowing.

    The normalized autocorrelation rho(t) is computed by FFT and the
    integrated time tau(M) = 1 + 2 sum_{t=1}^{M} rho(t) is read at the
    smallest window M with M >= c tau(M), c = 5 (Sokal, "Monte Carlo Methods
    in Statistical Mechanics", 1997). If no window satisfies this (series too
    short) the largest one is used. The statistical error of the estimate is
    about tau sqrt(2 (2M + 1) / T) for one series.

    A 2D input [C, T] of independent chains is handled by averaging the
    per-chain autocovariance functions (each chain centered on its own mean)
    before normalizing. For independent, statistically identical chains this
    estimates the same tau as the 1D estimate on the chain-averaged series,
    with about C times less variance, since the expected cross-chain terms of
    the averaged series vanish and only add noise.

    Args:
        series: time series [T], or [C, T] with C independent chains
            (axis 0) of T steps (axis 1).

    Returns:
        tau in units of steps: 1.0 for uncorrelated data, larger for
        positively correlated data. Noise can make it slightly below 1 for
        uncorrelated data. NaN if T < 2 or the series is constant.

    Raises:
        ValueError: if ``series`` is not 1D or 2D.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f'series must be [T] or [C, T]; got shape {x.shape}')
    x = np.atleast_2d(x)
    length = x.shape[1]
    if length < 2 or x.shape[0] == 0:
        return math.nan
    n_fft = 1 << (2 * length - 1).bit_length()  # >= 2T - 1: no circular wrap
    # Chunk over chains to bound the memory of the FFT buffers.
    chunk = max(1, _FFT_CHUNK_ELEMENTS // n_fft)
    acov = np.zeros(length)
    for start in range(0, x.shape[0], chunk):
        d = x[start:start + chunk]
        d = d - d.mean(axis=1, keepdims=True)
        f = np.fft.rfft(d, n=n_fft, axis=1)
        acov += np.fft.irfft(f * np.conj(f), n=n_fft, axis=1)[:, :length].sum(axis=0)
    acov /= x.shape[0] * length
    if not acov[0] > 0:
        return math.nan
    rho = acov / acov[0]
    taus = 2.0 * np.cumsum(rho) - 1.0
    too_short = np.arange(length) < _SOKAL_C * taus
    window = int(np.argmin(too_short)) if not too_short.all() else length - 1
    return float(taus[window])


def _rhat(samples: np.ndarray) -> float:
    """arviz rank-normalized split-R-hat of samples [chain, draw]; NaN if too few."""
    chains, draws = samples.shape
    if chains < 2 or draws < _RHAT_MIN_DRAWS or np.ptp(samples) == 0:
        return math.nan
    if chains > _RHAT_MAX_CHAINS:
        group = chains // _RHAT_GROUPS
        samples = samples[:_RHAT_GROUPS * group]
        samples = samples.reshape(_RHAT_GROUPS, group, draws).mean(axis=1)
    return float(import_arviz().rhat(np.ascontiguousarray(samples)))


def compute_stats(samples) -> Stats:
    """Mean, error bar and diagnostics of MCMC samples of one observable.

    The mean and variance are over all samples. The error and tau come from
    the walker-averaged series x_t = mean_c samples[c, t]: walkers are
    independent, so averaging them first is exact, and the remaining
    correlation in time is handled by ``blocking_error`` (error) and
    ``integrated_autocorr_time`` (tau, computed from the per-walker
    autocovariances, which estimates the tau of x_t with less noise). With a
    single draw the samples are independent and the error is the naive
    sqrt(variance / num_samples).

    R-hat uses ``arviz.rhat`` on the (chain, draw) array. With more than 64
    chains, R-hat is computed on 16 groups of walkers instead: the chains are
    split into 16 contiguous groups of chains // 16 walkers (the remaining
    chains % 16 walkers are left out so the groups are equal), and each
    group is averaged into one chain. This keeps arviz fast and still detects
    walkers that have not mixed, as differing group means.

    Args:
        samples: array [chain, draw]; chain indexes walkers, draw MCMC steps.

    Returns:
        The ``Stats`` of the samples.

    Raises:
        ValueError: if ``samples`` is not 2D, is empty, is complex or has
            non-finite values.
    """
    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f'samples must be 2D (chain, draw); got shape {samples.shape}')
    if samples.size == 0:
        raise ValueError(f'samples must be non-empty; got shape {samples.shape}')
    if np.iscomplexobj(samples):
        raise ValueError('samples must be real; got complex values')
    samples = samples.astype(np.float64)
    num_nonfinite = int(np.count_nonzero(~np.isfinite(samples)))
    if num_nonfinite:
        raise ValueError(f'samples must be finite; found {num_nonfinite} non-finite values')
    chains, draws = samples.shape
    num_samples = chains * draws
    mean = float(samples.mean())
    variance = float(samples.var(ddof=1)) if num_samples > 1 else math.nan
    if draws >= 2:
        error, _ = blocking_error(samples.mean(axis=0))
        tau = integrated_autocorr_time(samples)
    else:
        error = math.sqrt(variance / num_samples) if num_samples > 1 else math.nan
        tau = math.nan
    with np.errstate(divide='ignore', invalid='ignore'):
        ess = float(np.float64(variance) / np.float64(error)**2)
    if not math.isfinite(ess):
        ess = math.nan
    return Stats(mean=mean, error=float(error), variance=variance, tau=tau,
                 rhat=_rhat(samples), num_samples=num_samples, ess=ess)
