"""Main job: one conditional Fermi Sets model trained on a few (λ, N) quantum dots, then
predictions with error bars at held-out λ and at an unseen N, against reference energies.

    python examples/quantum_dot_foundation.py --run-dir runs/dot

Writes ``history.csv``, ``energies.csv``, ``training.png``, ``energy_vs_lambda.png`` and
``densities.png`` into the run directory; re-running with the same directory resumes.
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
from qvmc.train import load_history, train

# (n_up, n_down, λ): training contexts and held-out predictions.
TRAIN = [(1, 1, 0.0), (1, 1, 2.0), (1, 1, 8.0), (3, 3, 0.0), (3, 3, 2.0)]
PREDICT = [(1, 1, 1.0), (1, 1, 5.0), (1, 1, 10.0), (3, 3, 1.0), (2, 2, 0.0), (2, 1, 0.0)]


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
    return p.parse_args()


def main():
    args = parse_args()
    if args.x64:
        jax.config.update('jax_enable_x64', True)
    start = time.time()
    dot = QuantumDot()
    contexts = [dot.context(u, d, lam=lam) for u, d, lam in TRAIN]
    wavefunction = make_fermi_sets(FermiSetsConfig(width=args.width, num_layers=args.layers,
                                                   num_determinants=args.determinants))
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(50, args.steps // 5 + 1), args.steps,
                                                  end_value=args.lr * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    config = VMCConfig(num_walkers=args.walkers, mcmc_substeps=10)
    vmc = VMC(wavefunction, dot, contexts, optimizer, config)

    key_init, key_train, key_predict = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    state = vmc.init(key_init)
    state = vmc.burn_in(key_init, state, 20)
    num_params = sum(np.size(p) for p in jax.tree.leaves(state.params))
    print(f'Fermi Sets: {num_params} parameters; training on {len(contexts)} contexts: '
          + ', '.join(c.label() for c in contexts))
    state = train(vmc, state, key_train, args.steps, run_dir=args.run_dir, log_every=50)
    print(f'training done in {time.time() - start:.0f} s')

    predictor = Predictor(wavefunction, dot, config)
    rows, densities, labels = [], [], []
    for split, points in (('train', TRAIN), ('held-out', PREDICT)):
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
    print(f'wrote {args.run_dir}/{{history.csv, energies.csv, training.png, energy_vs_lambda.png, '
          f'densities.png}} in {time.time() - start:.0f} s total')


if __name__ == '__main__':
    main()
