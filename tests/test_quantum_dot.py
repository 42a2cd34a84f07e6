"""Exact and analytic checks of the 2D harmonic quantum-dot Hamiltonian and its inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ansatz
import qvmc
from hamiltonians import QuantumDot, make_local_energy, noninteracting_energy
from hamiltonians.system import make_log_psi

SMALL_CONFIG = ansatz.FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=2, hidden=8)


def _values(omega, lam):
    return {'omega': jnp.asarray(omega, jnp.float64), 'lam': jnp.asarray(lam, jnp.float64)}


def _batched_energy(log_psi, method, params, walkers, values, system=QuantumDot()):
    """Local energies ``[W]`` and components of a batch of walkers (jitted)."""
    local_energy = make_local_energy(log_psi, system.potential_components, method)
    fn = jax.jit(jax.vmap(local_energy, in_axes=(None, 0, None)))
    return fn(params, walkers, values)


@pytest.fixture(scope='module')
def fermi_sets():
    """A small randomly initialized Fermi Sets wavefunction and its parameters."""
    wf = ansatz.make_fermi_sets(SMALL_CONFIG)
    dot = QuantumDot()
    cond = dot.context_features(_values(1.0, 1.0), 2, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    params = jax.jit(wf.init, static_argnums=(3,))(jax.random.PRNGKey(1), x, cond, (2, 1), 1.0)
    return wf, params


NONINTERACTING_CASES = [
    ((1, 1), 2.0, 'folx'), ((1, 1), 2.0, 'hessian'),
    ((3, 3), 10.0, 'folx'), ((3, 3), 10.0, 'hessian'),
    ((3, 0), 5.0, 'folx'), ((3, 0), 5.0, 'hessian'),
    ((6, 0), 14.0, 'hessian'),
    ((6, 6), 28.0, 'folx'),
    ((10, 0), 30.0, 'folx'),
]


@pytest.mark.parametrize('spins,exact,method', NONINTERACTING_CASES)
def test_noninteracting_local_energy_is_exact(spins, exact, method):
    """At λ=0, ω=1 the oscillator determinant is an eigenstate: E_L ≡ Σ_shells (n+1) with zero variance."""
    dot = QuantumDot()
    ctx = dot.context(*spins, lam=0.0, omega=1.0)
    wf = ansatz.make_noninteracting_dot()
    walkers = jax.random.normal(jax.random.PRNGKey(sum(spins)), (64, sum(spins), 2))
    params = wf.init(jax.random.PRNGKey(0), walkers[0], jnp.zeros(6), spins, 0.0)
    e_loc, _ = _batched_energy(make_log_psi(wf, dot, spins), method, params, walkers, ctx.values)
    e_loc = np.asarray(e_loc)
    assert np.all(np.isfinite(e_loc))
    # Round-off of ∇² log|det A| grows with the condition number κ of the Slater blocks A (A⁻¹ enters
    # twice): the bound per walker is ε·κ²·E (random walkers reach κ ≈ 1e5 at N = 10, where the
    # error is 1e-7; measured errors stay below 1 % of the bound), plus 100 ε·E for the sums.
    labels = [ansatz.harmonic_basis.orbital_labels(n) for n in spins]
    kappa = np.ones(len(walkers))
    for (start, n), lab in zip(((0, spins[0]), (spins[0], spins[1])), labels):
        if n:
            blocks = jax.vmap(lambda x: ansatz.harmonic_basis.eigenfunctions(x[start:start + n], lab))(walkers)
            kappa = np.maximum(kappa, np.linalg.cond(np.asarray(blocks)))
    eps = np.finfo(np.float64).eps
    assert np.all(np.abs(e_loc - exact) <= exact * eps * (100 + kappa**2))
    well = kappa < 100  # zero variance where round-off cannot hide it
    assert well.sum() >= 8 and np.std(e_loc[well]) < 1e-10


@pytest.mark.parametrize('spins,exact', [((1, 1), 2.0), ((3, 3), 10.0), ((6, 6), 28.0),
                                         ((3, 0), 5.0), ((6, 0), 14.0), ((10, 0), 30.0),
                                         ((2, 0), 3.0), ((4, 1), 9.0)])
def test_noninteracting_energy_reference(spins, exact):
    """Closed-form filling of shells with n+1 orbitals at energy (n+1)ω, open shells included."""
    assert noninteracting_energy(*spins) == pytest.approx(exact, abs=1e-12)
    assert noninteracting_energy(*spins, omega=0.5) == pytest.approx(0.5 * exact, abs=1e-12)
    ctx = QuantumDot().context(*spins, lam=0.0, omega=2.0)
    assert QuantumDot().reference_noninteracting(ctx) == pytest.approx(2.0 * exact, abs=1e-12)


@pytest.mark.parametrize('method', ['folx', 'hessian'])
def test_noninteracting_local_energy_other_omega(method):
    """At ω=0.5, λ=0 the (3,3) determinant (in units of 1/√ω) has E_L ≡ 10·ω = 5 exactly."""
    dot = QuantumDot()
    omega = 0.5
    ctx = dot.context(3, 3, lam=0.0, omega=omega)
    wf = ansatz.make_noninteracting_dot()
    walkers = dot.init_walkers(jax.random.PRNGKey(3), ctx, 64)
    params = wf.init(jax.random.PRNGKey(0), walkers[0], jnp.zeros(6), (3, 3), 0.0)
    e_loc, comps = _batched_energy(make_log_psi(wf, dot, (3, 3)), method, params, walkers, ctx.values)
    e_loc = np.asarray(e_loc)
    assert np.std(e_loc) < 1e-8
    np.testing.assert_allclose(e_loc, 10.0 * omega, rtol=1e-9, atol=0)
    np.testing.assert_allclose(comps['interaction'], 0.0, atol=0)


def test_potential_components_match_numpy():
    """trap = ½ω²Σr², interaction = λ Σ_{i<j} 1/r_ij (plain numpy double loop), for one walker."""
    dot = QuantumDot()
    omega, lam = 0.6, 1.7
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2))
    potential = jax.jit(dot.potential_components)
    comps = potential(jnp.asarray(x), _values(omega, lam))
    trap = 0.5 * omega**2 * np.sum(x**2)
    interaction = 0.0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            interaction += lam / np.sqrt((x[i, 0] - x[j, 0])**2 + (x[i, 1] - x[j, 1])**2)
    assert set(comps) == {'trap', 'interaction'}
    assert float(comps['trap']) == pytest.approx(trap, rel=1e-13)
    assert float(comps['interaction']) == pytest.approx(interaction, rel=1e-13)
    single = potential(jnp.asarray(x[:1]), _values(omega, lam))
    assert float(single['interaction']) == 0.0


def test_scaling_relation(fermi_sets):
    """With ψ_ω(x) = f(√ω x): E_L^{ω,λ}[ψ_ω](x) = ω · E_L^{1,λ/√ω}[f](√ω x), term by term.

    This is H(N, ω, λ) = ω H(N, 1, λ/√ω) in oscillator length units.
    """
    wf, params = fermi_sets
    dot = QuantumDot()
    omega, lam = 0.28, 2.0
    spins = (2, 1)
    cond = dot.context_features(_values(1.0, 1.0), *spins)

    def log_psi(p, x, values):
        # f(√s x) with f the network at fixed cond and cusp coupling; 's' is a traced
        # extra entry (ignored by the potential) so both sides share one compilation.
        return wf.apply(p, jnp.sqrt(values['s']) * x, cond, spins, 1.3)[1]

    walkers = jax.random.normal(jax.random.PRNGKey(5), (4, 3, 2)) / np.sqrt(omega)
    values_a = dict(_values(omega, lam), s=jnp.asarray(omega))  # ψ_ω at (ω, λ)
    values_b = dict(_values(1.0, lam / np.sqrt(omega)), s=jnp.asarray(1.0))  # f at (1, λ/√ω)
    local_energy = make_local_energy(log_psi, dot.potential_components, 'hessian')
    fn = jax.jit(jax.vmap(local_energy, in_axes=(None, 0, None)))
    e_a, comps_a = fn(params, walkers, values_a)
    e_b, comps_b = fn(params, np.sqrt(omega) * walkers, values_b)
    np.testing.assert_allclose(e_a, omega * np.asarray(e_b), rtol=1e-9)
    for name in ('kinetic', 'trap', 'interaction'):
        np.testing.assert_allclose(comps_a[name], omega * np.asarray(comps_b[name]), rtol=1e-9, atol=1e-12)
    assert np.all(np.asarray(comps_a['interaction']) > 0)


@pytest.mark.parametrize('method', ['folx', 'hessian'])
def test_two_electron_exact_state(method):
    """ψ = (1 + r12) exp(-(r1² + r2²)/2) is the exact singlet ground state at ω=1, λ=1 with E = 3."""
    dot = QuantumDot()
    ctx = dot.context(1, 1, lam=1.0, omega=1.0)

    def log_psi(params, x, values):
        r12 = jnp.sqrt(jnp.sum((x[0] - x[1])**2))
        return jnp.log1p(r12) - 0.5 * jnp.sum(x**2)

    walkers = jax.random.normal(jax.random.PRNGKey(7), (32, 2, 2))
    e_loc, _ = _batched_energy(log_psi, method, None, walkers, ctx.values)
    np.testing.assert_allclose(e_loc, 3.0, rtol=1e-9, atol=0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(n_up=3, n_down=3, omega=0.0), 'omega'),
    (dict(n_up=3, n_down=3, omega=-1.0), 'omega'),
    (dict(n_up=3, n_down=3, lam=-0.5), 'lam'),
    (dict(n_up=-1, n_down=3), 'n_up'),
    (dict(n_up=3, n_down=-1), 'n_down'),
    (dict(n_up=0, n_down=0), 'electron'),
    (dict(n_up=2.5, n_down=0), 'integer'),
    (dict(n_up=31, n_down=0), 'max_electrons'),
])
def test_bad_context_raises(kwargs, match):
    """Invalid quantum-dot contexts are rejected with a ValueError naming the problem."""
    with pytest.raises(ValueError, match=match):
        QuantumDot().context(**kwargs)


def test_context_parameters_are_described():
    """``lam`` keeps its key but says what it is: the Coulomb strength of the dot, the moiré depth of the
    moiré system; descriptions name every parameter, feed the error messages and the axis labels."""
    from hamiltonians import Context, MoireSystem, describe_parameters, parameter_label
    dot, moire = QuantumDot(), MoireSystem()
    assert tuple(dot.parameters) == dot.param_names == ('lam', 'omega') and tuple(moire.parameters) == ('lam',)
    assert parameter_label(dot, 'lam') == 'Coulomb strength λ' and parameter_label(dot, 'omega') == 'trap frequency ω'
    assert parameter_label(moire, 'lam') == 'moiré depth λ' and parameter_label(moire, 'x') == 'x'
    with pytest.raises(ValueError, match='Coulomb strength λ'):
        dot.context(1, 1, lam=-1.0)
    with pytest.raises(ValueError, match='moiré depth λ'):
        moire.context(6, lam=-1.0)
    with pytest.raises(ValueError, match=r"exactly the parameters \('lam', 'omega'\) \(lam: Coulomb strength λ .*; "
                                         r'omega: trap frequency ω'):
        dot.validate(Context.make(1, 1, lam=1.0))
    assert describe_parameters(moire).startswith('lam: moiré depth λ (')
    with pytest.raises(TypeError):
        dot.parameters['lam'] = 'changed'  # read-only


def test_bad_walkers_and_sizes_raise():
    """Wrong walker shape, zero walkers and bad configs raise ValueError with a message."""
    dot = QuantumDot()
    ctx = dot.context(3, 3, lam=1.0)
    with pytest.raises(ValueError, match='shape'):
        dot.validate_walkers(np.zeros((8, 5, 2)), ctx)
    with pytest.raises(ValueError, match='shape'):
        dot.validate_walkers(np.zeros((8, 6, 3)), ctx)
    dot.validate_walkers(np.zeros((8, 6, 2)), ctx)  # the right shape passes
    with pytest.raises(ValueError, match='num_walkers'):
        dot.init_walkers(jax.random.PRNGKey(0), ctx, 0)
    with pytest.raises(ValueError, match='num_walkers'):
        qvmc.VMCConfig(num_walkers=0)
    with pytest.raises(ValueError, match='divisible'):
        ansatz.FermiSetsConfig(width=10, num_heads=4)


def test_wavefunction_rejects_wrong_particle_number(fermi_sets):
    """apply() with a walker whose N does not match spins raises ValueError before tracing."""
    wf, params = fermi_sets
    cond = jnp.zeros(6)
    for n in (2, 4):
        with pytest.raises(ValueError, match='walker'):
            wf.apply(params, jnp.zeros((n, 2)), cond, (2, 1), 1.0)
    ni = ansatz.make_noninteracting_dot()
    with pytest.raises(ValueError, match='walker'):
        ni.apply({}, jnp.zeros((5, 2)), cond, (3, 3), 0.0)


def test_init_walkers_shape_and_permutation_invariant_potential():
    """init_walkers returns [W, N, 2]; the potential is invariant under relabelling electrons."""
    dot = QuantumDot()
    ctx = dot.context(2, 2, lam=1.5, omega=0.7)
    walkers = dot.init_walkers(jax.random.PRNGKey(0), ctx, 3)
    assert walkers.shape == (3, 4, 2)
    perms = np.array(list(itertools.permutations(range(4))))  # [24, 4]
    permuted = walkers[0][perms]  # [24, 4, 2]
    comps = jax.jit(jax.vmap(dot.potential_components, in_axes=(0, None)))(permuted, ctx.values)
    for name, value in comps.items():
        np.testing.assert_allclose(value, value[0], rtol=1e-13)
