"""All-electron Gaussian random-walk Metropolis over a walker ensemble, built on BlackJAX."""

from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from qvmc.types import Array, PRNGKey


class WalkerState(NamedTuple):
    """State of a walker ensemble.

    Attributes:
      position: ``[W, N, D]`` walker configurations.
      logdensity: ``[W]`` cached ``2·log|ψ|`` at ``position`` for the parameters the
        state was built with. Rebuild it with ``init`` after every parameter update.
    """
    position: Array
    logdensity: Array


class WalkerInfo(NamedTuple):
    """Per-call facts: mean acceptance over sub-steps and walkers, and how many proposals
    had a non-finite log-density (always rejected)."""
    acceptance: Array
    num_nonfinite: Array


def init(position: Array, logdensity_fn: Callable[[Array], Array]) -> WalkerState:
    """Builds the ensemble state; ``logdensity_fn`` takes one walker ``[N, D]``."""
    return WalkerState(position, jax.vmap(logdensity_fn)(position))


def build_kernel(num_substeps: int = 10):
    """Random-walk Metropolis with an isotropic Gaussian proposal of all electrons at once.

    Each call runs ``num_substeps`` BlackJAX ``additive_step`` moves per walker inside a
    ``lax.fori_loop``. Proposals with a non-finite log-density are rejected (BlackJAX
    compares ``log u < Δ`` which is false for NaN; we also force it for ``-inf``/``inf``).

    Returns:
      ``kernel(rng_key, state, logdensity_fn, step_size) -> (state, info)``.
    """
    if num_substeps <= 0:
        raise ValueError(f'num_substeps must be > 0, got {num_substeps}.')
    rwm = blackjax.mcmc.random_walk.build_additive_step()

    def kernel(rng_key: PRNGKey, state: WalkerState, logdensity_fn, step_size):
        random_step = blackjax.mcmc.random_walk.normal(jnp.asarray(step_size))

        def one_walker(key, position, logdensity):
            new, info = rwm(key, blackjax.mcmc.random_walk.RWState(position, logdensity),
                            logdensity_fn, random_step)
            ok = jnp.isfinite(new.logdensity)
            new_position = jnp.where(ok, new.position, position)
            new_logdensity = jnp.where(ok, new.logdensity, logdensity)
            proposal_bad = ~jnp.isfinite(info.proposal.logdensity)
            return new_position, new_logdensity, info.is_accepted & ok, proposal_bad

        def body(i, carry):
            position, logdensity, accepted, bad = carry
            keys = jax.random.split(jax.random.fold_in(rng_key, i), position.shape[0])
            position, logdensity, acc, nonfinite = jax.vmap(one_walker)(keys, position, logdensity)
            return position, logdensity, accepted + jnp.mean(acc), bad + jnp.sum(nonfinite, dtype=jnp.int32)

        zero = jnp.zeros((), state.logdensity.dtype)
        position, logdensity, accepted, bad = jax.lax.fori_loop(
            0, num_substeps, body, (state.position, state.logdensity, zero, jnp.zeros((), jnp.int32)))
        return WalkerState(position, logdensity), WalkerInfo(accepted / num_substeps, bad)

    return kernel


def adapt_step_size(step_size: Array, acceptance: Array, target: float = 0.5,
                    rate: float = 0.5, min_step: float = 1e-3, max_step: float = 10.0) -> Array:
    """Multiplicative Robbins–Monro-style update toward a target acceptance.

    Use during burn-in and training only; freeze it while measuring.
    """
    return jnp.clip(step_size * jnp.exp(rate * (acceptance - target)), min_step, max_step)
