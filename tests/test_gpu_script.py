"""``benchmarks/gpu/run_gpu.py``: every bad flag is rejected before anything starts or compiles; the chunk
rule; a CPU smoke run of the timing part (and, marked slow, of timing plus the N = 6 training run)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu', 'run_gpu.py')
_spec = importlib.util.spec_from_file_location('run_gpu', SCRIPT)
run_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_gpu)

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *args, **kwargs: COMPILES.append(event) if 'backend_compile' in event else None)

BAD = [
    (['--sizes', '5'], '--sizes', '5'),  # odd N: N/ν is not an integer at ν = 2/3
    (['--sizes', '24,x'], '--sizes', "'x'"),
    (['--sizes', '0'], '--sizes', "'0'"),
    (['--sizes', '300'], '--sizes', '300'),
    (['--walkers', '0'], '--walkers', "'0'"),
    (['--chunk', '0'], '--chunk', "'0'"),
    (['--chunk', 'big'], '--chunk', "'big'"),
    (['--chunk', '512'], '--chunk', "'512'"),  # more than the 256 walkers
    (['--memory-fraction', '0'], '--memory-fraction', "'0'"),
    (['--memory-fraction', '2'], '--memory-fraction', "'2'"),
    (['--substeps', '0'], '--substeps', "'0'"),
    (['--timed-steps', '0'], '--timed-steps', "'0'"),
    (['--kv-heads', '3'], '--kv-heads', "'3'"),
    (['--width', '30'], '--width', "'30'"),
    (['--experts', '0'], '--experts', "'0'"),
    (['--train-steps', '1'], '--train-steps', "'1'"),
    (['--train-n', '7'], '--electrons', "'7'"),  # the driver's own parser names its flag
    (['--train-walkers', '6'], '--walkers', "'6'"),  # not divisible by the 4 λ per block
    (['--sweep-points', '4'], '--sweep-points', "'4'"),
    (['--train-lam-range', '1', '1'], '--train-lam-range', "'1 1'"),
    (['--train-lam-range', 'nan', '1'], '--train-lam-range', "'nan"),
    (['--budget-s', '0'], '--budget-s', "'0'"),
    (['--train-reserve-s', '600'], '--train-reserve-s', "'600'"),
    (['--no-train', '--no-timing'], '--no-timing', 'nothing left'),
    (['--cpu-smoke', '--sizes', '3'], '--sizes', '3'),
]


@pytest.fixture(autouse=True)
def no_jax_compilation():
    before = len(COMPILES)
    yield
    assert len(COMPILES) == before, 'parsing the flags compiled JAX code'


@pytest.mark.parametrize('argv, flag, token', BAD, ids=[' '.join(a) for a, _, _ in BAD])
def test_rejects_bad_flags(argv, flag, token, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_gpu.parse_args(argv + ['--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and token in err, err
    assert not (tmp_path / 'out').exists()


def test_out_must_not_be_a_file(tmp_path, capsys):
    path = tmp_path / 'file'
    path.write_text('')
    with pytest.raises(SystemExit):
        run_gpu.parse_args(['--out', str(path)])
    assert '--out' in capsys.readouterr().err


def test_presets_and_training_flags(tmp_path):
    gpu = run_gpu.parse_args(['--out', str(tmp_path)])
    assert gpu.size_list == [24, 54, 96, 150] and gpu.chunk == 'auto' and gpu.walkers == 256
    assert (gpu.width, gpu.layers, gpu.heads, gpu.kv_heads, gpu.experts, gpu.determinants) == (64, 3, 4, 2, 4, 4)
    argv = run_gpu.train_argv(gpu, chunk=128)
    assert argv[argv.index('--electrons') + 1] == '54' and argv[argv.index('--optimizer') + 1] == 'minsr'
    assert argv[argv.index('--chunk-size') + 1] == '128' and argv[argv.index('--stages') + 1] == '0:4'
    smoke = run_gpu.parse_args(['--cpu-smoke', '--walkers', '16', '--out', str(tmp_path)])
    assert smoke.size_list == [6] and smoke.walkers == 16 and smoke.chunk == 4 and smoke.train_n == 6
    assert run_gpu.parse_args(['--sizes', '6,24', '--chunk', '8', '--no-train', '--out', str(tmp_path)]).chunk == 8


def test_auto_chunk():
    h200 = 0.75 * 141e9  # JAX preallocates 75 % of the device
    assert [run_gpu.auto_chunk(n, 256, h200, 0.5) for n in (24, 54, 96, 150)] == [256, 128, 32, 16]
    assert run_gpu.auto_chunk(150, 256, 80e9, 0.5) == 8
    assert run_gpu.auto_chunk(150, 256, 1e9, 0.5) == 1  # never below one walker
    assert run_gpu.auto_chunk(6, 8, 1e12, 1.0) == 8  # never above the walkers


def _run(tmp_path, *extra):
    out = tmp_path / 'gpu'
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, SCRIPT, '--cpu-smoke', '--out', str(out), *extra], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / 'summary.json').read_text())


def test_cpu_smoke_timing(tmp_path):
    """The timing part at N = 6 with a tiny QERNEL: one row with step time, memory and the chunk."""
    out, summary = _run(tmp_path, '--no-train')
    row = pd.read_csv(out / 'timing.csv').iloc[0]
    assert row['status'] == 'ok' and row['N'] == 6 and row['chunk'] == 4 and row['backend'] == 'cpu'
    assert row['step_s'] > 0 and row['xla_step_bytes'] > 0 and row['max_rss_bytes'] > 0 and row['parameters'] > 0
    assert summary['training'] is None


@pytest.mark.slow  # ~2 min cold on 2 busy cores: the driver compiles its training step and sweep programs
def test_cpu_smoke_timing_and_training(tmp_path):
    out, summary = _run(tmp_path)
    training = summary['training']
    assert training['status'] == 'ok' and all(training['written'].values())
    sweep = out / 'train_n6' / 'sweep'
    energies = pd.read_csv(sweep / 'energies.csv')
    assert len(energies) == 5 and energies['interaction_per_electron'].notna().all()
    assert energies['honeycomb_order'].notna().all() and (energies['honeycomb_order_err'] >= 0).all()
    assert len(pd.read_csv(sweep / 'density.csv')) == 5 * 36 * 36
