"""A ``Sweep`` that records per-walker observables (e.g. the moiré order parameters) with error bars.

``ObservableSweep`` is ``Sweep`` with its ``observables`` hook fed from a per-particle-content
factory: ``observables(ctx) -> fn(x)`` (or None) is called once per particle content with the
host context, and ``fn(x)`` is recorded for every walker at every measurement draw, inside the
same jitted step that records the local energies (no second sampling pass). Each observable's
mean, blocking error (``samplers.stats.compute_stats`` over ``(chain = walker, draw)``) and
autocorrelation time join the context's row of the energies table (``observable_columns``),
followed by ``observable_steps`` (draws recorded), ``observable_acceptance`` and
``observable_seconds`` (0: no time beyond the measurement; kept for the 0.2 table layout).

Cost: one ``fn`` evaluation per walker and draw; no extra wavefunction evaluations.
"""

from typing import Callable, Dict, Optional

import numpy as np

from hamiltonians.context import Context
from hamiltonians.moire_order import make_order_parameter_fn
from qvmc.config import VMCConfig
from qvmc.sweep import Sweep

ObservableFactory = Callable[[Context], Optional[Callable]]


class ObservableSweep(Sweep):
    """``Sweep`` plus per-walker observables recorded during each context's measurement.

    Args:
      wavefunction, system, config: as for ``Sweep``.
      observables: ``observables(ctx) -> fn`` with ``fn(x [N, D]) -> {name: array}`` a pure,
        jit-safe function of one walker (vmapped by ``Sweep``), or None to record nothing at ``ctx``.
        Called once per particle content with the host context (the result is cached by ``ctx.spins``).
      **sweep_kwargs: ``density_bins``, ``pair_bins``, ``slice_bins``, ``slice_electron``.

    After ``run`` (or ``measure``), ``observable_traces[context label]`` holds the recorded
    ``{name: [W, T, ...]}`` arrays.
    """

    def __init__(self, wavefunction, system, config: VMCConfig = VMCConfig(), *, observables: ObservableFactory,
                 **sweep_kwargs):
        super().__init__(wavefunction, system, config, observables=self._observe, **sweep_kwargs)
        self.observables = observables
        self.observable_traces: Dict[str, Dict[str, np.ndarray]] = {}
        self._per_content: Dict[tuple, Optional[Callable]] = {}

    def _observe(self, x, ctx: Context):
        """The ``Sweep`` hook: the factory's function of ``ctx``'s particle content, or nothing."""
        fn = self._per_content.get(ctx.spins)
        return {} if fn is None else fn(x)

    def measure(self, params, ctx: Context, rng_key, *, num_steps: int = 200, **kwargs):
        """``Sweep.measure`` with the observables recorded on its draws (their columns join the row)."""
        if ctx.spins not in self._per_content:
            self._per_content[ctx.spins] = self.observables(ctx)
        result = super().measure(params, ctx, rng_key, num_steps=num_steps, **kwargs)
        if self._per_content[ctx.spins] is None:
            return result
        row = dict(result.row)
        row.update(observable_steps=num_steps, observable_acceptance=row['acceptance'], observable_seconds=0.0)
        self.observable_traces[ctx.label()] = dict(result.observables)
        return result._replace(row=row)

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
