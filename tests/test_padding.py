"""Padded particle content (``hamiltonians.padding``): one compiled program for every N up to a
padded size, with the same wavefunction and the same local energies as the unpadded program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ansatz
from ansatz import harmonic_basis
from hamiltonians import QuantumDot, make_local_energy
from hamiltonians import padding
from hamiltonians.system import make_log_psi, make_psi
from qvmc.config import VMCConfig
from qvmc.inference import Predictor
from qvmc.sweep import Sweep

CONFIG = ansatz.FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=2, hidden=8)
DOT = QuantumDot()


def _params(config, spins, key=0, noise=0.2):
    """Initial parameters with every leaf perturbed, so that dressing and open-shell mixing act."""
    wf = ansatz.make_fermi_sets(config)
    ctx = DOT.context(*spins)
    x = DOT.init_walkers(jax.random.PRNGKey(1), ctx, 1)[0]
    params = wf.init(jax.random.PRNGKey(key), x, DOT.context_features(ctx.values, *spins), spins, 0.0)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(key + 100), len(leaves))
    return wf, jax.tree.unflatten(tree, [v + noise * jax.random.normal(k, v.shape, v.dtype)
                                         for v, k in zip(leaves, keys)])


def _exact_at_zero_coupling(params):
    """The dressing switched off: orbitals are oscillator eigenfunctions, Ψ exact at λ = 0."""
    params = {name: dict(layer) for name, layer in params.items()}
    for name in ('fermi_sets/orbital_generator/linear_1', 'fermi_sets/rho/linear_1'):
        params[name]['w'] = jnp.zeros_like(params[name]['w'])
    params['fermi_sets/orbital_generator/linear_1']['b'] = jnp.zeros_like(
        params['fermi_sets/orbital_generator/linear_1']['b'])
    return params


@pytest.mark.parametrize('pad', range(0, 13))
def test_padded_orbital_tables_reproduce_the_labels(pad):
    for order in harmonic_basis.OPEN_SHELL_ORDERS:
        tables = harmonic_basis.padded_orbitals(pad, order)
        for count in range(pad + 1):
            picked = [tables.labels[a] for a in tables.slot[count, :count]]
            assert picked == harmonic_basis.orbital_labels(count, order)
            closed, shell = harmonic_basis.open_shell(count)
            for j in range(pad):
                members = [tables.labels[a] for a in np.flatnonzero(tables.mixable[count, j])]
                assert members == (shell if closed <= j < count else [])


@pytest.mark.parametrize('spins,pad,order', [((7, 0), (8, 0), 'high_m'), ((3, 2), (4, 4), 'filling'),
                                             ((1, 0), (3, 2), 'filling')])
def test_padded_wavefunction_and_local_energy_equal_the_unpadded(spins, pad, order):
    """Same parameters, same electron positions, random padding rows: log|ψ| differs by exactly the
    padding rows' oscillator factor, the sign is the same, and the local energy and every component
    agree to round-off (the padding rows' energy ω is removed exactly on every walker)."""
    config = ansatz.FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=2, hidden=8,
                                    open_shell_order=order)
    wf, params = _params(config, spins)
    ctx = DOT.context(*spins, lam=2.0, omega=0.7)
    x = DOT.init_walkers(jax.random.PRNGKey(2), ctx, 4)
    values, values_pad = ctx.values, padding.padded_values(ctx, pad)
    x_pad = padding.pad_walkers(jax.random.PRNGKey(3), x, ctx, pad, DOT.length_scale(values))
    np.testing.assert_array_equal(padding.electron_rows(x_pad, ctx, pad), np.asarray(x))

    def both(content, vals):
        psi = make_psi(wf, DOT, content)
        local_energy = make_local_energy(make_log_psi(wf, DOT, content), DOT.potential_components, 'folx')
        return jax.jit(jax.vmap(lambda p, y, v: (psi(p, y, v), local_energy(p, y, v)), in_axes=(None, 0, None)))
    (sign, logabs), (e_loc, comps) = both(spins, values)(params, x, values)
    (sign_p, logabs_p), (e_pad, comps_p) = both(pad, values_pad)(params, x_pad, values_pad)
    rows = 1.0 - values_pad[padding.ACTIVE]
    factor = -0.5 * 0.7 * np.sum(rows * np.sum(np.asarray(x_pad)**2, axis=-1), axis=-1)
    np.testing.assert_array_equal(np.asarray(sign_p), np.asarray(sign))
    np.testing.assert_allclose(np.asarray(logabs_p) - factor, np.asarray(logabs), rtol=0, atol=1e-12)
    assert set(comps_p) == set(comps) == {'kinetic', 'trap', 'interaction'}
    np.testing.assert_allclose(np.asarray(e_pad), np.asarray(e_loc), rtol=1e-12, atol=1e-11)
    for name in comps:
        np.testing.assert_allclose(np.asarray(comps_p[name]), np.asarray(comps[name]), rtol=1e-12, atol=1e-11)


def test_one_padded_program_serves_several_n_exactly_at_zero_coupling():
    """Polarized N = 3 and 5 in one (6, 0) program: λ = 0 with the dressing off is exact, so every
    local energy equals the exact energy (zero variance) although the padding rows are sampled too;
    the density counts electrons only."""
    wf, params = _params(CONFIG, (3, 0), noise=0.0)
    params = _exact_at_zero_coupling(params)
    predictor = Predictor(wf, DOT, VMCConfig(mcmc_substeps=4), density_bins=16, pad=(6, 0))
    for n, exact in ((3, 5.0), (5, 11.0)):
        est = predictor.estimate(params, DOT.context(n, 0, lam=0.0), jax.random.PRNGKey(n), num_walkers=32,
                                 num_steps=10, burn_in_chunk=10, min_burn_in=10, max_burn_in=20)
        np.testing.assert_allclose(est.trace, exact, rtol=0, atol=1e-9)
        assert est.energy.mean == pytest.approx(exact, abs=1e-9)
        bin_area = (est.density.edges[1] - est.density.edges[0])**2
        assert np.sum(est.density.values) * bin_area == pytest.approx(n * (1 - est.density.outside), rel=1e-12)
        assert 0.2 < est.acceptance < 0.9
    assert list(predictor._compiled) == [(6, 0)]  # pylint: disable=protected-access


def test_padded_sweep_tables_hold_the_electrons_only():
    wf, params = _params(CONFIG, (2, 1))
    sweep = Sweep(wf, DOT, VMCConfig(mcmc_substeps=4), density_bins=8, pair_bins=6, slice_bins=4, pad=(3, 2),
                  slice_electron=2)
    ctx = DOT.context(2, 1, lam=1.0)
    m = sweep.measure(params, ctx, jax.random.PRNGKey(0), num_walkers=16, num_steps=10, burn_in_chunk=10,
                      min_burn_in=10, max_burn_in=20)
    assert np.isfinite(m.row['energy']) and m.row['energy_err'] > 0
    assert set(m.traces) == {'energy', 'kinetic', 'trap', 'interaction'}
    assert np.sum(m.density.density * m.density.bin_area) == pytest.approx(3 * (1 - m.row['density_outside']))
    assert list(m.slice_electrons.spin) == ['up', 'up', 'down']
    assert m.slice_electrons.moved.tolist() == [False, False, True]
    assert set(m.pair_correlation.channel) == {'all', 'same', 'opposite'}
    assert m.final.walkers.shape == (16, 5, 2)
    # Carried over as they are (padded) or as electrons only.
    again = sweep.measure(params, ctx, jax.random.PRNGKey(1), walkers=m.final.walkers, step_size=m.final.step_size,
                          num_steps=10, burn_in_chunk=10, min_burn_in=10, max_burn_in=20)
    assert again.row['carried_over'] and np.isfinite(again.row['energy'])
    electrons = padding.electron_rows(m.final.walkers, ctx, (3, 2))
    assert sweep.measure(params, ctx, jax.random.PRNGKey(2), walkers=electrons, num_steps=10, burn_in_chunk=10,
                         min_burn_in=10, max_burn_in=20).final.walkers.shape == (16, 5, 2)
    assert list(sweep._compiled) == [(3, 2)]  # pylint: disable=protected-access


def test_layout_answers_every_padding_question():
    """The one layout value: unpadded is the identity, padded places electrons in their rows and
    rebuilds the context from the mask; layouts are immutable values (equal, hashable)."""
    ctx = DOT.context(2, 1, lam=0.5, omega=0.8)
    flat, padded = padding.make_layout(None), padding.make_layout((3, 2))
    assert flat is padding.UNPADDED and padding.make_layout(padded) == padded == padding.PaddedLayout([3, 2])
    assert hash(padded) == hash(padding.PaddedLayout((3, 2))) and padded != flat and flat.pad is None
    with pytest.raises(AttributeError):
        padded.pad = (4, 4)
    assert flat.spins(ctx) == (2, 1) and padded.spins(ctx) == (3, 2)
    assert set(flat.values(ctx)) == {'lam', 'omega'} and padded.values(ctx)[padding.ACTIVE].tolist() == [1, 1, 0, 1, 0]
    x = DOT.init_walkers(jax.random.PRNGKey(0), ctx, 4)
    np.testing.assert_array_equal(np.asarray(flat.place(jax.random.PRNGKey(1), x, ctx, DOT)), np.asarray(x))
    x_pad = padded.place(jax.random.PRNGKey(1), x, ctx, DOT)
    assert x_pad.shape == (4, 5, 2) and padded.place(jax.random.PRNGKey(2), x_pad, ctx, DOT) is not None
    np.testing.assert_array_equal(padded.electrons(x_pad, ctx), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(padded.place(jax.random.PRNGKey(2), x_pad, ctx, DOT)), np.asarray(x_pad))
    assert [padded.electron_row(i, ctx) for i in range(3)] == [0, 1, 3]
    assert [flat.electron_row(i, ctx) for i in range(3)] == [0, 1, 2]
    fresh = padded.init_walkers(DOT)(jax.random.PRNGKey(3), ctx, 6)
    assert fresh.shape == (6, 5, 2) and padded.walker_sizes(ctx) == {3, 5} and flat.walker_sizes(ctx) == {3}
    for layout in (flat, padded):
        values = layout.values(ctx)
        assert padding.layout_of_values(layout.spins(ctx), values) == layout
        assert layout.context(layout.spins(ctx), values) == ctx
    with pytest.raises(ValueError, match=r'does not fit the padded content'):
        padded.spins(DOT.context(4, 0))


def test_predictor_and_sweep_share_one_measurement_outline():
    """Same key, same chunks: the Predictor and the Sweep move the walkers identically (one
    burn-in-then-measure path), padded or not, so their energy traces agree."""
    wf, params = _params(CONFIG, (2, 1))
    ctx = DOT.context(2, 1, lam=1.0)
    kwargs = dict(num_walkers=16, num_steps=10, burn_in_chunk=10, min_burn_in=10, max_burn_in=20)
    for pad in (None, (3, 2)):
        est = Predictor(wf, DOT, VMCConfig(mcmc_substeps=4), density_bins=8, pad=pad).estimate(
            params, ctx, jax.random.PRNGKey(7), **kwargs)
        m = Sweep(wf, DOT, VMCConfig(mcmc_substeps=4), density_bins=8, pair_bins=6, slice_bins=4, pad=pad).measure(
            params, ctx, jax.random.PRNGKey(7), **kwargs)
        np.testing.assert_allclose(est.trace, m.traces['energy'], rtol=1e-10)
        assert est.burn_in_steps == m.row['burn_in_steps']


def test_bad_padding_is_refused_before_anything_compiles():
    wf, params = _params(CONFIG, (2, 0), noise=0.0)
    for bad in [(0, 0), (1.5, 0), (-1, 2), 3, (True, 0)]:
        with pytest.raises(ValueError, match='pad'):
            Predictor(wf, DOT, pad=bad)
    predictor = Predictor(wf, DOT, pad=(2, 0))
    with pytest.raises(ValueError, match=r'does not fit the padded content .* at least \(3, 0\)'):
        predictor.estimate(params, DOT.context(3, 0), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r'at least \(2, 1\)'):
        predictor.estimate(params, DOT.context(1, 1), jax.random.PRNGKey(0))
    psiformer = ansatz.make_psiformer(ansatz.PsiFormerConfig(width=8, num_layers=1, num_heads=2, num_determinants=1))
    with pytest.raises(ValueError, match='maskable'):
        Predictor(psiformer, DOT, pad=(4, 0))
    with pytest.raises(ValueError, match='maskable'):
        Sweep(psiformer, DOT, pad=(4, 0))
    with pytest.raises(ValueError, match='observables'):
        Sweep(wf, DOT, pad=(4, 0), observables=lambda x, ctx: {})
    x = jnp.zeros((2, 2))
    cond = DOT.context_features(DOT.context(2, 0).values, 2, 0)
    with pytest.raises(ValueError, match='no padding mask'):
        psiformer.apply(None, x, cond, (2, 0), 0.0, mask=jnp.ones(2))
    with pytest.raises(ValueError, match=r'mask must be \[N=2\]'):
        wf.apply(params, x, cond, (2, 0), 0.0, mask=jnp.ones(3))


def test_padded_training_compiles_one_step_for_any_contents(tmp_path):
    """Training blocks of N = 2 and 3 in one (2, 1) layout: the step is traced once, also after the
    blocks are re-pointed at other contents; λ = 0 with the dressing off stays exact on every walker
    of every content; resuming a padded run is bit-identical, and an unpadded run refuses its checkpoint."""
    import optax  # pylint: disable=import-outside-toplevel
    from qvmc import VMC  # pylint: disable=import-outside-toplevel
    from qvmc.train import train  # pylint: disable=import-outside-toplevel
    wf, params = _params(CONFIG, (1, 1), noise=0.0)
    contexts = [DOT.context(1, 1, lam=0.0), DOT.context(2, 1, lam=0.0)]
    trainer = VMC(wf, DOT, contexts, optax.adam(1e-3), VMCConfig(num_walkers=8, mcmc_substeps=2), pad=(2, 1))
    state = trainer.init(jax.random.PRNGKey(0), params=_exact_at_zero_coupling(params))
    assert state.spins == ((2, 1), (2, 1)) and state.pad == (2, 1) and state.contexts == tuple(contexts)
    state, info = trainer.step(jax.random.PRNGKey(1), state)  # energies of the parameters before the update
    np.testing.assert_allclose([float(t.energy) for t in info.blocks], [2.0, 4.0], rtol=0, atol=1e-9)
    assert max(float(t.variance) for t in info.blocks) < 1e-15
    state, _ = trainer.reassign(jax.random.PRNGKey(2), state, [DOT.context(1, 0, lam=0.5), DOT.context(2, 1)])
    assert state.contexts == (DOT.context(1, 0, lam=0.5), DOT.context(2, 1)) and state.pad == (2, 1)
    state, info = trainer.step(jax.random.PRNGKey(3), state)
    assert all(np.isfinite(float(t.energy)) for t in info.blocks) and trainer.num_step_traces == 1

    key = jax.random.PRNGKey(4)
    full = train(trainer, trainer.init(key), key, 4, run_dir=str(tmp_path / 'full'), checkpoint_every=2,
                 print_fn=None)
    run = str(tmp_path / 'split')
    train(trainer, trainer.init(key), key, 2, run_dir=run, checkpoint_every=2, print_fn=None)
    resumed = train(trainer, trainer.init(key), key, 4, run_dir=run, checkpoint_every=2, print_fn=None)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert trainer.num_step_traces == 1
    from qvmc import pretrained  # pylint: disable=import-outside-toplevel
    meta = pretrained.export_model(run, str(tmp_path / 'padded.qvmc'), ansatz_config=CONFIG)
    assert [(p['n_up'], p['n_down'], p['lam']) for p in meta['training_set']['contexts']] == [(1, 1, 0.0), (2, 1, 0.0)]
    unpadded = VMC(wf, DOT, contexts, optax.adam(1e-3), VMCConfig(num_walkers=8, mcmc_substeps=2))
    with pytest.raises(ValueError, match=r'padded to \(2, 1\)'):
        train(unpadded, unpadded.init(key), key, 6, run_dir=run, checkpoint_every=2, print_fn=None)
    with pytest.raises(ValueError, match='does not fit'):
        VMC(wf, DOT, [DOT.context(3, 0)], optax.sgd(0.1), pad=(2, 1))
