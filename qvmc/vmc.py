"""``VMC``: a thin shell around the pure training step (``qvmc.step``) and the measurement engine
(``samplers.engine``) for a family of contexts: initialization, jitted steps, context
re-assignment and burn-in."""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import optax

import samplers
from hamiltonians import padding
from hamiltonians.context import Context
from hamiltonians.system import check_geometry, check_system
from qvmc import parallel
from qvmc.config import VMCConfig
from qvmc.estimator import jit_block_runner
from qvmc.state import StepInfo, TrainState
from qvmc.step import init_state, make_train_step
from samplers import engine
from samplers.types import Params, PRNGKey

def count_traces(fn: Callable) -> Callable:
    """``fn`` with a ``num_traces`` attribute counting how often JAX traced it (like
    ``chex.assert_max_traces``): tests use it to guard against retracing."""
    def wrapped(*args, **kwargs):
        wrapped.num_traces += 1  # runs at trace time only
        return fn(*args, **kwargs)
    wrapped.num_traces = 0
    return wrapped


class VMC:
    """Conditional VMC over a list of contexts.

    ``step(rng_key, state) -> (state, info)`` is ``jax.jit(make_train_step(...))``: one
    program per layout of particle contents, in which the contexts that share a particle
    content ``(n_up, n_down)`` are vmapped over their parameter values; new values (λ, ω)
    never recompile. The optimizer is any optax transformation; natural gradients
    (``qvmc.natgrad.sr/minsr/spring``, alone or in ``optax.chain``) receive per-walker scores
    as extra arguments. An update with non-finite values is rejected: parameters and
    optimizer state stay unchanged and ``num_rejected`` counts it.

    Args:
      wavefunction: an ``ansatz.base.Wavefunction``.
      system: a ``hamiltonians.System`` such as ``hamiltonians.QuantumDot``.
      contexts: the training contexts.
      optimizer: an ``optax.GradientTransformation`` (or ``GradientTransformationExtraArgs``).
      config: ``VMCConfig``.
      mesh: optional ``jax.sharding.Mesh`` from ``qvmc.parallel.make_mesh``: ``init`` and
        ``reassign`` shard every context's walkers over its devices and replicate the rest;
        the jitted step is unchanged (walker counts must divide by the device count).
      pad: optional padded content ``(n_up, n_down)`` (``hamiltonians.padding``): every block
        holds walkers of that many rows and the step compiles once for any contexts that fit
        (maskable wavefunction and a system that supports padding), at the padded size's cost.
    """

    def __init__(self, wavefunction, system, contexts: Sequence[Context],
                 optimizer: optax.GradientTransformation, config: VMCConfig = VMCConfig(), *, mesh=None, pad=None):
        check_system(system)
        check_geometry(wavefunction, system, 'VMC')
        if not contexts:
            raise ValueError('VMC needs at least one context to train on.')
        for ctx in contexts:
            system.validate(ctx)
        self.layout = padding.make_layout(pad, wavefunction, system, 'VMC')
        for ctx in contexts:
            self.layout.check(ctx)
        if not (callable(getattr(optimizer, 'init', None)) and callable(getattr(optimizer, 'update', None))):
            raise ValueError('optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3), '
                             f'qvmc.natgrad.minsr(0.05), or an optax.chain of them), got {type(optimizer).__name__}.')
        if not isinstance(config, VMCConfig):
            raise ValueError(f'config must be a qvmc.VMCConfig, got {type(config).__name__}.')
        parallel.check_divisible(config.num_walkers, mesh, 'VMCConfig.num_walkers')
        self.wavefunction, self.system, self.config, self.mesh = wavefunction, system, config, mesh
        self.contexts: List[Context] = list(contexts)
        self.optimizer = optimizer
        self.train_step = count_traces(make_train_step(wavefunction, system, optimizer, config))
        self._step = jax.jit(self.train_step)
        self._runners: Dict[Tuple[int, int], Callable] = {}

    @property
    def num_step_traces(self) -> int:
        """How often the training step was traced (once per layout of particle contents)."""
        return self.train_step.num_traces

    def init(self, rng_key: PRNGKey, params: Params = None) -> TrainState:
        """Initial state: parameters (unless given), optimizer state, walkers per context."""
        state = init_state(self.wavefunction, self.system, self.optimizer, self.config, self.contexts,
                           rng_key, params, layout=self.layout)
        return parallel.place_state(state, self.mesh, self.config.network_dtype)

    def step(self, rng_key: PRNGKey, state: TrainState) -> Tuple[TrainState, StepInfo]:
        """One optimization step over all walker blocks (see the class docstring); no host sync."""
        return self._step(rng_key, state)

    @property
    def pad(self) -> Optional[Tuple[int, int]]:
        """The padded content every block runs in (``layout.pad``; None: unpadded)."""
        return self.layout.pad

    def runner(self, spins: Tuple[int, int]) -> Callable:
        """The jitted measurement-engine runner of one particle content
        (``qvmc.estimator.jit_block_runner``, ``args = (params, values)``)."""
        spins = tuple(spins)
        if spins not in self._runners:
            self._runners[spins] = jit_block_runner(self.wavefunction, self.system, spins, self.config)
        return self._runners[spins]

    def run_mcmc(self, rng_key: PRNGKey, state: TrainState, num_steps: int) -> TrainState:
        """Moves every block's walkers exactly ``num_steps`` sampler calls (step sizes adapted,
        parameters fixed), with no equilibration check; ``equilibrate`` runs until the check passes."""
        chains = list(state.chains)
        for i, spins in enumerate(state.spins):
            chains[i], _ = self.runner(spins)(jax.random.fold_in(rng_key, i), chains[i],
                                              (state.params, state.values[i]), True, num_steps=num_steps)
        return state._replace(chains=tuple(chains))

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
        layout = state.layout
        for ctx in contexts:
            self.system.validate(ctx)
            layout.check(ctx)
        if total_walkers is None:
            total_walkers = sum(int(c.walkers.shape[0]) for c in state.chains)
        per_block = samplers.block_size(total_walkers, len(contexts))
        init_walkers = layout.init_walkers(self.system)
        chains, assignment = samplers.reassign(state.chains, state.contexts, contexts, per_block,
                                               init_walkers, rng_key, self.config.initial_step_size)
        state = parallel.place_state(state._replace(chains=tuple(chains)).with_contexts(contexts), self.mesh,
                                     self.config.network_dtype)
        return state, assignment

    def equilibrate(self, rng_key: PRNGKey, state: TrainState, which: Sequence[int] = None, *,
                    chunk: int = 10, min_steps: int = 20, max_steps: int = 400
                    ) -> Tuple[TrainState, Dict[int, samplers.BurnInReport]]:
        """Burns in walker blocks (parameters fixed, step sizes adapted) until each block's
        local-energy traces pass ``samplers.check_equilibrium`` (``samplers.engine.burn_in``).

        Args:
          rng_key: JAX PRNG key.
          state: the training state.
          which: indices of the blocks to burn in (default: all), e.g. those flagged by
            ``reassign``'s ``Assignment.needs_burn_in``.
          chunk, min_steps, max_steps: see ``samplers.burn_in``.

        Returns:
          The state with moved walkers, and ``{block index: BurnInReport}``.
        """
        which = range(len(state.chains)) if which is None else which
        chains, reports = list(state.chains), {}
        for i in which:
            chains[i], reports[i] = engine.burn_in(
                self.runner(state.spins[i]), jax.random.fold_in(rng_key, i), chains[i],
                (state.params, state.values[i]), chunk=chunk, min_steps=min_steps, max_steps=max_steps)
        return state._replace(chains=tuple(chains)), reports


def host_stats(info: StepInfo) -> StepInfo:
    """``info`` fetched to the host as numpy scalars (one transfer for the whole step)."""
    return jax.tree.map(np.asarray, jax.device_get(info))
