"""Matplotlib figures for runs: training curves, energies vs λ, densities, g(r), wavefunction slices, transitions."""

from typing import Dict, Optional, Sequence

import matplotlib

matplotlib.use('Agg')  # file output only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


MAX_LEGEND_CONTEXTS = 12  # more training contexts than this (a blockwise schedule): points coloured by λ


def _varying_parameter(history: pd.DataFrame) -> Optional[str]:
    """The Hamiltonian parameter (named in the context labels, ``N=6(6,0) lam=0.75``) that takes the most
    values in a history; None if none varies."""
    names = {tok.split('=')[0] for label in history['context'].unique() for tok in str(label).split()[1:] if '=' in tok}
    spread = {c: history[c].nunique() for c in sorted(names) if c in history.columns}
    return max(spread, key=spread.get) if spread and max(spread.values()) > 1 else None


def plot_training(history: pd.DataFrame, path: str, references: Optional[Dict[str, float]] = None,
                  window: int = 10) -> None:
    """Energy per training context vs step (running mean over ``window`` steps).

    A history with more than ``MAX_LEGEND_CONTEXTS`` contexts (a blockwise schedule draws new ones every
    block) is drawn as points coloured by the varying parameter (λ) with a colour bar instead of one
    labelled line per context.

    Args:
      history: rows with columns ``step``, ``context``, ``energy``, ``variance``.
      path: output PNG.
      references: optional ``{context label: exact energy}`` drawn as dashed lines.
    """
    fig, (ax_e, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    many = history['context'].nunique() > MAX_LEGEND_CONTEXTS
    if many:
        param = _varying_parameter(history)
        colour = history[param] if param else None
        points = ax_e.scatter(history['step'], history['energy'], c=colour, s=2, cmap='viridis')
        ax_v.scatter(history['step'], history['variance'], c=colour, s=2, cmap='viridis')
        ax_v.set_yscale('log')
        if param:
            fig.colorbar(points, ax=[ax_e, ax_v], label=param, fraction=0.04)
    else:
        for label, group in history.groupby('context', sort=False):
            smooth = group['energy'].rolling(window, min_periods=1).mean()
            line, = ax_e.plot(group['step'], smooth, label=label)
            if references and label in references:
                ax_e.axhline(references[label], ls='--', color=line.get_color(), lw=0.8)
            ax_v.semilogy(group['step'], group['variance'].rolling(window, min_periods=1).mean(), label=label)
        ax_e.legend(fontsize=7)
        fig.tight_layout()
    what = 'energy' if many else 'energy, running mean'  # Ha for the dot, meV for the moiré system
    ax_e.set(xlabel='step', ylabel=what, title='Training energy per context')
    ax_v.set(xlabel='step', ylabel='local-energy variance', title='Variance (→ 0 for eigenstates)')
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_energy_vs_lambda(table: pd.DataFrame, path: str, exact_curves: Optional[Dict[int, tuple]] = None) -> None:
    """Predicted energy per electron vs λ, one series per particle content.

    Args:
      table: rows with ``N``, ``n_up``, ``n_down``, ``lam``, ``energy``, ``energy_err``,
        ``reference`` (may be NaN) and ``split`` (``'train'`` or ``'held-out'``); with an ``omega``
        column of several values, one series per content and ω.
      path: output PNG.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    several_omega = 'omega' in table and table['omega'].nunique() > 1  # one series per (content, ω)
    keys = ['N', 'n_up', 'n_down'] + (['omega'] if several_omega else [])
    for key, group in table.groupby(keys):
        n, up, down = key[:3]
        group = group.sort_values('lam')
        per = group['energy'] / n
        err = group['energy_err'] / n
        label = f'N={n} ({up}↑{down}↓)' + (f', ω={key[3]:g}' if several_omega else '')
        line = ax.errorbar(group['lam'], per, yerr=err, fmt='-o', ms=4, label=label)
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


def _context_groups(frame: pd.DataFrame, max_panels: int):
    """Up to ``max_panels`` (label, rows) groups of a tidy table, spread evenly over its contexts."""
    labels = list(dict.fromkeys(frame['context']))
    if len(labels) > max_panels:
        labels = [labels[i] for i in np.linspace(0, len(labels) - 1, max_panels).round().astype(int)]
    return [(label, frame[frame['context'] == label]) for label in labels]


def _map(ax, rows: pd.DataFrame, value: str, cmap: str):
    """Draws a tidy grid table (``x``, ``y``, ``value``) as square markers at the bin centres."""
    size = max(4.0, 30000.0 / max(len(rows), 1))
    ax.scatter(rows['x'], rows['y'], c=rows[value], s=size, marker='s', cmap=cmap, linewidths=0)
    ax.set_aspect('equal')


def plot_sweep_energies(table: pd.DataFrame, path: str, x: str = 'lam',
                        components: Sequence[str] = ('energy', 'interaction')) -> None:
    """Per-electron energy and components vs a context parameter, one series per particle content.

    Args:
      table: ``qvmc.sweep.SweepResult.energies`` (needs ``<name>_per_electron`` and ``_err``).
      path: output PNG.
      x: the context parameter on the horizontal axis.
      components: quantities to draw, one panel each.
    """
    names = [c for c in components if f'{c}_per_electron' in table]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (n, up, down), group in table.groupby(['N', 'n_up', 'n_down']):
            group = group.sort_values(x)
            ax.errorbar(group[x], group[f'{name}_per_electron'], yerr=group[f'{name}_per_electron_err'],
                        fmt='-o', ms=3, label=f'N={n} ({up}↑{down}↓)')
        ax.set(xlabel=x, ylabel=f'{name} / N', title=f'{name} per electron')
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_density_maps(density: pd.DataFrame, path: str, max_panels: int = 6) -> None:
    """One-body density maps from ``SweepResult.density`` (one panel per context)."""
    groups = _context_groups(density, max_panels)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.3 * len(groups), 3.4), squeeze=False)
    for ax, (label, rows) in zip(axes[0], groups):
        _map(ax, rows, 'density', 'viridis')
        ax.set_title(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pair_correlation(pairs: pd.DataFrame, path: str, max_panels: int = 6) -> None:
    """g(r) per channel (all, same-spin, opposite-spin) from ``SweepResult.pair_correlation``."""
    groups = _context_groups(pairs, max_panels)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.3 * len(groups), 3.2), squeeze=False)
    for ax, (label, rows) in zip(axes[0], groups):
        for channel, sub in rows.groupby('channel', sort=False):
            ax.plot(sub['r'], sub['g'], label=channel)
        ax.set(xlabel='r', ylabel='g(r)')
        ax.set_title(label, fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_wavefunction_slices(slices: pd.DataFrame, electrons: pd.DataFrame, path: str, max_panels: int = 4) -> None:
    """``|ψ(r, r2*, …, rN*)|²`` (top) and its sign or phase (bottom), fixed electrons marked."""
    groups = _context_groups(slices, max_panels)
    fig, axes = plt.subplots(2, len(groups), figsize=(3.3 * len(groups), 6.4), squeeze=False)
    for i, (label, rows) in enumerate(groups):
        _map(axes[0, i], rows, 'psi2', 'magma')
        _map(axes[1, i], rows, 'phase', 'coolwarm')
        fixed = electrons[(electrons['context'] == label) & ~electrons['moved'].astype(bool)]
        for ax in axes[:, i]:
            ax.scatter(fixed['x'], fixed['y'], marker='x', color='w' if ax is axes[0, i] else 'k', s=25)
        axes[0, i].set_title(f'|ψ|², {label}', fontsize=7)
        axes[1, i].set_title('phase (0 or π for a real ψ)', fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_transition(x, y, yerr, transition, path: str, xlabel: str = 'λ',
                    ylabel: str = 'interaction energy per electron') -> None:
    """Data with the two fitted branches and the located jump (``qvmc.analysis.Transition``)."""
    x, y, yerr = (np.asarray(a, np.float64) for a in (x, y, yerr))
    fig, (ax, ax_scan) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={'width_ratios': [2, 1]})
    ax.errorbar(x, y, yerr=yerr, fmt='o', ms=3, color='k', label='sweep')
    c = transition.position
    for (a, b), side in ((transition.left, x <= c), (transition.right, x > c)):
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, a + b * xs, ':', color='0.6', lw=0.8)
        ax.plot(x[side], a + b * x[side], '-', lw=1.5)
    ax.axvspan(c - transition.position_err, c + transition.position_err, color='C3', alpha=0.15)
    label = f'jump at {c:.3f} ± {transition.position_err:.3f}, size {transition.jump:.3g} ± {transition.jump_err:.2g}'
    ax.axvline(c, color='C3', lw=1, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    ax_scan.plot(transition.scan['position'], transition.scan['chi2'], '-o', ms=3)
    ax_scan.set(xlabel=f'break position ({xlabel})', ylabel='χ² of two branches', yscale='log')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_order_parameters(table: pd.DataFrame, path: str, x: str = 'lam', xlabel: Optional[str] = None) -> None:
    """Moiré order parameters vs a context parameter (``hamiltonians.moire_order`` columns of a sweep table).

    Left: ``honeycomb_order`` Φ and ``honeycomb_contrast`` (1 for a perfect honeycomb); middle: the
    sorted per-site sublattice occupations (two occupied, one empty in the crystal); right:
    ``structure_factor_k`` S(K)/N. Error bars are the blocking errors. ``xlabel`` names the x axis
    (default: the column ``x``; e.g. ``hamiltonians.parameter_label(system, 'lam')``).
    """
    table = table.sort_values(x)
    xlabel = x if xlabel is None else xlabel
    fig, (ax_o, ax_n, ax_s) = plt.subplots(1, 3, figsize=(14, 4))
    labels = (('honeycomb_order', 'Φ = 4|m_K|²'), ('honeycomb_contrast', 'contrast (o₁+o₂)/2 − o₃'))
    for name, label in labels:
        if name in table:
            ax_o.errorbar(table[x], table[name], yerr=table.get(f'{name}_err'), fmt='-o', ms=3, label=label)
    ax_o.set(xlabel=xlabel, ylabel='order parameter', title='honeycomb order (1: perfect)')
    ax_o.legend(fontsize=7)
    for i, label in enumerate(('most occupied', 'second', 'least occupied')):
        name = f'occupations_sorted_{i}'
        if name in table:
            ax_n.errorbar(table[x], table[name], yerr=table.get(f'{name}_err'), fmt='-o', ms=3, label=label)
    ax_n.set(xlabel=xlabel, ylabel='electrons per minimum', title='sublattice occupations (sorted per sample)')
    ax_n.legend(fontsize=7)
    if 'structure_factor_k' in table:
        n = table['N'] if 'N' in table else 1.0
        err = table['structure_factor_k_err'] / n if 'structure_factor_k_err' in table else None
        ax_s.errorbar(table[x], table['structure_factor_k'] / n, yerr=err, fmt='-o', ms=3)
    ax_s.set(xlabel=xlabel, ylabel='S(K) / N', title='S(K)/N at the moiré K points (honeycomb: 1/4)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sublattice_density(density: pd.DataFrame, sites: np.ndarray, labels: np.ndarray, path: str,
                            max_panels: int = 6) -> None:
    """Density maps (``SweepResult.density``) with the moiré minima marked by sublattice (0, 1, 2).

    Args:
      density: tidy density table (one block per context).
      sites: ``[M, 2]`` minima inside the supercell (``hamiltonians.moire_order.SublatticeGeometry.sites``).
      labels: ``[M]`` their sublattices.
      path: output PNG.
    """
    groups = _context_groups(density, max_panels)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3.6), squeeze=False)
    sites, labels = np.asarray(sites), np.asarray(labels)
    for ax, (label, rows) in zip(axes[0], groups):
        _map(ax, rows, 'density', 'viridis')
        for s, (marker, color) in enumerate((('o', 'w'), ('^', 'C1'), ('s', 'C3'))):
            pick = labels == s
            ax.scatter(sites[pick, 0], sites[pick, 1], marker=marker, s=14, facecolors='none', edgecolors=color,
                       linewidths=0.8, label=f'sublattice {s}')
        ax.set_title(label, fontsize=7)
    axes[0, 0].legend(fontsize=6, loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
