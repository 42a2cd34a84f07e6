"""Walker health inside the pure training step: non-finite walkers are left out of the estimates,
counted and re-seeded from healthy walkers of their block; the clip uses finite values only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ansatz import make_noninteracting_dot
from hamiltonians import QuantumDot
from qvmc import VMC, VMCConfig, natgrad
from qvmc.estimator import estimate_block, robust_clip


def test_robust_clip_ignores_non_finite_values():
    e = jnp.asarray([1.0, 2.0, 3.0, jnp.nan, jnp.inf, 100.0])
    mask = jnp.isfinite(e)
    clipped, centre = robust_clip(e, mask, 1.0)
    assert float(centre) == 2.5  # median of the four finite values
    assert np.all(np.isfinite(np.asarray(clipped)))
    assert float(clipped[5]) < 100.0  # the outlier is clipped
    est = estimate_block(e, {'kinetic': e}, jnp.asarray(0, jnp.int32), VMCConfig(clip_scale=1.0))
    assert int(est.num_bad_walkers) == 2 and abs(float(est.energy) - 26.5) < 1e-12
    assert float(est.centred[3]) == 0.0 and float(est.centred[4]) == 0.0


def test_step_reseeds_non_finite_walkers_and_keeps_exact_energy():
    """Exact λ = 0 state (E = 5 for N = 3 polarized): with 15 % of the walkers set to NaN the step
    reports E = 5 with zero variance, counts them, and hands back finite walkers; parameters get a
    finite update with Adam and with minSR."""
    dot = QuantumDot()
    ctx = dot.context(3, 0, lam=0.0)
    for tx in (optax.adam(1e-3), natgrad.minsr(1e-2, 1e-3)):
        vmc = VMC(make_noninteracting_dot(), dot, [ctx], tx, VMCConfig(num_walkers=40, mcmc_substeps=2))
        state = vmc.init(jax.random.PRNGKey(0))
        walkers = state.chains[0].walkers.at[:6].set(jnp.nan)
        state = state._replace(chains=(state.chains[0]._replace(walkers=walkers),))
        new_state, info = vmc.step(jax.random.PRNGKey(1), state)
        stats = info.blocks[0]
        assert bool(info.accepted)
        assert int(stats.num_bad_walkers) == 6
        assert abs(float(stats.energy) - 5.0) < 1e-9 and float(stats.variance) < 1e-12
        assert np.all(np.isfinite(np.asarray(new_state.chains[0].walkers)))
        _, info = vmc.step(jax.random.PRNGKey(2), new_state)
        assert int(info.blocks[0].num_bad_walkers) == 0
