"""Smoke run of the main driver with tiny sizes: it trains, predicts and writes every output file."""

import os
import subprocess
import sys

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quantum_dot_foundation_driver(tmp_path):
    run_dir = tmp_path / 'run'
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # compile-bound at these sizes
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'quantum_dot_foundation.py'), '--run-dir', str(run_dir),
           '--steps', '4', '--walkers', '16', '--width', '8', '--layers', '1', '--determinants', '2',
           '--eval-walkers', '16', '--eval-steps', '5',
           '--train', '2:0,2', '--predict', '2:1', '3:0',  # one training content, one unseen content: few compiles
           '--pad-n', '3', '--pad-training']  # trained and measured in one padded (2, 1) layout
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('history.csv', 'energies.csv', 'checkpoint.qvmc', 'training.png', 'energy_vs_lambda.png',
                 'densities.png'):
        assert (run_dir / name).exists(), name
    table = pd.read_csv(run_dir / 'energies.csv')
    assert len(table) == 4 and table['energy'].notna().all()
    assert set(table['split']) == {'train', 'held-out'}
    assert 'reference' in result.stdout
    unseen = table[(table['N'] == 3) & (table['lam'] == 0)].iloc[0]  # (2, 1) at λ = 0: exact 1 + 2 + 1
    assert unseen['reference'] == 4.0 and unseen['energy'] == pytest.approx(4.0, abs=0.5)


def test_moire_transition_driver(tmp_path):
    """Blockwise training over λ, a λ sweep and the transition fit, at the smallest sizes."""
    run_dir = tmp_path / 'moire'
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # compile-bound at these sizes
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'moire_transition.py'), '--run-dir', str(run_dir),
           '--steps', '4', '--block-length', '2', '--stages', '0:2', '--walkers', '16', '--hidden', '8',
           '--substeps', '3', '--sweep-points', '5', '--eval-walkers', '16', '--eval-steps', '8',
           '--burn-in', '4', '8', '16']
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('history.csv', 'burn_in.csv', 'checkpoint.qvmc', 'training.png'):
        assert (run_dir / name).exists(), name
    sweep = run_dir / 'sweep'
    for name in ('energies.csv', 'density.csv', 'pair_correlation.csv', 'wavefunction_slice.csv', 'traces.nc',
                 'transition.csv', 'transition.png', 'densities.png', 'pair_correlation.png',
                 'wavefunction_slices.png'):
        assert (sweep / name).exists(), name
    energies = pd.read_csv(sweep / 'energies.csv')
    assert len(energies) == 5 and energies['interaction_per_electron'].notna().all()
    assert set(pd.read_csv(run_dir / 'burn_in.csv')['step']) == {2}  # the one block boundary after the start
    transition = pd.read_csv(sweep / 'transition.csv')
    assert transition['epsilon'].iloc[0] == 5.0 and 0.6 <= transition['position'].iloc[0] <= 1.6
    assert transition['observable'].iloc[0] == 'interaction_per_electron'
    assert 'jump in interaction energy per electron' in result.stdout
    # order parameters: N = 6 (3×3 cell) fits the √3×√3 sublattices; values and error bars per λ
    for name in ('order_parameters.csv', 'order_traces.npz', 'order_parameters.png', 'sublattice_density.png'):
        assert (sweep / name).exists(), name
    order = pd.read_csv(sweep / 'order_parameters.csv')
    assert len(order) == 5
    for name in ('honeycomb_order', 'honeycomb_contrast', 'structure_factor_k'):
        assert order[name].between(0.0, 6.0).all() and (order[f'{name}_err'] >= 0).all(), name
    occupations = order[[f'occupations_sorted_{i}' for i in range(3)]].to_numpy()
    assert (occupations.sum(axis=1) == pytest.approx(2.0)) and (occupations[:, 0] >= occupations[:, 2]).all()
    assert {'honeycomb_order', 'honeycomb_order_err', 'observable_steps'} <= set(energies.columns)


@pytest.mark.slow  # ~80 s on 2 busy cores (compile-bound)
def test_moire_single_lambda_natural_gradient(tmp_path):
    """--lam: one context, minSR (x64 on, float32 network), QERNEL; the sweep is that λ alone (no fit)."""
    run_dir = tmp_path / 'single'
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'moire_transition.py'), '--run-dir', str(run_dir),
           '--lam', '1.2', '--optimizer', 'minsr', '--ansatz', 'qernel', '--width', '8', '--heads', '2',
           '--kv-heads', '1', '--experts', '2', '--steps', '3', '--walkers', '8', '--chunk-size', '4',
           '--substeps', '2', '--eval-walkers', '8', '--eval-steps', '4',
           '--burn-in', '4', '4', '8']
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'minsr (lr 0.05), network float32, x64 on' in result.stdout
    history = pd.read_csv(run_dir / 'history.csv')
    assert set(history['context']) == {'N=6(6,0) lam=1.2'}
    # the natural gradient's facts per step: warm-up starts at 10 % of --lr; the cap factor is in (0, 1]
    assert history['learning_rate'].iloc[0] == pytest.approx(0.005, rel=1e-6)
    assert history['norm_scale'].between(0.0, 1.0, inclusive='right').all()
    assert (history['fisher_norm_sq'] >= 0).all() and (history['diag_shift'] == 1e-3).all()
    energies = pd.read_csv(run_dir / 'sweep' / 'energies.csv')
    assert list(energies['lam']) == [1.2] and energies['honeycomb_order'].notna().all()
    assert not energies['carried_over'].any()  # --sweep-start fresh, the default
    assert not (run_dir / 'sweep' / 'transition.csv').exists()
    # --init-from: a new run starts from these parameters; another network size is refused with the mismatches;
    # --sweep-start trained: the frozen measurement starts from the training's final walkers
    start = cmd.index('--run-dir')
    again = cmd[:start] + ['--run-dir', str(tmp_path / 'again'), '--init-from', str(run_dir)] + cmd[start + 2:]
    result = subprocess.run(again + ['--sweep-start', 'trained'], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'parameters from {run_dir}' in result.stdout
    energies = pd.read_csv(tmp_path / 'again' / 'sweep' / 'energies.csv')
    assert energies['carried_over'].all() and (energies['num_walkers'] == 8).all()
    wide = again[:again.index('--width') + 1] + ['16'] + again[again.index('--width') + 2:]
    wide[wide.index(str(tmp_path / 'again'))] = str(tmp_path / 'wide')
    result = subprocess.run(wide, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1 and 'does not fit this network' in result.stderr, result.stderr[-3000:]
