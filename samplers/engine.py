"""The one measurement engine: a jitted scan of sampler calls that records any observables, burn-in
until the equilibration check passes, and measurement with a frozen step size in chunks.

Every sampling loop of the project (training burn-in, ``Predictor``, ``Sweep``, ``MCMC``) is a
thin user of it::

    run = make_runner(step_fn, observe_fn)     # jit it once per particle content
    state, report = burn_in(run, rng_key, state, args, chunk=25, min_steps=50, max_steps=500)
    state, traces = sample(run, rng_key, state, args, num_draws=200, chunk=25)
    traces.per_walker['energy']                # [chain, draw] (chain = walker)

``step_fn(rng_key, state, args, adapt) -> (state, info)`` makes one sampler call (``adapt``
is a traced bool: adapt the step size or keep it), and ``observe_fn(state, info, args) ->
(per_walker, per_draw)`` returns two dicts: arrays with a leading walker axis ``[W, ...]``
(stored as ``(chain, draw, ...)``) and arrays without one (stored as ``(draw, ...)``).
``args`` is any pytree (parameters, context values, grid extents) passed traced.
"""

from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from samplers.equilibration import BurnInReport, burn_in as burn_in_chunks


class Traces(NamedTuple):
    """Recorded observables as host numpy arrays.

    Attributes:
      per_walker: ``{name: [chain, draw, ...]}`` (chain = walker, draw = sampler call).
      per_draw: ``{name: [draw, ...]}`` (e.g. ensemble acceptance, histograms).
    """
    per_walker: Dict[str, np.ndarray]
    per_draw: Dict[str, np.ndarray]


def make_runner(step_fn: Callable, observe_fn: Callable) -> Callable:
    """``run(rng_key, state, args, adapt, num_steps) -> (state, (per_walker, per_draw))``.

    A ``lax.scan`` of ``num_steps`` calls of ``step_fn``; traces come back with a leading draw
    axis (``[draw, W, ...]`` and ``[draw, ...]``). Not jitted: wrap it in
    ``jax.jit(run, static_argnames='num_steps')`` (``adapt`` is traced, so burn-in and
    measurement share one compiled program per chunk length).
    """
    def run(rng_key, state, args, adapt, num_steps: int):
        adapt = jnp.asarray(adapt)

        def body(state, key):
            state, info = step_fn(key, state, args, adapt)
            return state, observe_fn(state, info, args)
        return jax.lax.scan(body, state, jax.random.split(rng_key, num_steps))
    return run


def _host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # spread over processes: a collective
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _to_host(out) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    per_walker, per_draw = jax.tree.map(_host, out)
    return ({k: np.swapaxes(np.asarray(v), 0, 1) for k, v in per_walker.items()},
            {k: np.asarray(v) for k, v in per_draw.items()})


def burn_in(run: Callable, rng_key, state: Any, args: Any, *, trace: str = 'energy', chunk: int = 25,
            min_steps: int = 50, max_steps: int = 500, rhat_threshold: float = 1.2,
            drift_threshold: float = 3.0) -> Tuple[Any, BurnInReport]:
    """Runs ``run`` with step-size adaptation in chunks until the per-walker trace ``trace``
    passes ``samplers.check_equilibrium`` on the window of the last two chunks (see
    ``samplers.equilibration.burn_in`` for the rule and the bounds)."""
    def run_chunk(state, start, n):
        state, out = run(jax.random.fold_in(rng_key, start), state, args, True, num_steps=n)
        per_walker, _ = _to_host(out)
        return state, np.asarray(per_walker[trace], np.float64)  # [W, n]
    return burn_in_chunks(run_chunk, state, chunk=chunk, min_steps=min_steps, max_steps=max_steps,
                          rhat_threshold=rhat_threshold, drift_threshold=drift_threshold)


def sample(run: Callable, rng_key, state: Any, args: Any, *, num_draws: int, chunk: int,
           adapt: bool = False) -> Tuple[Any, Traces]:
    """``num_draws`` sampler calls (frozen step size unless ``adapt``), run in chunks of
    ``chunk`` calls (the burn-in's chunk length: nothing new compiles when ``num_draws`` is a
    multiple of it), traces concatenated along the draw axis on the host."""
    if num_draws <= 0 or chunk <= 0:
        raise ValueError(f'num_draws and chunk must be > 0, got {num_draws} and {chunk}.')
    pieces, done = [], 0
    while done < num_draws:
        n = min(chunk, num_draws - done)
        state, out = run(jax.random.fold_in(rng_key, done), state, args, adapt, num_steps=n)
        pieces.append(_to_host(out))
        done += n
    per_walker = {k: np.concatenate([p[0][k] for p in pieces], axis=1) for k in pieces[0][0]}
    per_draw = {k: np.concatenate([p[1][k] for p in pieces], axis=0) for k in pieces[0][1]}
    return state, Traces(per_walker, per_draw)
