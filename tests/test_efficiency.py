"""qvmc.efficiency against curves with known answers, and examples/moire_efficiency.py's summary
on synthetic run directories (nothing is compiled)."""

import os
import sys

import numpy as np
import pandas as pd
import pytest

from qvmc import checkpoint, efficiency

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples'))


def test_rolling_mean_is_the_trailing_mean():
    values = np.random.default_rng(0).normal(size=40)
    np.testing.assert_allclose(efficiency.rolling_mean(values, 7), pd.Series(values).rolling(7).mean(), atol=1e-12)
    with pytest.raises(ValueError, match='window'):
        efficiency.rolling_mean(values, 0)


def test_first_crossing_of_an_exponential_decay():
    # E(t) = exp(-t / τ) without noise and window 1 reaches 0.1 at t = τ ln 10, the first integer step after it.
    tau, steps = 30.0, np.arange(1, 301)
    energy = np.exp(-steps / tau)
    assert efficiency.first_crossing(steps, energy, 0.1, 1) == np.ceil(tau * np.log(10))
    # a trailing mean lags: the window-10 mean reaches it later, and a threshold below the curve is never reached
    assert efficiency.first_crossing(steps, energy, 0.1, 10) > tau * np.log(10)
    assert efficiency.first_crossing(steps, energy, -1.0, 1) is None
    with pytest.raises(ValueError, match='differ in length'):
        efficiency.first_crossing(steps[:-1], energy, 0.1, 1)


def test_stability_sees_a_spike_and_not_a_descent():
    steps = np.arange(200)
    smooth = efficiency.stability(10 * np.exp(-steps / 20), 20)
    assert smooth.max_rise == 0.0 and smooth.spread < 1e-3
    spiky = 10 * np.exp(-steps / 20)
    spiky[150] += 5.0  # one bad step lifts the trailing mean of 20 by 5 / 20
    assert efficiency.stability(spiky, 20).max_rise == pytest.approx(0.25, rel=1e-2)
    noise = np.random.default_rng(1).normal(0.0, 2.0, size=400)
    end = efficiency.stability(noise, 100)
    assert end.spread == pytest.approx(2.0, rel=0.2)  # sample std of 100 draws: ±7 %
    assert end.final_err == pytest.approx(end.spread / 10)
    with pytest.raises(ValueError, match='non-finite'):
        efficiency.stability(np.r_[noise, np.nan], 10)


def test_parameters_at_energy_on_a_log_linear_family():
    # E = -2 ln p exactly: the energy -2 ln 3000 is reached at p = 3000, inside (1000, 10000)
    params = np.array([1000.0, 10000.0, 100000.0])
    energy = -2.0 * np.log(params)
    found = efficiency.parameters_at_energy(params, energy, np.zeros(3), -2.0 * np.log(3000.0))
    assert found.status == 'inside' and found.value == pytest.approx(3000.0, rel=1e-12)
    assert found.inside_fraction == 1.0
    # an error σ on the target alone moves ln p by σ / 2 (the slope): relative error σ / 2 to first order
    sigma = 0.02
    noisy = efficiency.parameters_at_energy(params, energy, np.zeros(3), -2.0 * np.log(3000.0), sigma,
                                            num_bootstrap=4000)
    assert noisy.err / noisy.value == pytest.approx(sigma / 2, rel=0.1)  # 4000 draws: std known to ~1 %
    assert efficiency.parameters_at_energy(params, energy, np.zeros(3), 0.0).status == 'below'
    above = efficiency.parameters_at_energy(params, energy, np.zeros(3), -100.0)
    assert above.status == 'above' and above.value == 100000.0
    for bad in [dict(params=[1.0], energies=[0.0], errors=[0.0]), dict(params=[1, 1], energies=[0, 1], errors=[0, 0]),
                dict(params=[1, 2], energies=[0, 1], errors=[-1, 0])]:
        with pytest.raises(ValueError):
            efficiency.parameters_at_energy(target=0.0, **bad)


def _member(root, name, width, params, tau, final, n=6, steps=300, equilibrated=True, start='trained'):
    """A finished member: history E/N = final + 5 exp(-t/τ), frozen energy = final, ``params`` parameters."""
    directory = os.path.join(root, f'{name}-w{width}')
    os.makedirs(os.path.join(directory, 'sweep'))
    t = np.arange(1, steps + 1)
    pd.DataFrame({'step': t, 'energy': n * (final + 5 * np.exp(-t / tau)), 'seconds': 0.5}).to_csv(
        os.path.join(directory, 'history.csv'), index=False)
    pd.DataFrame({'lam': [1.0], 'energy_per_electron': [final], 'energy_per_electron_err': [0.01],
                  'equilibrated': [equilibrated], 'burn_in_steps': [300 if not equilibrated else 40],
                  'carried_over': [start == 'trained']}).to_csv(
        os.path.join(directory, 'sweep', 'energies.csv'), index=False)
    # a training state's layout: parameters under 'params', other leaves beside them
    checkpoint.save(os.path.join(directory, 'checkpoint.qvmc'),
                    {'params': {'layer': {'w': np.zeros(params - 10), 'b': np.zeros(10)}}, 'step': np.zeros(7)})


def test_efficiency_driver_summary(tmp_path, capsys):
    import moire_efficiency
    root = str(tmp_path)
    # QERNEL decays 3× faster than the PsiFormer of nearly the same size and matches the 4×-larger PsiFormer
    _member(root, 'qernel', 16, 1000, tau=10.0, final=-40.0)
    _member(root, 'psiformer', 16, 1050, tau=30.0, final=-39.5)
    _member(root, 'psiformer', 32, 4000, tau=30.0, final=-40.0)
    _member(root, 'psiformer', 64, 16000, tau=30.0, final=-40.5)
    _member(root, 'psiformer', 128, 64000, tau=30.0, final=-35.0, equilibrated=False)  # must not enter the ratios
    _member(root, 'psiformer', 256, 256000, tau=30.0, final=-45.0, start='fresh')  # nor a fresh start
    usable = moire_efficiency.frozen_usable
    assert usable(os.path.join(root, 'psiformer-w128'), 'trained') is False
    assert usable(os.path.join(root, 'psiformer-w64'), 'trained') is True
    assert usable(os.path.join(root, 'psiformer-w256'), 'trained') is False
    assert usable(os.path.join(root, 'psiformer-w256'), 'fresh') is True
    assert usable(os.path.join(root, 'none'), 'trained') is None
    moire_efficiency.main(['--run-dir', root, '--electrons', '6', '--members', 'qernel:16', 'psiformer:16,32,64,128,256',
                           '--summarize-only', '--steps', '300', '--window', '2'])
    members = pd.read_csv(tmp_path / 'members.csv').set_index('width')
    assert members.loc[16, 'params'].tolist() == [1000, 1050]
    assert members.loc[32, 'wall_minutes'] == pytest.approx(300 * 0.5 / 60)
    assert members.loc[32, 'median_seconds_per_step'] == 0.5
    ratio = pd.read_csv(tmp_path / 'ratios.csv').iloc[0]
    assert ratio['param_ratio'] == pytest.approx(4.0, rel=1e-9) and ratio['status'] == 'inside'
    # the trailing mean of 2 steps of final + 5 e^(-t/τ) is final + 5 e^(-t/τ) (1 + e^(1/τ)) / 2: the matched
    # PsiFormer's last one is the threshold (reached at step 300), QERNEL (τ = 10) gets there at step 10 ln(…)
    assert ratio['matched'] == 'psiformer-w16'
    threshold = -39.5 + 2.5 * np.exp(-300 / 30) * (1 + np.exp(1 / 30))
    qernel_steps = np.ceil(10 * np.log(2.5 * (1 + np.exp(0.1)) / (threshold + 40.0)))
    assert ratio['threshold'] == pytest.approx(threshold, rel=1e-12)
    assert ratio['steps_ratio'] == pytest.approx(300 / qernel_steps, rel=1e-9)
    assert ratio['seconds_ratio'] == pytest.approx(ratio['steps_ratio'])
    for name in ('energy_vs_parameters.png', 'training_curves.png'):
        assert (tmp_path / name).is_file()
    out = capsys.readouterr().out
    assert 'psiformer-w128: frozen measurement not equilibrated after 300 calls' in out and 'wrote' in out
    assert 'psiformer-w256: frozen measurement started from fresh walkers, not trained ones' in out
    assert not members.loc[128, 'frozen_equilibrated'] and members.loc[64, 'frozen_equilibrated']
    assert members.loc[256, 'frozen_start'] == 'fresh' and not members.loc[256, 'frozen_usable']


@pytest.mark.parametrize('argv, message', [
    (['--members', 'qernel:16'], 'give both families'),
    (['--members', 'qernel:16', 'psiformer:x'], "bad width 'x'"),
    (['--members', 'fermi_sets:16', 'psiformer:16'], "bad item 'fermi_sets:16'"),
    (['--members', 'qernel:18', 'psiformer:16'], 'not a multiple of --heads'),
    (['--window', '700'], '--window'),
    (['--burn-in', '10', '20', '15'], '--burn-in'),
])
def test_efficiency_driver_rejects_bad_flags(argv, message, capsys):
    import moire_efficiency
    with pytest.raises(SystemExit) as stop:
        moire_efficiency.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_efficiency_driver_skips_a_member_another_process_writes(tmp_path, monkeypatch, capsys):
    """Two drivers with the same members (one per core) share them: a member whose run lock another
    process holds is skipped, a finished one too; the rest is started."""
    import subprocess
    import moire_efficiency
    root = str(tmp_path)
    _member(root, 'qernel', 16, 1000, tau=10.0, final=-40.0)  # finished, measured from trained walkers
    busy = os.path.join(root, 'psiformer-w16')
    os.makedirs(busy)
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom qvmc import runlock\n'
                               'runlock.acquire(sys.argv[1])\nprint("held", flush=True)\ntime.sleep(600)\n', busy],
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        started = []

        class Child:
            def __init__(self, cmd):
                started.append(cmd[cmd.index('--run-dir') + 1])

            def wait(self):
                return 0
        monkeypatch.setattr(moire_efficiency.subprocess, 'Popen', Child)
        args = moire_efficiency.parse_args(['--run-dir', root, '--electrons', '6', '--members', 'qernel:16',
                                            'psiformer:16', '--steps', '300'])
        moire_efficiency.run_members(args)
        assert started == [] and f'psiformer-w16: skipped, process {holder.pid} writes it' in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait(timeout=30)
    moire_efficiency.run_members(args)  # the lock went with its owner: now this driver runs the member
    assert started == [busy]


def test_sweep_start_takes_training_walkers_nearest_in_lambda():
    """--sweep-start trained: walkers from the training blocks in order of λ distance, the nearest block's step size."""
    import moire_transition as mt
    from hamiltonians.moire import MoireSystem
    from qvmc.state import TrainState
    from samplers import ChainState
    system = MoireSystem()
    lams = (0.6, 1.0, 1.4)
    chains = [ChainState(np.full((4, 6, 2), lam), np.asarray(lam / 10)) for lam in lams]
    state = TrainState.create({}, None, chains, [system.context(6, 0, lam=lam) for lam in lams])
    chain = mt.training_chain(state, 1.3, 6)
    assert chain.walkers.shape == (6, 6, 2) and float(chain.step_size) == pytest.approx(0.14)
    assert [float(w[0, 0]) for w in chain.walkers] == [1.4] * 4 + [1.0] * 2
    assert mt.training_chain(state, 0.0, 100).walkers.shape == (12, 6, 2)  # all there are
    assert mt.parse_args(['--lam', '1', '--sweep-start', 'trained']).sweep_start == 'trained'
