"""Inference without training: equilibrate fresh walkers for any context and estimate
energies, components and the one-body density with autocorrelation-aware error bars."""

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np
import pandas as pd

from hamiltonians import padding
from hamiltonians.context import Context
from hamiltonians.local_energy import make_local_energy
from hamiltonians.system import check_geometry, make_log_psi
from qvmc.config import VMCConfig
from qvmc.estimator import jit_block_runner
from qvmc.measurement import burn_in_and_measure
from qvmc.observables import density_counts, normalise_density
from qvmc.reporting import stats_frame
from samplers import stats as qstats
from samplers.types import Params, PRNGKey


class Density(NamedTuple):
    """One-body density on a square grid (``values`` integrates to the number of electrons
    that fell inside the grid; ``outside`` is the fraction of electron samples beyond it).

    Attributes:
      values: ``[B, B]`` density (electrons per unit area), axis 0 = x, axis 1 = y.
      edges: ``[B + 1]`` bin edges shared by x and y.
      outside: fraction of samples outside the grid.
    """
    values: np.ndarray
    edges: np.ndarray
    outside: float

    def radial_profile(self, num_bins: int = 40):
        """Azimuthal average: ``(r [num_bins], ρ(r) [num_bins])``."""
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        xx, yy = np.meshgrid(centres, centres, indexing='ij')
        r = np.hypot(xx, yy).ravel()
        r_edges = np.linspace(0.0, self.edges[-1], num_bins + 1)
        which = np.digitize(r, r_edges) - 1
        prof = np.array([self.values.ravel()[which == b].mean() if np.any(which == b) else np.nan
                         for b in range(num_bins)])
        return 0.5 * (r_edges[1:] + r_edges[:-1]), prof


class EnergyEstimate(NamedTuple):
    """Result of ``Predictor.estimate`` for one context.

    Attributes:
      context: the context estimated.
      energy: ``samplers.stats.Stats`` of the local energy.
      components: ``{name: Stats}`` for kinetic, trap, interaction, ...
      burn_in_steps: MCMC calls spent equilibrating (decided by the drift check).
      equilibrated: whether the drift check passed before ``max_burn_in``.
      acceptance: mean acceptance during measurement.
      density: one-body ``Density`` or None.
      trace: local energies ``[W, T]`` (chain = walker, draw = step).
      seconds: wall time.
    """
    context: Context
    energy: qstats.Stats
    components: Dict[str, qstats.Stats]
    burn_in_steps: int
    equilibrated: bool
    acceptance: float
    density: Optional[Density]
    trace: np.ndarray
    seconds: float

    def to_row(self) -> Dict[str, float]:
        """A flat dict for a pandas row: context, energy stats and component means."""
        row = dict(self.context.as_dict())
        row.update(self.energy.to_row('energy'))
        for name, s in self.components.items():
            row[name] = s.mean
            row[f'{name}_err'] = s.error
        row.update(burn_in_steps=self.burn_in_steps, equilibrated=self.equilibrated,
                   acceptance=self.acceptance, seconds=self.seconds)
        return row


def mcmc_functions(wavefunction, system, ctx: Context, params: Params, kinetic_method: str = 'folx',
                   sparsity_threshold: Optional[int] = None):
    """``(logdensity_fn, extra_fn)`` for ``samplers.MCMC`` on one context, in physical units.

    ``logdensity_fn(x) = 2 log|ψ(x)|`` and ``extra_fn(x) = {'energy': E_L, 'kinetic': ..., ...}``
    (every potential component of the system), so ``MCMC.get_extra_fields()``,
    ``print_summary()`` and ``to_arviz()`` carry local-energy traces::

        logdensity, extra = mcmc_functions(wf, dot, ctx, params)
        mcmc = samplers.MCMC('mala', num_warmup=200, num_samples=500, num_chains=256)
        mcmc.run(key, logdensity, dot.init_walkers(key, ctx, 256), extra_fn=extra)
        mcmc.print_summary()

    ``sparsity_threshold``: folx's sparse Jacobians (None: ``VMCConfig.sparsity_for``'s choice by N).
    """
    system.validate(ctx)
    log_psi = make_log_psi(wavefunction, system, ctx.spins)
    if sparsity_threshold is None:
        sparsity_threshold = VMCConfig().sparsity_for(ctx.n_electrons)
    local_energy = make_local_energy(log_psi, system.potential_components, kinetic_method, system.kinetic_scale,
                                     sparsity_threshold)
    values = ctx.values

    def logdensity_fn(x):
        return 2.0 * log_psi(params, x, values)

    def extra_fn(x):
        energy, components = local_energy(params, x, values)
        return {'energy': energy, **components}
    return logdensity_fn, extra_fn


class Predictor:
    """Energy and density estimates at any context from trained parameters.

    The sampling and measurement loops are ``lax.scan``s jitted once per particle
    content ``(n_up, n_down)``; changing λ or ω never recompiles. With ``pad`` every
    content up to ``pad`` runs in one padded program (``hamiltonians.padding``): a new N
    then costs no compile, at the price of the padded size's cost per step.

    Args:
      wavefunction: an ``ansatz.base.Wavefunction``.
      system: the Hamiltonian family (e.g. ``QuantumDot``).
      config: ``VMCConfig`` (walker moves, kinetic method).
      density_bins: grid size ``B`` of the one-body density (0 disables it).
      pad: ``None`` or the padded content ``(n_up, n_down)``; needs a maskable wavefunction
        (Fermi Sets) and a system that supports padding (``QuantumDot``).
    """

    def __init__(self, wavefunction, system, config: VMCConfig = VMCConfig(), density_bins: int = 64,
                 pad: Optional[Sequence[int]] = None):
        check_geometry(wavefunction, system, 'Predictor')
        self.layout = padding.make_layout(pad, wavefunction, system, 'Predictor')
        self.wavefunction, self.system, self.config = wavefunction, system, config
        self.density_bins = density_bins
        self._compiled = {}

    @property
    def pad(self) -> Optional[Tuple[int, int]]:
        """The padded content every context runs in (``layout.pad``; None: unpadded)."""
        return self.layout.pad

    def _functions(self, spins):
        """The jitted runner of ``spins`` (``jit_block_runner``, ``args = (params, values, extent)``),
        recording the density histogram per draw when ``density_bins``."""
        if spins not in self._compiled:
            bins = self.density_bins

            def density(walkers, values, extent):
                mask = padding.electron_mask(values)
                return {}, ({'density': density_counts(walkers, bins, extent, mask=mask)} if bins else {})  # [B·B + 1]
            self._compiled[spins] = jit_block_runner(self.wavefunction, self.system, spins, self.config, density)
        return self._compiled[spins]

    def estimate(self, params: Params, ctx: Context, rng_key: PRNGKey, *, num_walkers: int = 512,
                 num_steps: int = 200, burn_in_chunk: int = 25, min_burn_in: int = 50,
                 max_burn_in: int = 500, density_extent: Optional[float] = None) -> EnergyEstimate:
        """Equilibrates fresh walkers at ``ctx`` and measures with a frozen step size.

        Burn-in runs in chunks of ``burn_in_chunk`` MCMC calls (each of
        ``config.mcmc_substeps`` Metropolis sub-steps) with step-size adaptation, and
        stops once at least ``min_burn_in`` calls are done and
        ``samplers.equilibration.check_equilibrium`` passes on the local energies of the last
        two chunks (no drift beyond three standard errors, split-R̂ below 1.2);
        ``max_burn_in`` caps it (``equilibrated`` is then False).

        Args:
          params: trained parameters.
          ctx: any valid context of the family (need not be a training context).
          rng_key: JAX PRNG key.
          num_walkers: independent walkers (chains).
          num_steps: measurement MCMC calls (draws per chain).
          density_extent: half-width of the density grid; default from the walkers.
        """
        self.system.validate(ctx)
        run = self._functions(self.layout.spins(ctx))
        m = burn_in_and_measure(run, self.layout, self.system, self.config, params, ctx, rng_key,
                                num_walkers=num_walkers, num_steps=num_steps, burn_in_chunk=burn_in_chunk,
                                min_burn_in=min_burn_in, max_burn_in=max_burn_in, extent=density_extent,
                                measure_chunk=num_steps)
        per_walker = dict(m.per_walker)
        trace = np.asarray(per_walker.pop('energy'), np.float64)  # [W, T]
        components = {k: qstats.compute_stats(np.asarray(v, np.float64)) for k, v in per_walker.items()}
        density = None
        if self.density_bins:
            counts = np.asarray(m.per_draw['density'], np.int64).sum(axis=0)
            dens, _, outside = normalise_density(counts, num_walkers * num_steps, ctx.n_electrons,
                                                 self.density_bins, m.extent)
            edges = np.linspace(-m.extent, m.extent, self.density_bins + 1)
            density = Density(dens.reshape(self.density_bins, self.density_bins), edges, outside)
        return EnergyEstimate(ctx, qstats.compute_stats(trace), components, m.report.steps, m.report.equilibrated,
                              float(np.mean(m.per_draw['acceptance'])), density, trace, m.seconds)

    def sweep(self, params: Params, contexts: Sequence[Context], rng_key: PRNGKey, **kwargs) -> pd.DataFrame:
        """``estimate`` at every context; one DataFrame row each (see ``EnergyEstimate.to_row``)."""
        rows = [self.estimate(params, ctx, jax.random.fold_in(rng_key, i), **kwargs).to_row()
                for i, ctx in enumerate(contexts)]
        return stats_frame(rows)
