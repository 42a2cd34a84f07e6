"""Inference sweeps: documented tables with finite values, densities that integrate to N, g(r)
against the analytic pair distribution of the exact two-electron λ = 0 state, netCDF traces."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ansatz
from ansatz import FermiSetsConfig, make_fermi_sets, make_noninteracting_dot
from hamiltonians import QuantumDot
from hamiltonians.moire import MoireSystem
from qvmc import VMC, VMCConfig, plotting
from qvmc.sweep import Sweep, inscribed_radius
from qvmc.train import train

TINY = FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)
CONFIG = VMCConfig(mcmc_substeps=3, kinetic_method='hessian')
FAST = dict(burn_in_chunk=5, min_burn_in=10, max_burn_in=40)
ENERGY_COLUMNS = ['context', 'n_up', 'n_down', 'N', 'lam', 'omega', 'energy', 'energy_err', 'energy_var', 'energy_tau',
                  'energy_rhat', 'energy_n', 'energy_ess', 'energy_per_electron', 'energy_per_electron_err',
                  'interaction', 'interaction_err', 'interaction_per_electron', 'interaction_per_electron_err',
                  'kinetic', 'kinetic_err', 'kinetic_per_electron', 'kinetic_per_electron_err', 'trap', 'trap_err',
                  'trap_per_electron', 'trap_per_electron_err',
                  'burn_in_steps', 'equilibrated', 'carried_over', 'acceptance', 'num_walkers', 'num_steps',
                  'seconds', 'density_outside']


def _density_integral(density, ctx_label):
    rows = density[density['context'] == ctx_label]
    return float((rows['density'] * rows['bin_area']).sum())


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')  # R-hat of constant traces
def test_exact_two_electron_state_pair_distribution_and_slice():
    """λ = 0, N = 2 singlet: both electrons in φ0 ∝ e^{-r²/2}, so r1 − r2 is Gaussian with unit variance
    per axis: the pair distribution is e^{-d²/2}/(2π) per unit area; E = 2 exactly."""
    dot = QuantumDot()
    ctx = dot.context(1, 1, lam=0.0)
    sweep = Sweep(make_noninteracting_dot(), dot, CONFIG, density_bins=24, pair_bins=12, slice_bins=10)
    m = sweep.measure({}, ctx, jax.random.PRNGKey(0), num_walkers=128, num_steps=60, extent=4.0, r_max=4.0, **FAST)
    assert m.row['energy'] == pytest.approx(2.0, abs=1e-10) and m.row['energy_err'] < 1e-10
    outside = m.row['density_outside']
    assert _density_integral(m.density, ctx.label()) + outside * 2 == pytest.approx(2.0, abs=1e-10)
    assert outside < 1e-3
    pairs = m.pair_correlation[m.pair_correlation['channel'] == 'opposite']
    assert set(m.pair_correlation['channel']) == {'all', 'opposite'}  # one electron per spin: no same-spin pairs
    exact = np.exp(-pairs['r'].to_numpy()**2 / 2) / (2 * np.pi)
    counts = pairs['pair_density'].to_numpy() * np.pi * np.diff(np.linspace(0, 4.0, 13)**2) * 128 * 60
    good = counts > 200
    # Bin averages of a smooth curve (curvature bias ≪ noise at 12 bins) with MCMC-correlated counts:
    # relative error ~ sqrt(τ / counts); 6 / sqrt(counts) allows τ up to ~4 at 3σ.
    np.testing.assert_array_less(np.abs(pairs['g'].to_numpy()[good] / exact[good] - 1), 6 / np.sqrt(counts[good]))
    # Slice: moving electron 0 with electron 1 fixed gives |ψ|² ∝ e^{-|r|²}, positive sign.
    s = m.wavefunction_slice
    r2 = s['x']**2 + s['y']**2
    np.testing.assert_allclose(s['log_abs_psi'] + r2 / 2, (s['log_abs_psi'] + r2 / 2).iloc[0], atol=1e-10)
    assert (s['sign'] == 1).all() and (s['phase'] == 0).all() and s['psi2'].max() == pytest.approx(1.0)
    assert m.slice_electrons['moved'].tolist() == [True, False]


def test_sweep_of_tiny_trained_model_tables_and_files(tmp_path):
    dot = QuantumDot()
    vmc = VMC(make_fermi_sets(TINY), dot, [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=3.0)],
              optax.adam(1e-3), VMCConfig(num_walkers=16, mcmc_substeps=3, kinetic_method='hessian'))
    state = train(vmc, vmc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 2, print_fn=None)
    contexts = [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=6.5), dot.context(2, 1, lam=1.0)]  # unseen λ, N
    sweep = Sweep(vmc.wavefunction, dot, vmc.config, density_bins=16, pair_bins=8, slice_bins=6)
    result = sweep.run(state.params, contexts, jax.random.PRNGKey(2), num_walkers=16, num_steps=10, **FAST)
    e = result.energies
    assert list(e.columns) == ENERGY_COLUMNS and len(e) == 3
    assert e['carried_over'].tolist() == [False, True, False]  # λ = 6.5 starts from the λ = 1 walkers
    numeric = e.drop(columns=['context']).astype(float)
    assert np.all(np.isfinite(numeric.to_numpy()))
    np.testing.assert_allclose(e['energy'], e['kinetic'] + e['trap'] + e['interaction'], rtol=1e-10)
    for ctx in contexts:
        total = _density_integral(result.density, ctx.label())
        outside = float(e.loc[e['context'] == ctx.label(), 'density_outside'].iloc[0])
        assert total + outside * ctx.n_electrons == pytest.approx(ctx.n_electrons, rel=1e-10)
    assert list(result.density.columns[-4:]) == ['x', 'y', 'density', 'bin_area']
    g = result.pair_correlation
    assert list(g.columns[-4:]) == ['channel', 'r', 'pair_density', 'g']
    assert set(g[g['N'] == 3]['channel']) == {'all', 'same', 'opposite'}
    for frame in (result.density, g, result.wavefunction_slice):
        assert np.all(np.isfinite(frame.select_dtypes('number').drop(columns=['log_abs_psi'], errors='ignore')))
    assert len(result.wavefunction_slice) == 3 * 36 and set(result.wavefunction_slice['sign']) <= {-1.0, 1.0}
    paths = result.save(str(tmp_path / 'sweep'))
    assert sorted(os.path.basename(p) for p in paths.values()) == [
        'density.csv', 'energies.csv', 'pair_correlation.csv', 'slice_electrons.csv', 'traces.nc',
        'wavefunction_slice.csv']
    import arviz
    traces = arviz.from_netcdf(paths['traces'])
    assert dict(traces.posterior['energy'].sizes) == {'chain': 16, 'draw': 10, 'context': 3}
    np.testing.assert_allclose(traces.posterior['lam'].values, [1.0, 6.5, 1.0])
    np.testing.assert_allclose(traces.posterior['energy'].mean(('chain', 'draw')).values, e['energy'], rtol=1e-12)
    plotting.plot_sweep_energies(e, str(tmp_path / 'e.png'))
    plotting.plot_density_maps(result.density, str(tmp_path / 'd.png'))
    plotting.plot_pair_correlation(g, str(tmp_path / 'g.png'))
    plotting.plot_wavefunction_slices(result.wavefunction_slice, result.slice_electrons, str(tmp_path / 's.png'))
    assert all((tmp_path / n).stat().st_size > 0 for n in ('e.png', 'd.png', 'g.png', 's.png'))
    with pytest.raises(ValueError, match='exactly the parameters'):  # an unknown context name
        sweep.measure(state.params, dot.context(1, 1).__class__.make(1, 1, lamda=1.0, omega=1.0),
                      jax.random.PRNGKey(0))


def test_periodic_sweep_density_and_pair_normalization():
    """A free-electron determinant in the moiré supercell: the density covers the cell and integrates
    to N exactly, g(r) is measured up to the inscribed radius, and the same-spin hole is seen."""
    system = MoireSystem(coulomb=False)
    ctx = system.context(6, 0, lam=0.5)
    wf = ansatz.make_plane_wave_slater(system.network_lattice(6), allow_open_shell=True)
    sweep = Sweep(wf, system, CONFIG, density_bins=12, pair_bins=10, slice_bins=6)
    m = sweep.measure({}, ctx, jax.random.PRNGKey(0), num_walkers=32, num_steps=20, **FAST)
    assert m.row['density_outside'] == 0.0
    assert _density_integral(m.density, ctx.label()) == pytest.approx(6.0, rel=1e-12)
    cell = system.supercell(6)
    assert m.pair_correlation['r'].max() < inscribed_radius(cell)
    shells = np.pi * np.diff(np.linspace(0, inscribed_radius(cell), 11)**2)
    pairs_inside = float((m.pair_correlation['pair_density'] * np.tile(shells, 2)).sum()) / 2  # all + same
    assert 0 < pairs_inside <= 30 + 1e-9  # ordered pairs within r_max, at most N(N − 1)
    same = m.pair_correlation[m.pair_correlation['channel'] == 'same']
    assert same['g'].iloc[0] < 0.3 < same['g'].iloc[-3:].mean()  # Pauli hole at r → 0, ~1 far away
    assert np.isfinite(m.wavefunction_slice['psi2']).all()


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')  # R-hat of constant traces
def test_observables_hook_records_per_walker_traces_with_error_bars():
    """``Sweep(observables=fn)``: fn(x, ctx) runs on every walker at every measurement draw; the exact λ = 0,
    N = 2 state has ⟨r₁²⟩ = 1 (|φ0|² ∝ e^{-r²}); traces are (walker, draw), the row has mean, blocking
    error and τ; the context's parameters reach fn traced; ``{}`` records nothing for a particle content."""
    dot = QuantumDot()

    def observables(x, ctx):
        if ctx.n_electrons != 2:
            return {}
        return {'r2_first': jnp.sum(x[0] ** 2), 'lam_seen': ctx['lam'] + 0.0 * x[0, 0], 'xy_first': x[0]}
    sweep = Sweep(make_noninteracting_dot(), dot, CONFIG, density_bins=8, pair_bins=4, slice_bins=4,
                  observables=observables)
    contexts = [dot.context(1, 1, lam=0.0), dot.context(1, 1, lam=0.5), dot.context(2, 1, lam=0.0)]
    result = sweep.run({}, contexts, jax.random.PRNGKey(3), num_walkers=64, num_steps=60, extent=4.0, **FAST)
    e = result.energies
    assert list(e.columns[:len(ENERGY_COLUMNS)]) == ENERGY_COLUMNS  # observables come after the energy columns
    assert list(e.columns[len(ENERGY_COLUMNS):]) == [
        'lam_seen', 'lam_seen_err', 'lam_seen_tau', 'r2_first', 'r2_first_err', 'r2_first_tau',
        'xy_first_0', 'xy_first_0_err', 'xy_first_0_tau', 'xy_first_1', 'xy_first_1_err', 'xy_first_1_tau']
    first = e.iloc[0]
    assert 0 < first['r2_first_err'] < 0.1 and abs(first['r2_first'] - 1.0) < 5 * first['r2_first_err']
    np.testing.assert_allclose(e['lam_seen'].iloc[:2], [0.0, 0.5])
    assert np.isnan(e['r2_first'].iloc[2])  # N = 3 recorded nothing
    traces = result.observables
    assert sorted(traces) == [c.label() for c in contexts[:2]]
    assert traces[contexts[0].label()]['r2_first'].shape == (64, 60)
    assert traces[contexts[0].label()]['xy_first'].shape == (64, 60, 2)
    with pytest.raises(ValueError, match='observables must be a function'):
        Sweep(make_noninteracting_dot(), dot, CONFIG, observables=3)
