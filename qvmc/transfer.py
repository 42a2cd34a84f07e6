"""Transfer across system size or context range: start a model from parameters trained elsewhere.

The ansätze build orbitals for any N up to a maximum from shared networks, so a parameter
set trained at small N has the shapes a larger-N model needs; ``transfer_state`` checks that
and starts a fresh optimizer and fresh walkers for the new contexts.
"""

import os
from typing import Any, List

import jax
import jax.numpy as jnp
import numpy as np

from qvmc import checkpoint
from qvmc.checkpoint import CHECKPOINT_NAME
from qvmc.resume import vmc_params_template
from samplers.types import Params, PRNGKey
from qvmc.state import TrainState
from qvmc.vmc import VMC


def load_params(path: str, allow_pickle: bool = False) -> Params:
    """The parameters stored in a training checkpoint (a file, or a run directory's newest one).

    Returned as nested dicts of numpy arrays (Haiku's layout). A legacy pickle checkpoint
    loads only with ``allow_pickle=True`` (pickles can run code when loaded).

    Raises:
      ValueError: no readable checkpoint, or the file holds no training state.
    """
    if os.path.isdir(path):
        found, payload, failures = checkpoint.latest_readable(path, CHECKPOINT_NAME, allow_pickle=allow_pickle)
        if found is None:
            reasons = ' '.join(r for _, r in failures) or 'it holds no checkpoint files.'
            raise ValueError(f'No readable checkpoint in {path!r}: {reasons}')
    else:
        payload = checkpoint.load_payload(path, allow_pickle=allow_pickle)
    if 'state' in payload:  # legacy pickle (opted in)
        stored = payload['state']
        stored = stored['train_state'] if isinstance(stored, dict) and 'train_state' in stored else stored
        if isinstance(stored, (tuple, list)) and len(stored) >= 5:
            return stored[1]
        raise ValueError(f'Checkpoint {path!r} holds no training state (write it with qvmc.train.train).')
    params = {}
    for key, value in payload['leaves'].items():
        if not key.startswith("['params']"):
            continue
        names = [part.strip("'") for part in key[len("['params']"):].strip('[]').split('][')]
        node = params
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    if not params:
        raise ValueError(f'Checkpoint {path!r} holds no parameters (write it with qvmc.train.train).')
    return params


def shape_mismatches(params: Params, template: Any) -> List[str]:
    """Human-readable differences between a parameter tree and a template of shapes (empty: compatible)."""
    problems = []
    flat_p = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    flat_t = dict(jax.tree_util.tree_flatten_with_path(template)[0])
    names = lambda tree: {jax.tree_util.keystr(k): v for k, v in tree.items()}
    flat_p, flat_t = names(flat_p), names(flat_t)
    for name in sorted(set(flat_t) - set(flat_p)):
        problems.append(f'{name}: missing from the source parameters')
    for name in sorted(set(flat_p) - set(flat_t)):
        problems.append(f'{name}: not a parameter of the target model')
    for name in sorted(set(flat_p) & set(flat_t)):
        if tuple(np.shape(flat_p[name])) != tuple(np.shape(flat_t[name])):
            problems.append(f'{name}: shape {tuple(np.shape(flat_p[name]))} in the source, '
                            f'{tuple(np.shape(flat_t[name]))} in the target')
    return problems


def transfer_state(vmc: VMC, rng_key: PRNGKey, source) -> TrainState:
    """A fresh ``TrainState`` for ``vmc``'s contexts whose parameters come from ``source``.

    Args:
      vmc: the target trainer (e.g. larger N, or a finer context range; same ansatz and sizes).
      rng_key: key for the new walkers.
      source: a parameter tree, a checkpoint file, or a run directory.

    Returns:
      ``vmc.init(rng_key, params)``: the source parameters (cast to the target's dtypes), a new
      optimizer state, walkers initialized for the target contexts, step 0.

    Raises:
      ValueError: the parameters do not fit the target model (the message lists the mismatches).
    """
    params = load_params(source) if isinstance(source, (str, os.PathLike)) else source
    template = vmc_params_template(vmc)
    problems = shape_mismatches(params, template)
    if problems:
        shown = '; '.join(problems[:5]) + (f'; … {len(problems) - 5} more' if len(problems) > 5 else '')
        raise ValueError('The source parameters do not fit this model (a different ansatz or network size?): '
                         + shown)
    params = jax.tree.map(lambda p, t: jnp.asarray(p, t.dtype), params, template)
    return vmc.init(rng_key, params=params)
