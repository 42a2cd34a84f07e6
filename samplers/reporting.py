"""Tables and ArviZ InferenceData from MCMC traces shaped (chain, draw, ...); pandas and ArviZ load lazily."""

import warnings
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np


def import_arviz():
    """``arviz``, imported without its 0.23 refactor announcement (a ``FutureWarning`` on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        import arviz  # pylint: disable=import-outside-toplevel
    return arviz


def traces_to_inference_data(traces: Mapping[str, Any], *, coords: Optional[Mapping[str, Sequence]] = None,
                             dims: Optional[Mapping[str, Sequence[str]]] = None):
    """An ``arviz.InferenceData`` whose ``posterior`` holds one variable per trace.

    Walkers are chains here, so ArviZ's "more chains than draws" warning is silenced.

    Args:
      traces: ``{name: [chain, draw, ...]}``; every trace has the same chain and draw sizes.
      coords: coordinates of the trailing dimensions, e.g. ``{'context': labels}``.
      dims: names of the trailing dimensions of each trace, e.g. ``{'energy': ['context']}``
        (default: ArviZ's ``<name>_dim_0``, ...).

    Returns:
      ``arviz.InferenceData`` with dims ``(chain, draw, *dims[name])`` per variable.

    Raises:
      ValueError: no traces, a trace with fewer than two axes, or differing chain/draw sizes.
    """
    arrays = {name: np.asarray(value) for name, value in traces.items()}
    if not arrays:
        raise ValueError('traces_to_inference_data needs at least one trace {name: [chain, draw, ...]}.')
    if any(a.ndim < 2 for a in arrays.values()) or len({a.shape[:2] for a in arrays.values()}) != 1:
        raise ValueError('traces must all be [chain, draw, ...] with the same chain and draw sizes; got '
                         + ', '.join(f'{name}{list(a.shape)}' for name, a in arrays.items()) + '.')
    arviz = import_arviz()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='More chains', category=UserWarning)
        return arviz.from_dict(posterior=arrays, coords=dict(coords or {}) or None,
                               dims={k: list(v) for k, v in (dims or {}).items()} or None)


def stats_frame(rows: Iterable[Mapping[str, Any]]):
    """Builds a pandas DataFrame from rows, e.g. from ``Stats.to_row``.

    Args:
        rows: iterable of dicts from column name to value, one per row.

    Returns:
        A ``pandas.DataFrame`` with one row per dict; missing keys are NaN.
    """
    import pandas as pd  # pylint: disable=import-outside-toplevel
    return pd.DataFrame([dict(row) for row in rows])


__all__ = ['import_arviz', 'stats_frame', 'traces_to_inference_data']
