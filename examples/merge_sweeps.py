"""Merge a λ sweep measured in parts (one trained model, several processes or machines) into one sweep.

A sweep costs one measurement per λ and the points are independent, so a long sweep can be split:
copy the trained run directory, run the driver again in each copy with its own ``--sweep-range``
(training is finished, so the re-run only sweeps), then merge:

    cp -r runs/moire runs/moire_hi
    python examples/moire_transition.py FLAGS --run-dir runs/moire --sweep-range 0.6 1.1 --sweep-points 11 &
    python examples/moire_transition.py FLAGS --run-dir runs/moire_hi --sweep-range 1.15 1.6 --sweep-points 10
    python examples/merge_sweeps.py --parts runs/moire runs/moire_hi --out runs/moire_merged

Writes under ``OUT/sweep/``: ``energies.csv`` (every part's rows, sorted by λ; a λ measured in two
parts is refused), ``order_parameters.csv``, ``density.csv`` and ``pair_correlation.csv`` when every
part has them, ``transition.csv`` with the two-branch fits (≥ 5 points) and the plots of the driver
(energies, order parameters, transitions, density maps). The parts must come from one model: their
``checkpoint.qvmc`` content hashes must agree. Per-walker traces (``traces.nc``, ``order_traces.npz``)
stay in the parts. Reads CSV files only: nothing is compiled.
"""

import argparse
import os
import sys
import types

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import positive_float  # noqa: E402

SWEEP = 'sweep'
TIDY = ('density.csv', 'pair_correlation.csv')  # per-λ tables merged when every part has them


def checkpoint_hash(run_dir):
    """The content hash line of ``run_dir/checkpoint.qvmc`` (its second line), or None without a checkpoint."""
    path = os.path.join(run_dir, 'checkpoint.qvmc')
    if not os.path.isfile(path):
        return None
    with open(path, 'rb') as f:
        f.readline()
        return f.readline().strip().decode('ascii', 'replace')


def parse_args(argv=None):
    """Parses and validates the flags and reads the parts; exits with status 2 naming the bad one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--parts', nargs='+', required=True, help='run directories, each with sweep/energies.csv')
    p.add_argument('--out', required=True, help='run directory to write OUT/sweep/ into (not one of the parts)')
    p.add_argument('--epsilon', type=positive_float, default=5.0,
                   help='dielectric constant ε written into transition.csv (default 5, the driver\'s)')
    args = p.parse_args(argv)
    if len(set(map(os.path.realpath, args.parts))) != len(args.parts):
        p.error(f'--parts: bad value {" ".join(args.parts)!r} (a directory is given twice)')
    if os.path.realpath(args.out) in map(os.path.realpath, args.parts):
        p.error(f'--out: bad value {args.out!r} (one of the parts: write the merge to a new directory)')
    tables = []
    for run_dir in args.parts:
        path = os.path.join(run_dir, SWEEP, 'energies.csv')
        if not os.path.isfile(path):
            p.error(f'--parts: bad run directory {run_dir!r} (no {SWEEP}/energies.csv: run its sweep first)')
        tables.append(pd.read_csv(path))
    hashes = {d: checkpoint_hash(d) for d in args.parts}
    if len({h for h in hashes.values() if h is not None}) > 1:
        p.error('--parts: the parts come from different trained models (their checkpoint.qvmc differ: '
                + ', '.join(f'{d}: {h}' for d, h in hashes.items()) + ')')
    table = pd.concat(tables, ignore_index=True)
    if 'lam' not in table:
        p.error('--parts: the sweep tables have no lam column (not λ sweeps)')
    repeated = sorted(table.loc[table['lam'].duplicated(), 'lam'])
    if repeated:
        p.error(f'--parts: λ = {", ".join(f"{v:g}" for v in repeated)} measured in more than one part (give each '
                'part its own --sweep-range)')
    args.table = table.sort_values('lam').reset_index(drop=True)
    args.tidy = {}
    for name in TIDY:
        paths = [os.path.join(d, SWEEP, name) for d in args.parts]
        if all(os.path.isfile(path) for path in paths):
            args.tidy[name] = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    return args


def main(argv=None):
    args = parse_args(argv)
    import moire_transition as driver  # JAX is imported here, after the flags are checked
    from qvmc import plotting

    out = os.path.join(args.out, SWEEP)
    os.makedirs(out, exist_ok=True)
    table = args.table
    table.to_csv(os.path.join(out, 'energies.csv'), index=False)
    for name, frame in args.tidy.items():
        frame.to_csv(os.path.join(out, name), index=False)
    has_order = 'honeycomb_order' in table
    if has_order:
        columns = ['lam'] + [c for c in table.columns if c.startswith(driver.ORDER_PREFIXES)]
        table[columns].to_csv(os.path.join(out, 'order_parameters.csv'), index=False)
        plotting.plot_order_parameters(table, os.path.join(out, 'order_parameters.png'), xlabel='λ')
    components = tuple(c for c in ('energy', 'interaction', 'moire', 'kinetic') if f'{c}_per_electron' in table)
    plotting.plot_sweep_energies(table, os.path.join(out, 'energies.png'), components=components)
    if 'density.csv' in args.tidy:
        plotting.plot_density_maps(args.tidy['density.csv'], os.path.join(out, 'densities.png'))
    if len(table) >= driver.MIN_SWEEP_POINTS:
        electrons = int(table['N'].iloc[0]) if 'N' in table else 6
        driver.fit_transitions(types.SimpleNamespace(epsilon=args.epsilon, electrons=electrons), table, out,
                               has_order, xlabel='λ')
    else:
        print(f'no transition fit: {len(table)} points (the fit needs {driver.MIN_SWEEP_POINTS})')
    shown = [c for c in ('lam', 'energy_per_electron', 'energy_per_electron_err', 'interaction_per_electron',
                         'interaction_per_electron_err', 'honeycomb_order', 'honeycomb_order_err') if c in table]
    with pd.option_context('display.width', 200, 'display.float_format', '{:.4f}'.format):
        print(table[shown].to_string(index=False))
    print(f'merged {len(args.parts)} parts ({len(table)} points) into {out}')


if __name__ == '__main__':
    main()
