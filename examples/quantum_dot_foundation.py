"""Main job: one conditional Fermi Sets model trained on a few (λ, N) quantum dots, then
predictions with error bars at held-out λ and at an unseen N, against reference energies.

    python examples/quantum_dot_foundation.py --run-dir runs/dot

Writes ``history.csv``, ``energies.csv``, ``training.png``, ``energy_vs_lambda.png`` and
``densities.png`` into the run directory; re-running with the same directory resumes (SIGTERM or
Ctrl-C stops training after a checkpoint with exit status 75).

Training and prediction sets are flags: ``--train 6:0,2,5 8:0,2,5`` trains N = 6 and 8 at
those λ (spin sector from ``--spin``, trap frequency ω = 1); ``--train 6:1@1,0.5,0.28`` adds the trap
frequencies ω after ``@`` (every λ of the item at every ω; the network sees λ/√ω and log ω);
``--schedule blockwise`` draws λ from ``--lam-range`` every ``--block-length`` steps instead.
``--sweep-lam 0:10:11 --sweep-n 5-11`` adds an inference sweep (energies, densities, g(r),
wavefunction slices; CSV, netCDF and PNG under ``sweep/``); ``--init-from RUN_DIR`` starts from
another run's parameters (e.g. smaller N).
"""

import argparse
import os
import sys
import time

import jax
import numpy as np
import pandas as pd

import samplers
from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from hamiltonians.references import reference
from qvmc import VMC, VMCConfig, plotting
from qvmc.inference import Predictor
from qvmc.runtime import enable_compilation_cache
from qvmc.schedule import BlockwiseSchedule
from qvmc.sweep import Sweep
from qvmc.train import TrainingInterrupted, load_history, train
from qvmc.transfer import transfer_state

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import (KERNEL_PRECISION_HELP, KERNEL_PRECISIONS, check, check_kernel_precision,  # noqa: E402
                 finite_float, int_at_least, lock_run_dir, make_optimizer, parse_interval, parse_points,
                 parse_range, positive_float, positive_int, spins_of)

STEPS_WHY = 'the warmup-cosine learning-rate schedule needs at least two steps'


def validate_args(args, parser):
    """Checks every flag that ``argparse`` cannot check alone; ``parser.error`` (exit status 2) on the first bad one.

    Runs before JAX compiles anything: only plain-Python checks and context construction.
    """
    dot = QuantumDot(max_electrons=args.max_electrons)
    if not -2**63 <= args.seed < 2**63:
        parser.error(f"--seed: bad value '{args.seed}' (expected an integer in [-2^63, 2^63))")
    if args.schedule == 'blockwise' and args.seed < 0:
        parser.error(f"--seed: bad value '{args.seed}' (the blockwise schedule needs a seed ≥ 0)")
    heads = FermiSetsConfig().num_heads
    if args.width % heads:
        parser.error(f"--width: bad value '{args.width}' (Fermi Sets needs a width divisible by num_heads = {heads})")
    check(parser, FermiSetsConfig, width=args.width, num_layers=args.layers, num_determinants=args.determinants)
    if not 0.0 <= args.momentum < 1.0:
        parser.error(f"--momentum: bad value '{args.momentum}' (expected 0 ≤ μ < 1)")
    if args.lr is None:
        args.lr = 3e-3 if args.optimizer == 'adam' else 0.05
    check_kernel_precision(args, parser)
    lam_range = check(parser, parse_interval, args.lam_range, '--lam-range', minimum=0.0, name='λ')

    def checked_contexts(flag, points, token):
        for n, lam, omega in points:
            try:
                dot.context(*spins_of(n, args.spin), lam=lam, omega=omega)
            except ValueError as err:
                too_large = n > dot.max_electrons
                why = f'N must be ≤ --max-electrons = {dot.max_electrons}' if too_large else str(err)
                parser.error(f'{flag}: bad N {n} in {token!r} ({args.spin} N = {n} at λ = {lam:g}, ω = {omega:g}: '
                             f'{why})')

    for flag, items in (('--train', args.train), ('--predict', args.predict)):
        check(parser, parse_points, items, flag, with_omega=True)  # an empty list is rejected too
        for item in items:
            checked_contexts(flag, parse_points([item], flag, with_omega=True), item)
    train_points = parse_points(args.train, with_omega=True)
    if len(set(train_points)) != len(train_points):
        twice = sorted({p for p in train_points if train_points.count(p) > 1})
        parser.error(f'--train: the point(s) {", ".join(f"N = {n}, λ = {lam:g}, ω = {om:g}" for n, lam, om in twice)} '
                     'appear more than once (each training context gets one walker block)')
    if args.sweep_lam:
        check(parser, parse_range, args.sweep_lam, float, '--sweep-lam', minimum=0.0, name='λ')
    if args.sweep_n:
        sizes = check(parser, parse_range, args.sweep_n, int, '--sweep-n', minimum=1, name='N')
        checked_contexts('--sweep-n', [(n, 0.0, 1.0) for n in sizes], args.sweep_n)
    if args.pad_n is not None:
        measured = [n for n, _, _ in train_points + parse_points(args.predict, with_omega=True)]
        if args.sweep_n:
            measured += parse_range(args.sweep_n, int)
        if args.pad_n < max(measured) or args.pad_n > dot.max_electrons:
            parser.error(f"--pad-n: bad value '{args.pad_n}' (must be at least the largest N measured, "
                         f'{max(measured)}, and at most {dot.max_electrons})')
    if args.pad_training and args.pad_n is None:
        parser.error("--pad-training: needs --pad-n (the padded number of electrons)")
    if args.schedule == 'blockwise':
        bases = [dot.context(*spins_of(n, args.spin), lam=lam_range[0], omega=omega)
                 for n, omega in dict.fromkeys((n, omega) for n, _, omega in train_points)]
        check(parser, BlockwiseSchedule, bases, 'lam', lam_range, args.block_length, args.num_lam, seed=args.seed)
    if args.init_from and not os.path.exists(args.init_from):
        parser.error(f'--init-from: bad path {args.init_from!r} (no such checkpoint file or run directory)')
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        parser.error(f'--run-dir: bad path {args.run_dir!r} (exists and is not a directory)')
    return args


def parse_args(argv=None):
    """Parses and validates the flags (``argv``: default ``sys.argv[1:]``); exits with status 2 on a bad one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run-dir', default='runs/quantum_dot_foundation')
    p.add_argument('--steps', type=int_at_least(2, STEPS_WHY), default=600, help='training steps (≥ 2)')
    p.add_argument('--walkers', type=positive_int, default=256, help='walkers per training context')
    p.add_argument('--optimizer', choices=('adam', 'sr', 'minsr', 'spring'), default='adam',
                   help='adam, or a natural gradient (sr: parameter space, CG; minsr/spring: sample space); '
                        'natural gradients switch on float64 reductions and solves (network stays float32 '
                        'unless --x64)')
    p.add_argument('--lr', type=positive_float, default=None,
                   help='peak learning rate (default: 3e-3 for adam, 0.05 for sr/minsr/spring)')
    p.add_argument('--diag-shift', type=positive_float, default=1e-3, help='natural gradients: diagonal shift ε')
    p.add_argument('--max-norm', type=positive_float, default=1e-2,
                   help='natural gradients: bound on the update norm (the metric-weighted step)')
    p.add_argument('--momentum', type=finite_float, default=0.9, help='spring: momentum μ in [0, 1)')
    p.add_argument('--kernel-precision', choices=KERNEL_PRECISIONS, default=None, help=KERNEL_PRECISION_HELP)
    p.add_argument('--substeps', type=positive_int, default=10, help='MCMC sub-steps per training step')
    p.add_argument('--sampler', choices=samplers.SAMPLERS, default='rwm',
                   help='walker moves (rwm; mala: 1.5x the effective samples per second of rwm with 10 sub-steps '
                        'at N = 20 with --substeps 5, docs/results/foundation-models.md)')
    p.add_argument('--energy-batch-size', type=positive_int, default=None,
                   help='walkers per pass of the local energies (default: on a CPU about 9216/(N·D)², a power '
                        'of two, so that the forward Laplacian stays in cache; on a GPU all at once)')
    p.add_argument('--width', type=positive_int, default=32,
                   help=f'stream width (a multiple of num_heads = {FermiSetsConfig().num_heads})')
    p.add_argument('--layers', type=positive_int, default=2)
    p.add_argument('--determinants', type=positive_int, default=4)
    p.add_argument('--eval-walkers', type=positive_int, default=256)
    p.add_argument('--eval-steps', type=positive_int, default=150, help='measurement MCMC calls per prediction')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--x64', action='store_true', help='train in float64 (slower, more precise)')
    p.add_argument('--spin', choices=('unpolarized', 'polarized'), default='unpolarized')
    p.add_argument('--train', nargs='+', default=['2:0,2,8', '6:0,2'],
                   help='training points N:λ,λ,… (append @ω,ω,… for trap frequencies other than ω = 1)')
    p.add_argument('--predict', nargs='+', default=['2:1,5,10', '6:1', '4:0', '3:0'],
                   help='held-out points N:λ,…[@ω,…]')
    p.add_argument('--schedule', choices=('discrete', 'blockwise'), default='discrete')
    p.add_argument('--lam-range', type=finite_float, nargs=2, default=(0.0, 10.0),
                   help='blockwise λ interval (0 ≤ lo < hi)')
    p.add_argument('--block-length', type=positive_int, default=500, help='blockwise: steps per block of contexts')
    p.add_argument('--num-lam', type=positive_int, default=4, help='blockwise: λ values per N and block')
    p.add_argument('--sweep-lam', default=None, help='inference sweep λ grid, e.g. 0:10:11')
    p.add_argument('--sweep-n', default=None, help='inference sweep N values, e.g. 5-11 (default: training N)')
    p.add_argument('--sweep-steps', type=positive_int, default=100, help='measurement calls per sweep point')
    p.add_argument('--pad-n', type=positive_int, default=None,
                   help='measure the predictions and the sweep with every N padded to this many electrons (at least '
                        'every N measured): one compiled measurement program instead of one per N, each step at the '
                        "padded size's cost (hamiltonians.padding); training is padded only with --pad-training")
    p.add_argument('--pad-training', action='store_true',
                   help='train every block padded to --pad-n electrons too: one vmapped group in the training step for '
                        'all particle contents (a compile of about one content instead of one per content), each '
                        "block at the padded size's cost")
    p.add_argument('--init-from', default=None, help='checkpoint or run directory to take parameters from')
    p.add_argument('--max-electrons', type=positive_int, default=QuantumDot.max_electrons,
                   help='largest N the network is built for (N enters the context features as N/max); '
                        'every N trained, predicted or swept must be ≤ it; an exported model keeps it')
    p.add_argument('--checkpoint-every', type=positive_int, default=50)
    p.add_argument('--keep-checkpoints', type=positive_int, default=3)
    p.add_argument('--normalize-energy-scale', action='store_true',
                   help='loss: per-context energies normalized by their spread (contexts of very different N)')
    return validate_args(p.parse_args(argv), p)


def main():
    args = parse_args()
    lock_run_dir(args.run_dir)  # one writer per run directory: a second one exits 2 here, before compiling
    enable_compilation_cache()  # a re-run, a resume or a known particle content loads its programs from disk
    if args.x64 or args.optimizer != 'adam':  # natural gradients reduce and solve in float64
        jax.config.update('jax_enable_x64', True)
    start = time.time()
    dot = QuantumDot(max_electrons=args.max_electrons)
    train_points = [(*spins_of(n, args.spin), lam, omega)
                    for n, lam, omega in parse_points(args.train, with_omega=True)]
    predict_points = [(*spins_of(n, args.spin), lam, omega)
                      for n, lam, omega in parse_points(args.predict, with_omega=True)]
    schedule = None
    if args.schedule == 'blockwise':
        bases = [dot.context(u, d, lam=args.lam_range[0], omega=omega)
                 for u, d, omega in dict.fromkeys((u, d, omega) for u, d, _, omega in train_points)]
        schedule = BlockwiseSchedule(bases, 'lam', args.lam_range, args.block_length, args.num_lam, seed=args.seed)
        contexts = list(schedule.contexts_at(0))
    else:
        contexts = [dot.context(u, d, lam=lam, omega=omega) for u, d, lam, omega in train_points]
    wavefunction = make_fermi_sets(FermiSetsConfig(width=args.width, num_layers=args.layers,
                                                   num_determinants=args.determinants))
    optimizer = make_optimizer(args)
    config = VMCConfig(num_walkers=args.walkers, mcmc_substeps=args.substeps, sampler=args.sampler,
                       energy_batch_size=args.energy_batch_size,
                       normalize_energy_scale=args.normalize_energy_scale,
                       network_dtype='float64' if args.x64 else ('float32' if args.optimizer != 'adam' else None))
    pad = None if args.pad_n is None else spins_of(args.pad_n, args.spin)
    vmc = VMC(wavefunction, dot, contexts, optimizer, config, pad=pad if args.pad_training else None)

    key_init, key_train, key_predict = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    state = transfer_state(vmc, key_init, args.init_from) if args.init_from else vmc.init(key_init)
    state = vmc.run_mcmc(key_init, state, 20)
    num_params = sum(np.size(p) for p in jax.tree.leaves(state.params))
    print(f'Fermi Sets: {num_params} parameters; training on {len(contexts)} contexts'
          + (f' (blockwise λ ∈ {tuple(args.lam_range)}, {args.num_lam} per N every {args.block_length} steps)'
             if schedule else '') + ': ' + ', '.join(c.label() for c in contexts))
    try:
        state = train(vmc, state, key_train, args.steps, run_dir=args.run_dir, log_every=50,
                      checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                      schedule=schedule, run_config=vars(args))
    except TrainingInterrupted as stop:  # SIGTERM / SIGINT: checkpoint written, exit 75 (EX_TEMPFAIL)
        print(f'stopped at step {stop.step}; re-run the same command to resume')
        sys.exit(stop.exit_code)
    print(f'training done in {time.time() - start:.0f} s')

    predictor = Predictor(wavefunction, dot, config, pad=pad)
    rows, densities, labels = [], [], []
    for split, points in (('train', train_points), ('held-out', predict_points)):
        for u, d, lam, omega in points:
            ctx = dot.context(u, d, lam=lam, omega=omega)
            est = predictor.estimate(state.params, ctx, jax.random.fold_in(key_predict, len(rows)),
                                     num_walkers=args.eval_walkers, num_steps=args.eval_steps)
            row = est.to_row()
            ref = reference(u, d, lam, omega)
            row.update(split=split, reference=ref[0] if ref else np.nan,
                       reference_source=ref[2] if ref else '')
            row['deviation'] = row['energy'] - row['reference']
            rows.append(row)
            if split == 'held-out' or lam in (0.0, 8.0):
                densities.append(est.density)
                labels.append(f'{ctx.label()} ({split})')
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(args.run_dir, 'energies.csv'), index=False)
    shown = ['split', 'N', 'n_up', 'n_down', 'lam', 'omega', 'energy', 'energy_err', 'reference', 'deviation',
             'energy_tau', 'burn_in_steps']
    with pd.option_context('display.width', 160, 'display.max_columns', 20, 'display.float_format', '{:.5f}'.format):
        print(table[shown].to_string(index=False))

    history = load_history(args.run_dir)
    train_refs = {}
    for c in contexts:
        ref = reference(c.n_up, c.n_down, c['lam'], c['omega'])
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
    sizes = parse_range(args.sweep_n, int) if args.sweep_n else sorted({u + d for u, d, _, _ in train_points})
    contexts = [dot.context(*spins_of(n, args.spin), lam=lam) for n in sizes for lam in parse_range(args.sweep_lam)]
    print(f'inference sweep over {len(contexts)} contexts (N = {sizes}), no optimization')
    sweep = Sweep(wavefunction, dot, config, pad=None if args.pad_n is None else spins_of(args.pad_n, args.spin))
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
