"""Training checkpoints: the state as a safe (pickle-free) checkpoint tree plus JSON metadata, and
resuming a run directory from its newest readable checkpoint."""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import samplers
from qvmc import checkpoint, parallel
from qvmc.checkpoint import CHECKPOINT_NAME, LEGACY_LATEST
from qvmc.state import TrainState

CHECKED_KEYS = ('param_shapes', 'contexts', 'schedule')
OPTIONAL_CHECKED_KEYS = ('system',)  # checked where the checkpoint records it (written since 0.3.1)


def vmc_params_template(vmc):
    """Parameter shapes of the model (``jax.ShapeDtypeStruct`` leaves)."""
    ctx = vmc.contexts[0]
    x0 = jnp.asarray(np.arange(ctx.n_electrons * vmc.system.ndim).reshape(ctx.n_electrons, -1) * 0.1)
    cond = vmc.system.context_features(ctx.values, *ctx.spins)
    shapes = jax.eval_shape(lambda k: vmc.wavefunction.init(k, x0, cond, ctx.spins, 0.0), jax.random.PRNGKey(0))
    if vmc.config.network_dtype is not None:
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, vmc.config.network_dtype)
                              if jnp.issubdtype(s.dtype, jnp.floating) else s, shapes)
    return shapes


def model_metadata(vmc, schedule=None, run_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a checkpoint records about the run; ``param_shapes``, ``contexts``, ``schedule`` and
    ``system`` (the Hamiltonian family's fields, e.g. the dot's ``max_electrons`` that scales the
    context features) must match on resume, the rest (VMC settings, the driver's configuration)
    is for the record."""
    shapes = jax.tree.map(lambda a: tuple(np.shape(a)), vmc_params_template(vmc))
    system = vmc.system
    system = {'name': type(system).__name__,
              'params': _plain(dataclasses.asdict(system)) if dataclasses.is_dataclass(system) else repr(system)}
    return {'contexts': [c.label() for c in vmc.contexts], 'param_shapes': str(shapes), 'system': system,
            'schedule': None if schedule is None else schedule.describe(),
            'vmc_config': dataclasses.asdict(vmc.config), 'run_config': _plain(dict(run_config or {}))}


def _plain(value):
    """JSON-friendly copy of a driver configuration (tuples become lists, numpy scalars numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def state_tree(state: TrainState, rng_key) -> Dict[str, Any]:
    """The arrays of a checkpoint: the state gathered to the host, and the run's RNG key."""
    host = parallel.gather_state(state)  # a collective in multi-process runs: every process calls it
    return {'step': host.step, 'params': host.params, 'opt_state': host.opt_state,
            'num_rejected': host.num_rejected,
            'chains': [{'walkers': c.walkers, 'step_size': c.step_size} for c in host.chains],
            'values': [dict(v) for v in host.values], 'rng_key': rng_key}


def state_metadata(state: TrainState, base: Dict[str, Any], schedule=None, retry=None) -> Dict[str, Any]:
    """``base`` (``model_metadata``) plus the step, block layout, schedule position and the
    retry position of ``qvmc.guard.Guard`` (``retry``: None outside a retried failure)."""
    step = int(np.asarray(state.step))
    meta = dict(base)
    meta.update(step=step, spins=[list(s) for s in state.spins],
                block_contexts=[c.label() for c in state.contexts],
                total_walkers=sum(int(np.shape(c.walkers)[0]) for c in state.chains),
                schedule_position=None if schedule is None else list(schedule.block_index(step)),
                retry=retry)
    return meta


def _sub(leaves: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    return {k[len(prefix):]: v for k, v in leaves.items() if k.startswith(prefix)}


def state_from_payload(payload: Dict[str, Any], template: TrainState, path: str) -> Tuple[TrainState, Any]:
    """``(state, rng_key)`` from a checkpoint payload; parameters and optimizer state are restored
    into the structure of ``template`` (a ``ValueError`` names every difference)."""
    if 'state' in payload:  # a legacy pickle, loaded with allow_pickle=True
        return _legacy_state(payload['state'], template, path)
    leaves, meta = payload['leaves'], payload['metadata']
    try:
        params = checkpoint.restore(_sub(leaves, "['params']"), jax.tree.map(np.asarray, template.params))
        opt_state = checkpoint.restore(_sub(leaves, "['opt_state']"), jax.tree.map(np.asarray, template.opt_state))
    except ValueError as err:
        raise ValueError(f'Checkpoint {path!r} is incompatible with this run ({err}) Use the model and optimizer '
                         'it was trained with, or a new run directory.') from None
    chains, values = [], []
    for i, _ in enumerate(meta['spins']):
        chains.append(samplers.ChainState(leaves[f"['chains'][{i}]['walkers']"],
                                          leaves[f"['chains'][{i}]['step_size']"]))
        values.append({k[2:-2]: v for k, v in _sub(leaves, f"['values'][{i}]").items()})
    state = TrainState(np.asarray(leaves["['step']"], np.int32), params, opt_state, tuple(chains), tuple(values),
                       np.asarray(leaves["['num_rejected']"], np.int32), tuple(tuple(s) for s in meta['spins']))
    if state.pad != template.pad:
        raise ValueError(f'Checkpoint {path!r} holds walkers padded to {state.pad} (None: not padded), this run pads '
                         f'to {template.pad}. Use the padding it was trained with, or a new run directory.')
    return state, leaves["['rng_key']"]


def _legacy_state(stored, template: TrainState, path: str) -> Tuple[TrainState, Any]:
    """A state from a pickle written by qvmc 0.1 (a TrainState tuple: step, params, opt_state,
    tasks, num_rejected, contexts)."""
    key = None
    if isinstance(stored, dict):
        key = stored['rng_key']
        key = jax.random.wrap_key_data(key['data'], impl=key['impl']) if key['typed'] else np.asarray(key['data'])
        stored = stored['train_state']
    step, params, opt_state, tasks, num_rejected, contexts = tuple(stored)[:6]
    chains = [samplers.ChainState(np.asarray(t[0]), np.asarray(t[1])) for t in tasks]
    state = TrainState.create(params, opt_state, chains, contexts, step, num_rejected)
    if jax.tree.structure(state.opt_state) != jax.tree.structure(template.opt_state):
        raise ValueError(f'Checkpoint {path!r} is incompatible: its optimizer state does not match this run\'s '
                         'optimizer. Use the optimizer it was trained with, or a new run directory.')
    return state, key


def resume(vmc, state: TrainState, rng_key, run_dir: str, metadata: Dict[str, Any], say,
           allow_pickle: bool = False) -> Tuple[TrainState, Any, Optional[str], Dict[str, Any]]:
    """The newest readable checkpoint's state and key, or the given ones; refuses bad files.

    Returns ``(state, rng_key, path, stored_metadata)`` with ``path`` None (and the metadata
    empty) when nothing was resumed.
    """
    removed = checkpoint.remove_temporaries(run_dir)
    if removed:
        say(f'removed {removed} unfinished checkpoint temporary file(s) from {run_dir}')
    path, payload, failures = checkpoint.latest_readable(run_dir, CHECKPOINT_NAME, allow_pickle=allow_pickle)
    if path is None and not failures and os.path.exists(os.path.join(run_dir, LEGACY_LATEST)):
        path, payload, failures = checkpoint.latest_readable(run_dir, LEGACY_LATEST, allow_pickle)
    if path is None:
        if failures:
            raise ValueError(f'No readable checkpoint in {run_dir!r}; nothing was changed. '
                             + ' '.join(reason for _, reason in failures))
        return state, rng_key, None, {}
    checked = CHECKED_KEYS + tuple(k for k in OPTIONAL_CHECKED_KEYS if k in payload['metadata'])
    checkpoint.check_metadata(path, payload['metadata'], {k: metadata[k] for k in checked})
    loaded, stored_key = state_from_payload(payload, state, path)
    loaded = parallel.place_state(loaded, vmc.mesh, vmc.config.network_dtype)
    for bad, reason in failures:
        os.replace(bad, bad + '.corrupt')
        say(f'{reason} Renamed it to {os.path.basename(bad)}.corrupt.')
    if stored_key is not None:
        if not np.array_equal(_key_data(stored_key), _key_data(rng_key)):
            say('the given rng_key differs from the run\'s; resuming with the run\'s stored key')
        rng_key = stored_key
    say(f'Resuming from {path} at step {int(np.asarray(loaded.step))}.')
    return loaded, rng_key, path, dict(payload['metadata'])


def _key_data(key) -> np.ndarray:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def save_state(path: str, state: TrainState, rng_key=None, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Writes one training state (and optionally the run's key) to a ``.qvmc`` file (not rotated)."""
    key = jax.random.PRNGKey(0) if rng_key is None else rng_key
    tree = state_tree(state, key)
    if jax.process_index() == 0:
        checkpoint.save(path, tree, state_metadata(state, dict(metadata or {})))


def load_state(path: str, template: TrainState, allow_pickle: bool = False) -> Tuple[TrainState, Any]:
    """``(state, rng_key)`` from a file written by ``save_state`` or ``train``; parameters and
    optimizer state must match ``template``'s (e.g. ``vmc.init(key)``); host numpy leaves."""
    payload = checkpoint.load_payload(path, allow_pickle=allow_pickle)
    return state_from_payload(payload, template, path)
