"""A NumPyro-style MCMC driver over a walker ensemble, with ArviZ export of its traces."""

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplers import engine
from samplers.reporting import stats_frame, traces_to_inference_data
from samplers.stats import compute_stats
from samplers.kernels import adapt_step_size, init, kernel_spec, make_kernel


class MCMC:
    """Warm-up (step-size adaptation) then sampling with a frozen step, like ``numpyro.infer.MCMC``.

    Chains are walkers: ``num_chains`` independent walkers move together, and every trace is
    stored with axes ``(chain, draw, ...)``.

    Args:
      kernel: sampler name, ``'rwm'`` or ``'mala'`` (see ``samplers.make_kernel``).
      num_warmup: calls with step-size adaptation (discarded).
      num_samples: recorded calls (draws per chain).
      num_chains: walkers; the initial positions must have this leading size.
      num_substeps: kernel transitions between recorded draws (thinning).
      step_size: initial step size.
      keep_positions: also store positions ``[chain, draw, N, D]`` (memory grows with draws).

    Example::

        mcmc = MCMC('rwm', num_warmup=100, num_samples=500, num_chains=256)
        mcmc.run(rng_key, logdensity_fn, x0, extra_fn=lambda x: {'r2': jnp.sum(x**2)})
        mcmc.print_summary()
        idata = mcmc.to_arviz()          # az.summary(idata), az.plot_trace(idata), ...
    """

    def __init__(self, kernel: str = 'rwm', *, num_warmup: int, num_samples: int, num_chains: int,
                 num_substeps: int = 10, step_size: float = 0.5, keep_positions: bool = False):
        for name, value in (('num_samples', num_samples), ('num_chains', num_chains)):
            if value <= 0:
                raise ValueError(f'{name} must be > 0, got {value}.')
        if num_warmup < 0:
            raise ValueError(f'num_warmup must be >= 0, got {num_warmup}.')
        if step_size <= 0:
            raise ValueError(f'step_size must be > 0, got {step_size}.')
        self.kernel_name = kernel
        self.num_warmup, self.num_samples, self.num_chains = num_warmup, num_samples, num_chains
        self.step_size = float(step_size)
        self.keep_positions = keep_positions
        self._kernel = make_kernel(kernel, num_substeps)
        self._target = kernel_spec(kernel).target_acceptance
        self._samples: Dict[str, np.ndarray] = {}
        self._extra: Dict[str, np.ndarray] = {}
        self.last_state = None

    def run(self, rng_key, logdensity_fn: Callable, init_positions, extra_fn: Optional[Callable] = None):
        """Runs warm-up then sampling.

        Args:
          rng_key: JAX PRNG key.
          logdensity_fn: one walker ``[N, D] -> []`` (e.g. ``2·log|ψ|``).
          init_positions: ``[num_chains, N, D]``, finite.
          extra_fn: optional ``x [N, D] -> {name: []}`` recorded per walker and draw (e.g. local
            energy and its components).
        """
        x0 = jnp.asarray(init_positions)
        if x0.ndim < 2 or x0.shape[0] != self.num_chains:
            raise ValueError(f'init_positions must have shape [num_chains={self.num_chains}, ...], got {x0.shape}.')
        if not bool(jnp.all(jnp.isfinite(x0))):
            raise ValueError('init_positions contain non-finite values; start walkers at finite positions.')
        state = init(x0, logdensity_fn)
        if not bool(jnp.any(jnp.isfinite(state.logdensity))):
            raise ValueError('logdensity_fn is non-finite at every initial position.')
        kernel, target, keep = self._kernel, self._target, self.keep_positions

        def step_fn(key, carry, args, adapt):
            st, step = carry
            st, info = kernel(key, st, logdensity_fn, step)
            step = jnp.where(adapt, adapt_step_size(step, info.acceptance, target), step)
            return (st, step), info

        def observe_fn(carry, info, args):
            st, _ = carry
            per_walker = {} if extra_fn is None else dict(jax.vmap(extra_fn)(st.position))
            if keep:
                per_walker['position'] = st.position
            return per_walker, {'acceptance': info.acceptance}

        run = jax.jit(engine.make_runner(step_fn, observe_fn), static_argnames='num_steps')
        key_warm, key_draw = jax.random.split(rng_key)
        carry = (state, jnp.asarray(self.step_size, x0.dtype))
        if self.num_warmup:
            carry, _ = run(key_warm, carry, None, True, num_steps=self.num_warmup)
        (state, step), traces = engine.sample(run, key_draw, carry, None, num_draws=self.num_samples,
                                              chunk=self.num_samples)
        self.step_size_adapted = float(step)
        self._extra = {'acceptance': traces.per_draw['acceptance']}  # [draw]
        per_walker = dict(traces.per_walker)  # [chain, draw, ...]
        if 'position' in per_walker:
            self._samples = {'position': per_walker.pop('position')}
        self._extra.update(per_walker)
        self.last_state = state
        return self

    def get_samples(self, group_by_chain: bool = True) -> Dict[str, np.ndarray]:
        """Recorded positions (``keep_positions=True``): ``[chain, draw, N, D]`` or flattened."""
        if not self._samples:
            raise ValueError('No positions were kept: construct MCMC(..., keep_positions=True) and run().')
        return {k: v if group_by_chain else v.reshape((-1,) + v.shape[2:]) for k, v in self._samples.items()}

    def get_extra_fields(self, group_by_chain: bool = True) -> Dict[str, np.ndarray]:
        """``acceptance`` ``[draw]`` (ensemble mean) and every ``extra_fn`` field ``[chain, draw]``."""
        if not self._extra:
            raise ValueError('Call run() first.')
        return {k: v if (group_by_chain or v.ndim < 2) else v.reshape(-1) for k, v in self._extra.items()}

    def summary(self):
        """A DataFrame with one row per recorded field: ``samplers.stats.Stats`` columns."""
        rows = []
        for name, trace in self.get_extra_fields().items():
            if trace.ndim == 2:
                row = {'field': name}
                row.update(compute_stats(trace).to_row())
                rows.append(row)
        return stats_frame(rows)

    def print_summary(self) -> None:
        """Prints ``summary()`` and the mean acceptance, like NumPyro's ``print_summary``."""
        print(self.summary().to_string(index=False))
        print(f'mean acceptance {np.mean(self._extra["acceptance"]):.3f}, step size {self.step_size_adapted:.4g}')

    def to_arviz(self):
        """An ``arviz.InferenceData`` whose posterior holds every ``[chain, draw]`` field
        (``samplers.reporting.traces_to_inference_data``)."""
        return traces_to_inference_data({k: v for k, v in self.get_extra_fields().items() if v.ndim == 2})
