"""Context schedules: blockwise draws cover the interval, change only at block boundaries, are
reproducible from the step alone, and training burns in after every switch until equilibrated."""

import os

import jax
import numpy as np
import optax
import pytest

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from qvmc import VMC, VMCConfig
from qvmc.schedule import BlockwiseSchedule, DiscreteSchedule
from qvmc.train import load_burn_in, load_history, train

TINY = FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)


def test_blockwise_changes_only_at_boundaries_and_is_reproducible():
    dot = QuantumDot()
    sched = BlockwiseSchedule(dot.context(3, 3), 'lam', (0.0, 10.0), block_length=7, stages=[(0, 3), (20, 5)], seed=4)
    boundaries = sched.boundaries(45)
    assert boundaries == [0, 7, 14, 20, 27, 34, 41]  # the stage start (20) cuts a block short
    for t in range(1, 45):
        changed = sched.contexts_at(t) != sched.contexts_at(t - 1)
        assert changed == sched.is_boundary(t), t  # every boundary draws anew; nothing changes inside a block
    assert len(sched.contexts_at(19)) == 3 and len(sched.contexts_at(20)) == 5
    assert sched.block_index(23) == (1, 0) and sched.block_index(41) == (1, 3)
    again = BlockwiseSchedule(dot.context(3, 3), 'lam', (0.0, 10.0), block_length=7, stages=[(0, 3), (20, 5)], seed=4)
    assert [again.contexts_at(t) for t in (40, 3, 22)] == [sched.contexts_at(t) for t in (40, 3, 22)]  # any order
    other = BlockwiseSchedule(dot.context(3, 3), 'lam', (0.0, 10.0), block_length=7, stages=[(0, 3), (20, 5)], seed=5)
    assert other.contexts_at(0) != sched.contexts_at(0)
    assert all(c.spins == (3, 3) and c['omega'] == 1.0 for c in sched.contexts_at(30))


def test_stratified_draws_cover_the_interval():
    dot = QuantumDot()
    sched = BlockwiseSchedule([dot.context(1, 1), dot.context(2, 1)], 'lam', (1.0, 5.0), block_length=1,
                              num_contexts=4)
    draws = []
    for block in range(400):
        values = sched.values(0, block)  # [bases, 4]
        assert values.shape == (2, 4)
        strata = np.floor((values - 1.0) / 1.0)  # stratum i holds value i of every block
        np.testing.assert_array_equal(strata, np.tile(np.arange(4), (2, 1)))
        draws.append(values.ravel())
    draws = np.sort(np.concatenate(draws))
    assert draws.min() >= 1.0 and draws.max() < 5.0
    ecdf_gap = np.max(np.abs(np.arange(1, draws.size + 1) / draws.size - (draws - 1.0) / 4.0))
    assert ecdf_gap < 0.02  # uniform over the interval (stratification makes it tighter than i.i.d.)
    labels = [c.label() for c in sched.contexts_at(0)]
    assert labels[0].startswith('N=2(1,1)') and labels[4].startswith('N=3(2,1)')


def test_discrete_grid_and_bad_input():
    dot = QuantumDot()
    grid = DiscreteSchedule.grid(dot.context, [(3, 3), (4, 4), (5, 5)], lam=[0, 1, 2, 5, 8, 10])
    assert len(grid.contexts_at(123)) == 18 and grid.boundaries(10) == [0] and not grid.is_boundary(5)
    grid.validate(dot, total_walkers=18 * 4)
    with pytest.raises(ValueError, match='cannot be split into 18'):
        grid.validate(dot, total_walkers=100)
    with pytest.raises(ValueError, match="Unknown context parameter 'lamda'"):
        BlockwiseSchedule(dot.context(3, 3), 'lamda', (0, 1))
    with pytest.raises(ValueError, match='interval'):
        BlockwiseSchedule(dot.context(3, 3), 'lam', (2, 1))
    with pytest.raises(ValueError, match='stages must start at step 0'):
        BlockwiseSchedule(dot.context(3, 3), 'lam', (0, 1), stages=[(10, 4)])
    with pytest.raises(ValueError, match='block_length'):
        BlockwiseSchedule(dot.context(3, 3), 'lam', (0, 1), block_length=0)
    sched = BlockwiseSchedule(dot.context(3, 3), 'lam', (-1.0, 1.0), stages=[(0, 4), (100, 16)])
    with pytest.raises(ValueError, match='Stage 1 .* cannot be split into 16'):
        sched.validate(total_walkers=72)
    with pytest.raises(ValueError, match='lam must be >= 0'):
        sched.validate(dot)
    with pytest.raises(ValueError, match='duplicate'):
        DiscreteSchedule([dot.context(1, 1), dot.context(1, 1)])


class RecordingVMC(VMC):
    """A VMC that records every ``equilibrate`` call (step, blocks, reports)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def equilibrate(self, rng_key, state, which=None, **kwargs):
        state, reports = super().equilibrate(rng_key, state, which, **kwargs)
        self.calls.append((state.step, None if which is None else tuple(which), reports, kwargs))
        return state, reports


def test_training_switches_at_boundaries_and_burns_in_until_equilibrated(tmp_path):
    dot = QuantumDot()
    sched = BlockwiseSchedule(dot.context(1, 1), 'lam', (0.0, 6.0), block_length=3, num_contexts=2, seed=2)
    vmc = RecordingVMC(make_fermi_sets(TINY), dot, sched.contexts_at(0), optax.adam(1e-3),
                       VMCConfig(num_walkers=16, mcmc_substeps=3, kinetic_method='hessian'))
    run = str(tmp_path / 'run')
    with pytest.raises(ValueError, match='cannot be split into 2'):  # 33 walkers: refused before any file is made
        train(vmc, vmc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 7, run_dir=run, schedule=sched,
              total_walkers=33)
    assert not os.path.exists(run)
    burn = dict(chunk=4, min_steps=8, max_steps=40)
    state = train(vmc, vmc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 7, run_dir=run, schedule=sched,
                  burn_in_options=burn, print_fn=None)
    assert state.step == 7 and state.contexts == sched.contexts_at(6)
    # Burn-in exactly at the boundaries after the start (3 and 6), for the blocks that changed.
    assert [c[0] for c in vmc.calls] == [3, 6] and all(c[1] == (0, 1) for c in vmc.calls)
    for _, _, reports, kwargs in vmc.calls:
        assert kwargs == burn
        for report in reports.values():
            verdicts = [c.equilibrated for c in report.checks]
            # It ran until the first passing check (or the cap), never past it and never short of it.
            assert not any(verdicts[:-1])
            assert verdicts[-1] or report.steps == burn['max_steps']
            assert report.steps == burn['min_steps'] + burn['chunk'] * (len(verdicts) - 1)
    history = load_history(run)
    per_step = history.groupby('step')['context'].apply(tuple)
    for step in range(2, 8):  # history step s is the step taken at state.step = s - 1
        assert (per_step[step] != per_step[step - 1]) == sched.is_boundary(step - 1)
    log = load_burn_in(run)
    assert sorted(set(log['step'])) == [3, 6] and set(log['event']) == {'switch'}
    assert list(log.columns[:4]) == ['step', 'event', 'block', 'context']
    last = log[log['step'] == 6].sort_values('block')
    assert list(last['context']) == [c.label() for c in sched.contexts_at(6)]
    assert (last['burn_in_steps'] >= burn['min_steps']).all()


def test_progress_line_has_energy_variance_acceptance_and_eta():
    from qvmc.history import Progress, format_seconds
    from qvmc.state import BlockStats, StepInfo
    dot = QuantumDot()
    contexts = [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=2.0)]
    stats = tuple(BlockStats(np.float64(e), np.float64(0.25), np.float64(0.5), {}, 0) for e in (3.0, 4.0))
    lines = []
    progress = Progress(100, 10, lines.append)
    for step in range(1, 21):
        progress.update(step, StepInfo(3.5, stats, True), contexts)
    assert len(lines) == 2 and lines[1].startswith('step  20/100  20%  E 3.50000  var 2.500e-01  acc 0.50')
    assert 'ETA ' in lines[1] and 'ETA ?' not in lines[1] and 'N=2(1,1) lam=2 omega=1: 4.0000' in lines[1]
    assert 'cap' not in lines[1]  # no natural gradient
    from qvmc.natgrad import NaturalGradientInfo
    line = Progress(100, 10, None).update(20, StepInfo(3.5, stats, True), contexts)
    assert line is None  # print_fn None: nothing formatted
    ng = NaturalGradientInfo(0.05, 1e-3, 4.0, 0.25)
    line = Progress(100, 20, lambda _: None).update(20, StepInfo(3.5, stats, True, ng), contexts)
    assert '  cap 0.25' in line
    assert format_seconds(3725) == '1:02:05' and format_seconds(65) == '1:05' and format_seconds(float('nan')) == '?'
