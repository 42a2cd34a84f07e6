"""The model file: format constants, reader, verifier and writer of parameters-only ``.qvmc`` model files.

A model file is a ``qvmc.checkpoint`` file (header line, SHA-256 line, ``.npz`` body read with
``allow_pickle=False``, JSON metadata) whose tree is ``{'params': params}`` (no optimizer state, no
walkers) and whose metadata says how to rebuild everything else (ansatz config, system, spin sector,
training set, sampler settings, card). ``qvmc.pretrained`` finds and loads models by name on top of it::

    qvmc-models export runs/foundation_polarized my_model.qvmc --card card.json
"""

import dataclasses
import hashlib
import math
import os
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ansatz.registry import ANSATZE, make_ansatz
from hamiltonians import QuantumDot, padding
from hamiltonians.context import Context
from qvmc import checkpoint
from qvmc.checkpoint import CHECKPOINT_NAME

MODEL_KIND = 'qvmc-pretrained-model'
MODEL_FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MODEL_SUFFIX = '.qvmc'
SYSTEMS = {'QuantumDot': QuantumDot}  # system name -> dataclass rebuilt from its stored fields
SPIN_SECTORS = ('polarized', 'unpolarized')
_PARAMS = "['params']"

# VMCConfig fields that describe sampling and measurement (the rest is training-only).
_SAMPLING_KEYS = ('sampler', 'mcmc_substeps', 'target_acceptance', 'kinetic_method', 'initial_step_size',
                  'chunk_size', 'reseed_bad_walkers')


# ----- reading and verifying -----

def _check_version(meta: Dict[str, Any], path: str) -> None:
    if meta.get('kind') != MODEL_KIND:
        raise ValueError(f'{path!r} is not a pretrained model file (it is a training checkpoint?): export it '
                         'first with qvmc.pretrained.export_model.')
    version = meta.get('model_format_version')
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f'Pretrained model {path!r} has model format version {version!r}; this qvmc reads '
                         f'versions {list(SUPPORTED_VERSIONS)}. Upgrade qvmc or re-export the model.')


def read(path: str):
    """``(param_leaves, metadata)`` of a model file, verified (checksum, kind, version); no JAX code runs.

    Raises:
      ValueError: the file is missing, corrupted or truncated, not a model, or of an unknown version.
    """
    try:
        payload = checkpoint.load_payload(path)
    except ValueError as err:
        raise ValueError(f'Pretrained model {path!r} cannot be used: {err}') from None
    meta = payload['metadata']
    _check_version(meta, path)
    leaves = {k[len(_PARAMS):]: v for k, v in payload['leaves'].items() if k.startswith(_PARAMS)}
    return leaves, meta


def build(meta: Dict[str, Any]):
    """``(wavefunction, system)`` from a model's metadata."""
    ansatz = meta['ansatz']
    if ansatz['name'] not in ANSATZE:
        raise ValueError(f'Pretrained model needs ansatz {ansatz["name"]!r}, which this qvmc does not have.')
    config = ANSATZE[ansatz['name']].config_cls(**ansatz['config'])
    sys_meta = meta['system']
    if sys_meta['name'] not in SYSTEMS:
        raise ValueError(f'Pretrained model needs system {sys_meta["name"]!r}; this qvmc ships {sorted(SYSTEMS)}.')
    return make_ansatz(ansatz['name'], config), SYSTEMS[sys_meta['name']](**sys_meta['params'])


def spins_for(spin_sector: str, n: int):
    """``(n_up, n_down)`` of N electrons in a model's spin sector."""
    if spin_sector not in SPIN_SECTORS:
        raise ValueError(f'Unknown spin sector {spin_sector!r}; expected one of {SPIN_SECTORS}.')
    return (n, 0) if spin_sector == 'polarized' else ((n + 1) // 2, n // 2)


def param_template(wavefunction, system, spins) -> Any:
    """Parameter shapes (``jax.ShapeDtypeStruct``) the wavefunction builds; traces, compiles nothing."""
    n = sum(spins)
    values = Context.make(*spins, **{k: 1.0 for k in system.param_names}).values  # any valid values

    def init():
        x0 = jnp.arange(n * system.ndim, dtype=jnp.float32).reshape(n, system.ndim) * 0.1
        cond = jnp.asarray(system.context_features(values, *spins), jnp.float32)
        return wavefunction.init(jax.random.PRNGKey(0), x0, cond, spins, 0.0)
    return jax.eval_shape(init)


def restore_params(leaves: Dict[str, Any], wavefunction, system, meta: Dict[str, Any], path: str):
    """Stored leaves as the ansatz's parameter tree; ``ValueError`` naming the first differing leaf."""
    points = meta['training_set']['contexts']
    spins = (points[0]['n_up'], points[0]['n_down']) if points else spins_for(meta['spin_sector'], 2)
    template = param_template(wavefunction, system, spins)
    flat = {jax.tree_util.keystr(p): t for p, t in jax.tree_util.tree_flatten_with_path(template)[0]}
    what = f'{meta["ansatz"]["name"]} with {meta["ansatz"]["config"]}'
    for key, t in flat.items():
        if key not in leaves:
            raise ValueError(f'Pretrained model {path!r} lacks parameter {key} that its ansatz ({what}) needs.')
        got = np.asarray(leaves[key])
        if tuple(got.shape) != tuple(t.shape):
            raise ValueError(f'Pretrained model {path!r}: parameter {key} has shape {tuple(got.shape)} in the '
                             f'file, but the ansatz its stored config builds ({what}) expects {tuple(t.shape)}.')
        if got.dtype.kind != 'f':
            raise ValueError(f'Pretrained model {path!r}: parameter {key} has dtype {got.dtype}, expected floats.')
    extra = sorted(set(leaves) - set(flat))
    if extra:
        raise ValueError(f'Pretrained model {path!r} has parameter {extra[0]} that its ansatz ({what}) does not '
                         f'have ({len(extra)} such leaves).')
    stored = {k: jax.ShapeDtypeStruct(np.shape(leaves[k]), np.asarray(leaves[k]).dtype) for k in flat}
    template = jax.tree_util.tree_unflatten(jax.tree.structure(template), [stored[k] for k in flat])
    return checkpoint.restore(leaves, template)


def _plain_card(value: Any) -> Any:
    """The card as JSON: NaN/inf become None, numpy scalars numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _plain_card(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_card(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain_card(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_source(source: str):
    """``(path, bytes, leaves, metadata)`` of a checkpoint file or of a run directory's newest readable one."""
    path = source
    if os.path.isdir(source):
        path, _, failures = checkpoint.latest_readable(source, CHECKPOINT_NAME)
        if path is None:
            reasons = ' '.join(r for _, r in failures) or 'it holds no checkpoint files.'
            raise ValueError(f'No readable checkpoint in {source!r}: {reasons}')
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f'Checkpoint {path!r} cannot be read ({err}).') from err
    leaves, header = checkpoint.decode(data, path)
    return path, data, leaves, header['metadata']


def _ansatz_from_run(run_config: Dict[str, Any], ansatz_name: str, ansatz_config: Any):
    """The ansatz config of a training run: given, or Fermi Sets from the driver's size flags."""
    if ansatz_config is not None:
        return ansatz_config
    entry = ANSATZE[ansatz_name] if ansatz_name in ANSATZE else None
    sizes = {'width': 'width', 'num_layers': 'layers', 'num_determinants': 'determinants'}
    if ansatz_name == 'fermi_sets' and entry and all(v in run_config for v in sizes.values()):
        return entry.config_cls(**{k: run_config[v] for k, v in sizes.items()})
    raise ValueError(f'The checkpoint\'s run_config does not say how to build ansatz {ansatz_name!r}; pass '
                     'ansatz_config= (the config object it was trained with).')


def _training_set(leaves: Dict[str, Any], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Training contexts ``{'n_up', 'n_down', <param>: value}`` from a checkpoint's walker blocks."""
    points = []
    for i, spins in enumerate(meta.get('spins') or []):
        prefix = f"['values'][{i}]['"
        values = {k[len(prefix):-2]: np.asarray(v) for k, v in leaves.items() if k.startswith(prefix)}
        ctx = padding.layout_of_values(spins, values).context(spins, values)  # a padded run: the mask's rows
        points.append({'n_up': ctx.n_up, 'n_down': ctx.n_down, **{k: float(v) for k, v in ctx.values.items()}})
    return points


def _spin_sector(run_config: Dict[str, Any], points: List[Dict[str, Any]]) -> str:
    spin = run_config.get('spin')
    if spin in SPIN_SECTORS:
        return spin
    if points and all(p['n_down'] == 0 for p in points):
        return 'polarized'
    if points and all(p['n_up'] == (p['n_up'] + p['n_down'] + 1) // 2 for p in points):
        return 'unpolarized'
    raise ValueError('Cannot tell the spin sector of the training run (no run_config["spin"]); the model '
                     'format supports polarized (n_down = 0) and unpolarized (n_up = ⌈N/2⌉) models.')


def export_model(source: str, out_path: str, card: Optional[Dict[str, Any]] = None, *,
                 ansatz_name: str = 'fermi_sets', ansatz_config: Any = None, system=None,
                 name: Optional[str] = None) -> Dict[str, Any]:
    """Writes a shipped model file: the parameters of a checkpoint and JSON metadata, nothing else.

    Args:
      source: a training checkpoint (``RUN_DIR/checkpoint.qvmc`` or a numbered one), a run
        directory (its newest readable checkpoint), or an exported model file (to replace its card).
      out_path: the model file to write (atomically), e.g. ``qvmc/models/<name>.qvmc``.
      card: the model card's facts (description, intended use, limitations, ``energy_table``
        rows, ...); any JSON-like dict, NaN becomes null. For a model source, None keeps its card.
      ansatz_name: registered ansatz (``ansatz.ANSATZ_NAMES``) the run trained.
      ansatz_config: its config object; default for ``'fermi_sets'``: width, layers and
        determinants from the checkpoint's ``run_config`` (the driver's flags), other sizes default.
      system: the Hamiltonian family object (default ``QuantumDot(max_electrons=...)`` with the run's
        ``--max-electrons``, 30 if it has none, as the foundation driver builds it).
      name: the model's name in its metadata (default: ``out_path``'s base name).

    Returns:
      The metadata written.

    Raises:
      ValueError: the source is unreadable, or its parameters do not match the ansatz
        (the message names the first differing leaf).
    """
    path, data, leaves, meta = _read_source(os.fspath(source))
    params_leaves = {k[len(_PARAMS):]: v for k, v in leaves.items() if k.startswith(_PARAMS)}
    if not params_leaves:
        raise ValueError(f'Checkpoint {path!r} holds no parameters (write it with qvmc.train.train).')
    name = name or os.path.basename(out_path).removesuffix(MODEL_SUFFIX)
    if meta.get('kind') == MODEL_KIND:  # re-export of a model file: keep everything but the card (and name)
        _check_version(meta, path)
        model_meta = dict(meta, name=name, card=_plain_card(meta.get('card', {}) if card is None else card))
    else:
        run_config = dict(meta.get('run_config') or {})
        config = _ansatz_from_run(run_config, ansatz_name, ansatz_config)
        if system is None:
            system = QuantumDot(max_electrons=int(run_config.get('max_electrons') or QuantumDot.max_electrons))
        points = _training_set(leaves, meta)
        sha = hashlib.sha256(data).hexdigest()
        vmc_config = {k: v for k, v in (meta.get('vmc_config') or {}).items() if k in _SAMPLING_KEYS}
        model_meta = {
            'kind': MODEL_KIND, 'model_format_version': MODEL_FORMAT_VERSION, 'name': name,
            'ansatz': {'name': ansatz_name, 'config_class': type(config).__name__,
                       'config': dataclasses.asdict(config)},
            'system': {'name': type(system).__name__, 'params': dataclasses.asdict(system)},
            'spin_sector': _spin_sector(run_config, points),
            'training_set': {'contexts': points, 'flags': run_config.get('train'),
                             'schedule': run_config.get('schedule'), 'lam_range': run_config.get('lam_range')},
            'training': {'step': meta.get('step'), 'steps': run_config.get('steps'),
                         'optimizer': run_config.get('optimizer'), 'walkers': run_config.get('walkers'),
                         'seed': run_config.get('seed'), 'network_dtype': (meta.get('vmc_config') or {}).get(
                             'network_dtype'), 'source_checkpoint': os.path.basename(path),
                         'source_sha256': sha},
            'sampling': vmc_config,
            'card': _plain_card(card or {}),
        }
    model_meta['param_shapes'] = {k: {'shape': list(np.shape(v)), 'dtype': np.asarray(v).dtype.name}
                                  for k, v in params_leaves.items()}
    wavefunction, system = build(model_meta)
    params = restore_params(params_leaves, wavefunction, system, model_meta, path)
    checkpoint.save(out_path, {'params': params}, model_meta)
    return model_meta
