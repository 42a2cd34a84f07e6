"""Inference sweeps over contexts without optimization: energies and components with error bars,
one-body density, pair correlation g(r) and a conditional wavefunction slice, as tidy DataFrames
(CSV) and energy traces as ArviZ InferenceData (netCDF), written by ``qvmc.reporting``; optional
per-walker observables recorded in the same measurement (``Sweep(observables=fn)``)."""

from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import samplers
from hamiltonians import padding
from hamiltonians.context import Context
from hamiltonians.system import check_geometry, make_psi
from qvmc.config import VMCConfig
from qvmc.estimator import jit_block_runner
from qvmc.measurement import burn_in_and_measure
from qvmc.observables import density_counts, density_grid, normalise_density
from qvmc.reporting import labelled, save_tables, stats_frame, traces_to_arviz
from samplers import stats as qstats
from samplers.equilibration import BurnInReport
from samplers.types import Params, PRNGKey

CHANNELS = ('all', 'same', 'opposite')  # pair channels: every pair, equal spins, opposite spins
OBSERVABLE_PREFIX = 'observable:'  # per-walker trace names of the observables hook inside the runner
ObservablesFn = Callable[[jnp.ndarray, Context], Mapping[str, jnp.ndarray]]


def observable_columns(name: str, trace: np.ndarray) -> Dict[str, float]:
    """Row entries of one recorded observable ``trace [W, T, ...]`` (chain = walker, draw): ``name``
    (mean), ``name_err`` (blocking error of the walker-averaged series) and ``name_tau``; a vector
    observable gives ``name_0``, ``name_1``, … for its components."""
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


def simulation_cell(system, n_electrons: int) -> Optional[np.ndarray]:
    """The periodic supercell ``[D, D]`` (rows, physical units) of N electrons, or None (open system)."""
    cell = system.simulation_cell(n_electrons)
    return None if cell is None else np.asarray(cell, np.float64)


def inscribed_radius(cell: np.ndarray) -> float:
    """Half the shortest lattice vector: minimum-image distances below it cover whole circles."""
    ints = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3) if (i, j) != (0, 0)])
    return 0.5 * float(np.min(np.linalg.norm(ints @ cell, axis=1)))


def _pair_distances(x, cell):
    """``[..., N, N]`` distances (minimum image in a periodic cell) of walkers ``[..., N, D]``."""
    d = x[..., :, None, :] - x[..., None, :, :]
    if cell is None:
        return jnp.sqrt(jnp.sum(d**2, axis=-1))
    cell_j = jnp.asarray(cell, x.dtype)
    frac = d @ jnp.asarray(np.linalg.inv(cell), x.dtype)
    frac = frac - jnp.round(frac)
    shifts = jnp.asarray([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], x.dtype)  # [9, 2]
    images = (frac[..., None, :] + shifts) @ cell_j  # [..., N, N, 9, D]
    return jnp.sqrt(jnp.min(jnp.sum(images**2, axis=-1), axis=-1))


class ContextMeasurement(NamedTuple):
    """Everything measured at one context (tables carry the context's columns).

    Attributes:
      context: the context.
      row: one row of the energies table (see ``Sweep.run``).
      density, pair_correlation, wavefunction_slice, slice_electrons: tidy DataFrames.
      traces: ``{'energy': [W, T], component: [W, T]}`` local-energy traces.
      burn_in: the ``BurnInReport`` of this context.
      final: the walkers and step size after measurement (for carrying over).
      observables: ``{name: [W, T, ...]}`` traces of the ``observables`` hook (empty without one).
    """
    context: Context
    row: Dict[str, object]
    density: pd.DataFrame
    pair_correlation: pd.DataFrame
    wavefunction_slice: pd.DataFrame
    slice_electrons: pd.DataFrame
    traces: Dict[str, np.ndarray]
    burn_in: BurnInReport
    final: samplers.ChainState
    observables: Optional[Dict[str, np.ndarray]] = None


class SweepResult(NamedTuple):
    """Tables of a sweep (one block of rows per context) and the energy traces.

    Attributes:
      energies: one row per context: context columns, ``energy`` with ``_err``, ``_var``,
        ``_tau``, ``_rhat``, ``_n``, ``_ess``; every component in alphabetical order
        (``interaction``, ``kinetic``, ``trap`` or ``moire``, …) with ``_err``; ``energy_per_electron``
        and ``<component>_per_electron`` with ``_err``; ``burn_in_steps``, ``equilibrated``,
        ``carried_over``, ``acceptance``,
        ``density_outside`` (fraction of electron samples outside the density grid),
        ``num_walkers``, ``num_steps``, ``seconds``; with an ``observables`` hook, each observable's
        ``name``, ``name_err``, ``name_tau`` (``observable_columns``; vectors as ``name_0``, …).
      density: ``x``, ``y`` (bin centre), ``density`` (electrons per unit area), ``bin_area``;
        Σ density·bin_area = N·(1 − density_outside).
      pair_correlation: ``channel`` (all / same / opposite spin, ordered pairs), ``r``,
        ``pair_density`` (ordered pairs per unit area at separation r, ∫ 2πr dr = pairs
        within ``r_max``) and ``g``: ``A · pair_density / pairs`` in a periodic cell of area
        A (→ 1 for uncorrelated electrons), ``pair_density / pairs`` in an open system
        (the probability density of a pair's separation vector).
      wavefunction_slice: ``x``, ``y`` of the moved electron, ``log_abs_psi``, ``psi2``
        (``|ψ|²`` divided by its maximum on the grid), ``sign`` (real part of ``ψ/|ψ|``), ``phase``.
      slice_electrons: the reference configuration: ``electron``, ``spin``, ``x``, ``y`` (wrapped
        into the supercell for periodic systems), ``moved`` (the electron scanned over the grid).
      traces: ``arviz.InferenceData``: posterior variables ``energy`` and components with
        dims ``(chain = walker, draw = step, context)``; coordinates for the context parameters.
      observables: ``{context label: {name: [W, T, ...]}}`` traces of the ``observables`` hook
        (contexts where it recorded something; not written by ``save``).
    """
    energies: pd.DataFrame
    density: pd.DataFrame
    pair_correlation: pd.DataFrame
    wavefunction_slice: pd.DataFrame
    slice_electrons: pd.DataFrame
    traces: object
    observables: Optional[Dict[str, Dict[str, np.ndarray]]] = None

    def save(self, directory: str) -> Dict[str, str]:
        """Writes the tables as CSV and the traces as netCDF (h5netcdf); returns the paths
        (``qvmc.reporting.save_tables``)."""
        names = ('energies', 'density', 'pair_correlation', 'wavefunction_slice', 'slice_electrons')
        return save_tables(directory, {name: getattr(self, name) for name in names}, self.traces)


class Sweep:
    """Measures a trained conditional model at many contexts (jitted once per particle content).

    Args:
      wavefunction: an ``ansatz.base.Wavefunction``.
      system: the Hamiltonian family (``QuantumDot``, ``MoireSystem``, …).
      config: ``VMCConfig`` (sampler, sub-steps, kinetic method, chunking).
      density_bins: B, the density grid is B × B (over ``[-extent, extent]²`` or the supercell).
      pair_bins: bins of g(r) up to ``r_max``.
      slice_bins: the wavefunction slice grid is slice_bins × slice_bins.
      slice_electron: the electron moved in the slice (the others stay at the most probable
        sampled configuration).
      observables: optional ``observables(x [N, D], ctx) -> {name: array}``, a pure, jit-safe
        function of one walker, vmapped over the walkers and called at every measurement draw
        inside the jitted recording step. ``ctx`` is a ``Context`` whose particle content is
        static and whose parameters are traced scalars (``ctx['lam']``; ``ctx.values`` and
        ``ctx.label()`` need host values and fail there). Return ``{}`` to record nothing for a
        particle content. The results are stored as ``(chain = walker, draw)`` traces
        (``ContextMeasurement.observables``) and reduced like the energies: mean, blocking error,
        τ_int (``observable_columns``) in the energies table.
      pad: ``None`` or a padded content ``(n_up, n_down)``: every context that fits runs in one
        compiled program (``hamiltonians.padding``; maskable wavefunction, a system that supports
        padding, no ``observables`` hook). The tables hold the electrons only; ``final`` keeps the
        padding rows, and carried-over walkers may be given with or without them.
    """

    def __init__(self, wavefunction, system, config: VMCConfig = VMCConfig(), *, density_bins: int = 48,
                 pair_bins: int = 40, slice_bins: int = 40, slice_electron: int = 0,
                 observables: Optional[ObservablesFn] = None, pad: Optional[Sequence[int]] = None):
        check_geometry(wavefunction, system, 'Sweep')
        self.layout = padding.make_layout(pad, wavefunction, system, 'Sweep')
        if self.layout.pad is not None and observables is not None:
            raise ValueError('The observables hook sees one walker with its static particle content, which padding '
                             'hides; use pad=None with observables.')
        for name, v in (('density_bins', density_bins), ('pair_bins', pair_bins), ('slice_bins', slice_bins)):
            if v <= 0:
                raise ValueError(f'{name} must be > 0, got {v}.')
        self.wavefunction, self.system, self.config = wavefunction, system, config
        self.density_bins, self.pair_bins, self.slice_bins = density_bins, pair_bins, slice_bins
        if observables is not None and not callable(observables):
            raise ValueError(f'observables must be a function (x [N, D], ctx) -> {{name: array}} or None, '
                             f'got {type(observables).__name__}.')
        self.slice_electron = slice_electron
        self.observable_fn = observables
        self._compiled = {}

    @property
    def pad(self) -> Optional[Tuple[int, int]]:
        """The padded content every context runs in (``layout.pad``; None: unpadded)."""
        return self.layout.pad

    def _functions(self, spins):
        """``(run, batch_psi, cell)`` of ``spins``: the jitted runner (``jit_block_runner``, ``args =
        (params, values, extent, r_max)``) recording the histograms per draw and the observables
        hook per walker, the batched ψ of the slice and the periodic cell (or None)."""
        if spins in self._compiled:
            return self._compiled[spins]
        cell = simulation_cell(self.system, sum(spins))
        bins, pbins = self.density_bins, self.pair_bins
        up = np.arange(sum(spins)) < spins[0]
        off = ~np.eye(sum(spins), dtype=bool)
        masks = jnp.asarray(np.stack([off, off & (up[:, None] == up[None, :]), off & (up[:, None] != up[None, :])]))
        hook = self.observable_fn

        def observe(walkers, values, extent, r_max):
            density = density_counts(walkers, bins, extent, cell, mask=padding.electron_mask(values))
            r = _pair_distances(walkers, cell)
            rbin = jnp.where(r < r_max, jnp.floor(r / r_max * pbins).astype(jnp.int32), pbins)
            live = padding.electron_pairs(masks, values)
            pair = jax.vmap(lambda m: jnp.bincount(jnp.where(m, rbin, pbins).ravel(), length=pbins + 1))(live)
            per_walker = {}
            if hook is not None:
                ctx = Context(spins[0], spins[1], tuple(sorted(values.items())))  # parameters traced
                out = jax.vmap(lambda x: hook(x, ctx))(walkers)
                if not isinstance(out, Mapping):
                    raise ValueError(f'observables must return a dict {{name: array}}, got {type(out).__name__}.')
                per_walker = {OBSERVABLE_PREFIX + name: value for name, value in out.items()}  # [W, ...]
            return per_walker, {'density': density, 'pair': pair}

        run = jit_block_runner(self.wavefunction, self.system, spins, self.config, observe)
        batch_psi = jax.vmap(make_psi(self.wavefunction, self.system, spins), in_axes=(None, 0, None))
        self._compiled[spins] = (run, jax.jit(batch_psi), cell)
        return self._compiled[spins]

    def measure(self, params: Params, ctx: Context, rng_key: PRNGKey, *, walkers=None, step_size=None,
                num_walkers: int = 256, num_steps: int = 200, burn_in_chunk: int = 20, min_burn_in: int = 40,
                max_burn_in: int = 400, extent: Optional[float] = None,
                r_max: Optional[float] = None) -> ContextMeasurement:
        """Equilibrates walkers at ``ctx`` (fresh, or ``walkers [W, N, D]`` carried over) until
        ``samplers.equilibration.check_equilibrium`` passes, then measures with a frozen step.

        Args:
          params: trained parameters.
          ctx: any valid context (seen in training or not).
          rng_key: JAX PRNG key.
          walkers, step_size: starting walkers and step size (default: fresh walkers).
          num_walkers: walkers when starting fresh.
          num_steps: measurement MCMC calls (draws per walker), run in chunks of ``burn_in_chunk``
            (a multiple of it avoids compiling a second chunk length).
          burn_in_chunk, min_burn_in, max_burn_in: see ``samplers.burn_in``.
          extent: half-width of the open-system density grid (default from the walkers).
          r_max: largest pair distance of g(r) (default: twice ``extent``, or the
            supercell's inscribed radius).
        """
        self.system.validate(ctx)
        run, batch_psi, cell = self._functions(self.layout.spins(ctx))

        def pair_range(extent):
            return (2.0 * extent if cell is None else inscribed_radius(cell)) if r_max is None else r_max
        m = burn_in_and_measure(run, self.layout, self.system, self.config, params, ctx, rng_key,
                                num_walkers=num_walkers, num_steps=num_steps, burn_in_chunk=burn_in_chunk,
                                min_burn_in=min_burn_in, max_burn_in=max_burn_in, walkers=walkers,
                                step_size=step_size, extent=extent,
                                extra_args=lambda e: (e, jnp.asarray(pair_range(e), e.dtype)))
        extent, r_max = m.extent, float(pair_range(m.extent))
        traces = {k: np.asarray(v, np.float64) for k, v in m.per_walker.items()
                  if not k.startswith(OBSERVABLE_PREFIX)}  # [W, T]
        observed = {k[len(OBSERVABLE_PREFIX):]: np.asarray(v) for k, v in m.per_walker.items()
                    if k.startswith(OBSERVABLE_PREFIX)}  # [W, T, ...]
        samples = traces['energy'].size  # walker samples, each with N electrons
        counts = np.asarray(m.per_draw['density'], np.int64).sum(axis=0)
        pair_counts = np.asarray(m.per_draw['pair'], np.int64).sum(axis=0)
        row = self._energy_row(ctx, traces, m.report, m.carried, float(np.mean(m.per_draw['acceptance'])), m.seconds)
        density, area, row['density_outside'] = normalise_density(counts, samples, ctx.n_electrons,
                                                                  self.density_bins, extent, cell)
        for name in sorted(observed):
            row.update(observable_columns(name, observed[name]))
        labels = {'context': ctx.label(), **ctx.as_dict()}
        frames = (self._density_frame(density, area, extent, cell, labels),
                  self._pair_frame(pair_counts, samples, r_max, cell, ctx, labels))
        slice_frame, electrons = self._slice(params, ctx, m.values, m.chain.walkers, batch_psi, extent, cell, labels)
        return ContextMeasurement(ctx, row, frames[0], frames[1], slice_frame, electrons, traces, m.report, m.chain,
                                  observed)

    def _energy_row(self, ctx, traces, report, carried, acceptance, seconds):
        n = ctx.n_electrons
        row = {'context': ctx.label(), **ctx.as_dict()}
        with np.errstate(invalid='ignore', divide='ignore'):
            energy = qstats.compute_stats(traces['energy'])
        row.update(energy.to_row('energy'))
        row.update(energy_per_electron=energy.mean / n, energy_per_electron_err=energy.error / n)
        for name in sorted(set(traces) - {'energy'}):
            with np.errstate(invalid='ignore', divide='ignore'):  # R-hat of a constant trace is NaN
                s = qstats.compute_stats(traces[name])
            row.update({name: s.mean, f'{name}_err': s.error, f'{name}_per_electron': s.mean / n,
                        f'{name}_per_electron_err': s.error / n})
        w, t = traces['energy'].shape
        row.update(burn_in_steps=report.steps, equilibrated=report.equilibrated, carried_over=carried,
                   acceptance=acceptance, num_walkers=w, num_steps=t, seconds=seconds)
        return row

    def _density_frame(self, density, area, extent, cell, labels):
        points, _ = density_grid(self.density_bins, extent, cell)
        return labelled(pd.DataFrame({'x': points[:, 0], 'y': points[:, 1], 'density': density, 'bin_area': area}),
                        labels)

    def _pair_frame(self, counts, samples, r_max, cell, ctx, labels):
        edges = np.linspace(0.0, r_max, self.pair_bins + 1)
        shell = np.pi * (edges[1:]**2 - edges[:-1]**2)
        up, down = ctx.spins
        pairs = {'all': ctx.n_electrons * (ctx.n_electrons - 1), 'same': up * (up - 1) + down * (down - 1),
                 'opposite': 2 * up * down}
        area = 1.0 if cell is None else abs(np.linalg.det(cell))
        frames = []
        for c, channel in enumerate(CHANNELS):
            if pairs[channel] == 0:
                continue
            pair_density = counts[c, :-1] / (samples * shell)
            frames.append(pd.DataFrame({'channel': channel, 'r': 0.5 * (edges[1:] + edges[:-1]),
                                        'pair_density': pair_density, 'g': area * pair_density / pairs[channel]}))
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=['channel', 'r', 'pair_density', 'g'])
        return labelled(frame, labels)

    def _slice(self, params, ctx, values, walkers, batch_psi, extent, cell, labels):
        """|ψ|² and phase with one electron moved over a grid, the others at the most probable sample."""
        _, logabs = batch_psi(params, walkers, values)
        padded = np.asarray(walkers[int(jnp.argmax(logabs))])
        moved = self.slice_electron % ctx.n_electrons
        row = self.layout.electron_row(moved, ctx)  # its walker row
        points, _ = density_grid(self.slice_bins, extent, cell)
        configs = np.repeat(padded[None], len(points), axis=0)
        configs[:, row] = points
        reference = np.asarray(self.layout.electrons(padded[None], ctx))[0]
        sign, logabs = batch_psi(params, jnp.asarray(configs, walkers.dtype), values)
        logabs, sign = np.asarray(logabs, np.float64), np.asarray(sign)
        finite = np.isfinite(logabs)
        top = np.max(logabs[finite]) if finite.any() else 0.0
        frame = pd.DataFrame({'x': points[:, 0], 'y': points[:, 1], 'log_abs_psi': logabs,
                              'psi2': np.where(finite, np.exp(2 * (logabs - top)), 0.0),
                              'sign': np.real(sign).astype(np.float64), 'phase': np.angle(sign).astype(np.float64)})
        shown = reference if cell is None else np.mod(reference @ np.linalg.inv(cell), 1.0) @ cell  # in the cell
        electrons = pd.DataFrame({'electron': np.arange(ctx.n_electrons),
                                  'spin': np.where(np.arange(ctx.n_electrons) < ctx.n_up, 'up', 'down'),
                                  'x': shown[:, 0], 'y': shown[:, 1],
                                  'moved': np.arange(ctx.n_electrons) == moved})
        return labelled(frame, labels), labelled(electrons, labels)

    def run(self, params: Params, contexts: Sequence[Context], rng_key: PRNGKey, *, carry_over: bool = True,
            start=None, print_fn: Optional[Callable[[str], None]] = None, **measure_kwargs) -> SweepResult:
        """``measure`` at every context, in the given order; tables concatenated.

        With ``carry_over`` a context starts from the final walkers of the previous context
        with the same particle content (e.g. a λ sweep at fixed N); burn-in still runs until
        the equilibration check passes. ``start`` (a ``samplers.ChainState``, e.g. a training
        block's final walkers and step size) starts the first context instead of fresh walkers;
        the later ones carry over as before. The keyword arguments go to ``measure``.
        """
        if not contexts:
            raise ValueError('run needs at least one context.')
        results, last = [], {}
        for i, ctx in enumerate(contexts):
            chain = start if i == 0 else (last.get(ctx.spins) if carry_over else None)
            kwargs = dict(measure_kwargs)
            if chain is not None:
                kwargs.update(walkers=chain.walkers, step_size=chain.step_size)
            result = self.measure(params, ctx, jax.random.fold_in(rng_key, i), **kwargs)
            last[ctx.spins] = result.final
            results.append(result)
            if print_fn:
                r = result.row
                print_fn(f'{ctx.label()}: E = {qstats.format_value_error(r["energy"], r["energy_err"])}  '
                         f'burn-in {r["burn_in_steps"]}{"" if r["equilibrated"] else " (not equilibrated)"}  '
                         f'{r["seconds"]:.1f} s')
        tables = {name: pd.concat([getattr(r, name) for r in results], ignore_index=True)
                  for name in ('density', 'pair_correlation', 'wavefunction_slice', 'slice_electrons')}
        observables = {r.context.label(): r.observables for r in results if r.observables}
        return SweepResult(stats_frame(r.row for r in results), traces=traces_to_arviz(results),
                           observables=observables, **tables)
