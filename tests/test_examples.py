"""Smoke run of the main driver with tiny sizes: it trains, predicts and writes every output file."""

import os
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quantum_dot_foundation_driver(tmp_path):
    run_dir = tmp_path / 'run'
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'quantum_dot_foundation.py'), '--run-dir', str(run_dir),
           '--steps', '4', '--walkers', '16', '--width', '8', '--layers', '1', '--determinants', '2',
           '--eval-walkers', '16', '--eval-steps', '5']
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('history.csv', 'energies.csv', 'checkpoint.pkl', 'training.png', 'energy_vs_lambda.png',
                 'densities.png'):
        assert (run_dir / name).exists(), name
    table = pd.read_csv(run_dir / 'energies.csv')
    assert len(table) == 11 and table['energy'].notna().all()
    assert set(table['split']) == {'train', 'held-out'}
    assert 'reference' in result.stdout
