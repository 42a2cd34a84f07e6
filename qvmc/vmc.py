"""The VMC training step for a family of contexts: per-task jitted sampling and gradients,
combined into one optax update."""

import dataclasses
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hamiltonians.local_energy import KINETIC_METHODS, make_local_energy
from qvmc import natgrad, parallel, scores
from qvmc.context import Context
from qvmc.types import Array, ContextValues, Params, PRNGKey
import samplers


@dataclasses.dataclass(frozen=True)
class VMCConfig:
    """Settings of the VMC step.

    Attributes:
      num_walkers: walkers per context.
      sampler: ``'rwm'``, ``'mala'`` or ``'hmc'`` (see ``samplers.make_kernel``).
      mcmc_substeps: MCMC transitions per walker between parameter updates.
      target_acceptance: step-size adaptation target (None: the sampler's default,
        0.5 for RWM, 0.57 for MALA).
      clip_scale: local energies are clipped to ``median ± clip_scale · mean|E - median|``
        in the gradient estimator only (energies reported are unclipped).
      kinetic_method: ``'folx'`` or ``'hessian'``.
      initial_step_size: proposal step in units of the system's length scale (raised to the
        sampler's ``step_size_power``: MALA's step is a diffusion time, length²).
      chunk_size: walkers per micro-batch for local energies, scores and gradients (None: all
        at once). Bounds memory independently of ``num_walkers``; results equal the unsplit
        computation up to summation order.
      normalize_energy_scale: divide each context's centred local energies by their standard
        deviation in the gradient, so contexts with large energies do not dominate the update
        (optax path; natural-gradient optimizers take their own ``normalize_energy_scale``).
      network_dtype: ``'float32'`` or ``'float64'``: parameters and walkers are cast to it by
        ``VMC.init``/``reassign`` and the network runs in it, while potentials, energy
        statistics, gradient sums and natural-gradient solves stay float64 under
        ``jax_enable_x64`` (None: keep the dtypes of the inputs; see ``qvmc.parallel``).
    """
    num_walkers: int = 256
    sampler: str = 'rwm'
    mcmc_substeps: int = 10
    target_acceptance: float = None
    clip_scale: float = 5.0
    kinetic_method: str = 'folx'
    initial_step_size: float = 0.5
    chunk_size: int = None
    normalize_energy_scale: bool = False
    network_dtype: str = None

    def __post_init__(self):
        if self.num_walkers <= 0 or self.mcmc_substeps <= 0:
            raise ValueError('num_walkers and mcmc_substeps must be > 0.')
        if self.sampler not in samplers.SAMPLERS:
            raise ValueError(f'sampler must be one of {samplers.SAMPLERS}, got {self.sampler!r}.')
        if self.target_acceptance is not None and not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f'target_acceptance must be in (0, 1), got {self.target_acceptance}.')
        if self.clip_scale <= 0 or self.initial_step_size <= 0:
            raise ValueError('clip_scale and initial_step_size must be > 0.')
        if self.kinetic_method not in KINETIC_METHODS:
            raise ValueError(f'kinetic_method must be one of {KINETIC_METHODS}, got {self.kinetic_method!r}.')
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError(f'chunk_size must be > 0 or None (no micro-batching), got {self.chunk_size}.')
        parallel.check_dtype(self.network_dtype)


def make_log_psi(wavefunction, system, spins: Tuple[int, int]) -> Callable[[Params, Array, ContextValues], Array]:
    """``log|ψ|(params, x, values)`` for one walker in physical units.

    Divides positions by ``system.length_scale(values)``, builds the context features
    the network sees, and passes ``system.coupling(values)`` (the ``1/r`` strength in
    those length units) for the cusp. The network runs in the dtype of ``x`` (float32 walkers:
    a float32 network even with float64 context values).
    """
    def log_psi(params, x, values):
        scale = system.length_scale(values)
        cond = jnp.asarray(system.context_features(values, *spins)).astype(x.dtype)
        coupling = jnp.asarray(system.coupling(values)).astype(x.dtype)
        return wavefunction.apply(params, (x / scale).astype(x.dtype), cond, spins, coupling)[1]
    return log_psi


TaskState = samplers.ChainState  # sampler state of one context: walkers [W, N, D], step size []


class TaskStats(NamedTuple):
    """Per-step statistics of one context (walker averages of unclipped quantities)."""
    energy: Array
    variance: Array
    acceptance: Array
    components: Dict[str, Array]
    num_nonfinite: Array


def clipped_energies(e_loc: Array, clip_scale: float) -> Array:
    """Clip outliers to ``median ± clip_scale · mean|E - median|`` (robust gradient only)."""
    median = jnp.median(e_loc)
    spread = jnp.mean(jnp.abs(e_loc - median))
    return jnp.clip(e_loc, median - clip_scale * spread, median + clip_scale * spread)


class TaskFunctions(NamedTuple):
    """The pure per-shape functions returned by ``make_task_functions``."""
    sample: Callable
    energies: Callable
    energy_and_grad: Callable
    energies_and_scores: Callable


def make_task_functions(wavefunction, system, spins: Tuple[int, int], config: VMCConfig) -> TaskFunctions:
    """Pure per-shape functions: ``sample``, ``energies``, ``energy_and_grad``, ``energies_and_scores``.

    ``energy_and_grad(params, walkers, values)`` returns the unbiased energy gradient
    ``2 E[(E_clip - Ē_clip) ∇θ log|ψ|]`` (no derivative flows through the Laplacian), the
    unclipped local energies ``[W]`` and their components. With ``config.chunk_size`` the
    walkers are processed in micro-batches (``qvmc.scores``); the result is the same.
    ``energies_and_scores(params, walkers, values)`` returns ``(E_clip [W], E_L [W],
    components, O [W, P])`` for natural-gradient optimizers (``qvmc.natgrad``).
    """
    log_psi = make_log_psi(wavefunction, system, spins)
    local_energy = make_local_energy(log_psi, system.potential_components, config.kinetic_method,
                                     getattr(system, 'kinetic_scale', 1.0))
    kernel = samplers.make_kernel(config.sampler, config.mcmc_substeps)
    spec = samplers.kernel_spec(config.sampler)
    target = spec.target_acceptance if config.target_acceptance is None else config.target_acceptance
    score_fn = scores.make_score_fn(log_psi, config.chunk_size)
    sums_fn = scores.make_gradient_sums_fn(log_psi, config.chunk_size)

    def sample(rng_key, params, state: TaskState, values, adapt: bool = True):
        scale = system.length_scale(values) ** spec.step_size_power
        logdensity = lambda x: 2.0 * log_psi(params, x, values)
        walker_state = samplers.init(state.walkers, logdensity)  # fresh cache for these params
        walker_state, info = kernel(rng_key, walker_state, logdensity, state.step_size * scale)
        step = state.step_size
        if adapt:
            step = samplers.adapt_step_size(step, info.acceptance, target)
        return TaskState(walker_state.position, step), info

    def energies(params, walkers, values):
        return parallel.chunked_vmap(lambda x: local_energy(params, x, values), config.chunk_size)(walkers)

    def energy_and_grad(params, walkers, values):
        e_loc, components = energies(params, walkers, values)
        e_clip = jax.lax.stop_gradient(clipped_energies(e_loc, config.clip_scale))
        if config.chunk_size is not None:
            g = scores.gradient_from_sums([sums_fn(params, walkers, values, e_clip)],
                                          normalize_energy_scale=config.normalize_energy_scale)
            return scores.make_unravel(params)(g), e_loc, components
        centred = e_clip - jnp.mean(e_clip)
        if config.normalize_energy_scale:
            std = jnp.std(e_clip)
            centred = centred / jnp.where(std > 0, std, 1.0)

        def surrogate(p):
            logs = jax.vmap(log_psi, in_axes=(None, 0, None))(p, walkers, values)
            return 2.0 * jnp.mean(centred * logs)
        grads = jax.grad(surrogate)(params)
        return grads, e_loc, components

    def energies_and_scores(params, walkers, values):
        e_loc, components = energies(params, walkers, values)
        e_clip = jax.lax.stop_gradient(clipped_energies(e_loc, config.clip_scale))
        return e_clip, e_loc, components, score_fn(params, walkers, values)

    return TaskFunctions(sample, energies, energy_and_grad, energies_and_scores)


class TrainState(NamedTuple):
    """Everything that evolves during training (checkpointed as a whole)."""
    step: int
    params: Params
    opt_state: Any
    tasks: Tuple[TaskState, ...]  # aligned with ``contexts``
    num_rejected: int  # updates rejected because they were not finite
    contexts: Tuple[Context, ...] = None  # the contexts the walker blocks sample (None: VMC.contexts)


class StepInfo(NamedTuple):
    """What one training step measured: per-context stats and the mean loss."""
    loss: float
    tasks: Tuple[TaskStats, ...]
    accepted: bool


class VMC:
    """Conditional VMC over a list of contexts; a thin shell around pure jitted functions.

    ``step(rng_key, state) -> (state, info)`` samples every context with its own walkers,
    computes each context's energy gradient in a computation jitted once per particle
    content ``(n_up, n_down)`` (contexts that differ only in λ, ω share it), averages the
    gradients over contexts (loss = mean of per-context energies), and applies one
    update. With a natural-gradient optimizer (``qvmc.natgrad.sr/minsr/spring``) each
    context contributes its per-walker scores and clipped local energies instead, and all
    rows enter one solve, centred per context. An update with non-finite values is
    rejected: parameters and optimizer state stay unchanged and ``num_rejected`` counts it.

    Args:
      wavefunction: an ``ansatz.base.Wavefunction``.
      system: a Hamiltonian family such as ``hamiltonians.QuantumDot``.
      contexts: the training contexts.
      optimizer: an ``optax.GradientTransformation`` or a ``qvmc.natgrad.NaturalGradient``.
      config: ``VMCConfig``.
      mesh: optional ``jax.sharding.Mesh`` from ``qvmc.parallel.make_mesh``: ``init`` and
        ``reassign`` shard every context's walkers over its devices and replicate the rest;
        the jitted step is unchanged (walker counts must divide by the device count).
    """

    def __init__(self, wavefunction, system, contexts: Sequence[Context],
                 optimizer: optax.GradientTransformation, config: VMCConfig = VMCConfig(), *, mesh=None):
        if not contexts:
            raise ValueError('VMC needs at least one context to train on.')
        for ctx in contexts:
            system.validate(ctx)
        parallel.check_divisible(config.num_walkers, mesh, 'VMCConfig.num_walkers')
        self.wavefunction, self.system, self.config, self.mesh = wavefunction, system, config, mesh
        self.contexts: List[Context] = list(contexts)
        self.optimizer = optimizer
        self.natural_gradient = isinstance(optimizer, natgrad.NaturalGradient)
        if not self.natural_gradient and not hasattr(optimizer, 'update'):
            raise ValueError('optimizer must be an optax.GradientTransformation or a qvmc.natgrad optimizer '
                             f'(sr, minsr, spring), got {type(optimizer).__name__}.')
        self.trace_counts: Dict[Tuple[int, int], int] = {}
        self._task_step, self._samplers, self._burn_chunks = {}, {}, {}
        for spins in sorted({c.spins for c in self.contexts}):
            self._task_fn(spins)
        self._apply_update = jax.jit(self._make_apply_update())

    def _task_fn(self, spins):
        if spins not in self._task_step:
            self._task_step[spins] = jax.jit(self._make_task_step(spins))
        return self._task_step[spins]

    def _make_task_step(self, spins):
        fns = make_task_functions(self.wavefunction, self.system, spins, self.config)
        natural = self.natural_gradient

        def task_step(rng_key, params, task: TaskState, values):
            self.trace_counts[spins] = self.trace_counts.get(spins, 0) + 1  # runs at trace time only
            task, info = fns.sample(rng_key, params, task, values)
            if natural:  # rows for the natural-gradient solve: O [W, P] and clipped E [W]
                e_clip, e_loc, components, o = fns.energies_and_scores(params, task.walkers, values)
                grads = (o, e_clip)
            else:
                grads, e_loc, components = fns.energy_and_grad(params, task.walkers, values)
            acc = parallel.reduction_dtype()  # float64 means over walkers of a float32 network
            stats = TaskStats(jnp.mean(e_loc, dtype=acc), jnp.var(e_loc, dtype=acc), info.acceptance,
                              {k: jnp.mean(v, dtype=acc) for k, v in components.items()}, info.num_nonfinite)
            return task, grads, stats
        return task_step

    def _make_apply_update(self):
        def apply_update(params, opt_state, grads_list, weights):
            if self.natural_gradient:
                o, e, ids = natgrad.stack_contexts([g[0] for g in grads_list], [g[1] for g in grads_list])
                updates, new_opt_state = self.optimizer.update(
                    None, opt_state, params, scores=o, local_energies=e, context_ids=ids,
                    num_contexts=len(grads_list), context_weights=jnp.asarray(weights))
            else:
                grads = jax.tree.map(lambda *g: sum(w * gi for w, gi in zip(weights, g)), *grads_list)
                updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
            return natgrad.apply_if_finite(params, opt_state, updates, new_opt_state)
        return apply_update

    def init(self, rng_key: PRNGKey, params: Params = None) -> TrainState:
        """Initial state: parameters (unless given), optimizer state, walkers per context."""
        key_params, key_walkers = jax.random.split(rng_key)
        if params is None:
            ctx = self.contexts[0]
            x0 = self.system.init_walkers(key_walkers, ctx, 1)[0] / self.system.length_scale(ctx.values)
            cond = self.system.context_features(ctx.values, *ctx.spins)
            params = self.wavefunction.init(key_params, x0, cond, ctx.spins, self.system.coupling(ctx.values))
        if self.config.network_dtype is not None:
            params = parallel.cast_params(params, self.config.network_dtype)
        tasks = []
        for i, ctx in enumerate(self.contexts):
            walkers = self.system.init_walkers(jax.random.fold_in(key_walkers, i), ctx, self.config.num_walkers)
            tasks.append(TaskState(walkers, jnp.asarray(self.config.initial_step_size, walkers.dtype)))
        state = TrainState(0, params, self.optimizer.init(params), tuple(tasks), 0, tuple(self.contexts))
        return parallel.place_state(state, self.mesh, self.config.network_dtype)

    def burn_in(self, rng_key: PRNGKey, state: TrainState, num_steps: int) -> TrainState:
        """Moves walkers (with step-size adaptation) without touching parameters."""
        tasks = list(state.tasks)
        for i, ctx in enumerate(self.state_contexts(state)):
            fn = self._sampler(ctx.spins)
            for t in range(num_steps):
                tasks[i], _ = fn(jax.random.fold_in(jax.random.fold_in(rng_key, i), t),
                                 state.params, tasks[i], ctx.values)
        return state._replace(tasks=tuple(tasks))

    def state_contexts(self, state: TrainState) -> Tuple[Context, ...]:
        """The contexts ``state``'s walker blocks sample (``VMC.contexts`` for older states)."""
        return tuple(self.contexts) if state.contexts is None else tuple(state.contexts)

    def reassign(self, rng_key: PRNGKey, state: TrainState, contexts: Sequence[Context],
                 total_walkers: int = None) -> Tuple[TrainState, samplers.Assignment]:
        """Points the walker blocks at new contexts (e.g. a blockwise schedule's next draw).

        ``total_walkers`` (default: the walkers ``state`` holds now) are split evenly into
        ``len(contexts)`` blocks (``ValueError`` if they do not divide). Blocks whose particle
        content matches keep their walkers (see ``samplers.chains.reassign``); all changed
        blocks must be re-equilibrated with ``equilibrate`` before the next ``step``.
        """
        contexts = tuple(contexts)
        if not contexts:
            raise ValueError('reassign needs at least one context.')
        for ctx in contexts:
            self.system.validate(ctx)
        if total_walkers is None:
            total_walkers = sum(int(t.walkers.shape[0]) for t in state.tasks)
        per_block = samplers.block_size(total_walkers, len(contexts))
        tasks, assignment = samplers.reassign(state.tasks, self.state_contexts(state), contexts, per_block,
                                              self.system.init_walkers, rng_key, self.config.initial_step_size)
        state = parallel.place_state(state._replace(tasks=tuple(tasks), contexts=contexts), self.mesh,
                                     self.config.network_dtype)
        return state, assignment

    def equilibrate(self, rng_key: PRNGKey, state: TrainState, which: Sequence[int] = None, *,
                    chunk: int = 10, min_steps: int = 20, max_steps: int = 400
                    ) -> Tuple[TrainState, Dict[int, samplers.BurnInReport]]:
        """Burns in walker blocks (parameters fixed, step sizes adapted) until each block's
        local-energy traces pass ``samplers.check_equilibrium`` (see ``samplers.burn_in``).

        Args:
          rng_key: JAX PRNG key.
          state: the training state.
          which: indices of the blocks to burn in (default: all), e.g. those flagged by
            ``reassign``'s ``Assignment.needs_burn_in``.
          chunk, min_steps, max_steps: see ``samplers.burn_in``.

        Returns:
          The state with moved walkers, and ``{block index: BurnInReport}``.
        """
        contexts = self.state_contexts(state)
        which = range(len(contexts)) if which is None else which
        tasks, reports = list(state.tasks), {}
        for i in which:
            ctx = contexts[i]
            run = self._burn_chunk(ctx.spins)
            key = jax.random.fold_in(rng_key, i)

            def run_chunk(task, start, n, run=run, key=key, values=ctx.values):
                task, e_loc = run(jax.random.fold_in(key, start), state.params, task, values, num_steps=n)
                return task, np.asarray(parallel.to_host(e_loc), np.float64).T
            tasks[i], reports[i] = samplers.burn_in(run_chunk, tasks[i], chunk=chunk, min_steps=min_steps,
                                                    max_steps=max_steps)
        return state._replace(tasks=tuple(tasks)), reports

    def _burn_chunk(self, spins):
        if spins not in self._burn_chunks:
            fns = make_task_functions(self.wavefunction, self.system, spins, self.config)
            sample, energies = fns.sample, fns.energies

            def run(rng_key, params, task, values, num_steps):
                def body(task, key):
                    task, _ = sample(key, params, task, values)
                    return task, energies(params, task.walkers, values)[0]
                return jax.lax.scan(body, task, jax.random.split(rng_key, num_steps))
            self._burn_chunks[spins] = jax.jit(run, static_argnames='num_steps')
        return self._burn_chunks[spins]

    def _sampler(self, spins):
        if spins not in self._samplers:
            sample = make_task_functions(self.wavefunction, self.system, spins, self.config).sample
            self._samplers[spins] = jax.jit(sample, static_argnames='adapt')
        return self._samplers[spins]

    def step(self, rng_key: PRNGKey, state: TrainState) -> Tuple[TrainState, StepInfo]:
        """One optimization step over all contexts (see the class docstring)."""
        tasks, grads_list, stats = [], [], []
        contexts = self.state_contexts(state)
        for i, ctx in enumerate(contexts):
            task, grads, st = self._task_fn(ctx.spins)(
                jax.random.fold_in(rng_key, i), state.params, state.tasks[i], ctx.values)
            tasks.append(task)
            grads_list.append(grads)
            stats.append(st)
        weights = tuple(np.full(len(contexts), 1.0 / len(contexts)))
        params, opt_state, finite = self._apply_update(state.params, state.opt_state, grads_list, weights)
        finite = bool(finite)
        loss = float(np.mean([float(s.energy) for s in stats]))
        new_state = TrainState(state.step + 1, params, opt_state, tuple(tasks),
                               state.num_rejected + (0 if finite else 1), tuple(contexts))
        return new_state, StepInfo(loss, tuple(stats), finite)
