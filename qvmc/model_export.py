"""Writing shipped model files: a training checkpoint (or run directory) to a parameters-only model file.

The file format and the reader live in ``qvmc.pretrained``; this module writes what it reads::

    python -m qvmc.pretrained export runs/foundation_polarized qvmc/models/foundation_polarized.qvmc --card card.json
"""

import dataclasses
import hashlib
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ansatz.registry import ANSATZE
from hamiltonians import QuantumDot, padding
from qvmc import checkpoint
from qvmc.pretrained import (MODEL_FORMAT_VERSION, MODEL_KIND, MODEL_SUFFIX, SPIN_SECTORS, _PARAMS,
                             _check_version, _restore_params, build)
from qvmc.resume import CHECKPOINT_NAME

# VMCConfig fields that describe sampling and measurement (the rest is training-only).
_SAMPLING_KEYS = ('sampler', 'mcmc_substeps', 'target_acceptance', 'kinetic_method', 'initial_step_size',
                  'chunk_size', 'reseed_bad_walkers')


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
        mask = values.pop(padding.ACTIVE, None)
        if mask is not None:  # a padded run: the electrons are the mask's rows
            spins = (round(float(mask[:spins[0]].sum())), round(float(mask[spins[0]:].sum())))
        points.append({'n_up': int(spins[0]), 'n_down': int(spins[1]), **{k: float(v) for k, v in values.items()}})
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
      system: the Hamiltonian family object (default ``QuantumDot()``, as the foundation driver uses).
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
        system = QuantumDot() if system is None else system
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
    params = _restore_params(params_leaves, wavefunction, system, model_meta, path)
    checkpoint.save(out_path, {'params': params}, model_meta)
    return model_meta
