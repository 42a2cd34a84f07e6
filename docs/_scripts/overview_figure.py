"""Draws docs/_static/overview.png: the shipped polarized model's card energies vs λ for each N (no sampling;
the numbers are the card's, measured by examples/evaluate_foundation.py). Run: python docs/_scripts/overview_figure.py"""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from qvmc import pretrained  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '_static', 'overview.png')


def main():
    rows = pretrained.read_metadata('foundation_polarized')['card']['energy_table']
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=120)
    for n in sorted({r['N'] for r in rows}):
        pts = sorted((r['lam'], r['energy'] / n, r['energy_err'] / n, r['split']) for r in rows if r['N'] == n)
        lam, e, err, split = zip(*pts)
        line, = ax.plot(lam, e, '-', lw=1, alpha=0.6)
        for x, y, s, kind in pts:
            marker = {'train': 'o', 'held-out λ': 's'}.get(kind, 'D')
            ax.errorbar([x], [y], [s], fmt=marker, color=line.get_color(), ms=4,
                        mfc=line.get_color() if kind == 'train' else 'white')
        ax.annotate(f'N = {n}', (lam[-1], e[-1]), xytext=(4, 0), textcoords='offset points', fontsize=7,
                    va='center')
    ax.set_xlabel('interaction strength λ')
    ax.set_ylabel('energy per electron (Ha)')
    ax.set_title('One conditional model of polarized dots: ● trained, □ held-out λ, ◇ N never trained', fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT)
    print('wrote', OUT)


if __name__ == '__main__':
    main()
