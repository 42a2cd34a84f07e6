"""A ``Sweep`` that also samples per-walker observables (e.g. the moiré order parameters) with error bars.

``Sweep`` records energies, densities and g(r) in its own jitted measurement; it has no hook
for extra per-walker observables. ``ObservableSweep`` adds them without touching it: after
``Sweep.measure`` has equilibrated and measured a context, it continues the same Markov chains
(frozen step size, the measurement engine ``samplers.engine``) for ``observable_steps`` more
sampler calls, recording ``observable_fn(x)`` for every walker and draw, and adds each
observable's mean, blocking error (``samplers.stats.compute_stats`` over ``(chain = walker,
draw)``) and autocorrelation time to the context's row of the energies table. The continued
chains are what the next context of a sweep starts from (``Sweep.run``'s carry-over).

Cost: sampler calls only (log|ψ|, no Laplacian), ``observable_steps × mcmc_substeps``
wavefunction evaluations per walker and context.
"""

import time
from typing import Callable, Dict, Optional

import jax
import numpy as np

from hamiltonians.context import Context
from hamiltonians.moire_order import make_order_parameter_fn
from qvmc.config import VMCConfig
from qvmc.estimator import make_block_functions
from qvmc.sweep import Sweep
from samplers import engine
from samplers import stats as qstats

ObservableFactory = Callable[[Context], Optional[Callable]]


def observable_columns(name: str, trace: np.ndarray) -> Dict[str, float]:
    """Row entries of one recorded observable ``trace [W, T, ...]``: ``name`` (mean), ``name_err``
    (blocking error of the walker-averaged series) and ``name_tau``; a vector observable gives
    ``name_0``, ``name_1``, … for its components."""
    trace = np.asarray(trace, np.float64)
    if trace.ndim > 2:
        flat = trace.reshape(trace.shape[:2] + (-1,))
        out = {}
        for i in range(flat.shape[-1]):
            out.update(observable_columns(f'{name}_{i}', flat[..., i]))
        return out
    with np.errstate(invalid='ignore', divide='ignore'):  # constant traces: τ and R-hat are NaN
        s = qstats.compute_stats(trace)
    return {name: s.mean, f'{name}_err': s.error, f'{name}_tau': s.tau}


class ObservableSweep(Sweep):
    """``Sweep`` plus per-walker observables sampled after each context's measurement.

    Args:
      wavefunction, system, config: as for ``Sweep``.
      observables: ``observables(ctx) -> fn`` with ``fn(x [N, D]) -> {name: array}`` a pure,
        jit-safe function of one walker (vmapped here), or None to record nothing at ``ctx``.
        Called once per particle content (the result is cached by ``ctx.spins``).
      observable_steps: sampler calls per context (None: the ``num_steps`` of the measurement).
      **sweep_kwargs: ``density_bins``, ``pair_bins``, ``slice_bins``, ``slice_electron``.

    After ``run`` (or ``measure``), ``observable_traces[context label]`` holds the recorded
    ``{name: [W, T, ...]}`` arrays.
    """

    def __init__(self, wavefunction, system, config: VMCConfig = VMCConfig(), *, observables: ObservableFactory,
                 observable_steps: Optional[int] = None, **sweep_kwargs):
        super().__init__(wavefunction, system, config, **sweep_kwargs)
        if observable_steps is not None and (isinstance(observable_steps, bool)
                                             or not isinstance(observable_steps, int) or observable_steps < 1):
            raise ValueError(f'observable_steps must be an integer >= 1 or None, got {observable_steps!r}.')
        self.observables = observables
        self.observable_steps = observable_steps
        self.observable_traces: Dict[str, Dict[str, np.ndarray]] = {}
        self._observable_runners = {}

    def _observable_runner(self, ctx: Context):
        if ctx.spins not in self._observable_runners:
            fn = self.observables(ctx)
            run = None
            if fn is not None:
                fns = make_block_functions(self.wavefunction, self.system, ctx.spins, self.config)

                def step_fn(key, chain, args, adapt):
                    params, values = args
                    return fns.sample(key, params, chain, values, adapt)

                def observe_fn(chain, info, args):
                    return jax.vmap(fn)(chain.walkers), {'acceptance': info.acceptance}
                run = jax.jit(engine.make_runner(step_fn, observe_fn), static_argnames='num_steps')
            self._observable_runners[ctx.spins] = run
        return self._observable_runners[ctx.spins]

    def measure(self, params, ctx: Context, rng_key, *, num_steps: int = 200, burn_in_chunk: int = 20,
                **kwargs):
        """``Sweep.measure``, then ``observable_steps`` more sampler calls recording the observables
        (their columns join the row; ``final`` is the chain after them)."""
        result = super().measure(params, ctx, rng_key, num_steps=num_steps, burn_in_chunk=burn_in_chunk, **kwargs)
        run = self._observable_runner(ctx)
        if run is None:
            return result
        start = time.time()
        draws = self.observable_steps or num_steps
        chain, traces = engine.sample(run, jax.random.fold_in(rng_key, 0x0b5e), result.final, (params, ctx.values),
                                      num_draws=draws, chunk=burn_in_chunk)
        row = dict(result.row)
        for name in sorted(traces.per_walker):
            row.update(observable_columns(name, traces.per_walker[name]))
        row.update(observable_steps=draws, observable_acceptance=float(np.mean(traces.per_draw['acceptance'])),
                   observable_seconds=time.time() - start)
        self.observable_traces[ctx.label()] = {k: np.asarray(v) for k, v in traces.per_walker.items()}
        return result._replace(row=row, final=chain)

    def save_observable_traces(self, path: str) -> None:
        """Writes the recorded traces to one ``.npz``: arrays ``<context label>/<name>`` of shape ``[W, T, ...]``."""
        np.savez_compressed(path, **{f'{label}/{name}': v for label, traces in self.observable_traces.items()
                                     for name, v in traces.items()})


def moire_order_observables(system) -> ObservableFactory:
    """``observables`` for ``ObservableSweep``: the honeycomb order parameters of
    ``hamiltonians.moire_order`` where the supercell fits the √3×√3 order, else None."""
    def factory(ctx: Context):
        try:
            return make_order_parameter_fn(system, ctx.n_electrons)
        except ValueError:
            return None
    return factory
