"""The equilibration check flags chains started far from equilibrium and passes stationary ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers.equilibration import check_equilibrium
from samplers.mcmc import MCMC


def _trace(x0, num_samples=60, num_substeps=1):
    mcmc = MCMC('rwm', num_warmup=0, num_samples=num_samples, num_chains=x0.shape[0], num_substeps=num_substeps,
                step_size=0.3)
    mcmc.run(jax.random.PRNGKey(1), lambda x: -0.5 * jnp.sum(x**2), x0,
             extra_fn=lambda x: {'e': jnp.sum(x**2)})
    return mcmc.get_extra_fields()['e']


def test_flags_chains_started_at_one_far_point():
    """All walkers at one point, 6σ from the mode: the first window is not equilibrated."""
    check = check_equilibrium(_trace(jnp.full((64, 1, 2), 6.0)))
    assert not check.equilibrated, check


def test_passes_chains_started_from_the_stationary_distribution():
    check = check_equilibrium(_trace(jax.random.normal(jax.random.PRNGKey(0), (64, 1, 2)), 200, 3))
    assert check.equilibrated, check


def test_constant_traces_are_equilibrated_and_bad_shapes_rejected():
    assert check_equilibrium(np.full((8, 20), 10.0)).equilibrated
    assert not check_equilibrium(np.full((8, 20), np.nan)).equilibrated
    with pytest.raises(ValueError, match='at least 8 draws'):
        check_equilibrium(np.zeros((8, 3)))
