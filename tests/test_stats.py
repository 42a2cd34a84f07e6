"""Tests of samplers.stats: blocking errors, autocorrelation times, R-hat and formatting."""

import math

import numpy as np
import pytest

from samplers import stats


def _ar1(rng, phi, chains, draws):
    """Stationary AR(1) x_t = phi x_{t-1} + sqrt(1 - phi^2) eps, unit variance.

    Returns:
        Samples [chains, draws]; x_0 is drawn from the stationary N(0, 1).
    """
    noise = rng.normal(size=(chains, draws)) * math.sqrt(1.0 - phi**2)
    x = np.empty((chains, draws))
    x[:, 0] = rng.normal(size=chains)
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_iid_gaussian():
    rng = np.random.default_rng(0)
    chains, draws, sigma = 32, 2000, 2.0
    n = chains * draws
    result = stats.compute_stats(rng.normal(scale=sigma, size=(chains, draws)))
    exact_error = sigma / math.sqrt(n)
    assert result.num_samples == n
    assert abs(result.mean) < 4 * exact_error
    # Blocking of 2000 steps: the relative noise of the error is ~1/sqrt(2 * n_blocks),
    # at most ~10% even if a deep level with 62 blocks were chosen.
    assert result.error == pytest.approx(exact_error, rel=0.2)
    # Sample variance: relative noise sqrt(2 / n) ~ 0.6%.
    assert result.variance == pytest.approx(sigma**2, rel=0.03)
    # Sokal noise ~ sqrt(2 (2M + 1) / (T * chains)) ~ 0.02 with window M ~ 5.
    assert result.tau == pytest.approx(1.0, abs=0.3)
    assert result.rhat < 1.02
    # ess = variance / error**2 is n for uncorrelated samples, up to the error's noise.
    assert result.ess == pytest.approx(n, rel=0.5)


def test_ar1_tau_and_error():
    rng = np.random.default_rng(1)
    phi, chains, draws = 0.9, 16, 20000
    n = chains * draws
    tau_exact = (1 + phi) / (1 - phi)  # 19
    result = stats.compute_stats(_ar1(rng, phi, chains, draws))
    # Per-chain averaged estimator: relative noise ~ sqrt(2 (2M + 1) / T) / sqrt(chains)
    # ~ 3.5% with window M ~ 5 tau = 95, so 20% is > 5 standard deviations.
    assert result.tau == pytest.approx(tau_exact, rel=0.2)
    # sigma = 1 stationary: error of the mean sqrt(tau / n). Blocking at the plateau
    # (n_blocks ~ 100-300) has relative noise ~ 1/sqrt(2 n_blocks) <= 7% plus a
    # downward bias ~ 5 / block_size from the residual correlation.
    assert result.error == pytest.approx(math.sqrt(tau_exact / n), rel=0.25)
    assert result.ess == pytest.approx(n / tau_exact, rel=0.6)
    series = _ar1(rng, phi, 1, 2**16)[0]
    error, level = stats.blocking_error(series)
    assert level >= 4  # blocks must be longer than ~tau = 19 steps
    assert error == pytest.approx(math.sqrt(tau_exact / series.size), rel=0.25)


def test_integrated_autocorr_time_single_series():
    rng = np.random.default_rng(2)
    phi = 0.9
    series = _ar1(rng, phi, 1, 2**18)[0]
    # One series: relative noise sqrt(2 (2M + 1) / T) ~ 4% with M ~ 95, T = 2^18.
    assert stats.integrated_autocorr_time(series) == pytest.approx((1 + phi) / (1 - phi),
                                                                   rel=0.2)
    assert math.isnan(stats.integrated_autocorr_time(np.ones(100)))


def test_rhat_detects_unmixed_chains():
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(8, 500)) + 5.0 * np.arange(8)[:, None]
    assert stats.compute_stats(samples).rhat > 1.1


def test_rhat_walker_groups():
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(130, 100))  # > 64 chains: 16 groups of 8, 2 left out
    assert stats.compute_stats(samples).rhat < 1.05
    samples[:, :] += 5.0 * (np.arange(130) // 8)[:, None]
    assert stats.compute_stats(samples).rhat > 1.1


def test_rhat_nan_when_undefined():
    rng = np.random.default_rng(5)
    assert math.isnan(stats.compute_stats(rng.normal(size=(1, 100))).rhat)
    assert math.isnan(stats.compute_stats(rng.normal(size=(8, 3))).rhat)


def test_short_and_degenerate_series():
    rng = np.random.default_rng(6)
    x = rng.normal(size=10)
    error, level = stats.blocking_error(x)
    assert level == 0
    assert error == pytest.approx(np.std(x, ddof=1) / math.sqrt(10))
    single_draw = rng.normal(size=(50, 1))
    result = stats.compute_stats(single_draw)
    assert result.error == pytest.approx(np.std(single_draw, ddof=1) / math.sqrt(50))
    assert math.isnan(result.tau)
    constant = stats.compute_stats(np.full((4, 100), 2.5))
    assert constant.mean == 2.5
    assert constant.error == 0.0
    assert constant.variance == 0.0


@pytest.mark.parametrize('mean, error, expected', [
    (20.1597, 0.0002, '20.1597(2)'),
    (3.00123, 0.00145, '3.0012(15)'),
    (3.00123, 0.0014, '3.0012(14)'),
    (-1.23456, 0.0996, '-1.2(1)'),
    (1234.5, 123.0, '1230(120)'),
    (1.5, 0.0, '1.5(0)'),
])
def test_format_value_error(mean, error, expected):
    assert stats.format_value_error(mean, error) == expected


def test_str_uses_format():
    result = stats.Stats(mean=3.00123, error=0.00145, variance=1.0, tau=1.0, rhat=1.0,
                         num_samples=100, ess=100.0)
    assert str(result) == '3.0012(15)'


def test_validation():
    with pytest.raises(ValueError, match='2D'):
        stats.compute_stats(np.zeros(10))
    samples = np.zeros((4, 10))
    samples[0, :2] = np.nan
    samples[1, 3] = np.inf
    with pytest.raises(ValueError, match='found 3 non-finite values'):
        stats.compute_stats(samples)
    with pytest.raises(ValueError, match='non-empty'):
        stats.compute_stats(np.zeros((0, 10)))


def test_to_row_and_frame():
    rng = np.random.default_rng(7)
    result = stats.compute_stats(rng.normal(size=(4, 50)))
    row = result.to_row('energy')
    assert list(row) == ['energy', 'energy_err', 'energy_var', 'energy_tau', 'energy_rhat',
                         'energy_n', 'energy_ess']
    assert row['energy'] == result.mean
    assert row['energy_n'] == 200
    assert list(result.to_row()) == list(stats.Stats._fields)
    frame = stats.stats_frame([dict(step=0, **row), dict(step=1, **row)])
    assert frame.shape == (2, 8)
    assert frame['energy_err'].iloc[1] == result.error
