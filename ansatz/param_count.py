"""Parameter counts of Haiku parameter trees, grouped by component (FiLM, attention, MoE, ...)."""

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from samplers.types import Params

# (component, regular expression) in priority order, matched against module-path parts.
DEFAULT_COMPONENTS: Tuple[Tuple[str, str], ...] = (
    ('film', r'film'),
    ('norm', r'norm'),
    ('attention', r'attention|attn'),
    ('moe', r'moe|expert'),
    ('mlp', r'mlp'),
    ('orbitals', r'orbital|envelope|det_weights|log_alpha'),
    ('jastrow', r'jastrow|cusp'),
    ('backflow', r'backflow'),
    ('pair', r'pair'),
    ('embedding', r'embed'),
)


def _size(leaf) -> int:
    return int(np.prod(leaf.shape)) if hasattr(leaf, 'shape') else int(np.size(leaf))


def count_parameters(params: Params) -> int:
    """Total number of scalar parameters in a pytree (arrays or ``jax.ShapeDtypeStruct`` leaves).

    ``jax.eval_shape(wavefunction.init, ...)`` gives the shapes without computing anything,
    which is enough to count large configurations.
    """
    return sum(_size(leaf) for leaf in jax.tree.leaves(params))


def classify(module: str, name: str, components: Sequence[Tuple[str, str]] = DEFAULT_COMPONENTS) -> str:
    """Component of parameter ``name`` in Haiku module ``module`` (``'other'`` if none matches).

    The module path is split at ``/`` (Haiku writes ``outer/~/inner``); its first part
    (the wavefunction's own name, e.g. ``slater_jastrow``) is skipped, then parts are
    tried outermost first, the parameter name last, and for each part the components
    in priority order.
    """
    parts = [p for p in module.split('/') if p and p != '~'][1:] + [name]
    for part in parts:
        for component, pattern in components:
            if re.search(pattern, part):
                return component
    return 'other'


def parameter_report(params: Params, components: Sequence[Tuple[str, str]] = DEFAULT_COMPONENTS
                     ) -> Dict[str, object]:
    """Parameter counts per component of a Haiku parameter tree.

    Args:
      params: ``{module: {name: array}}`` as returned by a ``Wavefunction.init``.
      components: ``(component, regex)`` pairs; see ``classify``.

    Returns:
      ``{'total': int, 'components': {component: count}, 'modules': {module: count},
      'film': int, 'film_fraction': film / total, 'film_overhead': film / (total - film)}``.
      The component counts sum to ``total``; ``film_overhead`` is the relative growth
      conditioning adds to the same network built without FiLM.
    """
    by_component: Dict[str, int] = {}
    by_module: Dict[str, int] = {}
    for module, leaves in params.items():
        for name, value in leaves.items():
            size = _size(value)
            component = classify(module, name, components)
            by_component[component] = by_component.get(component, 0) + size
            by_module[module] = by_module.get(module, 0) + size
    total = count_parameters(params)
    film = by_component.get('film', 0)
    return {
        'total': total,
        'components': dict(sorted(by_component.items(), key=lambda kv: -kv[1])),
        'modules': by_module,
        'film': film,
        'film_fraction': film / total if total else 0.0,
        'film_overhead': film / (total - film) if total > film else float('inf'),
    }


def report_table(reports: Mapping[str, Mapping[str, object]], normalize: bool = False):
    """A pandas DataFrame (rows: ansätze, columns: components and ``total``) from several reports.

    Args:
      reports: ``{ansatz name: parameter_report(...)}``.
      normalize: give each component as a fraction of that ansatz's total.
    """
    import pandas as pd  # only at the edge, for reporting

    rows = {}
    for label, report in reports.items():
        row = dict(report['components'])
        if normalize:
            row = {k: v / report['total'] for k, v in row.items()}
        row['total'] = report['total']
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient='index').fillna(0)


def format_report(report: Mapping[str, object], title: Optional[str] = None) -> str:
    """A short human-readable summary of one ``parameter_report``."""
    lines = [title] if title else []
    lines.append(f"total parameters: {report['total']:,}")
    for component, count in report['components'].items():
        lines.append(f'  {component:<10s} {count:>10,}  ({count / report["total"]:.1%})')
    lines.append(f"FiLM share: {report['film_fraction']:.2%} of the total, "
                 f"+{report['film_overhead']:.2%} over the unconditioned network")
    return '\n'.join(lines)
