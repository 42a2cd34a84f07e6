"""Shipped models: export/load round trip, refused files (checksum, shapes, version, name), the
prediction driver's flags, and (slow) the shipped model against its own card."""

import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pandas as pd
import pytest

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from hamiltonians.references import reference
from hamiltonians.system import make_psi
from qvmc import VMC, VMCConfig, checkpoint, model_file, pretrained, resume

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples'))

import evaluate_foundation  # noqa: E402
import model_card  # noqa: E402
from qvmc import predict  # noqa: E402

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *args, **kwargs: COMPILES.append(event) if 'backend_compile' in event else None)
RUN_CONFIG = {'width': 8, 'layers': 1, 'determinants': 2, 'spin': 'polarized', 'train': ['3:1,4'],
              'steps': 10, 'optimizer': 'adam', 'walkers': 8, 'seed': 0}


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A freshly initialised tiny Fermi Sets training checkpoint and its exported model in ``models/``."""
    tmp = tmp_path_factory.mktemp('pretrained')
    dot = QuantumDot()
    wavefunction = make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_determinants=2))
    contexts = [dot.context(3, 0, lam=1.0), dot.context(3, 0, lam=4.0)]
    vmc = VMC(wavefunction, dot, contexts, optax.adam(1e-3), VMCConfig(num_walkers=8))
    key = jax.random.PRNGKey(0)
    state = vmc.init(key)
    ckpt = str(tmp / 'run' / checkpoint.CHECKPOINT_NAME)
    os.makedirs(os.path.dirname(ckpt))
    resume.save_state(ckpt, state, key, resume.model_metadata(vmc, run_config=RUN_CONFIG))
    models = tmp / 'models'
    card = {'description': 'tiny test model', 'energy_table': [{'N': 3, 'lam': 1.0, 'reference': math.nan}]}
    meta = pretrained.export_model(str(tmp / 'run'), str(models / 'tiny.qvmc'), card)
    return {'dir': str(models), 'path': str(models / 'tiny.qvmc'), 'ckpt': ckpt, 'state': state,
            'wavefunction': wavefunction, 'dot': dot, 'meta': meta, 'tmp': tmp}


def _resave(source, out, **changes):
    """A copy of a model file with metadata entries changed (a valid checksum: as written by someone else)."""
    model = pretrained.load(source)
    checkpoint.save(out, {'params': model.params}, dict(model.metadata, **changes))
    return out


def test_round_trip_identical_params_and_wavefunction(exported):
    model = pretrained.load('tiny', exported['dir'])
    original = exported['state'].params
    assert jax.tree.structure(model.params) == jax.tree.structure(original)
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(original)):
        assert a.dtype == b.dtype and np.array_equal(a, np.asarray(b))
    ctx = model.context(3, 2.5)
    assert ctx.spins == (3, 0) and model.spin_sector == 'polarized'
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 2))
    psi_loaded = jax.vmap(make_psi(model.wavefunction, model.system, ctx.spins), (None, 0, None))
    psi_original = jax.vmap(make_psi(exported['wavefunction'], exported['dot'], ctx.spins), (None, 0, None))
    (s1, l1), (s2, l2) = psi_loaded(model.params, x, ctx.values), psi_original(original, x, ctx.values)
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    np.testing.assert_array_equal(np.asarray(l1), np.asarray(l2))
    # parameters only, and the facts needed to rebuild and describe the model
    payload = checkpoint.load_payload(exported['path'])
    assert all(k.startswith("['params']") for k in payload['leaves'])
    meta = payload['metadata']
    assert meta['ansatz'] == {'name': 'fermi_sets', 'config_class': 'FermiSetsConfig',
                              'config': {'width': 8, 'num_layers': 1, 'num_heads': 4, 'num_determinants': 2,
                                         'hidden': 32, 'cusp': True, 'open_shell_mixing': True,
                                         'open_shell_order': 'filling'}}
    assert meta['system'] == {'name': 'QuantumDot', 'params': {'max_electrons': 30, 'default_omega': 1.0, 'ndim': 2}}
    assert meta['training_set']['contexts'] == [{'n_up': 3, 'n_down': 0, 'lam': 1.0, 'omega': 1.0},
                                                {'n_up': 3, 'n_down': 0, 'lam': 4.0, 'omega': 1.0}]
    assert meta['model_format_version'] == model_file.MODEL_FORMAT_VERSION
    assert meta['card']['energy_table'][0]['reference'] is None  # NaN stored as null
    assert os.path.getsize(exported['path']) < os.path.getsize(exported['ckpt'])
    assert [c.label() for c in model.training_contexts] == ['N=3(3,0) lam=1 omega=1', 'N=3(3,0) lam=4 omega=1']
    assert pretrained.available(exported['dir']) == ['tiny']
    assert pretrained.load(exported['path']).name == 'tiny'  # by path too


def test_reexport_replaces_only_the_card(exported, tmp_path):
    out = str(tmp_path / 'tiny2.qvmc')
    pretrained.export_model(exported['path'], out, {'description': 'new card'})
    old, new = pretrained.load(exported['path']), pretrained.load(out)
    assert new.card == {'description': 'new card'} and new.name == 'tiny2'
    assert new.metadata['training'] == old.metadata['training']
    for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params)):
        assert np.array_equal(a, b)


def test_card_update_merges_rows_and_keeps_the_parameters(exported, tmp_path):
    path = str(tmp_path / 'tiny.qvmc')
    pretrained.export_model(exported['path'], path, {'energy_table': [
        {'N': 3, 'lam': 1.0, 'split': 'train', 'energy': 4.5, 'energy_err': 0.01, 'reference': None,
         'reference_err': None, 'deviation': None, 'z': None, 'below_exact': False},
        {'N': 5, 'lam': 0.0, 'split': 'unseen N', 'energy': 11.2, 'energy_err': 0.01, 'reference': 11.0,
         'reference_err': 0.0, 'deviation': 0.2, 'z': 20.0, 'below_exact': False}]}, name='tiny')
    md = tmp_path / 'tiny.md'
    md.write_text('# card\n\n' + model_card.TABLE_HEADER + '\n|---|\n| old |\n\n## after\n')
    new = [{'N': 5, 'lam': 0.0, 'split': 'unseen N', 'energy': 11.0001, 'energy_err': 0.0001, 'reference': 11.0,
            'reference_err': 0.0, 'deviation': 0.0001, 'z': 1.0, 'below_exact': False, 'equilibrated': True,
            'open_shell_order': 'high_m', 'other_orders': 'filling 11.0003(1)'},
           {'N': 4, 'lam': 2.0, 'split': 'unseen N', 'energy': 9.0, 'energy_err': 0.001, 'reference': None,
            'reference_err': None, 'deviation': None, 'z': None, 'below_exact': False, 'equilibrated': False}]
    assert model_card.update_card(path, new) == 3
    model = pretrained.load(path)
    rows = model.card['energy_table']
    assert [(r['N'], r['lam']) for r in rows] == [(3, 1.0), (4, 2.0), (5, 0.0)]
    assert rows[2]['energy'] == 11.0001 and rows[0]['energy'] == 4.5  # replaced / kept
    assert model.name == 'tiny' and model.metadata['training'] == pretrained.load(exported['path']).metadata['training']
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(exported['state'].params)):
        assert np.array_equal(a, b)
    text = md.read_text()
    assert '| old |' not in text and text.endswith('## after\n') and text.startswith('# card\n')
    assert '| 5 | 0 | unseen N | 11.0001(1) | 11 | +0.0001 | +1.0 | high_m (other: filling 11.0003(1)) |' in text
    assert '| 4 | 2 | unseen N | 9.000(1) |  |  |  | not equilibrated |' in text
    md.write_text('# a card without a table\n')
    with pytest.raises(ValueError, match='no energy table'):
        model_card.update_card(path, new)
    assert pretrained.load(path).card['energy_table'] == rows  # refused before anything was written


def test_card_rows_at_several_trap_frequencies(exported, tmp_path):
    path, md = str(tmp_path / 'tiny.qvmc'), tmp_path / 'tiny.md'
    row = dict(N=6, lam=1.0, split='train', energy=20.17, energy_err=0.001, reference=20.1597, reference_err=0.0002,
               deviation=0.0103, z=10.1, below_exact=False, equilibrated=True)
    pretrained.export_model(exported['path'], path, {'energy_table': [row]}, name='tiny')  # an old row: no ω
    md.write_text('# card\n\n' + model_card.TABLE_HEADER + '\n|---|\n| old |\n')
    new = [dict(row, omega=0.5, energy=11.79, reference=11.7848, reference_err=0.0001),
           dict(row, omega=1.0, energy=20.165)]
    assert model_card.update_card(path, new) == 2  # (6, 1, ω = 1) replaced, (6, 1, ω = 0.5) added
    rows = pretrained.load(path).card['energy_table']
    assert [(r['lam'], r.get('omega')) for r in rows] == [(1.0, 1.0), (1.0, 0.5)] and rows[0]['energy'] == 20.165
    text = md.read_text()
    assert model_card.TABLE_HEADER_OMEGA in text and model_card.TABLE_HEADER not in text
    assert '| 6 | 1 | 0.5 | train | 11.790(1) | 11.7848 (DMC) |' in text
    assert model_card.update_card(path, new[:1]) == 2  # the ω table is found again


def test_card_points_follow_the_spin_sector():
    polarized = evaluate_foundation.card_points('polarized')
    assert (7, 8.0, 1.0, 'published DMC') in polarized and all(p[2] == 1.0 for p in polarized)
    unpolarized = evaluate_foundation.card_points('unpolarized')
    assert (6, 1.0, 0.28, 'fixed-node DMC') in unpolarized and (2, 5.0, 1.0, 'two-electron exact') in unpolarized
    assert [p[0] for p in unpolarized] == sorted(p[0] for p in unpolarized)  # one compile per N
    assert len({p[:3] for p in unpolarized}) == len(unpolarized)
    for n, lam, omega, group in unpolarized:  # every point has a reference but the intermediate-ω ones
        known = reference(*pretrained.spins_for('unpolarized', n), lam, omega) is not None
        assert known == (group != 'intermediate ω'), (n, lam, omega, group)
    large = evaluate_foundation.card_points('unpolarized', max_electrons=42)
    assert set(large) - set(unpolarized) == {(30, 0.0, 1.0, 'λ = 0 exact'), (42, 0.0, 1.0, 'λ = 0 exact')} | {
        (n, 1.0, omega, 'large N') for n in (30, 42) for omega in (1.0, 0.5, 0.28)}
    assert [p[0] for p in large] == sorted(p[0] for p in large)
    with pytest.raises(ValueError, match='spin sector'):
        evaluate_foundation.card_points('mixed')


def test_evaluate_pad_n_must_hold_the_largest_n(exported, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        evaluate_foundation.parse_args(['--model', exported['path'], '--out', str(tmp_path), '--n', '5,7',
                                        '--pad-n', '6'])
    assert info.value.code == 2 and "--pad-n: bad value '6'" in capsys.readouterr().err
    args = evaluate_foundation.parse_args(['--model', exported['path'], '--out', str(tmp_path), '--n', '5,7',
                                           '--pad-n', '7'])
    assert args.pad_n == 7


def test_split_names_what_was_never_trained():
    """A card row's split: the trained context, a trained N at a new λ, a new ω or a new (λ, ω) pair, or a new N."""
    dot = QuantumDot()
    trained = [dot.context(1, 1, lam=lam, omega=1.0) for lam in (0.0, 1.0)] + [dot.context(3, 3, lam=0.0, omega=1.0),
                                                                               dot.context(3, 3, lam=1.0, omega=0.5)]
    model = type('Model', (), {'training_contexts': trained})()
    cases = {(1, 1.0, 1.0): 'train', (1, 5.0, 1.0): 'held-out λ', (3, 1.0, 0.75): 'held-out ω',
             (3, 1.0, 1.0): 'held-out λ, ω', (3, 2.0, 0.28): 'held-out λ, ω', (6, 1.0, 1.0): 'unseen N'}
    for (n_up, lam, omega), split in cases.items():
        assert evaluate_foundation.split_of(model, dot.context(n_up, n_up, lam=lam, omega=omega)) == split


def test_corrupted_byte_is_refused(exported, tmp_path):
    data = bytearray(open(exported['path'], 'rb').read())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / 'bad.qvmc'
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='checksum'):
        pretrained.load(str(bad))
    bad.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(ValueError, match='Pretrained model'):
        pretrained.load(str(bad))


def test_parameter_shapes_not_matching_the_stored_config(exported, tmp_path):
    meta = exported['meta']
    wider = dict(meta['ansatz'], config=dict(meta['ansatz']['config'], width=16))
    path = _resave(exported['path'], str(tmp_path / 'wide.qvmc'), ansatz=wider)
    with pytest.raises(ValueError, match=r"parameter \['fermi_sets[^ ]*'\]\['\w+'\] has shape"):
        pretrained.load(path)
    with pytest.raises(ValueError, match=r"parameter \['fermi_sets"):  # exporting with a wrong config too
        pretrained.export_model(exported['ckpt'], str(tmp_path / 'x.qvmc'),
                                ansatz_config=FermiSetsConfig(width=16, num_layers=1, num_determinants=2))


def test_unknown_format_version_and_training_checkpoint(exported, tmp_path):
    path = _resave(exported['path'], str(tmp_path / 'future.qvmc'), model_format_version=99)
    with pytest.raises(ValueError, match='model format version 99'):
        pretrained.load(path)
    with pytest.raises(ValueError, match='not a pretrained model file'):
        pretrained.load(exported['ckpt'])


def test_unknown_name_lists_available(exported):
    with pytest.raises(ValueError, match=r"unknown model name\. Available models: tiny"):
        pretrained.load('no_such_model', exported['dir'])
    with pytest.raises(ValueError, match='no such file'):
        pretrained.load(os.path.join(exported['dir'], 'missing.qvmc'))


@pytest.mark.parametrize('argv, flag, token', [
    (['--n', '0', '--lam', '1'], '--n', "'0'"),
    (['--n', 'x', '--lam', '1'], '--n', "'x'"),
    (['--n', '31', '--lam', '1'], '--n', "'31'"),  # beyond the model's max_electrons = 30
    (['--n', '5', '--lam=-1'], '--lam', "'-1'"),
    (['--n', '5', '--lam', 'nan'], '--lam', "'nan'"),
    (['--n', '5', '--lam', '1', '--walkers', '0'], '--walkers', "'0'"),
    (['--n', '5', '--lam', '1', '--steps', '-3'], '--steps', "'-3'"),
    (['--n', '5', '--lam', '1', '--burn-in', '20', '10', '30'], '--burn-in', '20 10 30'),  # MAX < 2·CHUNK
    (['--n', '5', '--lam', '1', '--model', 'no_such_model'], '--model', "'no_such_model'"),
    (['--n', '5', '--lam', '1', '--omega', '0'], '--omega', "'0'"),
    (['--n', '5', '--lam', '1', '--omega', 'inf'], '--omega', "'inf'"),
    (['--n', '5', '--lam', '1', '--pad-n', '4'], '--pad-n', "'4'"),  # padded below N
    (['--n', '5', '--lam', '1', '--pad-n', '31'], '--pad-n', "'31'"),  # beyond max_electrons
    (['--n', '5', '--lam', '1', '--pad-n', '0'], '--pad-n', "'0'"),
])
def test_predict_flags_exit_2_before_compiling(exported, capsys, argv, flag, token):
    if '--model' not in argv:
        argv = argv + ['--model', exported['path']]
    before = len(COMPILES)
    with pytest.raises(SystemExit) as info:
        predict.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and token in err, err
    assert len(COMPILES) == before, 'flag validation compiled JAX code'


def test_predict_flags_accept_good_values(exported):
    before = len(COMPILES)
    args = predict.parse_args(['--n', '30', '--lam', '0', '--model', exported['path']])
    assert args.model_path == exported['path'] and args.out == os.path.join('predictions', 'N30_lam0')
    args = predict.parse_args(['--n', '6', '--lam', '1', '--omega', '0.28', '--model', exported['path']])
    assert args.omega == 0.28 and args.out == os.path.join('predictions', 'N6_lam1_omega0.28')
    assert predict.parse_args(['--n', '6', '--lam', '1', '--pad-n', '6', '--model', exported['path']]).pad_n == 6
    assert len(COMPILES) == before


def _env():
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
                PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def test_predict_and_evaluate_drivers_smoke(exported, tmp_path):
    out = tmp_path / 'pred'
    cmd = [sys.executable, '-m', 'qvmc.predict', '--n', '2', '--lam', '1',
           '--model', exported['path'], '--walkers', '8', '--steps', '20', '--burn-in', '10', '20', '40',
           '--out', str(out)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('energy.csv', 'density.csv', 'density.png', 'pair_correlation.csv', 'pair_correlation.png'):
        assert (out / name).exists(), name
    assert 'kinetic' in result.stdout and 'interaction' in result.stdout
    assert 'reference   = 3.5965' in result.stdout  # the lowest two-electron triplet at λ = 1
    row = pd.read_csv(out / 'energy.csv').iloc[0]
    assert np.isfinite(row['energy']) and row['energy_err'] > 0

    card, copy = tmp_path / 'card', str(tmp_path / 'tiny.qvmc')
    shutil.copy(exported['path'], copy)
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'evaluate_foundation.py'), '--model', copy,
           '--out', str(card), '--n', '5', '--lam', '0', '--walkers', '8', '--steps', '10',
           '--burn-in', '5', '10', '20', '--update-card', '--pad-n', '6']  # N = 5 in a padded (6, 0) program
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(card / 'energies.csv')
    assert list(table['N']) == [5] and table['reference'].iloc[0] == 11.0  # 5 polarized electrons: 1 + 2·2 + 3·2
    assert table['split'].iloc[0] == 'unseen N' and 'below_exact' in table
    assert '| 5 | 0 | unseen N |' in (card / 'energies.md').read_text()
    assert (card / 'card_energy_table.json').exists()
    rows = pretrained.load(copy).card['energy_table']  # --update-card: the old (3, 1) row and the new (5, 0) one
    assert [(r['N'], r['lam']) for r in rows] == [(3, 1.0), (5, 0.0)] and rows[1]['energy'] == table['energy'].iloc[0]


SHIPPED_WITH_TABLE = [n for n in pretrained.available()
                      if pretrained.read_metadata(n).get('card', {}).get('energy_table')]


@pytest.mark.slow
@pytest.mark.parametrize('name', SHIPPED_WITH_TABLE or ['(none)'])
def test_shipped_model_reproduces_its_card(name):
    """Two points of each shipped model's card energy table, re-estimated, agree within 5σ."""
    if not SHIPPED_WITH_TABLE:
        pytest.skip('no shipped model with a card energy table in qvmc/models/')
    model = pretrained.load(name)
    rows = [r for r in model.card['energy_table'] if r.get('energy') is not None and (r.get('energy_err') or 0) > 0]
    rows = sorted(rows, key=lambda r: (r['N'], r['lam']))[:2]  # the smallest N: the cheapest
    for i, r in enumerate(rows):
        est = model.estimate(r['N'], r['lam'], jax.random.PRNGKey(1000 + i), omega=r.get('omega'),
                             num_walkers=r.get('num_walkers') or 256, num_steps=r.get('num_steps') or 200,
                             open_shell_order=r.get('open_shell_order') or 'filling')
        sigma = math.hypot(est.energy.error, r['energy_err'])
        assert abs(est.energy.mean - r['energy']) < 5 * sigma, (r, est.energy)


SHIPPED_TRAINING_SETS = {  # name -> (spin sector, the documented training set {(N, λ, ω)})
    'foundation_polarized': ('polarized',
                             {(n, lam, 1.0) for n in (6, 8, 10) for lam in (0.0, 1.0, 2.0, 5.0, 8.0, 10.0)}),
    'foundation_unpolarized': ('unpolarized',
                               {(2, lam, 1.0) for lam in (0.0, 1.0, 2.0, 5.0, 8.0)}
                               | {(6, 0.0, 1.0), (12, 0.0, 1.0), (12, 1.0, 1.0), (12, 1.0, 0.5)}
                               | {(6, 1.0, omega) for omega in (1.0, 0.5, 0.28)}),
    'foundation_unpolarized_large': ('unpolarized',
                                     {(2, 0.0, 1.0), (2, 1.0, 1.0), (6, 1.0, 1.0), (12, 0.0, 1.0), (12, 1.0, 1.0),
                                      (12, 1.0, 0.5)} | {(n, 0.0, 1.0) for n in (20, 30)}
                                     | {(n, 1.0, omega) for n in (20, 30) for omega in (1.0, 0.5, 0.28)}),
}


@pytest.mark.parametrize('name', sorted(SHIPPED_TRAINING_SETS))
def test_shipped_foundation_model_loads_and_matches_the_code(name):
    """Each shipped model (qvmc/models/) loads by name; its parameter shapes are the ones the stored config builds
    (checked by load) and its spin sector and training set are the documented ones."""
    assert name in pretrained.available()
    sector, training_set = SHIPPED_TRAINING_SETS[name]
    model = pretrained.load(name)
    assert model.spin_sector == sector
    assert sum(int(np.size(p)) for p in jax.tree.leaves(model.params)) == 29111
    contexts = model.metadata['training_set']['contexts']
    assert {(c['n_up'] + c['n_down'], c['lam'], c['omega']) for c in contexts} == training_set
    if sector == 'unpolarized':
        assert all(c['n_up'] == (c['n_up'] + c['n_down'] + 1) // 2 for c in contexts)
    else:
        assert all(c['n_down'] == 0 for c in contexts)


def test_large_model_is_antisymmetric_at_30_electrons():
    """The large-N model at N = 30 (15↑15↓), λ = 1: exchanging two same-spin electrons flips the sign of ψ
    and leaves log|ψ| unchanged (float64, to rounding); it is built for N up to 56."""
    model = pretrained.load('foundation_unpolarized_large')
    assert model.system.max_electrons == 56
    ctx = model.context(30, 1.0, omega=0.5)
    psi = jax.jit(make_psi(model.wavefunction, model.system, ctx.spins))
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), model.params)
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(30, 2))
    sign, logabs = psi(params, x, ctx.values)
    assert np.isfinite(logabs) and abs(float(sign)) == 1.0
    for i, j in [(0, 1), (3, 14), (15, 16), (20, 29)]:  # rows 0..14 spin up, 15..29 spin down
        y = x.copy()
        y[[i, j]] = y[[j, i]]
        sign_y, logabs_y = psi(params, y, ctx.values)
        assert float(sign_y) == -float(sign), (i, j)
        np.testing.assert_allclose(float(logabs_y), float(logabs), rtol=1e-12, atol=1e-9)


def test_open_shell_orders_are_compared_variationally(exported):
    """A model is evaluated at an open-shell N in every open-shell order with the same parameters and
    key; ``estimate`` keeps the lowest energy, and a closed shell has one order only."""
    model = pretrained.load(exported['path'])
    assert model.open_shell_orders(3) == ('filling',) and model.open_shell_orders(6) == ('filling',)
    assert model.open_shell_orders(2) == ('filling',)  # one |m| = 1 slot: the same orbital either way
    assert model.open_shell_orders(4) == ('filling', 'high_m') == model.open_shell_orders(7)
    kwargs = dict(num_walkers=16, num_steps=10, burn_in_chunk=5, min_burn_in=5, max_burn_in=10)
    found = model.estimates(4, 2.0, jax.random.PRNGKey(5), **kwargs)
    assert set(found) == {'filling', 'high_m'}
    assert found['filling'].energy.mean != found['high_m'].energy.mean  # different wavefunctions
    best = model.estimate(4, 2.0, jax.random.PRNGKey(5), **kwargs)
    assert best.energy.mean == min(e.energy.mean for e in found.values())
    with pytest.raises(ValueError, match='open_shell_order'):
        model.estimate(4, 2.0, open_shell_order='lowest_m', **kwargs)


def test_models_directory_environment_variable(exported, monkeypatch, tmp_path):
    """$QVMC_MODELS_DIR is searched first (a user's model by name), the shipped models stay available."""
    shipped = pretrained.available()
    monkeypatch.setenv(pretrained.MODELS_ENV, os.pathsep.join([str(tmp_path / 'empty'), exported['dir']]))
    assert pretrained.available() == sorted(set(shipped) | {'tiny'})
    assert pretrained.resolve('tiny') == exported['path']
    assert pretrained.available(exported['dir']) == ['tiny']  # directory=: only there
    with pytest.raises(ValueError, match="unknown model name. Available models: tiny;"):
        pretrained.resolve('foundation_polarized', exported['dir'])
    assert os.path.isfile(os.path.join(pretrained.models_dir(), 'foundation_polarized.qvmc'))


@pytest.mark.parametrize('argv, message', [
    (['show', 'nosuch'], "qvmc-models show: error: Pretrained model 'nosuch': unknown model name"),
    (['export', 'no/such/run', 'OUT'], "qvmc-models export: error: Checkpoint"),
    (['export', 'CKPT', 'OUT', '--card', 'no/such/card.json'], 'qvmc-models export: error:'),
])
def test_models_tool_errors_are_one_line_exit_2(exported, tmp_path, capsys, argv, message):
    out = str(tmp_path / 'out.qvmc')
    argv = [out if a == 'OUT' else exported['ckpt'] if a == 'CKPT' else a for a in argv]
    with pytest.raises(SystemExit) as info:
        pretrained.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out)


def test_predict_unwritable_out_exits_2_before_measuring(exported, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    for out in ('/proc/forbidden/x', str(blocker / 'x')):
        cmd = [sys.executable, '-m', 'qvmc.predict', '--n', '2', '--lam', '1', '--model', exported['path'],
               '--out', out]
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('qvmc-predict: error: --out: cannot create directory'), lines
        assert result.stdout == ''  # nothing measured
