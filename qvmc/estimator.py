"""Per-block VMC functions: sampling with walker health, local energies, robust clipping, the
one energy-gradient estimator (scores for natural gradients, one VJP otherwise) and the one
measurement runner built on them."""

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

import samplers
from hamiltonians.local_energy import make_local_energy
from hamiltonians.system import make_log_psi
from qvmc import parallel, scores
from qvmc.config import VMCConfig
from samplers import engine
from samplers.types import Array, ContextValues, Params, PRNGKey


class SampleInfo(NamedTuple):
    """What one sampler call of a block measured."""
    acceptance: Array  # [] mean acceptance over sub-steps and walkers
    num_nonfinite: Array  # [] int32, proposals with a non-finite log-density (rejected)
    num_reseeded: Array  # [] int32, walkers found non-finite after the call and re-seeded


def robust_clip(e_loc: Array, mask: Array, clip_scale: float) -> Tuple[Array, Array]:
    """Clip to ``median ± clip_scale · mean|E - median|`` with centre and spread from the ``mask`` values.

    Args:
      e_loc: ``[W]`` local energies (may hold non-finite values where ``mask`` is False).
      mask: ``[W]`` bool, the walkers that count.
      clip_scale: width of the window in units of the mean absolute deviation.

    Returns:
      ``(clipped [W], centre [])``; entries outside ``mask`` are set to the centre.
    """
    masked = jnp.where(mask, e_loc, jnp.nan)
    centre = jnp.nanmedian(masked)
    spread = jnp.nanmean(jnp.abs(masked - centre))
    clipped = jnp.clip(e_loc, centre - clip_scale * spread, centre + clip_scale * spread)
    return jnp.where(mask, clipped, centre), centre


def clipped_energies(e_loc: Array, clip_scale: float) -> Array:
    """Clip outliers to ``median ± clip_scale · mean|E - median|`` over the finite energies."""
    return robust_clip(e_loc, jnp.isfinite(e_loc), clip_scale)[0]


def masked_mean(x: Array, mask: Array, dtype=None) -> Array:
    """Mean of ``x`` over ``mask`` (NaN if the mask is empty), accumulated in ``dtype``."""
    dtype = dtype or parallel.reduction_dtype()
    count = jnp.sum(mask, dtype=dtype)
    total = jnp.sum(jnp.where(mask, x, 0).astype(dtype))
    return total / count


def reseed(rng_key: PRNGKey, walkers: Array, bad: Array) -> Array:
    """Replaces ``bad`` walkers ``[W]`` by copies of randomly drawn healthy ones (unchanged if none is healthy)."""
    good = ~bad
    any_good = jnp.any(good)
    probs = jnp.where(any_good, good.astype(jnp.float32), 1.0)
    donors = jax.random.choice(rng_key, walkers.shape[0], (walkers.shape[0],), p=probs / jnp.sum(probs))
    return jnp.where((bad & any_good)[:, None, None], walkers[donors], walkers)


class BlockFunctions(NamedTuple):
    """The pure per-particle-content functions of ``make_block_functions`` (one walker block)."""
    sample: Callable  # (rng_key, params, chain, values, adapt=True) -> (chain, SampleInfo); adapt may be traced
    energies: Callable  # (params, walkers, values) -> (E_L [W], {component: [W]})
    gradient: Callable  # (params, walkers, values, cotangent [W]) -> Σ_s c_s ∇θ log|ψ(x_s)|, float64 [P]
    scores: Callable  # (params, walkers, values) -> O [W, P]
    log_psi: Callable  # (params, x [N, D], values) -> log|ψ|


def make_block_functions(wavefunction, system, spins: Tuple[int, int], config: VMCConfig) -> BlockFunctions:
    """Pure functions of one walker block of particle content ``spins`` (nothing jitted here)."""
    log_psi = make_log_psi(wavefunction, system, spins)
    local_energy = make_local_energy(log_psi, system.potential_components, config.kinetic_method,
                                     system.kinetic_scale, config.sparsity_for(sum(spins)))
    kernel = samplers.make_kernel(config.sampler, config.mcmc_substeps)
    spec = samplers.kernel_spec(config.sampler)
    target = spec.target_acceptance if config.target_acceptance is None else config.target_acceptance
    score_fn = scores.make_score_fn(log_psi, config.chunk_size)
    vjp_fn = scores.make_vjp_fn(log_psi, config.chunk_size)

    def sample(rng_key, params, chain: samplers.ChainState, values, adapt: bool = True):
        key_move, key_seed = jax.random.split(rng_key)
        scale = system.length_scale(values) ** spec.step_size_power
        logdensity = lambda x: 2.0 * log_psi(params, x, values)
        walker_state = samplers.init(chain.walkers, logdensity)  # fresh cache for these params
        walker_state, info = kernel(key_move, walker_state, logdensity, chain.step_size * scale)
        walkers = walker_state.position
        bad = ~(jnp.all(jnp.isfinite(walkers), axis=(1, 2)) & jnp.isfinite(walker_state.logdensity))
        if config.reseed_bad_walkers:
            walkers = reseed(key_seed, walkers, bad)
        step = jnp.where(adapt, samplers.adapt_step_size(chain.step_size, info.acceptance, target), chain.step_size)
        return (samplers.ChainState(walkers, step),
                SampleInfo(info.acceptance, info.num_nonfinite, jnp.sum(bad, dtype=jnp.int32)))

    def energies(params, walkers, values):
        chunk = config.energy_chunk(walkers.shape[1] * walkers.shape[2], walkers.shape[0])  # fixed at trace time
        return parallel.chunked_vmap(lambda x: local_energy(params, x, values), chunk)(walkers)

    return BlockFunctions(sample, energies, vjp_fn, score_fn, log_psi)


def make_block_runner(fns: BlockFunctions, observe_fn: Optional[Callable] = None) -> Callable:
    """The measurement engine's runner of one walker block (``samplers.engine.make_runner``).

    The one builder behind ``VMC.runner`` (burn-in), ``Predictor`` and ``Sweep``: each sampler
    call records the local energy and its components per walker and the acceptance per draw;
    ``observe_fn`` adds what a caller measures besides (densities, g(r), per-walker observables).
    Not jitted: wrap it in ``jax.jit(run, static_argnames='num_steps')`` (``jit_block_runner``).

    Args:
      fns: the block's ``BlockFunctions`` (``make_block_functions``).
      observe_fn: optional ``observe_fn(walkers [W, N, D], values, *extra) -> (per_walker,
        per_draw)``: dicts of arrays ``[W, ...]`` and ``[...]`` recorded next to the energies
        (a name already recorded raises ``ValueError`` at trace time).

    Returns:
      ``run(rng_key, chain, args, adapt, num_steps)`` with ``args = (params, values, *extra)``;
      per walker ``{'energy': [W], component: [W], ...}``, per draw ``{'acceptance': [], ...}``.
    """
    def step_fn(key, chain, args, adapt):
        params, values = args[0], args[1]
        return fns.sample(key, params, chain, values, adapt)

    def record(chain, info, args):
        params, values, *extra = args
        e_loc, components = fns.energies(params, chain.walkers, values)
        per_walker, per_draw = {'energy': e_loc, **components}, {'acceptance': info.acceptance}
        if observe_fn is not None:
            more_walker, more_draw = observe_fn(chain.walkers, values, *extra)
            for recorded, more in ((per_walker, more_walker), (per_draw, more_draw)):
                clash = sorted(set(recorded) & set(more))
                if clash:
                    raise ValueError(f'observe_fn returned {clash}, names the runner records already; rename them.')
                recorded.update(more)
        return per_walker, per_draw
    return engine.make_runner(step_fn, record)


def jit_block_runner(wavefunction, system, spins: Tuple[int, int], config: VMCConfig,
                     observe_fn: Optional[Callable] = None) -> Callable:
    """``jax.jit`` of ``make_block_runner`` for one particle content (``num_steps`` static): one
    program per chunk length; new context values never recompile."""
    fns = make_block_functions(wavefunction, system, spins, config)
    return jax.jit(make_block_runner(fns, observe_fn), static_argnames='num_steps')


class BlockEstimate(NamedTuple):
    """One block's contribution to a step: statistics and the gradient ingredients."""
    energy: Array  # [] mean local energy over healthy walkers
    variance: Array  # []
    components: Dict[str, Array]  # {name: []}
    num_bad_walkers: Array  # [] int32: re-seeded after sampling + non-finite local energies
    mask: Array  # [W] bool, walkers whose local energy entered the estimates
    centred: Array  # [W] float64, (E_clip - mean E_clip) [/ std], zero outside mask


def estimate_block(e_loc: Array, components: Dict[str, Array], num_reseeded: Array, config: VMCConfig
                   ) -> BlockEstimate:
    """Statistics and centred clipped energies of one block; walkers with a non-finite local
    energy (or component) are left out."""
    acc = parallel.reduction_dtype()
    mask = jnp.isfinite(e_loc)
    for value in components.values():
        mask = mask & jnp.isfinite(value)
    energy = masked_mean(e_loc, mask, acc)
    variance = masked_mean((e_loc.astype(acc) - energy) ** 2, mask, acc)
    comps = {k: masked_mean(v, mask, acc) for k, v in components.items()}
    e_clip, _ = robust_clip(jax.lax.stop_gradient(e_loc), mask, config.clip_scale)
    e_clip = e_clip.astype(acc)
    centred = jnp.where(mask, e_clip - masked_mean(e_clip, mask, acc), 0.0)
    if config.normalize_energy_scale:
        std = jnp.sqrt(masked_mean(centred ** 2, mask, acc))
        centred = centred / jnp.where(std > 0, std, 1.0)
    num_bad = num_reseeded + jnp.sum(~mask, dtype=jnp.int32)
    return BlockEstimate(energy, variance, comps, num_bad, mask, centred)


def safe_walkers(walkers: Array, mask: Array) -> Array:
    """Walkers outside ``mask`` replaced by the first healthy one, so that a zero-weight row
    cannot put NaN into a gradient (0 · NaN = NaN)."""
    first = jnp.argmax(mask)
    return jnp.where(mask[:, None, None], walkers, walkers[first][None])


def block_gradient(fns: BlockFunctions, params: Params, walkers: Array, values: ContextValues,
                   est: BlockEstimate) -> Array:
    """``g_c = 2 cov_c(O, E_clip)`` over the healthy walkers, float64 ``[P]``, by one VJP."""
    count = jnp.maximum(jnp.sum(est.mask), 1).astype(parallel.reduction_dtype())
    return 2.0 * fns.gradient(params, safe_walkers(walkers, est.mask), values, est.centred / count)


def block_score_rows(fns: BlockFunctions, params: Params, walkers: Array, values: ContextValues,
                     est: BlockEstimate) -> Tuple[Array, Array]:
    """``(O [W, P], e [W])`` for the natural-gradient solve; rows outside the mask are set to
    the healthy rows' means, so that they vanish after centring per context."""
    o = fns.scores(params, safe_walkers(walkers, est.mask), values)
    mask = est.mask

    def fill(o):
        count = jnp.maximum(jnp.sum(mask), 1)
        o_mean = jnp.sum(jnp.where(mask[:, None], o, 0), axis=0) / count.astype(o.dtype)
        return jnp.where(mask[:, None], o, o_mean[None])
    o = jax.lax.cond(jnp.all(mask), lambda o: o, fill, o)  # the [W, P] pass only when a walker is bad
    return o, est.centred  # centred: zero mean over the block, zero outside the mask
