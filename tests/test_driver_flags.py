"""The example drivers reject every bad flag in ``parse_args`` (exit status 2, flag and token on stderr),
before JAX compiles anything; the defaults and the smoke-test flags parse cleanly."""

import argparse
import os
import sys

import jax
import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples'))

import cli  # noqa: E402
import moire_transition  # noqa: E402
import quantum_dot_foundation  # noqa: E402

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *args, **kwargs: COMPILES.append(event) if 'backend_compile' in event else None)


@pytest.fixture(autouse=True)
def no_jax_compilation():
    before = len(COMPILES)
    yield
    assert len(COMPILES) == before, 'parsing the flags compiled JAX code'


# (argv, flag, bad token): stderr must name both.
DOT_BAD = [
    (['--optimizer', 'lbfgs'], '--optimizer', "'lbfgs'"),
    (['--sampler', 'gibbs'], '--sampler', "'gibbs'"),
    (['--optimizer', 'minsr', '--diag-shift', '0'], '--diag-shift', "'0'"),
    (['--optimizer', 'minsr', '--diag-shift', 'nan'], '--diag-shift', "'nan'"),
    (['--optimizer', 'minsr', '--max-norm', '-1'], '--max-norm', "'-1'"),
    (['--optimizer', 'spring', '--momentum', '1'], '--momentum', "'1.0'"),
    (['--optimizer', 'spring', '--momentum', '-0.1'], '--momentum', "'-0.1'"),
    (['--optimizer', 'sr', '--kernel-precision', 'float32'], '--kernel-precision', "'float32'"),  # no kernel in sr
    (['--optimizer', 'minsr', '--kernel-precision', 'float16'], '--kernel-precision', "'float16'"),
    (['--substeps', '0'], '--substeps', "'0'"),
    (['--lr', 'nan'], '--lr', "'nan'"),
    (['--energy-batch-size', '0'], '--energy-batch-size', "'0'"),
    (['--lr', '-1'], '--lr', "'-1'"),
    (['--lr', '0'], '--lr', "'0'"),
    (['--lr', 'inf'], '--lr', "'inf'"),
    (['--steps', '0'], '--steps', "'0'"),
    (['--steps', '1'], '--steps', "'1'"),
    (['--steps', '-5'], '--steps', "'-5'"),
    (['--steps', '2.5'], '--steps', "'2.5'"),
    (['--walkers', '0'], '--walkers', "'0'"),
    (['--walkers', '-16'], '--walkers', "'-16'"),
    (['--width', '0'], '--width', "'0'"),
    (['--width', '-8'], '--width', "'-8'"),
    (['--width', '6'], '--width', "'6'"),
    (['--layers', '0'], '--layers', "'0'"),
    (['--layers', '-1'], '--layers', "'-1'"),
    (['--determinants', '0'], '--determinants', "'0'"),
    (['--eval-walkers', '0'], '--eval-walkers', "'0'"),
    (['--eval-steps', '0'], '--eval-steps', "'0'"),
    (['--sweep-steps', '0'], '--sweep-steps', "'0'"),
    (['--block-length', '0'], '--block-length', "'0'"),
    (['--num-lam', '0'], '--num-lam', "'0'"),
    (['--checkpoint-every', '0'], '--checkpoint-every', "'0'"),
    (['--keep-checkpoints', '0'], '--keep-checkpoints', "'0'"),
    (['--seed', 'x'], '--seed', "'x'"),
    (['--schedule', 'blockwise', '--seed', '-1'], '--seed', "'-1'"),
    (['--train', '2:x'], '--train', "'x'"),
    (['--train', 'x:1'], '--train', "'x'"),
    (['--train', '6'], '--train', "'6'"),
    (['--train', '6:'], '--train', "'6:'"),
    (['--train', '0:1'], '--train', "'0'"),
    (['--train', '2:-1'], '--train', "'-1'"),
    (['--train', '2:inf'], '--train', "'inf'"),
    (['--train', '2:1,,3'], '--train', "''"),
    (['--train', '2:0', '31:0'], '--train', "'31:0'"),
    (['--max-electrons', '0'], '--max-electrons', "'0'"),
    (['--max-electrons', 'x'], '--max-electrons', "'x'"),
    (['--max-electrons', '20', '--train', '2:0', '30:1'], '--train', "'30:1'"),
    (['--max-electrons', '56', '--predict', '58:1'], '--predict', "'58:1'"),
    (['--predict', '2:nan'], '--predict', "'nan'"),
    (['--train', '6:1@0'], '--train', "'0'"),  # ω > 0
    (['--train', '6:1@-0.5'], '--train', "'-0.5'"),
    (['--train', '6:1@nan'], '--train', "'nan'"),
    (['--train', '6:1@'], '--train', "''"),
    (['--predict', '6:1@1,x'], '--predict', "'x'"),
    (['--train', '6:1,1'], '--train', 'more than once'),
    (['--train', '6:1@0.5', '6:1@0.5,1'], '--train', 'ω = 0.5'),
    (['--predict', '2:1,y'], '--predict', "'y'"),
    (['--predict=-2:1'], '--predict', "'-2'"),  # '=': argparse reads a bare -2:1 as an option
    (['--sweep-lam', '0:10:x'], '--sweep-lam', "'x'"),
    (['--sweep-lam', '0:10:0'], '--sweep-lam', "'0'"),
    (['--sweep-lam', '0:nan:3'], '--sweep-lam', "'nan'"),
    (['--sweep-lam=-1:5:3'], '--sweep-lam', "'-1'"),
    (['--sweep-lam', '0:10'], '--sweep-lam', "'0:10'"),
    (['--sweep-lam', '1,x'], '--sweep-lam', "'x'"),
    (['--sweep-lam', '-2'], '--sweep-lam', "'-2'"),
    (['--sweep-lam=-1-5'], '--sweep-lam', "'-1-5'"),
    (['--sweep-lam', '0.5-2'], '--sweep-lam', "'0.5'"),
    (['--sweep-n', '5-x'], '--sweep-n', "'x'"),
    (['--sweep-n', '9-5'], '--sweep-n', "'9-5'"),
    (['--sweep-n', '0-3'], '--sweep-n', "'0'"),
    (['--sweep-n', '2,x'], '--sweep-n', "'x'"),
    (['--sweep-n', '1-2-3'], '--sweep-n', "'1-2-3'"),
    (['--pad-n', '0'], '--pad-n', "'0'"),
    (['--pad-n', '5'], '--pad-n', "'5'"),  # below the default --train / --predict N = 6
    (['--pad-n', '8', '--sweep-lam', '0:1:2', '--sweep-n', '5-9'], '--pad-n', "'8'"),  # below the swept N = 9
    (['--pad-n', '31'], '--pad-n', "'31'"),
    (['--pad-training'], '--pad-training', 'needs --pad-n'),
    (['--sweep-n', '40'], '--sweep-n', '40'),
    (['--lam-range', 'nan', '1'], '--lam-range', "'nan'"),
    (['--lam-range', '5', '5'], '--lam-range', "'5 5'"),
    (['--lam-range', '5', '1'], '--lam-range', "'5 1'"),
    (['--lam-range', '-1', '2'], '--lam-range', '-1'),
    (['--init-from', '/nonexistent/run'], '--init-from', "'/nonexistent/run'"),
]

MOIRE_BAD = [
    (['--lr', 'nan'], '--lr', "'nan'"),
    (['--lr', '-1'], '--lr', "'-1'"),
    (['--lr', '0'], '--lr', "'0'"),
    (['--steps', '0'], '--steps', "'0'"),
    (['--steps', '1'], '--steps', "'1'"),
    (['--epsilon', '0'], '--epsilon', "'0'"),
    (['--epsilon', '-5'], '--epsilon', "'-5'"),
    (['--epsilon', 'nan'], '--epsilon', "'nan'"),
    (['--epsilon', 'inf'], '--epsilon', "'inf'"),
    (['--electrons', '0'], '--electrons', "'0'"),
    (['--electrons', '-6'], '--electrons', "'-6'"),
    (['--electrons', '7'], '--electrons', "'7'"),
    (['--electrons', '300'], '--electrons', "'300'"),
    (['--hidden', '0'], '--hidden', "'0'"),
    (['--hidden', '-16'], '--hidden', "'-16'"),
    (['--ansatz', 'qernel', '--hidden', '3'], '--hidden', "'3'"),
    (['--layers', '0'], '--layers', "'0'"),
    (['--determinants', '0'], '--determinants', "'0'"),
    (['--walkers', '0'], '--walkers', "'0'"),
    (['--walkers', '100'], '--walkers', "'100'"),  # 0:4 divides, 200:8 does not
    (['--walkers', '130'], '--walkers', "'130'"),
    (['--stages', '0:3', '--walkers', '128'], '--walkers', "'128'"),
    (['--substeps', '0'], '--substeps', "'0'"),
    (['--checkpoint-every', '0'], '--checkpoint-every', "'0'"),
    (['--block-length', '0'], '--block-length', "'0'"),
    (['--eval-walkers', '0'], '--eval-walkers', "'0'"),
    (['--eval-steps', '0'], '--eval-steps', "'0'"),
    (['--seed', '-1'], '--seed', "'-1'"),
    (['--lam-range', 'nan', '1'], '--lam-range', "'nan'"),
    (['--lam-range', '1', 'inf'], '--lam-range', "'inf'"),
    (['--lam-range', '1', '1'], '--lam-range', "'1 1'"),
    (['--lam-range', '2', '1'], '--lam-range', "'2 1'"),
    (['--lam-range', '-0.5', '1'], '--lam-range', '-0.5'),
    (['--stages', ''], '--stages', "''"),
    (['--stages', '0:4,x'], '--stages', "'x'"),
    (['--stages', '0:4,200'], '--stages', "'200'"),
    (['--stages', '0:4;200:8'], '--stages', "'0:4;200:8'"),
    (['--stages', '5:4'], '--stages', "'5:4'"),
    (['--stages', '0:0'], '--stages', "'0'"),
    (['--stages', '0:4,0:8'], '--stages', "'0:8'"),
    (['--stages', '0:4,-1:8'], '--stages', "'-1'"),
    (['--burn-in', '3', '8', '16'], '--burn-in', 'CHUNK 3'),
    (['--burn-in', '4', '9', '8'], '--burn-in', 'MIN 9'),
    (['--burn-in', '10', '0', '15'], '--burn-in', 'MAX 15'),
    (['--burn-in', '-1', '8', '16'], '--burn-in', "'-1'"),
    (['--sweep-points', '0'], '--sweep-points', "'0'"),
    (['--sweep-points', '4'], '--sweep-points', "'4'"),
    (['--sweep-range', 'nan', '1'], '--sweep-range', "'nan'"),
    (['--sweep-range', '1', '1'], '--sweep-range', "'1 1'"),
    (['--sweep-range', '2', '1'], '--sweep-range', "'2 1'"),
    (['--sweep-range', '-1', '1'], '--sweep-range', '-1'),
    # optimizers
    (['--optimizer', 'bfgs'], '--optimizer', "'bfgs'"),
    (['--optimizer', 'minsr', '--diag-shift', '0'], '--diag-shift', "'0'"),
    (['--optimizer', 'minsr', '--diag-shift', 'nan'], '--diag-shift', "'nan'"),
    (['--optimizer', 'sr', '--diag-shift=-1e-3'], '--diag-shift', "'-1e-3'"),  # '=': -1e-3 reads as an option
    (['--diag-shift', '1e-3'], '--diag-shift', "'0.001'"),  # adam has no diagonal shift
    (['--optimizer', 'minsr', '--max-norm', '0'], '--max-norm', "'0'"),
    (['--optimizer', 'minsr', '--max-norm', 'inf'], '--max-norm', "'inf'"),
    (['--max-norm', '0.01'], '--max-norm', "'0.01'"),
    (['--optimizer', 'spring', '--momentum', '1'], '--momentum', "'1'"),
    (['--optimizer', 'spring', '--momentum=-0.1'], '--momentum', "'-0.1'"),
    (['--optimizer', 'spring', '--momentum', 'nan'], '--momentum', "'nan'"),
    (['--optimizer', 'minsr', '--momentum', '0.5'], '--momentum', "'0.5'"),
    (['--kernel-precision', 'float32'], '--kernel-precision', "'float32'"),  # adam
    (['--optimizer', 'sr', '--lr', '0'], '--lr', "'0'"),
    # single-λ mode
    (['--lam', '-1'], '--lam', "'-1'"),
    (['--lam', 'nan'], '--lam', "'nan'"),
    (['--lam', 'x'], '--lam', "'x'"),
    (['--lam', '1', '--lam-range', '0', '2'], '--lam-range', "'0 2'"),
    (['--lam', '1', '--stages', '0:2'], '--stages', "'0:2'"),
    (['--lam', '1', '--electrons', '7'], '--electrons', "'7'"),
    # network
    (['--ansatz', 'ferminet'], '--ansatz', "'ferminet'"),
    (['--width', '0'], '--width', "'0'"),
    (['--ansatz', 'qernel', '--heads', '0'], '--heads', "'0'"),
    (['--ansatz', 'qernel', '--heads', '3', '--hidden', '16'], '--hidden', "'16'"),
    (['--ansatz', 'qernel', '--heads', '4', '--kv-heads', '3'], '--kv-heads', "'3'"),
    (['--ansatz', 'qernel', '--kv-heads', '0'], '--kv-heads', "'0'"),
    (['--heads', '2'], '--heads', "'2'"),  # slater_jastrow has no attention
    (['--ansatz', 'psiformer', '--kv-heads', '1'], '--kv-heads', "'1'"),
    (['--ansatz', 'psiformer', '--experts', '4'], '--experts', "'4'"),
    (['--ansatz', 'qernel', '--experts', '0'], '--experts', "'0'"),
    (['--ansatz', 'qernel', '--shared-experts', '-1'], '--shared-experts', "'-1'"),
    (['--ansatz', 'qernel', '--expert-hidden', '0'], '--expert-hidden', "'0'"),
    (['--ansatz', 'qernel', '--pair-hidden', '0'], '--pair-hidden', "'0'"),
    (['--ansatz', 'qernel', '--mlp-hidden', '8'], '--mlp-hidden', "'8'"),
    (['--ansatz', 'psiformer', '--mlp-hidden', '0'], '--mlp-hidden', "'0'"),
    (['--ansatz', 'psiformer', '--hidden', '6', '--heads', '4'], '--hidden', "'6'"),
    (['--kvecs', '0'], '--kvecs', "'0'"),
    # sizes and measurement
    (['--chunk-size', '0'], '--chunk-size', "'0'"),
    (['--chunk-size', 'x'], '--chunk-size', "'x'"),
    (['--energy-batch-size', '-4'], '--energy-batch-size', "'-4'"),
    (['--energy-batch-size', '8.5'], '--energy-batch-size', "'8.5'"),
    (['--substeps', '-1'], '--substeps', "'-1'"),
    (['--walkers', '2.5'], '--walkers', "'2.5'"),
    (['--init-from', '/nonexistent/run'], '--init-from', "'/nonexistent/run'"),
]


def _ids(cases):
    return [' '.join(argv) or '<empty>' for argv, _, _ in cases]


def _rejects(driver, argv, flag, token, capsys):
    with pytest.raises(SystemExit) as exit_info:
        driver.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and token in err, err


@pytest.mark.parametrize('argv, flag, token', DOT_BAD, ids=_ids(DOT_BAD))
def test_quantum_dot_rejects(argv, flag, token, capsys):
    _rejects(quantum_dot_foundation, argv, flag, token, capsys)


@pytest.mark.parametrize('argv, flag, token', MOIRE_BAD, ids=_ids(MOIRE_BAD))
def test_moire_rejects(argv, flag, token, capsys):
    _rejects(moire_transition, argv, flag, token, capsys)


def test_sys_argv_is_the_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['quantum_dot_foundation.py', '--predict', '2:nan'])
    with pytest.raises(SystemExit) as exit_info:
        quantum_dot_foundation.parse_args()
    assert exit_info.value.code == 2
    assert "--predict: bad λ 'nan' in '2:nan' (λ must be a finite number ≥ 0)" in capsys.readouterr().err
    monkeypatch.setattr(sys, 'argv', ['moire_transition.py'])
    assert moire_transition.parse_args().electrons == 6


@pytest.mark.parametrize('driver', [quantum_dot_foundation, moire_transition])
def test_run_dir_must_not_be_a_file(driver, tmp_path, capsys):
    path = tmp_path / 'not_a_dir'
    path.write_text('')
    with pytest.raises(SystemExit) as exit_info:
        driver.parse_args(['--run-dir', str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert '--run-dir' in err and repr(str(path)) in err
    assert driver.parse_args(['--run-dir', str(tmp_path)]).run_dir == str(tmp_path)


def test_defaults_parse_cleanly(capsys):
    dot = quantum_dot_foundation.parse_args([])
    assert (dot.steps, dot.walkers, dot.lr, dot.width, dot.seed) == (600, 256, 3e-3, 32, 0)
    assert dot.train == ['2:0,2,8', '6:0,2'] and dot.lam_range == (0.0, 10.0) and dot.sweep_lam is None
    moire = moire_transition.parse_args([])
    assert (moire.electrons, moire.epsilon, moire.walkers, moire.stages) == (6, 5.0, 128, '0:4,200:8')
    assert moire.burn_in == (10, 20, 300) and moire.sweep_range is None and moire.sweep_points == 11
    assert capsys.readouterr().err == ''


def test_valid_flags_parse_cleanly():
    """The smoke-test flags of tests/test_examples.py and other valid combinations."""
    dot = quantum_dot_foundation.parse_args(
        ['--steps', '4', '--walkers', '16', '--width', '8', '--layers', '1', '--determinants', '2',
         '--eval-walkers', '16', '--eval-steps', '5'])
    assert dot.steps == 4 and dot.width == 8
    dot = quantum_dot_foundation.parse_args(
        ['--schedule', 'blockwise', '--lam-range', '0', '8', '--spin', 'polarized', '--train', '3:0', '5:1',
         '--predict', '4:0.5,2', '--sweep-lam', '0:10:11', '--sweep-n', '5-11', '--seed', '7'])
    assert dot.lam_range == [0.0, 8.0] and dot.sweep_n == '5-11'
    assert quantum_dot_foundation.parse_args(['--sweep-lam', '0,2.5,5', '--sweep-n', '2,6']).sweep_lam == '0,2.5,5'
    dot = quantum_dot_foundation.parse_args(['--train', '2:0,2@1,0.28', '6:1@0.5', '--predict', '6:1@0.28',
                                             '--schedule', 'blockwise'])  # blockwise: one base per (N, ω)
    assert dot.train == ['2:0,2@1,0.28', '6:1@0.5']
    dot = quantum_dot_foundation.parse_args(['--max-electrons', '56', '--train', '30:1', '--predict', '42:0,1'])
    assert dot.max_electrons == 56
    moire = moire_transition.parse_args(
        ['--steps', '4', '--block-length', '2', '--stages', '0:2', '--walkers', '16', '--hidden', '8',
         '--substeps', '3', '--sweep-points', '5', '--eval-walkers', '16', '--eval-steps', '8',
         '--burn-in', '4', '8', '16'])
    assert moire.burn_in == [4, 8, 16] and moire.stages == '0:2'
    moire = moire_transition.parse_args(['--ansatz', 'qernel', '--hidden', '8', '--electrons', '8',
                                         '--stages', '0:4,100:16', '--walkers', '64', '--sweep-range', '0', '2'])
    assert moire.sweep_range == [0.0, 2.0]


def test_moire_optimizer_precision_and_single_lambda():
    """Natural gradients get their defaults and x64 with a float32 network; --lam trains one context."""
    adam = moire_transition.parse_args([])
    assert (adam.optimizer, adam.lr, adam.diag_shift, adam.max_norm, adam.momentum) == ('adam', 3e-3, None, None, None)
    assert moire_transition.precision_policy(adam) == (False, None)
    assert moire_transition.precision_policy(moire_transition.parse_args(['--x64'])) == (True, 'float64')
    minsr = moire_transition.parse_args(['--lam', '1.0', '--optimizer', 'minsr', '--max-norm', '0.02'])
    assert (minsr.lr, minsr.diag_shift, minsr.max_norm, minsr.momentum) == (0.05, 1e-3, 0.02, None)
    assert minsr.lam == 1.0 and minsr.lam_range is None and minsr.stages is None
    assert moire_transition.precision_policy(minsr) == (True, 'float32')
    assert moire_transition.sweep_grid(minsr) == [1.0]
    spring = moire_transition.parse_args(['--optimizer', 'spring', '--lr', '0.1', '--momentum', '0'])
    assert (spring.lr, spring.momentum, spring.lam_range) == (0.1, 0.0, (0.6, 1.6))
    assert moire_transition.parse_args(['--optimizer', 'spring']).momentum == 0.9
    assert moire_transition.parse_args(['--optimizer', 'sr', '--diag-shift', '1e-4']).diag_shift == 1e-4
    single = moire_transition.parse_args(['--lam', '0', '--walkers', '7', '--sweep-range', '0.5', '1.5',
                                          '--sweep-points', '6'])  # no stages: any walker count
    assert moire_transition.sweep_grid(single) == pytest.approx([0.5, 0.7, 0.9, 1.1, 1.3, 1.5])


def test_moire_network_flags_build_the_full_configs():
    from ansatz.psiformer import PsiFormerConfig
    from ansatz.qernel import QernelConfig
    args = moire_transition.parse_args(['--ansatz', 'qernel', '--width', '64', '--layers', '3', '--heads', '4',
                                        '--kv-heads', '2', '--experts', '4', '--expert-hidden', '32',
                                        '--determinants', '4', '--chunk-size', '64', '--walkers', '1024',
                                        '--substeps', '30'])
    assert moire_transition.network_config(args) == QernelConfig()  # the QERNEL defaults, ~108K parameters
    assert moire_transition.network_config(args, 54).max_orbitals == 54
    assert (args.chunk_size, args.walkers, args.substeps) == (64, 1024, 30)
    small = moire_transition.parse_args(['--ansatz', 'qernel', '--hidden', '8'])
    assert moire_transition.network_config(small) == QernelConfig(width=8, num_layers=1, num_heads=2,
                                                                  num_kv_heads=1, expert_hidden=8,
                                                                  num_determinants=1)
    psi = moire_transition.parse_args(['--ansatz', 'psiformer', '--width', '32', '--heads', '4', '--mlp-hidden', '48'])
    assert moire_transition.network_config(psi) == PsiFormerConfig(width=32, num_layers=1, num_heads=4, mlp_hidden=48,
                                                                   num_determinants=1)
    sj = moire_transition.parse_args([])
    assert sj.heads is None and sj.experts is None  # qernel-only flags stay unset for slater_jastrow


def test_moire_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        moire_transition.parse_args(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ('--optimizer', '--lr', '--diag-shift', '--max-norm', '--momentum', '--kernel-precision', '--lam',
                 '--lam-range',
                 '--ansatz', '--width', '--layers', '--heads', '--kv-heads', '--experts', '--shared-experts',
                 '--expert-hidden', '--pair-hidden', '--mlp-hidden', '--kvecs', '--determinants', '--substeps',
                 '--walkers', '--chunk-size', '--x64', 'psiformer', 'minsr', 'spring'):
        assert flag in out, flag


def test_parsers_keep_their_results():
    assert quantum_dot_foundation.parse_points(['2:0,2,8', '6:1']) == [(2, 0.0), (2, 2.0), (2, 8.0), (6, 1.0)]
    assert quantum_dot_foundation.parse_points(['6:1,2@1,0.5', '2:0'], with_omega=True) == [
        (6, 1.0, 1.0), (6, 1.0, 0.5), (6, 2.0, 1.0), (6, 2.0, 0.5), (2, 0.0, 1.0)]
    with pytest.raises(argparse.ArgumentTypeError, match='no @ω here'):
        quantum_dot_foundation.parse_points(['6:1@0.5'], '--lam-points')
    assert quantum_dot_foundation.parse_range('0:10:11') == [float(v) for v in range(11)]
    assert quantum_dot_foundation.parse_range('5-11', int) == list(range(5, 12))
    assert quantum_dot_foundation.parse_range('3,5', int) == [3, 5]
    assert quantum_dot_foundation.spins_of(5, 'unpolarized') == (3, 2)
    assert quantum_dot_foundation.spins_of(5, 'polarized') == (5, 0)
    assert moire_transition.parse_stages('0:4,2000:16') == [(0, 4), (2000, 16)]


def test_type_helpers():
    assert cli.positive_int('3') == 3 and cli.nonnegative_int('0') == 0
    assert cli.positive_float('1e-3') == 1e-3 and cli.finite_float('-2') == -2.0
    assert cli.nonnegative_float('0') == 0.0 and cli.probability('0.5') == 0.5
    for helper, token in ((cli.positive_int, '0'), (cli.positive_int, '1.5'), (cli.nonnegative_int, '-1'),
                          (cli.positive_float, 'nan'), (cli.positive_float, '0'), (cli.finite_float, 'inf'),
                          (cli.finite_float, 'x'), (cli.nonnegative_float, '-0.1'), (cli.probability, '0'),
                          (cli.probability, '1'), (cli.probability, 'nan')):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(token)):
            helper(token)


def test_count_rejected_inputs():
    total = len(DOT_BAD) + len(MOIRE_BAD)
    print(f'rejected inputs covered: {len(DOT_BAD)} quantum dot + {len(MOIRE_BAD)} moiré = {total}')
    assert len(DOT_BAD) >= 50 and len(MOIRE_BAD) >= 50


def test_quantum_dot_learning_rate_default_follows_the_optimizer():
    assert quantum_dot_foundation.parse_args([]).lr == 3e-3
    assert quantum_dot_foundation.parse_args(['--optimizer', 'minsr']).lr == 0.05
    assert quantum_dot_foundation.parse_args(['--optimizer', 'spring', '--lr', '0.02']).lr == 0.02


@pytest.mark.parametrize('driver', [quantum_dot_foundation, moire_transition])
def test_kernel_precision_reaches_the_sample_space_optimizers(driver, monkeypatch):
    from qvmc import natgrad
    seen = {}
    for name in ('minsr', 'spring'):
        monkeypatch.setattr(natgrad, name, lambda *a, _name=name, **kw: seen.update({_name: kw['kernel_precision']}))
        cli.make_optimizer(driver.parse_args(['--optimizer', name, '--kernel-precision', 'float32']))
    cli.make_optimizer(driver.parse_args(['--optimizer', 'minsr']))
    assert seen == {'minsr': 'float64', 'spring': 'float32'}


def test_driver_kernel_precisions_are_the_library_ones():
    from qvmc import score_kernel
    assert cli.KERNEL_PRECISIONS == score_kernel.KERNEL_PRECISIONS


def _sweep_dir(root, name, lams, energies, err=0.02):
    os.makedirs(os.path.join(root, name, 'sweep'))
    pd.DataFrame({'lam': lams, 'energy_per_electron': energies, 'energy_per_electron_err': err,
                  'interaction_per_electron': energies, 'interaction_per_electron_err': err}).to_csv(
        os.path.join(root, name, 'sweep', 'energies.csv'), index=False)
    return os.path.join(root, name)


def test_compare_references_driver(tmp_path, capsys):
    import compare_references
    cond = _sweep_dir(tmp_path, 'cond', [0.6, 0.8, 1.0], [-50.0, -54.0, -58.0])
    refs = [_sweep_dir(tmp_path, f'ref{lam}', [lam], [e]) for lam, e in ((0.6, -50.05), (1.0, -58.3))]
    table = compare_references.main(['--conditional', cond, '--references', *refs])
    assert table['agrees'].tolist() == [True, False]
    np.testing.assert_allclose(table['energy_per_electron_difference'], [0.05, 0.3], atol=1e-12)
    assert 'at 1 of 2 reference points (λ = 1 fail)' in capsys.readouterr().out
    assert os.path.isfile(os.path.join(cond, 'sweep', 'reference_comparison.csv'))
    bad = [(['--conditional', str(tmp_path / 'none'), '--references', *refs], '--conditional', 'none'),
           (['--conditional', cond, '--references', _sweep_dir(tmp_path, 'off', [0.7], [-52.0])], '--references',
            '0.7'),
           (['--conditional', cond, '--references', *refs, '--columns', 'moire'], '--columns', 'moire'),
           (['--conditional', cond, '--references', *refs, '--tolerance', '0'], '--tolerance', "'0'")]
    for argv, flag, token in bad:
        _rejects(compare_references, argv, flag, token, capsys)


def _sweep_part(root, name, lams, checkpoint=b'sha256 aaaa\n'):
    """A run directory with a sweep over ``lams``: a jump of the interaction energy (and of Φ) at λ = 0.85."""
    lams = np.asarray(lams)
    inter = np.where(lams < 0.85, -10.0 - lams, -11.0 - lams)
    order = np.where(lams < 0.85, 0.3, 0.9)
    run = _sweep_dir(root, name, lams, -50.0 - 10 * lams)
    table = pd.read_csv(os.path.join(run, 'sweep', 'energies.csv'))
    table = table.assign(N=6, n_up=6, n_down=0, interaction_per_electron=inter, honeycomb_order=order,
                         honeycomb_order_err=0.01)
    table.to_csv(os.path.join(run, 'sweep', 'energies.csv'), index=False)
    grid = np.linspace(0.0, 1.0, 3)
    density = pd.DataFrame([{'context': f'lam={lam:g}', 'N': 6, 'lam': lam, 'x': x, 'y': y, 'density': 1.0}
                            for lam in lams for x in grid for y in grid])
    density.to_csv(os.path.join(run, 'sweep', 'density.csv'), index=False)
    with open(os.path.join(run, 'checkpoint.qvmc'), 'wb') as f:
        f.write(b'QVMC-CKPT 3\n' + checkpoint)
    return run


def test_merge_sweeps_driver(tmp_path, capsys):
    import merge_sweeps
    low = _sweep_part(tmp_path, 'low', [0.6, 0.7, 0.8])
    high = _sweep_part(tmp_path, 'high', [1.1, 0.9, 1.0])
    merge_sweeps.main(['--parts', low, high, '--out', str(tmp_path / 'merged')])
    out = tmp_path / 'merged' / 'sweep'
    table = pd.read_csv(out / 'energies.csv')
    np.testing.assert_allclose(table['lam'], [0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    assert len(pd.read_csv(out / 'density.csv')) == 6 * 9
    fit = pd.read_csv(out / 'transition.csv').set_index('observable')
    assert 0.8 <= fit.loc['interaction_per_electron', 'position'] <= 0.9
    np.testing.assert_allclose(fit.loc['interaction_per_electron', 'jump'], -1.0, atol=0.05)
    for name in ('order_parameters.csv', 'energies.png', 'order_parameters.png', 'densities.png', 'transition.png'):
        assert (out / name).is_file(), name
    assert 'merged 2 parts (6 points)' in capsys.readouterr().out
    other = _sweep_part(tmp_path, 'other', [1.2, 1.3], checkpoint=b'sha256 bbbb\n')
    bad = [(['--parts', low, _sweep_part(tmp_path, 'again', [0.8, 0.95]), '--out', str(tmp_path / 'm2')], '--parts',
            '0.8'),
           (['--parts', low, other, '--out', str(tmp_path / 'm3')], '--parts', 'different trained models'),
           (['--parts', low, high, '--out', low], '--out', 'one of the parts'),
           (['--parts', low, str(tmp_path / 'none'), '--out', str(tmp_path / 'm4')], '--parts', 'none')]
    for argv, flag, token in bad:
        _rejects(merge_sweeps, argv, flag, token, capsys)
