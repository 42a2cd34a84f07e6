"""Honeycomb order parameters of the moiré Wigner crystal (``hamiltonians.moire_order``): exact values on
ideal configurations, the uncorrelated baseline within its Monte Carlo error, symmetries, jit/vmap safety."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamiltonians.moire import MoireSystem
from hamiltonians import moire_order as mo
from qvmc.order_sweep import moire_order_observables
from qvmc.sweep import observable_columns

SYSTEM = MoireSystem()


def _observe(x, geometry):
    return {k: np.asarray(v) for k, v in mo.honeycomb_observables(jnp.asarray(x), geometry).items()}


def _honeycomb(geometry, empty):
    """Electrons exactly on the minima of the two sublattices other than ``empty`` ([N, 2], nm)."""
    return geometry.sites[geometry.labels != empty]


@pytest.fixture(scope='module')
def geometry24():
    return mo.sublattice_geometry(SYSTEM, 24)


def test_geometry_counts_and_k_points():
    for n in (6, 24, 54, 150):
        g = mo.sublattice_geometry(SYSTEM, n)
        assert len(g.sites) == 3 * n // 2 and g.sites_per_sublattice == n // 2 and np.isclose(g.filling, 2 / 3)
        assert np.array_equal(np.bincount(g.labels), [n // 2] * 3)
        # K is a reciprocal vector of the supercell (K·L ∈ 2πℤ) and sits at a corner of the moiré zone.
        turns = g.k_points @ g.supercell.T / (2 * np.pi)
        assert np.allclose(turns, np.round(turns), atol=1e-9)
        assert np.allclose(np.linalg.norm(g.k_points, axis=1), 4 * np.pi / (3 * SYSTEM.a_m))
        # Sites are the minima of V (all equal, below the other two C3-symmetric extrema), and
        # neighbouring minima lie on different sublattices.
        v = np.array([float(SYSTEM.moire_potential(jnp.asarray(site[None]), 1.0)) for site in g.sites[:4]])
        a1, a2 = g.primitive
        other = float(SYSTEM.moire_potential(jnp.asarray((g.sites[0] + (a1 + a2) / 3)[None]), 1.0))
        assert np.allclose(v, v[0]) and v[0] < other
        d = np.linalg.norm(g.sites[:, None] - g.sites[None], axis=-1)
        near = np.isclose(d, SYSTEM.a_m)
        assert np.all(g.labels[:, None] != g.labels[None, :], where=near)


def test_geometry_rejects_incommensurate_supercell():
    with pytest.raises(ValueError, match='√3×√3'):
        mo.sublattice_geometry(SYSTEM, 4)  # 6 cells in a cell that does not fit the three sublattices
    assert moire_order_observables(SYSTEM)(SYSTEM.context(4, 0, lam=1.0)) is None


@pytest.mark.parametrize('n', [6, 24])
@pytest.mark.parametrize('empty', [0, 1, 2])
def test_perfect_honeycomb_is_maximal(n, empty):
    """Electrons exactly on two sublattices: contrast = Φ = 1, occupations (1, 1, 0), S(K) = N/4, for each
    of the three translated patterns, for any electron order, and under jitter within each minimum's cell."""
    g = mo.sublattice_geometry(SYSTEM, n)
    x = _honeycomb(g, empty)
    assert len(x) == n
    out = _observe(x, g)
    assert out['honeycomb_contrast'] == pytest.approx(1.0, abs=1e-12)
    assert out['honeycomb_order'] == pytest.approx(1.0, abs=1e-12)
    assert out['structure_factor_k'] == pytest.approx(n / 4, rel=1e-10)
    expected = np.ones(3)
    expected[empty] = 0.0
    assert np.allclose(out['occupations'], expected) and np.allclose(out['occupations_sorted'], [1, 1, 0])
    rng = np.random.default_rng(n + empty)
    jittered = x[rng.permutation(n)] + rng.uniform(-0.15, 0.15, (n, 2)) * SYSTEM.a_m  # |δ| < 0.22 a_M < a_M/2
    out = _observe(jittered, g)
    assert out['honeycomb_order'] == pytest.approx(1.0, abs=1e-12)
    assert out['honeycomb_contrast'] == pytest.approx(1.0, abs=1e-12)
    assert out['structure_factor_k'] < n / 4  # off-site positions lower S(K) (a Debye–Waller-like factor)


def test_no_single_occupancy_configuration_beats_the_honeycomb():
    """All C(9, 6) = 84 ways to put N = 6 electrons on distinct minima: Φ ≤ 1 and contrast ≤ 1, with equality
    exactly for the three honeycombs; equal sublattice counts give 0."""
    g = mo.sublattice_geometry(SYSTEM, 6)
    fn = jax.jit(jax.vmap(lambda x: mo.honeycomb_observables(x, g)))
    picks = np.array(list(itertools.combinations(range(len(g.sites)), 6)))
    out = jax.tree.map(np.asarray, fn(jnp.asarray(g.sites[picks])))
    counts = np.stack([np.bincount(g.labels[p], minlength=3) for p in picks])
    honeycomb = np.sort(counts, axis=1)[:, 0] == 0
    assert honeycomb.sum() == 3
    assert np.all(out['honeycomb_order'] <= 1 + 1e-12) and np.all(out['honeycomb_contrast'] <= 1 + 1e-12)
    assert np.allclose(out['honeycomb_order'][honeycomb], 1.0) and np.all(out['honeycomb_order'][~honeycomb] < 0.99)
    equal = np.all(counts == 2, axis=1)
    assert equal.any()
    assert np.allclose(out['honeycomb_order'][equal], 0.0, atol=1e-12)
    assert np.allclose(out['honeycomb_contrast'][equal], 0.0, atol=1e-12)
    assert np.allclose(out['structure_factor_k'][equal], 0.0, atol=1e-12)  # on-site: ρ_K = Σ_s c_s ω^s = 0


def test_uncorrelated_electrons_give_the_baseline(geometry24):
    """Positions i.i.d. uniform in the supercell: E[Φ] = 4/N and E[S(K)] = 1 exactly (K ≠ 0 is a reciprocal
    vector of the supercell, so E[e^{iK·r}] = 0; labels are i.i.d. uniform since the three sublattices' Voronoi
    cells have equal areas). |m|² and |ρ_K|²/N are then ≈ exponential, so the sample standard deviation is about
    the mean; we compare the mean of R = 4000 configurations with the expectation within 5 standard errors
    (sample std / √R), a false-failure rate < 1e-6. The sorted contrast is biased upwards by the minimum of three
    fluctuating counts, E ≈ O(1/√N); we only check it stays well below the crystal's 1."""
    g, n, r = geometry24, 24, 4000
    frac = np.random.default_rng(0).uniform(size=(r, n, 2))
    out = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda x: mo.honeycomb_observables(x, g)))(
        jnp.asarray(frac @ g.supercell)))
    for name, expected in (('honeycomb_order', 4.0 / n), ('structure_factor_k', 1.0)):
        values = out[name]
        error = values.std(ddof=1) / np.sqrt(r)
        assert abs(values.mean() - expected) < 5 * error, (name, values.mean(), expected, error)
    assert np.allclose(out['occupations'].mean(axis=0), 2 / 3, atol=5 * np.sqrt(2 / 9 / n / r) * 2)
    assert out['honeycomb_contrast'].mean() < 0.5


def test_translations_and_periodicity(geometry24):
    """S(K) is invariant under any common translation and under moving one electron by a supercell vector;
    moving every electron by a moiré vector a1 cycles the sublattice labels (s → s + 1) and keeps Φ, contrast."""
    g = geometry24
    rng = np.random.default_rng(3)
    x = (rng.uniform(size=(24, 2)) @ g.supercell)
    base = _observe(x, g)
    a1, a2 = g.primitive
    shifted_one = x.copy()
    shifted_one[5] += 2 * g.supercell[0] - g.supercell[1]
    for moved in (x + rng.normal(size=2) * 7.0, shifted_one, x + 3 * a1 - 5 * a2):
        assert _observe(moved, g)['structure_factor_k'] == pytest.approx(base['structure_factor_k'], rel=1e-9)
    by_a1 = _observe(x + a1, g)
    assert np.allclose(by_a1['occupations'], np.roll(base['occupations'], 1))
    for name in ('honeycomb_order', 'honeycomb_contrast', 'structure_factor_k'):
        assert by_a1[name] == pytest.approx(base[name], rel=1e-9, abs=1e-12)
    periodic = _observe(shifted_one, g)
    assert np.array_equal(periodic['occupations'], base['occupations'])
    # structure_factor agrees with the direct complex sum
    rho = np.exp(1j * x @ g.k_points.T).sum(axis=0)
    assert base['structure_factor_k'] == pytest.approx(np.mean(np.abs(rho) ** 2) / 24, rel=1e-10)


def test_nearest_minimum_matches_brute_force(geometry24):
    g = geometry24
    x = np.random.default_rng(4).uniform(-1.5, 2.5, size=(300, 2)) @ g.supercell
    got = np.asarray(mo.nearest_minimum(jnp.asarray(x), g))
    # brute force over all minima of the supercell and their images; compare the sublattice labels
    images = np.array([(i, j) for i in range(-3, 4) for j in range(-3, 4)]) @ g.supercell
    points = (g.sites[None] + images[:, None]).reshape(-1, 2)
    labels = np.tile(g.labels, len(images))
    nearest = np.argmin(np.linalg.norm(x[:, None] - points[None], axis=-1), axis=1)
    assert np.array_equal(np.mod(got[:, 0] - got[:, 1], 3), labels[nearest])
    wrapped = x - np.floor((x - g.origin) @ np.linalg.inv(g.supercell)) @ g.supercell
    assert np.all(np.linalg.norm(got @ g.primitive + g.origin - wrapped, axis=1) <= SYSTEM.a_m / np.sqrt(3) + 1e-9)


def test_jit_vmap_float32_and_single_trace(geometry24):
    g, traces = geometry24, []

    def fn(x):
        traces.append(1)
        return mo.honeycomb_observables(x, g)
    batched = jax.jit(jax.vmap(fn))
    x = jnp.asarray(np.random.default_rng(5).uniform(size=(7, 24, 2)) @ g.supercell, jnp.float32)
    out = batched(x)
    batched(x + 1.0)
    assert len(traces) == 1
    for name, shape in mo.OBSERVABLES.items():
        assert out[name].shape == (7,) + shape and out[name].dtype == jnp.float32
    single = mo.honeycomb_observables(x[2], g)
    for name in mo.OBSERVABLES:
        assert np.allclose(out[name][2], single[name], rtol=1e-5)


def test_observable_columns_error_bars():
    rng = np.random.default_rng(6)
    trace = rng.normal(1.0, 0.1, size=(32, 40))
    row = observable_columns('phi', trace)
    expected = 0.1 / np.sqrt(trace.size)  # uncorrelated draws: σ/√(W·T)
    assert row['phi'] == pytest.approx(trace.mean()) and expected / 2 < row['phi_err'] < 2 * expected
    vector = observable_columns('occ', np.stack([trace, 2 * trace], axis=-1))
    assert set(vector) == {'occ_0', 'occ_0_err', 'occ_0_tau', 'occ_1', 'occ_1_err', 'occ_1_tau'}
    assert vector['occ_1'] == pytest.approx(2 * vector['occ_0'])
    assert observable_columns('c', np.ones((4, 8)))['c_err'] == 0.0


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')  # R-hat of constant traces
def test_observable_sweep_records_on_the_measurement_draws(tmp_path, monkeypatch):
    """``ObservableSweep`` feeds ``Sweep``'s observables hook: one sampling pass per context (the measurement),
    order parameters recorded on its draws, columns and traces as before, the row from the traces."""
    import ansatz
    from qvmc import VMCConfig
    from qvmc.order_sweep import ObservableSweep
    from samplers import engine
    system = MoireSystem(coulomb=False)
    wf = ansatz.make_plane_wave_slater(system.network_lattice(6), allow_open_shell=True)
    config = VMCConfig(mcmc_substeps=3, kinetic_method='hessian')
    sweep = ObservableSweep(wf, system, config, observables=moire_order_observables(system), density_bins=6,
                            pair_bins=4, slice_bins=4)
    passes, real_sample = [], engine.sample  # the measurement outline's sampling pass (qvmc.measurement)
    monkeypatch.setattr(engine, 'sample', lambda *a, **k: passes.append(1) or real_sample(*a, **k))
    contexts = [system.context(6, 0, lam=0.5), system.context(6, 0, lam=1.5)]
    result = sweep.run({}, contexts, jax.random.PRNGKey(0), num_walkers=16, num_steps=10, burn_in_chunk=5,
                       min_burn_in=10, max_burn_in=20)
    assert len(passes) == len(contexts)  # no second sampling pass
    row = result.energies.iloc[0]
    assert row['observable_steps'] == row['num_steps'] == 10 and row['observable_acceptance'] == row['acceptance']
    traces = sweep.observable_traces[contexts[0].label()]
    assert sorted(traces) == sorted(mo.OBSERVABLES)
    for name, shape in mo.OBSERVABLES.items():
        assert traces[name].shape == (16, 10) + shape
    for column, value in observable_columns('honeycomb_order', traces['honeycomb_order']).items():
        assert row[column] == pytest.approx(value, nan_ok=True)
    np.testing.assert_allclose(result.energies['occupations_0'] + result.energies['occupations_1']
                               + result.energies['occupations_2'], 2.0)  # Σ_s o_s = 3ν
    sweep.save_observable_traces(str(tmp_path / 'order.npz'))
    assert f'{contexts[1].label()}/honeycomb_order' in np.load(tmp_path / 'order.npz').files
    with pytest.raises(TypeError, match='observable_steps'):  # removed in 0.3: num_steps of run/measure
        ObservableSweep(wf, system, config, observables=moire_order_observables(system), observable_steps=10)
