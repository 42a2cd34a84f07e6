"""Transition locator: synthetic jumps between two linear branches, found within the stated uncertainty;
the training plot of a blockwise history."""

import numpy as np
import pandas as pd
import pytest

from qvmc.analysis import compare_to_references, fit_line, locate_transition, transition_from_sweep
from qvmc import plotting
from qvmc.plotting import plot_transition


def _synthetic(position, jump, sigma, seed, x=None):
    x = np.linspace(0.5, 1.6, 23) if x is None else x  # spacing 0.05
    left = -40.0 - 3.0 * x
    right = left + jump + 1.5 * (x - position)  # the branches differ in slope too
    y = np.where(x < position, left, right)
    rng = np.random.default_rng(seed)
    err = np.full_like(x, sigma) * (1 + 0.5 * rng.random(x.size))
    return x, y + err * rng.standard_normal(x.size), err


def test_weighted_line_fit_is_exact_on_a_line():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    (a, b), chi2 = fit_line(x, 2.0 + 0.5 * x, np.array([0.1, 0.2, 0.1, 0.3]))
    assert a == pytest.approx(2.0) and b == pytest.approx(0.5) and chi2 == pytest.approx(0.0, abs=1e-20)


@pytest.mark.parametrize('seed', range(5))
def test_finds_a_clear_jump_within_its_uncertainty(seed):
    true_position, true_jump = 1.07, -1.3
    x, y, err = _synthetic(true_position, true_jump, 0.05, seed)
    t = locate_transition(x, y, err, seed=seed, num_bootstrap=500)
    assert abs(t.position - true_position) <= t.position_err
    assert t.interval[0] < true_position <= t.interval[1]  # the gap of sweep points holding the jump
    assert t.position_err < 0.05  # half the 0.05 spacing plus a small bootstrap spread
    # The jump size at the located position, against the truth there (the branches differ in slope).
    truth_at = true_jump + 1.5 * (t.position - true_position)
    assert abs(t.jump - truth_at) < 3 * t.jump_err + 1e-12
    assert t.delta_chi2 > 100  # overwhelming evidence for a jump over one straight line
    assert t.left[1] == pytest.approx(-3.0, abs=0.3) and t.right[1] == pytest.approx(-1.5, abs=0.3)


def test_noisy_jump_coverage():
    """Over many noisy data sets the stated 1σ position error covers the truth most of the time."""
    hits = 0
    for seed in range(20):
        x, y, err = _synthetic(1.03, -0.4, 0.12, 100 + seed)
        t = locate_transition(x, y, err, seed=seed, num_bootstrap=300)
        hits += abs(t.position - 1.03) <= t.position_err
    assert hits >= 14  # ≈ 68 % or better expected; 14/20 is a loose lower bound


def test_no_jump_gives_little_evidence():
    x = np.linspace(0, 1, 15)
    rng = np.random.default_rng(0)
    err = np.full_like(x, 0.1)
    t = locate_transition(x, 1.0 + 2.0 * x + err * rng.standard_normal(x.size), err, num_bootstrap=200)
    assert t.delta_chi2 < 15 and abs(t.jump) < 5 * t.jump_err + 0.3


def test_from_sweep_table_and_plot(tmp_path):
    x, y, err = _synthetic(1.07, -1.3, 0.05, 0)
    frame = pd.DataFrame({'lam': x[::-1], 'interaction_per_electron': y[::-1], 'interaction_per_electron_err': err[::-1]})
    t = transition_from_sweep(frame, num_bootstrap=200)
    assert t.interval == (pytest.approx(1.05), pytest.approx(1.10))
    assert list(t.scan.columns) == ['split', 'position', 'chi2'] and len(t.scan) == len(x) - 3
    plot_transition(frame['lam'], frame['interaction_per_electron'], frame['interaction_per_electron_err'], t,
                    str(tmp_path / 'transition.png'))
    assert (tmp_path / 'transition.png').stat().st_size > 0
    with pytest.raises(ValueError, match='no column'):
        transition_from_sweep(frame, y='interaction')


def test_rejects_bad_input():
    x = np.arange(6.0)
    with pytest.raises(ValueError, match='equal lengths'):
        locate_transition(x, x[:5], np.ones(6))
    with pytest.raises(ValueError, match='at least 5 points'):
        locate_transition(x[:4], x[:4], np.ones(4))
    with pytest.raises(ValueError, match='> 0'):
        locate_transition(x, x, np.zeros(6))
    with pytest.raises(ValueError, match='distinct'):
        locate_transition(np.array([0, 1, 1, 2, 3, 4.0]), x, np.ones(6))


@pytest.mark.parametrize('num_contexts', [3, 40])
def test_training_plot_of_fixed_and_blockwise_histories(tmp_path, num_contexts):
    """Few contexts: a labelled line each; a blockwise schedule's many: points coloured by λ."""
    rng = np.random.default_rng(0)
    lams = rng.uniform(0.6, 1.6, num_contexts)
    rows = [{'step': step, 'context': f'N=6(6,0) lam={lam:g}', 'N': 6, 'lam': lam,
             'energy': -300 * lam + rng.normal(), 'variance': 100.0}
            for step in range(1, 121) for lam in [lams[(step - 1) * num_contexts // 120]]]
    history = pd.DataFrame(rows)
    assert plotting._varying_parameter(history) == 'lam'
    assert plotting._varying_parameter(history.assign(context='N=6(6,0) lam=1', lam=1.0)) is None
    plotting.plot_training(history, str(tmp_path / 'training.png'))
    assert (tmp_path / 'training.png').stat().st_size > 0


def test_compare_to_references_matches_points_and_propagates_errors():
    lam = np.round(np.linspace(0.6, 1.6, 21), 10)
    cond = pd.DataFrame({'lam': lam, 'energy_per_electron': -50.0 - 10 * lam, 'energy_per_electron_err': 0.03})
    refs = pd.DataFrame({'lam': [1.6, 0.6, 1.0], 'energy_per_electron': [-66.1, -56.0, -60.04],
                         'energy_per_electron_err': [0.04, 0.0, 0.03]})
    out = compare_to_references(cond, refs)
    assert out['lam'].tolist() == [0.6, 1.0, 1.6]  # sorted by λ
    np.testing.assert_allclose(out['energy_per_electron_difference'], [0.0, 0.04, 0.1], atol=1e-12)
    np.testing.assert_allclose(out['energy_per_electron_difference_err'], [0.03, 0.03 * 2**0.5, 0.05])
    np.testing.assert_allclose(out['energy_per_electron_z'], [0.0, 0.04 / (0.03 * 2**0.5), 2.0])
    with pytest.raises(ValueError, match='0.65'):  # a reference point the conditional sweep lacks
        compare_to_references(cond.iloc[::2], refs.assign(lam=[1.6, 0.65, 1.0]))
    with pytest.raises(ValueError, match='interaction_per_electron'):
        compare_to_references(cond, refs, columns='interaction_per_electron')
