"""Per-context walker blocks: splitting, re-assignment after a context switch, burn-in until equilibrated."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import samplers
from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from qvmc import VMCConfig
from samplers.stats import compute_stats
from qvmc.vmc import VMC


def test_block_size_and_bad_split():
    assert samplers.block_size(256, 4) == 64
    with pytest.raises(ValueError, match='cannot be split into 3 equal context blocks'):
        samplers.block_size(256, 3)
    with pytest.raises(ValueError, match='num_blocks'):
        samplers.block_size(256, 0)


def test_reassign_carries_walkers_by_particle_content():
    dot = QuantumDot()
    old = [dot.context(1, 1, lam=0.0), dot.context(1, 1, lam=2.0)]
    chains = [samplers.ChainState(jnp.full((8, 2, 2), float(i)), jnp.asarray(0.1 * (i + 1))) for i in range(2)]
    new = [dot.context(1, 1, lam=5.0), dot.context(2, 1, lam=0.0), dot.context(1, 1, lam=0.0)]
    blocks, assignment = samplers.reassign(chains, old, new, 4, dot.init_walkers, jax.random.PRNGKey(0), 0.5)
    assert assignment.source == (0, -1, 1)
    assert assignment.needs_burn_in == (True, True, True)
    assert [b.walkers.shape for b in blocks] == [(4, 2, 2), (4, 3, 2), (4, 2, 2)]
    np.testing.assert_array_equal(blocks[0].walkers, 0.0)  # kept block 0 (same slot, same spins)
    np.testing.assert_array_equal(blocks[2].walkers, 1.0)  # the remaining (1, 1) block
    assert float(blocks[2].step_size) == pytest.approx(0.2) and float(blocks[1].step_size) == 0.5
    # Growing a block duplicates walkers; an unchanged context needs no burn-in.
    blocks, assignment = samplers.reassign(chains, old, old, 16, dot.init_walkers, jax.random.PRNGKey(0), 0.5)
    assert assignment.needs_burn_in == (False, False) and blocks[1].walkers.shape == (16, 2, 2)
    # More blocks of one particle content than before (a 2 -> 4 stage): the extra blocks start
    # from walkers drawn from an already used block of that content, not from fresh ones.
    new = [dot.context(1, 1, lam=lam) for lam in (1.0, 3.0, 5.0, 7.0)]
    blocks, assignment = samplers.reassign(chains, old, new, 8, dot.init_walkers, jax.random.PRNGKey(0), 0.5)
    assert assignment.source == (0, 1, 0, 0) and assignment.needs_burn_in == (True,) * 4
    np.testing.assert_array_equal(blocks[2].walkers, 0.0)
    assert float(blocks[3].step_size) == pytest.approx(0.1)


def test_validate_chain_rejects_bad_input():
    with pytest.raises(ValueError, match='non-finite'):
        samplers.validate_chain(samplers.ChainState(jnp.full((4, 2, 2), jnp.nan), jnp.asarray(0.1)), 2)
    with pytest.raises(ValueError, match='step_size'):
        samplers.validate_chain(samplers.ChainState(jnp.zeros((4, 2, 2)), jnp.asarray(0.0)), 2)
    with pytest.raises(ValueError, match='shape'):
        samplers.validate_chain(samplers.ChainState(jnp.zeros((4, 3, 2)), jnp.asarray(0.1)), 2)


def test_burn_in_runs_until_the_check_passes():
    """A synthetic relaxing trace: burn-in continues through every failing window and stops at
    the first passing one; a trace that never relaxes runs to the cap."""
    rng = np.random.default_rng(0)

    def make_run(relax_time):
        def run_chunk(state, start, n):
            t = np.arange(start, start + n)
            trace = 5.0 * np.exp(-t / relax_time)[None, :] + rng.normal(size=(64, n))
            return state + n, trace
        return run_chunk

    state, report = samplers.burn_in(make_run(15.0), 0, chunk=10, min_steps=20, max_steps=400)
    assert report.equilibrated and state == report.steps
    assert report.checks[-1].equilibrated and not any(c.equilibrated for c in report.checks[:-1])
    assert report.steps >= 40  # the first windows (strong drift) must fail
    _, report = samplers.burn_in(make_run(1e9), 0, chunk=10, min_steps=20, max_steps=60)
    _, stuck = samplers.burn_in(lambda s, start, n: (s, 5.0 - 0.1 * np.arange(start, start + n)[None, :]
                                                     + 0.01 * rng.normal(size=(64, n))), 0,
                                chunk=10, min_steps=20, max_steps=60)
    assert not stuck.equilibrated and stuck.steps == 60
    with pytest.raises(ValueError, match='chunk'):
        samplers.burn_in(make_run(1.0), 0, chunk=2)


@pytest.mark.slow  # statistical (energy after burn-in vs a 300-step run), ~85 s cold; tests/test_schedule.py
# covers burn-in at block switches in the fast run
def test_context_switch_in_quantum_dot_run_burns_in_until_equilibrated():
    """Walkers equilibrated at ω = 16 are switched to ω = 1 (four times wider) and, to be far
    from equilibrium, all put at one compact configuration: the first window is flagged, burn-in stops only once the check passes, and the energy measured
    right after burn-in agrees with a long run."""
    dot = QuantumDot()
    wf = make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8))
    config = VMCConfig(num_walkers=128, mcmc_substeps=2)
    vmc = VMC(wf, dot, [dot.context(2, 1, lam=1.0, omega=16.0)], optax.adam(1e-3), config)
    state = vmc.init(jax.random.PRNGKey(0))
    state, reports = vmc.equilibrate(jax.random.PRNGKey(1), state, chunk=5, min_steps=10)
    assert reports[0].equilibrated

    with pytest.raises(ValueError, match='cannot be split'):
        vmc.reassign(jax.random.PRNGKey(2), state, [dot.context(2, 1, lam=1.0)] * 3)
    target = dot.context(2, 1, lam=1.0, omega=1.0)
    state, assignment = vmc.reassign(jax.random.PRNGKey(2), state, [target])
    assert assignment.needs_burn_in == (True,) and state.contexts == (target,)
    walkers = state.chains[0].walkers  # far from equilibrium: every walker at one compact configuration
    state = state._replace(chains=(state.chains[0]._replace(walkers=jnp.broadcast_to(0.1 * walkers[0], walkers.shape)),))
    state, reports = vmc.equilibrate(jax.random.PRNGKey(3), state, chunk=5, min_steps=10, max_steps=400)
    report = reports[0]
    assert report.equilibrated and report.checks[-1].equilibrated
    assert not any(c.equilibrated for c in report.checks[:-1])
    assert not report.checks[0].equilibrated, report  # the window right after the switch is flagged
    assert report.steps == 10 + 5 * (len(report.checks) - 1)

    run = vmc.runner(target.spins)  # the measurement engine's runner of this particle content
    args = (state.params, state.values[0])
    chain, (e_after, _) = run(jax.random.PRNGKey(4), state.chains[0], args, True, num_steps=20)
    _, (e_long, _) = run(jax.random.PRNGKey(5), chain, args, True, num_steps=300)
    after = compute_stats(np.asarray(e_after['energy']).T)
    long = compute_stats(np.asarray(e_long['energy']).T)
    assert abs(after.mean - long.mean) < 4 * np.hypot(after.error, long.error), (after, long)

    state, info = vmc.step(jax.random.PRNGKey(6), state)  # training continues on the new context
    assert np.isfinite(info.loss) and state.contexts == (target,)
