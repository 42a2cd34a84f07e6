"""The model card's energy table of a shipped foundation model, against reference energies.

    python examples/evaluate_foundation.py --model foundation_polarized --out runs/card
    python examples/evaluate_foundation.py --model qvmc/models/x.qvmc --out /tmp/card --n 5 --walkers 64 --steps 40

Points (in the model's spin sector). A polarized model: the published DMC points N = 6 at λ = 8, 10,
N = 7 and 8 at λ = 8; λ = 0 for N = 5…11 (exact: filled oscillator shells); N = 10 at λ = 1, 3, 5, 7;
unseen N = 5, 7, 9, 11 at λ ∈ {0, 1, 2, 3, 5, 7, 8, 10}; all at ω = 1. An unpolarized model: the exact
two-electron singlet at λ = 1, 2, 5, 8, 10; λ = 0 for N = 2, 6, 12, 20; fixed-node DMC at λ = 1 for
N = 6 (ω = 1, 0.5, 0.28), N = 12 (ω = 1, 0.5) and N = 20 (ω = 1, 0.28); N = 6 and 12 at the
intermediate ω = 0.75 and N = 12 at ω = 0.28 (no reference); an unpolarized model built for more than 30
electrons adds λ = 0 and λ = 1 (ω = 1, 0.5, 0.28) at the closed shells N = 30, 42, 56 it reaches. Writes ``energies.csv``, ``energies.md`` and
``card_energy_table.json`` (rows for ``qvmc.pretrained.export_model``'s card) into ``--out``, and
flags every energy below an exact reference by more than 4σ (impossible for a variational energy:
a sampling or estimator bug). ``--n``, ``--lam`` and ``--omega`` restrict the table for small runs;
``--update-card`` merges the new rows into the model's card and its Markdown table (``model_card.py``).

Where N has a partly filled shell, every open-shell order of the model
(``PretrainedModel.open_shell_orders``: the filling order and the high-|m| sector) is estimated
with the same parameters and key and the lowest energy is kept, a variational choice (the table's
note names the sector and the other order's energy).
"""

import argparse
import json
import math
import os
import sys
import time

import jax
import pandas as pd

from hamiltonians.references import reference
from qvmc import pretrained
from qvmc.runtime import enable_compilation_cache
from samplers.stats import format_value_error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import check, nonnegative_int, parse_burn_in, parse_range, positive_int  # noqa: E402
from model_card import card_markdown_path, markdown_rows, update_card  # noqa: E402

FLAG_SIGMA = 4.0
UNSEEN_LAMS = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 8.0, 10.0)
GROUPS = {  # spin sector -> ((group, [(N, λ, ω)]), ...)
    'polarized': (
        ('published DMC', [(6, 8.0, 1.0), (6, 10.0, 1.0), (7, 8.0, 1.0), (8, 8.0, 1.0)]),
        ('λ = 0 exact', [(n, 0.0, 1.0) for n in range(5, 12)]),
        ('N = 10 held-out λ', [(10, lam, 1.0) for lam in (1.0, 3.0, 5.0, 7.0)]),
        ('unseen N', [(n, lam, 1.0) for n in (5, 7, 9, 11) for lam in UNSEEN_LAMS]),
    ),
    'unpolarized': (
        ('two-electron exact', [(2, lam, 1.0) for lam in (1.0, 2.0, 5.0, 8.0, 10.0)]),
        ('λ = 0 exact', [(n, 0.0, 1.0) for n in (2, 6, 12, 20)]),
        ('fixed-node DMC', [(6, 1.0, 1.0), (6, 1.0, 0.5), (6, 1.0, 0.28), (12, 1.0, 1.0), (12, 1.0, 0.5),
                            (20, 1.0, 1.0), (20, 1.0, 0.28)]),
        ('intermediate ω', [(6, 1.0, 0.75), (12, 1.0, 0.75), (12, 1.0, 0.28)]),
    ),
}
# A model built for more electrons (QuantumDot max_electrons): the closed shells it reaches, as predictions.
LARGE_SHELLS = (30, 42, 56)
LARGE_OMEGAS = (1.0, 0.5, 0.28)


def card_points(spin_sector: str = 'polarized', max_electrons: int = 30):
    """``[(N, λ, ω, group)]`` of the card table of a model of ``spin_sector``, each point once (in its first
    group), grouped by N (one compile per N), then ω descending and λ ascending. An unpolarized model
    built for more than the default 30 electrons (``max_electrons``) adds the closed shells N = 30, 42, 56
    it reaches: λ = 0 (exact) and λ = 1 at ω = 1, 0.5, 0.28 (no published reference: predictions)."""
    if spin_sector not in GROUPS:
        raise ValueError(f'No card points for the spin sector {spin_sector!r}; known: {sorted(GROUPS)}.')
    groups = list(GROUPS[spin_sector])
    if spin_sector == 'unpolarized' and max_electrons > 30:
        shells = [n for n in LARGE_SHELLS if n <= max_electrons]
        groups += [('λ = 0 exact', [(n, 0.0, 1.0) for n in shells]),
                   ('large N', [(n, 1.0, omega) for n in shells for omega in LARGE_OMEGAS])]
    seen, points = set(), []
    for group, items in groups:
        for n, lam, omega in items:
            if (n, lam, omega) not in seen:
                seen.add((n, lam, omega))
                points.append((n, lam, omega, group))
    return sorted(points, key=lambda p: (p[0], -p[2], p[1]))


def parse_args(argv=None):
    """Parses and validates the flags; exits with status 2 on a bad one (before anything compiles)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=pretrained.DEFAULT_MODEL, help='shipped model name or model file')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--walkers', type=positive_int, default=512)
    p.add_argument('--steps', type=positive_int, default=400, help='measurement MCMC calls per point')
    p.add_argument('--burn-in', type=nonnegative_int, nargs=3, default=(25, 50, 500), metavar=('CHUNK', 'MIN', 'MAX'),
                   help='burn-in in chunks of CHUNK MCMC calls until the drift check passes, at least MIN, '
                        'at most MAX calls')
    p.add_argument('--n', default=None, help='only these N, e.g. 5-7 or 6,10')
    p.add_argument('--lam', default=None, help='only these λ, e.g. 0,8')
    p.add_argument('--omega', default=None, help='only these trap frequencies ω, e.g. 1,0.5')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--pad-n', type=positive_int, default=None,
                   help='measure every N padded to this many electrons (at least the largest N evaluated): one '
                        'compiled program per open-shell order for all N instead of one per N, each step at the '
                        "padded size's cost (hamiltonians.padding)")
    p.add_argument('--update-card', action='store_true',
                   help="merge the new rows into the model file's card (re-exported in place, parameters "
                        'unchanged; rows at the same N and λ are replaced) and into the table of its Markdown card '
                        '(<model>.md next to the file, when it exists)')
    args = p.parse_args(argv)
    check(p, parse_burn_in, args.burn_in, '--burn-in')
    if not -2**63 <= args.seed < 2**63:
        p.error(f"--seed: bad value '{args.seed}' (expected an integer in [-2^63, 2^63))")
    sizes = check(p, parse_range, args.n, int, '--n', minimum=1, name='N') if args.n else None
    lams = check(p, parse_range, args.lam, float, '--lam', minimum=0.0, name='λ') if args.lam else None
    omegas = check(p, parse_range, args.omega, float, '--omega', minimum=0.0, name='ω') if args.omega else None
    if omegas is not None and min(omegas) <= 0:
        p.error(f"--omega: bad value {args.omega!r} (ω must be > 0)")
    try:
        args.model_path = pretrained.resolve(args.model)
        meta = pretrained.read(args.model_path)[1]
        sector = meta['spin_sector']
        points = card_points(sector, int(meta.get('system', {}).get('params', {}).get('max_electrons', 30)))
    except ValueError as err:
        p.error(f'--model: {err}')
    args.points = [pt for pt in points if (sizes is None or pt[0] in sizes) and (lams is None or pt[1] in lams)
                   and (omegas is None or pt[2] in omegas)]
    if not args.points:
        p.error(f'--n/--lam/--omega: no card point of a {sector} model has N in {args.n!r}, λ in {args.lam!r} '
                f'and ω in {args.omega!r}')
    largest = max(pt[0] for pt in args.points)
    if args.pad_n is not None and args.pad_n < largest:
        p.error(f"--pad-n: bad value '{args.pad_n}' (must be at least the largest N evaluated, {largest})")
    if args.update_card and not os.access(args.model_path, os.W_OK):
        p.error(f'--update-card: the model file {args.model_path!r} is not writable')
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f'--out: bad path {args.out!r} (exists and is not a directory)')
    return args


def split_of(model, ctx) -> str:
    """``train``; ``held-out λ``, ``held-out ω`` or ``held-out λ, ω`` (N trained, and which of λ and ω was
    never trained at that N); or ``unseen N``."""
    trained = {(c.spins, c['lam'], c['omega']) for c in model.training_contexts}
    if (ctx.spins, ctx['lam'], ctx['omega']) in trained:
        return 'train'
    at_n = [(lam, omega) for s, lam, omega in trained if s == ctx.spins]
    if not at_n:
        return 'unseen N'
    new = [name for name, i in (('λ', 0), ('ω', 1)) if all(t[i] != (ctx['lam'], ctx['omega'])[i] for t in at_n)]
    return 'held-out ' + (', '.join(new) if new else 'λ, ω')  # both seen, never together: the pair is new


def compare(row, ctx):
    """Adds the reference, deviation, z and the below-exact flag to an estimate's row."""
    ref = reference(ctx.n_up, ctx.n_down, ctx['lam'], ctx['omega'])
    value, err, source = ref if ref else (math.nan, None, '')
    exact = bool(ref) and err == 0.0
    sigma = math.hypot(row['energy_err'], err or 0.0)
    dev = row['energy'] - value
    z = dev / sigma if sigma > 0 else math.nan
    row.update(reference=value, reference_err=math.nan if err is None else err, reference_source=source,
               reference_exact=exact, deviation=dev, z=z, below_exact=exact and z < -FLAG_SIGMA)
    return row


def markdown(table: pd.DataFrame, title: str) -> str:
    """The card table in Markdown: E ± err, reference, deviation, z, flags."""
    return '\n'.join([f'# {title}', ''] + markdown_rows(table)) + '\n'


def card_rows(table: pd.DataFrame):
    """JSON rows for a model card's ``energy_table`` (NaN -> None)."""
    keep = ['N', 'n_up', 'n_down', 'lam', 'omega', 'split', 'group', 'energy', 'energy_err', 'energy_tau',
            'reference', 'reference_err', 'deviation', 'z', 'below_exact', 'num_walkers', 'num_steps',
            'open_shell_order', 'other_orders', 'equilibrated']
    rows = table[keep].to_dict(orient='records')
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def main(argv=None):
    args = parse_args(argv)
    enable_compilation_cache()  # a re-run, a resume or a known particle content loads its programs from disk
    start = time.time()
    model = pretrained.load(args.model_path)
    print(f'{model}: {len(args.points)} points')
    key = jax.random.PRNGKey(args.seed)
    rows = []
    for i, (n, lam, omega, group) in enumerate(args.points):
        ctx = model.context(n, lam, omega)
        # Every open-shell order of N (one for closed shells) with the same key; the lowest energy is kept.
        found = model.estimates(n, lam, jax.random.fold_in(key, i), omega=omega, num_walkers=args.walkers,
                                num_steps=args.steps, pad_n=args.pad_n,
                                burn_in_chunk=args.burn_in[0], min_burn_in=args.burn_in[1],
                                max_burn_in=args.burn_in[2])
        order, est = min(found.items(), key=lambda item: item[1].energy.mean)
        row = compare(est.to_row(), ctx)
        row.update(group=group, split=split_of(model, ctx), num_walkers=args.walkers, num_steps=args.steps,
                   open_shell_order=order,
                   other_orders='; '.join(f'{o} {format_value_error(e.energy.mean, e.energy.error)}'
                                          for o, e in found.items() if o != order))
        rows.append(row)
        ref = '' if math.isnan(row['reference']) else f'  ref {row["reference"]:.6g}  z {row["z"]:+.1f}'
        print(f'{ctx.label():<24} {row["split"]:<11} E = {format_value_error(row["energy"], row["energy_err"])}'
              f'{ref}{"  BELOW EXACT" if row["below_exact"] else ""}  ({est.seconds:.0f} s)', flush=True)
    table = pd.DataFrame(rows)
    os.makedirs(args.out, exist_ok=True)
    table.to_csv(os.path.join(args.out, 'energies.csv'), index=False)
    with open(os.path.join(args.out, 'energies.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(table, f'{model.name}: energies ({args.walkers} walkers × {args.steps} steps)'))
    with open(os.path.join(args.out, 'card_energy_table.json'), 'w', encoding='utf-8') as f:
        json.dump(card_rows(table), f, indent=1)
    flagged = table[table['below_exact']]
    for _, r in flagged.iterrows():
        print(f'FLAG: N = {r["N"]}, λ = {r["lam"]:g}: E = {r["energy"]:.5f} ± {r["energy_err"]:.5f} is '
              f'{-r["z"]:.1f}σ below the exact {r["reference"]:.6g} (a variational energy cannot be)')
    print(f'wrote {args.out}/{{energies.csv, energies.md, card_energy_table.json}} in {time.time() - start:.0f} s; '
          f'{len(flagged)} flagged')
    if args.update_card:
        count = update_card(args.model_path, card_rows(table))
        md = card_markdown_path(args.model_path)
        print(f'updated the card of {args.model_path} ({count} rows)' + (f' and {md}' if os.path.exists(md) else ''))
    return table


if __name__ == '__main__':
    main()
