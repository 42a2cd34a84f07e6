"""Registry ansätze (QERNEL, PsiFormer, Slater–Jastrow, ...): symmetry, periodicity, Laplacian, training, counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ansatz import features
from ansatz.fermi_sets import FermiSetsConfig
from ansatz.jastrow import cusp_jastrow
from ansatz.param_count import count_parameters, parameter_report
from ansatz.psiformer import PsiFormerConfig
from ansatz.qernel import QernelConfig
from ansatz.registry import ANSATZ_NAMES, make_ansatz
from ansatz.slater_jastrow import SlaterJastrowConfig
from hamiltonians import QuantumDot, make_kinetic_energy
from qvmc.config import VMCConfig
from qvmc.vmc import VMC

_SJ = SlaterJastrowConfig(hidden=6, num_layers=1, num_determinants=2, max_orbitals=3, jastrow_hidden=4,
                          backflow_hidden=4, num_kvecs=2)
TINY = {
    'fermi_sets': FermiSetsConfig(width=4, num_layers=1, num_heads=2, num_determinants=2, hidden=4),
    'qernel': QernelConfig(width=4, num_layers=1, num_heads=2, num_kv_heads=1, num_experts=2, expert_hidden=4,
                           num_determinants=2, max_orbitals=3, pair_hidden=3, num_kvecs=2),
    'psiformer': PsiFormerConfig(width=4, num_layers=1, num_heads=2, mlp_hidden=4, num_determinants=2,
                                 max_orbitals=3, num_kvecs=2),
    'slater_jastrow': _SJ,
    'backflow': _SJ,
    'single_determinant': _SJ,
}
PERIODIC_NAMES = [name for name in ANSATZ_NAMES if name != 'fermi_sets']
SIDE = 2.5


def triangular_lattice(n_electrons):
    """A small triangular supercell (rows = lattice vectors), the same for every N here."""
    del n_electrons
    return SIDE * np.array([[1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]])


def _swap(x, i, j):
    return x.at[np.array([i, j])].set(x[np.array([j, i])])


def _build(name, lattice=None, spins=(2, 1)):
    """Tiny wavefunction, its parameters (initialized at ``spins``), and a batched jitted apply."""
    wf = make_ansatz(name, TINY[name], lattice)
    cond = jnp.linspace(0.1, 0.6, 6)
    x = jax.random.normal(jax.random.PRNGKey(0), (sum(spins), 2))
    params = wf.init(jax.random.PRNGKey(1), x, cond, spins, 1.0)
    batched = jax.jit(jax.vmap(wf.apply, in_axes=(None, 0, None, None, None)), static_argnums=(3,))
    return wf, params, cond, batched


@pytest.mark.parametrize('name', ANSATZ_NAMES)
def test_antisymmetric_under_same_spin_exchange(name):
    """For spins (2, 1) and (2, 2) (one parameter set), same-spin swaps flip the sign and keep log|ψ|."""
    _, params, cond, batched = _build(name)
    for spins, pairs in (((2, 1), [(0, 1)]), ((2, 2), [(0, 1), (2, 3)])):
        x = 1.3 * jax.random.normal(jax.random.PRNGKey(sum(spins)), (sum(spins), 2))
        sign, logabs = batched(params, jnp.stack([x] + [_swap(x, i, j) for i, j in pairs]), cond, spins, 1.0)
        sign, logabs = np.asarray(sign), np.asarray(logabs)
        assert np.all(np.isfinite(logabs)) and abs(sign[0]) == 1.0
        np.testing.assert_array_equal(sign[1:], -sign[0])
        np.testing.assert_allclose(logabs[1:], logabs[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize('name', PERIODIC_NAMES)
def test_periodic_under_single_electron_lattice_translation(name):
    """On a triangular supercell ψ is unchanged when any one electron moves by a lattice vector."""
    spins = (2, 2)
    _, params, cond, batched = _build(name, triangular_lattice, spins)
    a1, a2 = triangular_lattice(4)
    s = jax.random.uniform(jax.random.PRNGKey(7), (4, 2))
    x = s @ jnp.asarray(triangular_lattice(4))
    moved = [x.at[0].add(a1), x.at[1].add(-a2), x.at[2].add(a1 - 2.0 * a2), x.at[3].add(3.0 * a1 + a2)]
    sign, logabs = batched(params, jnp.stack([x] + moved + [_swap(x, 2, 3)]), cond, spins, 1.0)
    sign, logabs = np.asarray(sign), np.asarray(logabs)
    assert np.all(np.isfinite(logabs))
    np.testing.assert_array_equal(sign[1:5], sign[0])
    np.testing.assert_allclose(logabs[1:], logabs[0], rtol=0, atol=1e-10)
    assert sign[5] == -sign[0]


@pytest.mark.parametrize('name', ['qernel', 'psiformer'])
@pytest.mark.parametrize('periodic', [False, True], ids=['open', 'periodic'])
def test_forward_laplacian_matches_hessian(name, periodic):
    """folx's forward-Laplacian kinetic energy, dense and with sparse Jacobians, equals the Hessian-loop one
    (float64, rtol 1e-8)."""
    spins = (2, 1)
    wf, params, cond, _ = _build(name, triangular_lattice if periodic else None, spins)
    log_psi = lambda y: wf.apply(params, y, cond, spins, 1.0)[1]
    x = 1.2 * jax.random.normal(jax.random.PRNGKey(3), (3, 2))
    folx_ke = float(jax.jit(make_kinetic_energy(log_psi, 'folx'))(x))
    sparse_ke = float(jax.jit(jax.vmap(make_kinetic_energy(log_psi, 'folx', sparsity_threshold=8)))(x[None])[0])
    hessian_ke = float(jax.jit(make_kinetic_energy(log_psi, 'hessian'))(x))
    assert np.isfinite(folx_ke)
    np.testing.assert_allclose(folx_ke, hessian_ke, rtol=1e-8)
    np.testing.assert_allclose(sparse_ke, hessian_ke, rtol=1e-8)  # folx's sparse Jacobians are exact too


def test_bad_configs_raise_value_error():
    """Configs that cannot build a network fail at construction with a message naming the field."""
    with pytest.raises(ValueError, match='divisible by num_heads'):
        QernelConfig(width=10, num_heads=4)
    with pytest.raises(ValueError, match='num_kv_heads'):
        QernelConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match='num_experts'):
        QernelConfig(num_experts=0)
    with pytest.raises(ValueError, match='activation_exponent'):
        QernelConfig(activation_exponent=2.0)
    with pytest.raises(ValueError, match='divisible by num_heads'):
        PsiFormerConfig(width=6, num_heads=4)
    with pytest.raises(ValueError, match='hidden'):
        SlaterJastrowConfig(hidden=0)
    with pytest.raises(ValueError, match='Unknown ansatz'):
        make_ansatz('ferminet')
    with pytest.raises(ValueError, match='open geometry only'):
        make_ansatz('fermi_sets', lattice=triangular_lattice)
    with pytest.raises(ValueError, match='QernelConfig'):
        make_ansatz('qernel', PsiFormerConfig())
    wf = make_ansatz('single_determinant', _SJ)
    with pytest.raises(ValueError, match='max_orbitals'):
        wf.init(jax.random.PRNGKey(0), jnp.zeros((4, 2)), jnp.zeros(6), (4, 0), 0.0)
    with pytest.raises(ValueError, match='lattice'):
        features.resolve_lattice(lambda n: np.eye(3), 4, 2)


def test_periodic_features_and_distance():
    """Reciprocal vectors are dual to the lattice; the periodic distance is |Δr| near 0 and periodic."""
    lattice = triangular_lattice(4)
    np.testing.assert_allclose(features.reciprocal(lattice) @ lattice.T, 2 * np.pi * np.eye(2), atol=1e-13)
    m = features.reciprocal_coefficients(lattice, 3)
    np.testing.assert_allclose(np.linalg.norm(m @ features.reciprocal(lattice), axis=-1),
                               4 * np.pi / (np.sqrt(3.0) * SIDE), rtol=1e-12)  # the first hexagonal shell
    dr = jnp.asarray([[1e-3, -2e-3], [0.3, 0.1]])
    ds = features.fractional(dr, lattice)
    d2 = np.asarray(features.periodic_distance_sq(ds, lattice))
    np.testing.assert_allclose(d2[0], float(jnp.sum(dr[0]**2)), rtol=1e-5)
    shifted = np.asarray(features.periodic_distance_sq(ds + jnp.asarray([[2.0, -1.0], [-1.0, 3.0]]), lattice))
    np.testing.assert_allclose(shifted, d2, rtol=1e-12)
    grid = jax.random.uniform(jax.random.PRNGKey(0), (200, 2), minval=0.02, maxval=0.98)
    assert np.all(np.asarray(features.periodic_distance_sq(grid, lattice)) > 0)


@pytest.mark.parametrize('periodic', [False, True], ids=['open', 'periodic'])
def test_cusp_slope_is_exact(periodic):
    """d log ψ_cusp / dr at coincidence is coupling (↑↓) or coupling/3 (↑↑), also with the periodic distance."""
    lattice = triangular_lattice(2) if periodic else None
    direction = jnp.asarray([0.6, 0.8])

    def factor(r, spins):
        x = jnp.stack([jnp.asarray([0.3, -0.2]), jnp.asarray([0.3, -0.2]) + r * direction])
        return float(cusp_jastrow(x, spins, 2.0, jnp.zeros(2), lattice))
    for spins, expected in (((1, 1), 2.0), ((2, 0), 2.0 / 3.0)):
        slope = (factor(2e-6, spins) - factor(1e-6, spins)) / 1e-6
        np.testing.assert_allclose(slope, expected, rtol=1e-5)


@pytest.mark.parametrize('name', ANSATZ_NAMES)
def test_ansatz_trains_on_a_small_dot(name):
    """Three Adam steps of VMC on a (1, 1) dot at λ = 1 give finite energies and accepted updates."""
    dot = QuantumDot()
    vmc = VMC(make_ansatz(name, TINY[name]), dot, [dot.context(1, 1, lam=1.0)], optax.adam(1e-3),
              VMCConfig(num_walkers=16, mcmc_substeps=2, kinetic_method='hessian'))
    state = vmc.init(jax.random.PRNGKey(0))
    for t in range(3):
        state, info = vmc.step(jax.random.PRNGKey(t + 1), state)
        assert np.isfinite(info.loss) and info.accepted
    assert state.num_rejected == 0 and state.step == 3


@pytest.mark.parametrize('name, config_cls', [('qernel', QernelConfig), ('psiformer', PsiFormerConfig)])
def test_parameter_report_of_default_configs(name, config_cls):
    """Components sum to the total; FiLM's share is in (0, 1) and equals the parameters dropped
    when the same network is built without conditioning."""
    x, cond = jnp.zeros((6, 2)), jnp.zeros(6)

    def shapes(config):
        wf = make_ansatz(name, config)
        return jax.eval_shape(lambda k, y: wf.init(k, y, cond, (3, 3), 1.0), jax.random.PRNGKey(0), x)

    report = parameter_report(shapes(config_cls()))
    assert sum(report['components'].values()) == report['total']
    assert 0.0 < report['film_fraction'] < 1.0
    width = config_cls().width
    assert report['film'] == 3 * (6 + 1) * 2 * width  # 3 blocks, each Linear [C=6, 2F] with bias
    unconditioned = count_parameters(shapes(dataclasses.replace(config_cls(), conditioned=False)))
    assert unconditioned == report['total'] - report['film']
    assert report['film_overhead'] == pytest.approx(report['film'] / unconditioned)
    expected = {'attention', 'orbitals', 'film', 'norm', 'embedding', 'jastrow'}
    assert expected <= set(report['components'])
    assert ('moe' in report['components']) == (name == 'qernel')


def _float64_avals(jaxpr):
    """Every strongly typed float64 value computed in a closed jaxpr and its sub-jaxprs (weakly
    typed Python scalars take the dtype of what they meet and do not count)."""
    found = []

    def walk(jp):
        for eqn in jp.eqns:
            found.extend((str(eqn.primitive), v.aval) for v in eqn.outvars
                         if getattr(v.aval, 'dtype', None) == jnp.float64 and not v.aval.weak_type)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize('geometry', ['open', 'periodic'])
@pytest.mark.parametrize('name', ANSATZ_NAMES)
def test_float32_network_stays_float32_with_x64_on(name, geometry):
    """A float32 network must compute in float32 throughout (no float64 constant promoting the
    stream: that made the 'float32' QERNEL run in float64 at 1/3 of the speed)."""
    if geometry == 'periodic' and name not in PERIODIC_NAMES:
        pytest.skip('open geometry only')
    assert jax.config.read('jax_enable_x64')
    wf, params, cond, _ = _build(name, triangular_lattice if geometry == 'periodic' else None)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 2), jnp.float32)
    log_psi = lambda p, x, c: wf.apply(p, x, c, (2, 1), jnp.float32(1.0))[1]  # noqa: E731
    for fn in (log_psi, jax.grad(log_psi)):
        promoted = _float64_avals(jax.make_jaxpr(fn)(params32, x, cond.astype(jnp.float32)))
        assert not promoted, f'{name} ({geometry}) computes in float64: {promoted[:5]}'
