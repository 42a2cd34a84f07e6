"""Reporting: traces -> InferenceData -> netCDF -> back with dims and coordinates, tables on disk, and the
one shared density histogram (exact counts on a known configuration, normalised to N)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import samplers.reporting
import samplers.stats
from hamiltonians import QuantumDot
from qvmc import inference, observables, reporting, sweep
from samplers.mcmc import MCMC


def _traces(rng, chains=5, draws=7):
    return {'energy': rng.normal(size=(chains, draws)), 'position': rng.normal(size=(chains, draws, 2, 3))}


def test_traces_round_trip_through_netcdf(tmp_path):
    traces = _traces(np.random.default_rng(0))
    idata = reporting.traces_to_inference_data(traces, coords={'electron': [0, 1], 'axis': ['x', 'y', 'z']},
                                               dims={'position': ['electron', 'axis']})
    path = reporting.save_inference_data(idata, str(tmp_path / 'out' / 'traces.nc'))
    back = reporting.load_inference_data(path)
    assert back.posterior['energy'].dims == ('chain', 'draw')
    assert back.posterior['position'].dims == ('chain', 'draw', 'electron', 'axis')
    assert dict(back.posterior['position'].sizes) == {'chain': 5, 'draw': 7, 'electron': 2, 'axis': 3}
    assert back.posterior['axis'].values.tolist() == ['x', 'y', 'z']
    for name, value in traces.items():
        np.testing.assert_array_equal(back.posterior[name].values, value)


def test_traces_must_share_chain_and_draw():
    with pytest.raises(ValueError, match='same chain and draw'):
        reporting.traces_to_inference_data({'a': np.zeros((2, 3)), 'b': np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r'chain, draw'):
        reporting.traces_to_inference_data({'a': np.zeros(3)})
    with pytest.raises(ValueError, match='at least one'):
        reporting.traces_to_inference_data({})


def test_context_traces_and_tables_on_disk(tmp_path):
    dot = QuantumDot()
    contexts = [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=2.5), dot.context(2, 1, lam=1.0)]
    rng = np.random.default_rng(1)
    traces = [{'energy': rng.normal(size=(4, 6)), 'kinetic': rng.normal(size=(4, 6))} for _ in contexts]
    idata = reporting.context_traces_to_arviz(traces, contexts)
    assert idata.posterior['energy'].dims == ('chain', 'draw', 'context')
    assert idata.posterior['context'].values.tolist() == [c.label() for c in contexts]
    np.testing.assert_allclose(idata.posterior['lam'].values, [1.0, 2.5, 1.0])
    np.testing.assert_allclose(idata.posterior['kinetic'].values[..., 1], traces[1]['kinetic'])
    assert reporting.context_traces_to_arviz(traces[:2] + [{'energy': np.zeros((4, 5)), 'kinetic': np.zeros((4, 5))}],
                                             contexts) is None  # not stackable
    table = reporting.labelled(pd.DataFrame({'x': [0.5, 1.5]}), {'context': 'a', 'lam': 1.0})
    assert list(table.columns) == ['context', 'lam', 'x'] and table['lam'].tolist() == [1.0, 1.0]
    paths = reporting.save_tables(str(tmp_path / 'run'), {'density': table}, idata)
    assert sorted(os.path.basename(p) for p in paths.values()) == ['density.csv', 'traces.nc']
    pd.testing.assert_frame_equal(pd.read_csv(paths['density']), table)
    back = reporting.load_inference_data(paths['traces'])
    np.testing.assert_allclose(back.posterior['energy'].values, idata.posterior['energy'].values)


def test_one_implementation_of_each_conversion():
    assert samplers.stats.stats_frame is samplers.reporting.stats_frame is reporting.stats_frame
    assert sweep.traces_to_arviz is reporting.traces_to_arviz
    assert inference.stats_frame is reporting.stats_frame
    mcmc = MCMC('rwm', num_warmup=0, num_samples=3, num_chains=4, num_substeps=1)
    mcmc.run(jax.random.PRNGKey(0), lambda x: -0.5 * jnp.sum(x**2), jnp.zeros((4, 1, 2)),
             extra_fn=lambda x: {'r2': jnp.sum(x**2)})
    idata = mcmc.to_arviz()
    assert set(idata.posterior.data_vars) == {'r2'}  # acceptance is [draw]: not a trace
    assert idata.posterior['r2'].dims == ('chain', 'draw')
    np.testing.assert_array_equal(idata.posterior['r2'].values, mcmc.get_extra_fields()['r2'])


def test_density_histogram_on_a_known_configuration():
    """Open grid [-1, 1]² with 4 × 4 bins: exact bins, one electron outside, Σ ρ·area = N(1 − outside)."""
    x = jnp.array([[[0.1, -0.3], [-0.9, -0.9], [0.99, 0.99], [1.5, 0.0]],    # walker 0: last one outside
                   [[0.1, -0.3], [-0.2, 0.6], [0.6, -0.6], [-0.99, 0.99]]])  # walker 1: [W=2, N=4, D=2]
    counts = np.asarray(jax.jit(observables.density_counts, static_argnums=1)(x, 4, 1.0))
    expected = np.zeros(17, np.int64)
    for b in (9, 0, 15, 9, 7, 12, 3):  # bin i·4 + j of x-bin i, y-bin j
        expected[b] += 1
    expected[16] = 1
    np.testing.assert_array_equal(counts, expected)
    density, area, outside = observables.normalise_density(counts, 2, 4, 4, 1.0)
    assert area == pytest.approx(0.25) and outside == pytest.approx(1 / 8)
    assert float(np.sum(density) * area) == pytest.approx(4 * (1 - outside))
    centres, _ = observables.density_grid(4, 1.0)
    np.testing.assert_allclose(centres[9], [0.25, -0.25])  # the bin holding (0.1, -0.3)
    assert density[9] == pytest.approx(2 / (2 * 0.25))  # two samples of one electron in bin 9


def test_periodic_density_wraps_into_the_cell_and_integrates_to_n():
    cell = np.array([[2.0, 0.0], [1.0, np.sqrt(3.0)]])
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3, 2)) * 4.0  # far outside the cell: wrapped
    counts = observables.density_counts(x, 6, 1.0, cell)
    assert int(counts[-1]) == 0 and int(counts.sum()) == 16 * 3
    density, area, outside = observables.normalise_density(counts, 16, 3, 6, 1.0, cell)
    assert outside == 0.0 and area == pytest.approx(np.sqrt(3.0) * 2 / 36)
    assert float(np.sum(density) * area) == pytest.approx(3.0, rel=1e-12)
    with pytest.raises(ValueError, match=r'\[B·B \+ 1\]'):
        observables.normalise_density(counts[:-1], 16, 3, 6, 1.0, cell)
