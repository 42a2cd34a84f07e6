"""Reporting at the edge: tidy pandas tables, ArviZ InferenceData of local-energy traces, CSV and netCDF files.

The generic conversions live in ``samplers.reporting`` (which the samplers need too) and are
re-exported here; this module adds the context-aware ones of the ``qvmc`` layer.
"""

import os
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import pandas as pd

from samplers.reporting import import_arviz, stats_frame, traces_to_inference_data

TRACES_NAME = 'traces.nc'


def labelled(frame: pd.DataFrame, labels: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with constant label columns (e.g. ``context``, ``lam``) prepended."""
    return frame.assign(**labels)[list(labels) + [c for c in frame.columns if c not in labels]]


def context_traces_to_arviz(traces: Sequence[Mapping[str, Any]], contexts: Sequence):
    """Local-energy traces of several contexts as one ``arviz.InferenceData``.

    Args:
      traces: per context ``{'energy': [chain, draw], component: [chain, draw], ...}``
        (chain = walker, draw = step).
      contexts: the matching contexts (``hamiltonians.Context``).

    Returns:
      ``InferenceData`` with posterior variables of dims ``(chain, draw, context)``, the context
      labels as ``context`` coordinate and every context parameter shared by all contexts (``N``,
      ``lam``, ...) as a coordinate along ``context``; None when the contexts differ in walkers,
      steps or variables (not stackable).
    """
    if len(traces) != len(contexts):
        raise ValueError(f'{len(traces)} trace sets for {len(contexts)} contexts.')
    if not traces or len({(tuple(sorted(t)), t['energy'].shape) for t in traces}) != 1:
        return None
    names = sorted(traces[0])
    posterior = {n: np.stack([np.asarray(t[n]) for t in traces], axis=-1) for n in names}
    idata = traces_to_inference_data(posterior, coords={'context': [c.label() for c in contexts]},
                                     dims={n: ['context'] for n in names})
    params = [c.as_dict() for c in contexts]
    extra = {k: ('context', [p[k] for p in params]) for k in params[0] if all(k in p for p in params)}
    idata.posterior = idata.posterior.assign_coords(**extra)
    return idata


def traces_to_arviz(results: Sequence):
    """Energy traces of ``Sweep`` measurements (objects with ``.traces`` and ``.context``) as
    ``arviz.InferenceData`` with dims ``(chain, draw, context)`` (see ``context_traces_to_arviz``)."""
    return context_traces_to_arviz([r.traces for r in results], [r.context for r in results])


def save_inference_data(idata, path: str) -> str:
    """Writes ``idata`` as netCDF (h5netcdf); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    idata.to_netcdf(path)
    return path


def load_inference_data(path: str):
    """Reads an ``arviz.InferenceData`` written by ``save_inference_data``."""
    return import_arviz().from_netcdf(path)


def save_tables(directory: str, tables: Mapping[str, pd.DataFrame], traces=None) -> Dict[str, str]:
    """Writes every table as ``<name>.csv`` and ``traces`` (if any) as ``traces.nc`` in ``directory``.

    Returns:
      ``{name: path}``, with ``'traces'`` for the netCDF file.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        paths[name] = os.path.join(directory, f'{name}.csv')
        frame.to_csv(paths[name], index=False)
    if traces is not None:
        paths['traces'] = save_inference_data(traces, os.path.join(directory, TRACES_NAME))
    return paths


__all__ = ['TRACES_NAME', 'context_traces_to_arviz', 'import_arviz', 'labelled', 'load_inference_data',
           'save_inference_data', 'save_tables', 'stats_frame', 'traces_to_arviz', 'traces_to_inference_data']
