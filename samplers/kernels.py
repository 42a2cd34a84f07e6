"""Walker-ensemble MCMC kernels in BlackJAX's shape: random-walk Metropolis, drift-limited MALA, HMC.

Every kernel here has one signature, so samplers are swapped by name in one line:

    kernel = make_kernel('mala', num_substeps=10)
    state = init(positions, logdensity_fn)          # WalkerState, [W, N, D]
    state, info = kernel(rng_key, state, logdensity_fn, step_size)

``logdensity_fn`` takes one walker ``[N, D]`` (for VMC it is ``2·log|ψ|``). Each call runs
``num_substeps`` BlackJAX transitions per walker inside a ``lax.fori_loop``, vmapped over walkers.
The chain state (with the log-density gradient for MALA) is rebuilt from the positions at
the start of every call, so a cached log-density can never be stale after a parameter update.
Proposals with a non-finite log-density (or, for MALA, gradient) are rejected and counted.
"""

from typing import Callable, Dict, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from samplers.types import Array, PRNGKey



class WalkerState(NamedTuple):
    """State of a walker ensemble.

    Attributes:
      position: ``[W, N, D]`` walker configurations.
      logdensity: ``[W]`` cached log-density at ``position`` for the parameters the state was
        built with. Rebuild it with ``init`` after every parameter update.
    """
    position: Array
    logdensity: Array


class WalkerInfo(NamedTuple):
    """Per-call facts: mean acceptance over sub-steps and walkers, and the number of proposals
    with a non-finite log-density (always rejected)."""
    acceptance: Array
    num_nonfinite: Array


class KernelSpec(NamedTuple):
    """How to run one BlackJAX algorithm on one walker.

    Attributes:
      init: ``(position, logdensity_fn) -> blackjax state``.
      step: ``(rng_key, state, logdensity_fn, step_size) -> (state, info with .is_accepted)``.
      target_acceptance: a good acceptance rate to adapt the step size toward.
      step_size_power: the step size scales as ``length ** power`` (1 for RWM, 2 for MALA,
        whose BlackJAX step is a diffusion time); used to convert between length units.
    """
    init: Callable
    step: Callable
    target_acceptance: float
    step_size_power: int


def _rwm_spec() -> KernelSpec:
    rwm = blackjax.mcmc.random_walk.build_additive_step()

    def step(key, state, logdensity_fn, step_size):
        return rwm(key, state, logdensity_fn, blackjax.mcmc.random_walk.normal(step_size))
    return KernelSpec(blackjax.mcmc.random_walk.init, step, 0.5, 1)


class MALAState(NamedTuple):
    """One walker of the drift-limited Langevin kernel (gradient cached with the log-density)."""
    position: Array
    logdensity: Array
    logdensity_grad: Array


class MALAInfo(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array


def _limited_drift(grad: Array, step_size: Array, a: float) -> Array:
    """Umrigar–Nightingale–Runge drift ``v̄ = v (√(1 + 2 a τ v²) − 1) / (a τ v²)``, ``v = ½∇log p``.

    Equal to ``v`` far from nodes of ψ and bounded by ``√(2/(a τ))`` next to them, where ``v``
    diverges; an unlimited Langevin step there throws walkers far away, they are always
    rejected, and chains stall near nodes for very long times.
    """
    v = 0.5 * grad
    v2 = jnp.sum(v**2)
    av2t = a * step_size * v2
    factor = jnp.where(av2t > 1e-8, (jnp.sqrt(1.0 + 2.0 * av2t) - 1.0) / jnp.maximum(av2t, 1e-30), 1.0)
    return factor * v


def _mala_spec(drift_limit: float = 1.0) -> KernelSpec:
    """Metropolis-adjusted Langevin with a drift limited as in Umrigar et al., J. Chem. Phys. 99,
    2865 (1993). Proposal ``x' = x + τ v̄(x) + √τ ξ``; the Metropolis–Hastings ratio uses the exact
    forward and reverse proposal densities, so the kernel is exact for any drift. (BlackJAX's
    ``mala`` uses the unlimited drift, which stalls at the nodes of fermionic wavefunctions.)"""

    def init_fn(position, logdensity_fn):
        logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
        return MALAState(position, logdensity, grad)

    def log_q(to, frm, drift, tau):  # log proposal density q(to | frm) up to a constant
        return -jnp.sum((to - frm - tau * drift)**2) / (2.0 * tau)

    def step(key, state, logdensity_fn, step_size):
        key_move, key_accept = jax.random.split(key)
        drift = _limited_drift(state.logdensity_grad, step_size, drift_limit)
        noise = jax.random.normal(key_move, state.position.shape, state.position.dtype)
        proposal = state.position + step_size * drift + jnp.sqrt(step_size) * noise
        logdensity, grad = jax.value_and_grad(logdensity_fn)(proposal)
        new_drift = _limited_drift(grad, step_size, drift_limit)
        log_ratio = (logdensity - state.logdensity + log_q(state.position, proposal, new_drift, step_size)
                     - log_q(proposal, state.position, drift, step_size))
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept = jnp.log(jax.random.uniform(key_accept, dtype=state.position.dtype)) < log_ratio
        new = MALAState(proposal, logdensity, grad)
        chosen = jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, state)
        return chosen, MALAInfo(jnp.exp(jnp.minimum(log_ratio, 0.0)), accept)
    return KernelSpec(init_fn, step, 0.57, 2)


class HMCInfo(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array


def _hmc_spec(num_integration_steps: int = 4) -> KernelSpec:
    """BlackJAX HMC (identity mass matrix, ``num_integration_steps`` leapfrog steps) composed
    with one random-walk Metropolis move per transition.

    * The leapfrog step is jittered uniformly in ``[0.5, 1.5] × step_size`` for every
      transition (each fixed-step kernel is reversible, so the mixture is too): a fixed
      trajectory length resonates with the oscillation periods of near-Gaussian densities.
    * Near a node of ψ the force ``∇ log|ψ|²`` diverges, every leapfrog trajectory started
      there explodes and is rejected, and a pure-HMC walker that wanders close to a node
      stays there (measured: ⟨x₁²⟩ = 1.479(4) instead of 1.5 for ``p ∝ x₁² e^{-|x|²}``).
      The random-walk move (its own Metropolis test, proposal width ``step_size``) frees such
      walkers; a composition of kernels that each leave ``p`` invariant leaves it invariant.

    ``is_accepted`` reports the HMC move only (the step size is adapted for HMC).
    """
    hmc = blackjax.mcmc.hmc.build_kernel()
    rwm = blackjax.mcmc.random_walk.build_additive_step()

    def step(key, state, logdensity_fn, step_size):
        key_jitter, key_hmc, key_rwm = jax.random.split(key, 3)
        jitter = jax.random.uniform(key_jitter, (), state.position.dtype, 0.5, 1.5)
        inverse_mass = jnp.ones(state.position.size, state.position.dtype)
        state, info = hmc(key_hmc, state, logdensity_fn, jitter * step_size, inverse_mass,
                          num_integration_steps)
        walked, walk_info = rwm(key_rwm, blackjax.mcmc.random_walk.RWState(state.position, state.logdensity),
                                logdensity_fn, blackjax.mcmc.random_walk.normal(step_size))
        rebuilt = blackjax.mcmc.hmc.init(walked.position, logdensity_fn)
        state = jax.tree.map(lambda a, b: jnp.where(walk_info.is_accepted, a, b), rebuilt, state)
        return state, HMCInfo(info.acceptance_rate, info.is_accepted)
    return KernelSpec(blackjax.mcmc.hmc.init, step, 0.7, 1)


def kernel_spec(name: str) -> KernelSpec:
    """The ``KernelSpec`` of ``'rwm'``, ``'mala'`` or ``'hmc'``."""
    if name == 'rwm':
        return _rwm_spec()
    if name == 'mala':
        return _mala_spec()
    if name == 'hmc':
        return _hmc_spec()
    raise ValueError(f'Unknown sampler {name!r}; choose one of {SAMPLERS}.')


SAMPLERS = ('rwm', 'mala', 'hmc')


def init(position: Array, logdensity_fn: Callable[[Array], Array]) -> WalkerState:
    """Builds the ensemble state; ``logdensity_fn`` takes one walker ``[N, D]``."""
    return WalkerState(position, jax.vmap(logdensity_fn)(position))


def make_kernel(name: str = 'rwm', num_substeps: int = 10):
    """An ensemble kernel ``kernel(rng_key, state, logdensity_fn, step_size) -> (state, info)``.

    Args:
      name: ``'rwm'`` (all-electron Gaussian random walk, BlackJAX), ``'mala'`` (Metropolis-adjusted
        Langevin with a drift limited near nodes, written in BlackJAX's kernel shape), ``'hmc'``
        (BlackJAX HMC with a jittered step, composed with a random-walk move that frees walkers
        near nodes).
      num_substeps: transitions per walker per call.
    """
    if num_substeps <= 0:
        raise ValueError(f'num_substeps must be > 0, got {num_substeps}.')
    spec = kernel_spec(name)

    def kernel(rng_key: PRNGKey, state: WalkerState, logdensity_fn, step_size):
        step_size = jnp.asarray(step_size, state.position.dtype)

        def one_walker(key, chain_state):
            new, info = spec.step(key, chain_state, logdensity_fn, step_size)
            # A state with a non-finite log-density *or gradient* (next to a node of ψ) would
            # stall the walker forever under MALA; rejecting it changes the target only on
            # a set of measure zero.
            ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(new)]))
            kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, chain_state)
            return kept, info.is_accepted & ok, ~ok

        def body(i, carry):
            chain_states, accepted, bad = carry
            keys = jax.random.split(jax.random.fold_in(rng_key, i), state.position.shape[0])
            chain_states, acc, nonfinite = jax.vmap(one_walker)(keys, chain_states)
            return chain_states, accepted + jnp.mean(acc), bad + jnp.sum(nonfinite, dtype=jnp.int32)

        chain_states = jax.vmap(lambda x: spec.init(x, logdensity_fn))(state.position)
        zero = jnp.zeros((), state.position.dtype)
        chain_states, accepted, bad = jax.lax.fori_loop(
            0, num_substeps, body, (chain_states, zero, jnp.zeros((), jnp.int32)))
        new_state = WalkerState(chain_states.position, chain_states.logdensity)
        return new_state, WalkerInfo(accepted / num_substeps, bad)

    return kernel


def adapt_step_size(step_size: Array, acceptance: Array, target: float = 0.5,
                    rate: float = 0.5, min_step: float = 1e-4, max_step: float = 10.0) -> Array:
    """Multiplicative Robbins–Monro-style update toward a target acceptance.

    Use during burn-in and training only; freeze it while measuring.
    """
    return jnp.clip(step_size * jnp.exp(rate * (acceptance - target)), min_step, max_step)
