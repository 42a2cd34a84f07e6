"""Main job: one conditional Fermi Sets model trained on a few (λ, N) quantum dots, then
predictions with error bars at held-out λ and at an unseen N, against reference energies.

    python examples/quantum_dot_foundation.py --run-dir runs/dot

Writes ``history.csv``, ``energies.csv``, ``training.png``, ``energy_vs_lambda.png`` and
``densities.png`` into the run directory; re-running with the same directory resumes.

Training and prediction sets are flags: ``--train 6:0,2,5 8:0,2,5`` trains N = 6 and 8 at
those λ (spin sector from ``--spin``); ``--schedule blockwise`` draws λ from ``--lam-range``
every ``--block-length`` steps instead. ``--sweep-lam 0:10:11 --sweep-n 5-11`` adds an
inference sweep (energies, densities, g(r), wavefunction slices; CSV, netCDF and PNG under
``sweep/``); ``--init-from RUN_DIR`` starts from another run's parameters (e.g. smaller N).
"""

import argparse
import os
import time

import jax
import numpy as np
import optax
import pandas as pd

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from hamiltonians.references import reference
from qvmc import VMC, VMCConfig, plotting
from qvmc.inference import Predictor
from qvmc.schedule import BlockwiseSchedule
from qvmc.sweep import Sweep
from qvmc.train import load_history, train
from qvmc.transfer import transfer_state


def parse_points(items):
    """``['2:0,2,8', '6:1']`` -> ``[(2, 0.0), (2, 2.0), (2, 8.0), (6, 1.0)]``."""
    points = []
    for item in items:
        n, _, lams = item.partition(':')
        if not lams:
            raise SystemExit(f'bad point list {item!r}: use N:λ1,λ2,… (e.g. 6:0,2,8)')
        points += [(int(n), float(lam)) for lam in lams.split(',')]
    return points


def parse_range(text, cast=float):
    """``'0:10:11'`` -> 11 values from 0 to 10; ``'5-11'`` -> 5, 6, …, 11; ``'3,5'`` -> 3, 5."""
    if ':' in text:
        start, stop, num = text.split(':')
        return [cast(v) for v in np.linspace(float(start), float(stop), int(num))]
    if '-' in text[1:]:
        start, stop = text.split('-')
        return list(range(int(start), int(stop) + 1))
    return [cast(v) for v in text.split(',')]


def spins_of(n, spin):
    """(n_up, n_down) of N electrons: ``unpolarized`` (n_up = ⌈N/2⌉) or ``polarized``."""
    return (n, 0) if spin == 'polarized' else ((n + 1) // 2, n // 2)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run-dir', default='runs/quantum_dot_foundation')
    p.add_argument('--steps', type=int, default=600, help='training steps')
    p.add_argument('--walkers', type=int, default=256, help='walkers per training context')
    p.add_argument('--lr', type=float, default=3e-3, help='peak Adam learning rate')
    p.add_argument('--width', type=int, default=32)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--determinants', type=int, default=4)
    p.add_argument('--eval-walkers', type=int, default=256)
    p.add_argument('--eval-steps', type=int, default=150, help='measurement MCMC calls per prediction')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--x64', action='store_true', help='train in float64 (slower, more precise)')
    p.add_argument('--spin', choices=('unpolarized', 'polarized'), default='unpolarized')
    p.add_argument('--train', nargs='+', default=['2:0,2,8', '6:0,2'], help='training points N:λ,λ,…')
    p.add_argument('--predict', nargs='+', default=['2:1,5,10', '6:1', '4:0', '3:0'], help='held-out N:λ,…')
    p.add_argument('--schedule', choices=('discrete', 'blockwise'), default='discrete')
    p.add_argument('--lam-range', type=float, nargs=2, default=(0.0, 10.0), help='blockwise λ interval')
    p.add_argument('--block-length', type=int, default=500, help='blockwise: steps per block of contexts')
    p.add_argument('--num-lam', type=int, default=4, help='blockwise: λ values per N and block')
    p.add_argument('--sweep-lam', default=None, help='inference sweep λ grid, e.g. 0:10:11')
    p.add_argument('--sweep-n', default=None, help='inference sweep N values, e.g. 5-11 (default: training N)')
    p.add_argument('--sweep-steps', type=int, default=100, help='measurement calls per sweep point')
    p.add_argument('--init-from', default=None, help='checkpoint or run directory to take parameters from')
    p.add_argument('--checkpoint-every', type=int, default=50)
    p.add_argument('--keep-checkpoints', type=int, default=3)
    p.add_argument('--normalize-energy-scale', action='store_true',
                   help='loss: per-context energies normalized by their spread (contexts of very different N)')
    return p.parse_args()


def main():
    args = parse_args()
    if args.x64:
        jax.config.update('jax_enable_x64', True)
    start = time.time()
    dot = QuantumDot()
    train_points = [(*spins_of(n, args.spin), lam) for n, lam in parse_points(args.train)]
    predict_points = [(*spins_of(n, args.spin), lam) for n, lam in parse_points(args.predict)]
    schedule = None
    if args.schedule == 'blockwise':
        bases = [dot.context(u, d, lam=args.lam_range[0]) for u, d in dict.fromkeys((u, d) for u, d, _ in train_points)]
        schedule = BlockwiseSchedule(bases, 'lam', args.lam_range, args.block_length, args.num_lam, seed=args.seed)
        contexts = list(schedule.contexts_at(0))
    else:
        contexts = [dot.context(u, d, lam=lam) for u, d, lam in train_points]
    wavefunction = make_fermi_sets(FermiSetsConfig(width=args.width, num_layers=args.layers,
                                                   num_determinants=args.determinants))
    lr = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(50, args.steps // 5 + 1), args.steps,
                                            end_value=args.lr * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    config = VMCConfig(num_walkers=args.walkers, mcmc_substeps=10, normalize_energy_scale=args.normalize_energy_scale)
    vmc = VMC(wavefunction, dot, contexts, optimizer, config)

    key_init, key_train, key_predict = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    state = transfer_state(vmc, key_init, args.init_from) if args.init_from else vmc.init(key_init)
    state = vmc.burn_in(key_init, state, 20)
    num_params = sum(np.size(p) for p in jax.tree.leaves(state.params))
    print(f'Fermi Sets: {num_params} parameters; training on {len(contexts)} contexts'
          + (f' (blockwise λ ∈ {tuple(args.lam_range)}, {args.num_lam} per N every {args.block_length} steps)'
             if schedule else '') + ': ' + ', '.join(c.label() for c in contexts))
    state = train(vmc, state, key_train, args.steps, run_dir=args.run_dir, log_every=50,
                  checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                  schedule=schedule, run_config=vars(args))
    print(f'training done in {time.time() - start:.0f} s')

    predictor = Predictor(wavefunction, dot, config)
    rows, densities, labels = [], [], []
    for split, points in (('train', train_points), ('held-out', predict_points)):
        for u, d, lam in points:
            ctx = dot.context(u, d, lam=lam)
            est = predictor.estimate(state.params, ctx, jax.random.fold_in(key_predict, len(rows)),
                                     num_walkers=args.eval_walkers, num_steps=args.eval_steps)
            row = est.to_row()
            ref = reference(u, d, lam)
            row.update(split=split, reference=ref[0] if ref else np.nan,
                       reference_source=ref[2] if ref else '')
            row['deviation'] = row['energy'] - row['reference']
            rows.append(row)
            if split == 'held-out' or lam in (0.0, 8.0):
                densities.append(est.density)
                labels.append(f'{ctx.label()} ({split})')
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(args.run_dir, 'energies.csv'), index=False)
    shown = ['split', 'N', 'n_up', 'n_down', 'lam', 'energy', 'energy_err', 'reference', 'deviation',
             'energy_tau', 'burn_in_steps']
    with pd.option_context('display.width', 160, 'display.max_columns', 20, 'display.float_format', '{:.5f}'.format):
        print(table[shown].to_string(index=False))

    history = load_history(args.run_dir)
    train_refs = {}
    for c in contexts:
        ref = reference(c.n_up, c.n_down, c['lam'])
        if ref:
            train_refs[c.label()] = ref[0]
    plotting.plot_training(history, os.path.join(args.run_dir, 'training.png'), train_refs)
    plotting.plot_energy_vs_lambda(table, os.path.join(args.run_dir, 'energy_vs_lambda.png'))
    plotting.plot_densities(densities, labels, os.path.join(args.run_dir, 'densities.png'))
    if args.sweep_lam:
        run_sweep(args, dot, wavefunction, config, state.params, train_points, key_predict)
    print(f'wrote {args.run_dir}/{{history.csv, energies.csv, training.png, energy_vs_lambda.png, '
          f'densities.png}} in {time.time() - start:.0f} s total')


def run_sweep(args, dot, wavefunction, config, params, train_points, rng_key):
    """Inference sweep over the (N, λ) grid: tables, traces and plots under ``run_dir/sweep``."""
    sizes = parse_range(args.sweep_n, int) if args.sweep_n else sorted({u + d for u, d, _ in train_points})
    contexts = [dot.context(*spins_of(n, args.spin), lam=lam) for n in sizes for lam in parse_range(args.sweep_lam)]
    print(f'inference sweep over {len(contexts)} contexts (N = {sizes}), no optimization')
    sweep = Sweep(wavefunction, dot, config)
    result = sweep.run(params, contexts, jax.random.fold_in(rng_key, 10**6), num_walkers=args.eval_walkers,
                       num_steps=args.sweep_steps, print_fn=print)
    out = os.path.join(args.run_dir, 'sweep')
    result.save(out)
    plotting.plot_sweep_energies(result.energies, os.path.join(out, 'energies.png'))
    plotting.plot_density_maps(result.density, os.path.join(out, 'densities.png'))
    plotting.plot_pair_correlation(result.pair_correlation, os.path.join(out, 'pair_correlation.png'))
    plotting.plot_wavefunction_slices(result.wavefunction_slice, result.slice_electrons,
                                      os.path.join(out, 'wavefunction_slices.png'))
    print(f'wrote {out}/{{energies, density, pair_correlation, wavefunction_slice, slice_electrons}}.csv, '
          'traces.nc and PNGs')


if __name__ == '__main__':
    main()
