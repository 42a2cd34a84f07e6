"""A shipped model's energy table: Markdown rendering and merging re-estimated rows into the card.

``evaluate_foundation.py --update-card`` uses :func:`update_card`: rows measured again (same N, λ and ω)
replace the card's rows, new points are added, the model file is re-exported in place with the new card
(``qvmc.pretrained.export_model``: atomic write, parameters unchanged), and the table in the model's
Markdown card (``<name>.md`` next to the file, e.g. ``qvmc/models/<name>.md``) is rewritten from the merged rows.
"""

import math
import os
from typing import Any, Dict, List, Optional

import pandas as pd

from qvmc import checkpoint, pretrained
from samplers.stats import format_value_error

TABLE_HEADER = '| N | λ | split | E (Ha) | reference (Ha) | deviation (Ha) | z | note |'
TABLE_HEADER_OMEGA = '| N | λ | ω | split | E (Ha) | reference (Ha) | deviation (Ha) | z | note |'  # several ω


def _omega(row) -> float:
    """A card row's trap frequency (rows written before ω was recorded are at ω = 1)."""
    value = row.get('omega') if hasattr(row, 'get') else None
    return 1.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def markdown_rows(table: pd.DataFrame) -> List[str]:
    """The energy table's Markdown lines (header included): E ± err, reference, deviation, z, notes; with an
    ω column when any row is at ω ≠ 1."""
    with_omega = any(_omega(r) != 1.0 for _, r in table.iterrows())
    lines = ([TABLE_HEADER_OMEGA, '|---:|---:|---:|:---|---:|---:|---:|---:|:---|'] if with_omega else
             [TABLE_HEADER, '|---:|---:|:---|---:|---:|---:|---:|:---|'])
    for _, r in table.iterrows():
        ref = '' if math.isnan(r['reference']) else f'{r["reference"]:.6g}' + ('' if r['reference_exact'] else ' (DMC)')
        dev = '' if math.isnan(r['deviation']) else f'{r["deviation"]:+.4f}'
        z = '' if math.isnan(r['z']) else f'{r["z"]:+.1f}'
        note = '**BELOW EXACT by > 4σ**' if r['below_exact'] else ('' if r['equilibrated'] else 'not equilibrated')
        if r.get('other_orders'):
            note = '; '.join(x for x in (note, f'{r["open_shell_order"]} (other: {r["other_orders"]})') if x)
        omega = f' {_omega(r):g} |' if with_omega else ''
        lines.append(f'| {r["N"]} | {r["lam"]:g} |{omega} {r["split"]} | '
                     f'{format_value_error(r["energy"], r["energy_err"])} | {ref} | {dev} | {z} | {note} |')
    return lines


def frame(rows: List[Dict[str, Any]]) -> pd.DataFrame:
    """Card rows (JSON: None for NaN) as the table :func:`markdown_rows` renders. Rows written before a
    field existed get its old meaning: the filling order, equilibrated (the first evaluation flagged none)."""
    table = pd.DataFrame(rows)
    for col in ('reference', 'reference_err', 'deviation', 'z'):
        table[col] = pd.to_numeric(table[col], errors='coerce').astype(float)
    table['reference_exact'] = table['reference_err'] == 0.0
    defaults = {'open_shell_order': 'filling', 'other_orders': '', 'equilibrated': True, 'below_exact': False}
    for col, value in defaults.items():
        table[col] = table[col].where(table[col].notna(), value) if col in table else value
    return table


def merge_rows(old: List[Dict[str, Any]], new: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The card's rows with every ``(N, λ, ω)`` in ``new`` replaced or added, sorted by N, ω (descending), λ."""
    key = lambda r: (r['N'], float(r['lam']), _omega(r))  # noqa: E731
    fresh = {key(r): r for r in new}
    merged = [fresh.pop(key(r), r) for r in old] + list(fresh.values())
    return sorted(merged, key=lambda r: (r['N'], -_omega(r), float(r['lam'])))


def replace_table(text: str, lines: List[str]) -> str:
    """``text`` (a Markdown card) with its energy table (the one under :data:`TABLE_HEADER` or
    :data:`TABLE_HEADER_OMEGA`) replaced.

    Raises:
      ValueError: the card has no such table.
    """
    md = text.splitlines()
    starts = [i for i, line in enumerate(md) if line in (TABLE_HEADER, TABLE_HEADER_OMEGA)]
    if not starts:
        raise ValueError(f'The Markdown card has no energy table (a line {TABLE_HEADER!r}); add one to update it.')
    start = starts[0]
    end = start
    while end < len(md) and md[end].startswith('|'):
        end += 1
    return '\n'.join(md[:start] + lines + md[end:]) + '\n'


def card_markdown_path(model_path: str) -> str:
    """The Markdown card next to a model file: ``<dir>/<name>.md`` for ``<dir>/<name>.qvmc``."""
    return model_path.removesuffix(pretrained.MODEL_SUFFIX) + '.md'


def update_card(model_path: str, rows: List[Dict[str, Any]], md_path: Optional[str] = None) -> int:
    """Merges ``rows`` into the model file's card (re-exported in place) and into its Markdown card
    when that file exists; returns the number of rows in the merged table."""
    meta = pretrained.read_metadata(model_path)
    card = dict(meta.get('card') or {})
    card['energy_table'] = merge_rows(card.get('energy_table') or [], rows)
    md_path = card_markdown_path(model_path) if md_path is None else md_path
    text = None
    if os.path.exists(md_path):
        with open(md_path, encoding='utf-8') as f:
            text = replace_table(f.read(), markdown_rows(frame(card['energy_table'])))  # checked before writing
    pretrained.export_model(model_path, model_path, card, name=meta.get('name'))
    if text is not None:
        checkpoint.write_atomic(md_path, text.encode('utf-8'))
    return len(card['energy_table'])
