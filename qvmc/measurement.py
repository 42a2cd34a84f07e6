"""The one measurement outline behind ``Predictor`` and ``Sweep``: walkers laid out for a context,
burn-in until the equilibration check passes, then measurement draws with a frozen step size.

``Predictor.estimate`` is a one-context measurement that records energies (and a density);
``Sweep.measure`` adds pair correlations, observables, a wavefunction slice and carried-over
walkers. Both call ``burn_in_and_measure`` with their jitted runner (``qvmc.estimator.jit_block_runner``)
and reduce what it returns; each rule of the outline (argument checks, fresh or carried walkers,
the plotting extent, the finiteness check of the local energies) lives here once.
"""

import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import samplers
from hamiltonians.context import Context
from hamiltonians.padding import Layout
from qvmc.config import check_int
from samplers import engine
from samplers.types import Params, PRNGKey

EXTENT_QUANTILE, EXTENT_MARGIN = 0.999, 1.15  # the plotting extent: 1.15 × the 99.9 % quantile of |r|


def plot_extent(electrons) -> float:
    """Half-width of an open system's density grid from electron positions ``[..., D]``:
    ``1.15 · quantile(|r|, 0.999)``."""
    radii = np.linalg.norm(np.asarray(electrons, np.float64), axis=-1)
    return float(EXTENT_MARGIN * np.quantile(radii, EXTENT_QUANTILE))


def check_measure_args(num_walkers: int, num_steps: int, burn_in_chunk: int, min_burn_in: int,
                       max_burn_in: int) -> None:
    """``ValueError`` unless the walker count, measurement draws and burn-in settings are usable."""
    for name, v in (('num_walkers', num_walkers), ('num_steps', num_steps), ('burn_in_chunk', burn_in_chunk)):
        check_int(name, v)
    for name, v in (('min_burn_in', min_burn_in), ('max_burn_in', max_burn_in)):
        check_int(name, v, minimum=0)
    if max_burn_in < min_burn_in:
        raise ValueError(f'max_burn_in ({max_burn_in}) must be >= min_burn_in ({min_burn_in}).')


class Measured(NamedTuple):
    """What ``burn_in_and_measure`` returns (host traces are left to the caller to reduce)."""
    chain: samplers.ChainState  # the walkers after the last draw (in the layout), frozen step size
    report: samplers.BurnInReport
    per_walker: dict  # {name: [W, T]} recorded per walker and draw ('energy', components, …)
    per_draw: dict  # {name: [T, ...]} recorded per draw ('acceptance', histograms, …)
    values: dict  # the context values the runner was given (in the layout)
    extent: float  # the plotting extent used
    carried: bool  # walkers were given (carried over) rather than fresh
    seconds: float


def burn_in_and_measure(run: Callable, layout: Layout, system, config, params: Params, ctx: Context,
                        rng_key: PRNGKey, *, num_walkers: int, num_steps: int, burn_in_chunk: int,
                        min_burn_in: int, max_burn_in: int, walkers=None, step_size=None,
                        extent: Optional[float] = None, extra_args: Callable = lambda extent: (extent,),
                        measure_chunk: Optional[int] = None) -> Measured:
    """Burns in walkers at ``ctx`` (adapting the step size) until ``samplers.check_equilibrium``
    passes, then records ``num_steps`` draws with the step size frozen.

    Args:
      run: the jitted runner of ``ctx``'s program (``layout.spins(ctx)``), called with
        ``args = (params, values, *extra_args(extent))``.
      layout: the walker layout (``hamiltonians.padding``).
      system, config: the Hamiltonian family and the ``VMCConfig`` (initial step size).
      params: the parameters measured.
      ctx: the context.
      rng_key: JAX PRNG key (split into walker initialisation, burn-in and measurement).
      num_walkers: walkers when starting fresh.
      num_steps: measurement draws per walker.
      burn_in_chunk, min_burn_in, max_burn_in: see ``samplers.engine.burn_in``.
      walkers, step_size: carried-over walkers ``[W, n or rows, D]`` and step size (default: fresh
        walkers, the config's initial step size).
      extent: the plotting extent (default: ``plot_extent`` of the walkers after burn-in).
      extra_args: the runner's arguments after ``(params, values)`` as a function of the extent (the
        burn-in passes extent 1; what it records is discarded).
      measure_chunk: draws per compiled measurement call (default ``burn_in_chunk``).

    Returns:
      ``Measured``.
    """
    system.validate(ctx)
    layout.check(ctx)
    check_measure_args(num_walkers, num_steps, burn_in_chunk, min_burn_in, max_burn_in)
    start = time.time()
    key_init, key_burn, key_measure = jax.random.split(rng_key, 3)
    carried = walkers is not None
    if carried:
        walkers = jnp.asarray(walkers)
        sizes = sorted(layout.walker_sizes(ctx))
        if walkers.ndim != 3 or walkers.shape[1] not in sizes:
            raise ValueError(f'walkers must be [W, N={" or ".join(map(str, sizes))}, D] for {ctx.label()}, '
                             f'got {walkers.shape}.')
        walkers = layout.place(jax.random.fold_in(key_init, 1), walkers, ctx, system)
    else:
        walkers = layout.init_walkers(system)(key_init, ctx, num_walkers)
    values = layout.values(ctx)
    step = config.initial_step_size if step_size is None else step_size
    chain = samplers.ChainState(walkers, jnp.asarray(step, walkers.dtype))
    one = jnp.asarray(1.0, walkers.dtype)
    chain, report = engine.burn_in(run, key_burn, chain, (params, values, *extra_args(one)), chunk=burn_in_chunk,
                                   min_steps=min_burn_in, max_steps=max_burn_in)
    if extent is None:
        extent = plot_extent(layout.electrons(chain.walkers, ctx))
    args = (params, values, *extra_args(jnp.asarray(extent, walkers.dtype)))
    chain, traces = engine.sample(run, key_measure, chain, args, num_draws=num_steps,
                                  chunk=measure_chunk or burn_in_chunk)
    if not np.all(np.isfinite(np.asarray(traces.per_walker['energy']))):
        raise FloatingPointError(f'Non-finite local energies while measuring {ctx.label()}: the wavefunction or the '
                                 'sampler diverged (check the parameters).')
    return Measured(chain, report, dict(traces.per_walker), dict(traces.per_draw), values, float(extent), carried,
                    time.time() - start)
