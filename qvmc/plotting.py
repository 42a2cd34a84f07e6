"""Matplotlib figures for runs: training curves, energy vs λ per N, one-body densities."""

from typing import Dict, Optional, Sequence

import matplotlib

matplotlib.use('Agg')  # file output only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training(history: pd.DataFrame, path: str, references: Optional[Dict[str, float]] = None,
                  window: int = 10) -> None:
    """Energy per training context vs step (running mean over ``window`` steps).

    Args:
      history: rows with columns ``step``, ``context``, ``energy``, ``variance``.
      path: output PNG.
      references: optional ``{context label: exact energy}`` drawn as dashed lines.
    """
    fig, (ax_e, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    for label, group in history.groupby('context', sort=False):
        smooth = group['energy'].rolling(window, min_periods=1).mean()
        line, = ax_e.plot(group['step'], smooth, label=label)
        if references and label in references:
            ax_e.axhline(references[label], ls='--', color=line.get_color(), lw=0.8)
        ax_v.semilogy(group['step'], group['variance'].rolling(window, min_periods=1).mean(), label=label)
    ax_e.set(xlabel='step', ylabel='energy (Ha), running mean', title='Training energy per context')
    ax_v.set(xlabel='step', ylabel='local-energy variance', title='Variance (→ 0 for eigenstates)')
    ax_e.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_energy_vs_lambda(table: pd.DataFrame, path: str, exact_curves: Optional[Dict[int, tuple]] = None) -> None:
    """Predicted energy per electron vs λ, one series per particle content.

    Args:
      table: rows with ``N``, ``n_up``, ``n_down``, ``lam``, ``energy``, ``energy_err``,
        ``reference`` (may be NaN) and ``split`` (``'train'`` or ``'held-out'``).
      path: output PNG.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (n, up, down), group in table.groupby(['N', 'n_up', 'n_down']):
        group = group.sort_values('lam')
        per = group['energy'] / n
        err = group['energy_err'] / n
        line = ax.errorbar(group['lam'], per, yerr=err, fmt='-o', ms=4, label=f'N={n} ({up}↑{down}↓)')
        colour = line[0].get_color()
        held = group[group['split'] == 'held-out']
        ax.scatter(held['lam'], held['energy'] / n, s=80, facecolors='none', edgecolors=colour)
        ref = group.dropna(subset=['reference'])
        ax.scatter(ref['lam'], ref['reference'] / n, marker='x', color='k', zorder=5)
    ax.set(xlabel='λ', ylabel='E / N (Ha)', title='One conditional model: open circles = held out, × = reference')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_densities(densities: Sequence, labels: Sequence[str], path: str) -> None:
    """Maps and radial profiles of one-body densities (``qvmc.inference.Density``)."""
    n = len(densities)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.2), squeeze=False)
    for i, (den, label) in enumerate(zip(densities, labels)):
        e = den.edges
        axes[0, i].imshow(den.values.T, origin='lower', extent=(e[0], e[-1], e[0], e[-1]), cmap='viridis')
        axes[0, i].set_title(label, fontsize=8)
        r, prof = den.radial_profile()
        axes[1, i].plot(r, prof)
        axes[1, i].set(xlabel='r (bohr)', ylabel='ρ(r)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
