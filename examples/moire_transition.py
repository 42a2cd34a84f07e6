"""Moiré transition: one periodic network conditioned on the moiré depth λ, trained with a blockwise
schedule over an interval of λ, then swept over λ (no optimization) to locate the jump in the
interaction energy per electron between the Fermi liquid and the generalized Wigner crystal.

    python examples/moire_transition.py --run-dir runs/moire

MoireSystem (ε explicit, default 5; meV and nm), N = 6 spin-polarized electrons at ν = 2/3.
Writes ``history.csv``, ``burn_in.csv``, checkpoints, ``training.png`` and, under ``sweep/``,
``energies.csv``, ``density.csv``, ``pair_correlation.csv``, ``wavefunction_slice.csv``,
``traces.nc``, ``transition.csv`` and PNGs. Re-running with the same directory resumes; SIGTERM or
Ctrl-C stops training after a checkpoint with exit status 75.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np
import optax
import pandas as pd

from ansatz.qernel import QernelConfig
from ansatz.registry import make_ansatz
from ansatz.slater_jastrow import SlaterJastrowConfig
from hamiltonians.moire import MoireSystem
from qvmc import VMC, VMCConfig, plotting
from qvmc.analysis import transition_from_sweep
from qvmc.schedule import BlockwiseSchedule
from qvmc.sweep import Sweep
from qvmc.train import CHECKPOINT_NAME, TrainingInterrupted, load_history, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import (check, finite_float, int_at_least, nonnegative_int, parse_burn_in, parse_interval,  # noqa: E402
                 parse_stages, positive_float, positive_int)

STEPS_WHY = 'the warmup-cosine learning-rate schedule needs at least two steps'
MIN_SWEEP_POINTS = 5  # the transition fit needs two straight branches of ≥ 2 points each, plus one
SWEEP_POINTS_WHY = 'the transition fit needs two straight branches of at least two points each, plus one'


def validate_args(args, parser):
    """Checks every flag that ``argparse`` cannot check alone; ``parser.error`` (exit status 2) on the first bad one.

    Runs before JAX compiles anything: builds the system, the supercell and the schedule (plain Python).
    """
    if args.seed >= 2**63:
        parser.error(f"--seed: bad value '{args.seed}' (expected an integer in [0, 2^63))")
    if args.ansatz == 'qernel':
        heads = 2  # main() builds QernelConfig(num_heads=2, num_kv_heads=1)
        if args.hidden % heads:
            parser.error(f"--hidden: bad value '{args.hidden}' (qernel needs a width divisible by num_heads = {heads})")
        check(parser, QernelConfig, width=args.hidden, num_layers=args.layers, num_heads=heads, num_kv_heads=1,
              expert_hidden=args.hidden, num_determinants=args.determinants)
    else:
        check(parser, SlaterJastrowConfig, hidden=args.hidden, num_layers=args.layers,
              num_determinants=args.determinants, jastrow_hidden=args.hidden)
    try:
        system = MoireSystem(epsilon=args.epsilon)
    except ValueError as err:
        parser.error(f"--epsilon: bad value '{args.epsilon}' ({err})")
    try:
        system.context(args.electrons, 0, lam=0.0)  # N ≤ max_electrons and N/ν moiré cells (num_cells)
        system.supercell(args.electrons)
    except ValueError as err:
        parser.error(f"--electrons: bad value '{args.electrons}' ({err})")
    lam_range = check(parser, parse_interval, args.lam_range, '--lam-range', minimum=0.0, name='λ (moiré depth)')
    if args.sweep_range is not None:
        check(parser, parse_interval, args.sweep_range, '--sweep-range', minimum=0.0, name='λ (moiré depth)')
    stages = check(parser, parse_stages, args.stages, '--stages')
    for start, count in stages:
        if args.walkers % count:
            parser.error(f"--walkers: bad value '{args.walkers}' (must be divisible by the {count} λ blocks of stage "
                         f"'{start}:{count}' in --stages {args.stages!r})")
    check(parser, parse_burn_in, args.burn_in, '--burn-in')
    base = system.context(args.electrons, 0, lam=float(np.mean(lam_range)))
    schedule = check(parser, BlockwiseSchedule, base, 'lam', args.lam_range, args.block_length, stages=stages,
                     seed=args.seed)
    check(parser, schedule.validate, system, args.walkers)
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        parser.error(f'--run-dir: bad path {args.run_dir!r} (exists and is not a directory)')
    return args


def parse_args(argv=None):
    """Parses and validates the flags (``argv``: default ``sys.argv[1:]``); exits with status 2 on a bad one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run-dir', default='runs/moire_transition')
    p.add_argument('--electrons', type=positive_int, default=6, help='N (spin-polarized; N/ν moiré cells)')
    p.add_argument('--epsilon', type=positive_float, default=5.0, help='dielectric constant ε')
    p.add_argument('--ansatz', choices=('slater_jastrow', 'qernel'), default='slater_jastrow')
    p.add_argument('--hidden', type=positive_int, default=16, help='network width')
    p.add_argument('--layers', type=positive_int, default=1)
    p.add_argument('--determinants', type=positive_int, default=1)
    p.add_argument('--lam-range', type=finite_float, nargs=2, default=(0.6, 1.6),
                   help='training interval of λ (0 ≤ lo < hi)')
    p.add_argument('--steps', type=int_at_least(2, STEPS_WHY), default=400, help='training steps (≥ 2)')
    p.add_argument('--block-length', type=positive_int, default=50, help='K: steps per block of contexts')
    p.add_argument('--stages', default='0:4,200:8', help='start:N_λ,… (the study: 0:4,<later>:16)')
    p.add_argument('--walkers', type=positive_int, default=128, help='total walkers (divisible by every N_λ)')
    p.add_argument('--lr', type=positive_float, default=3e-3)
    p.add_argument('--substeps', type=positive_int, default=10, help='MCMC sub-steps per training step')
    p.add_argument('--sweep-points', type=int_at_least(MIN_SWEEP_POINTS, SWEEP_POINTS_WHY), default=11,
                   help=f'λ values in the sweep (≥ {MIN_SWEEP_POINTS} for the transition fit)')
    p.add_argument('--sweep-range', type=finite_float, nargs=2, default=None,
                   help='sweep interval (default: training; 0 ≤ lo < hi)')
    p.add_argument('--eval-walkers', type=positive_int, default=128)
    p.add_argument('--eval-steps', type=positive_int, default=100, help='measurement MCMC calls per λ')
    p.add_argument('--burn-in', type=nonnegative_int, nargs=3, default=(10, 20, 300), metavar=('CHUNK', 'MIN', 'MAX'),
                   help='equilibration: CHUNK ≥ 4, 0 ≤ MIN ≤ MAX, MAX ≥ 2·CHUNK')
    p.add_argument('--checkpoint-every', type=positive_int, default=50)
    p.add_argument('--seed', type=nonnegative_int, default=0)
    p.add_argument('--x64', action='store_true', help='float64 throughout')
    return validate_args(p.parse_args(argv), p)


def main():
    args = parse_args()
    if args.x64:
        jax.config.update('jax_enable_x64', True)
    start = time.time()
    system = MoireSystem(epsilon=args.epsilon)
    base = system.context(args.electrons, 0, lam=float(np.mean(args.lam_range)))
    schedule = BlockwiseSchedule(base, 'lam', args.lam_range, args.block_length, stages=parse_stages(args.stages),
                                 seed=args.seed)
    schedule.validate(system, args.walkers)
    if args.ansatz == 'qernel':
        net = QernelConfig(width=args.hidden, num_layers=args.layers, num_heads=2, num_kv_heads=1,
                           expert_hidden=args.hidden, num_determinants=args.determinants)
    else:
        net = SlaterJastrowConfig(hidden=args.hidden, num_layers=args.layers, num_determinants=args.determinants,
                                  jastrow_hidden=args.hidden)
    wavefunction = make_ansatz(args.ansatz, net, lattice=system.network_lattice)
    contexts = schedule.contexts_at(0)
    lr = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(50, args.steps // 5 + 1), max(args.steps, 1),
                                            end_value=args.lr * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    config = VMCConfig(num_walkers=args.walkers // len(contexts), mcmc_substeps=args.substeps)
    vmc = VMC(wavefunction, system, contexts, optimizer, config)
    burn = dict(zip(('chunk', 'min_steps', 'max_steps'), args.burn_in))

    key_init, key_train, key_sweep = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    state = vmc.init(key_init)
    if not os.path.exists(os.path.join(args.run_dir, CHECKPOINT_NAME)):  # a resumed run brings its walkers
        state, reports = vmc.equilibrate(key_init, state, **burn)
        print('initial burn-in: ' + ', '.join(f'{r.steps} calls' + ('' if r.equilibrated else ' (not equilibrated)')
                                              for r in reports.values()))
    print(f'{args.ansatz}: {sum(np.size(p) for p in jax.tree.leaves(state.params))} parameters; N = {args.electrons}, '
          f'ε = {args.epsilon}; λ ∈ {tuple(args.lam_range)}, blocks of {args.block_length} steps, '
          f'stages {schedule.stages}')
    try:
        state = train(vmc, state, key_train, args.steps, run_dir=args.run_dir, checkpoint_every=args.checkpoint_every,
                      log_every=max(1, args.block_length // 2), schedule=schedule, total_walkers=args.walkers,
                      burn_in_options=burn, run_config=vars(args))
    except TrainingInterrupted as stop:  # SIGTERM / SIGINT: checkpoint written, exit 75 (EX_TEMPFAIL)
        print(f'stopped at step {stop.step}; re-run the same command to resume')
        sys.exit(stop.exit_code)
    print(f'training done in {time.time() - start:.0f} s')
    plotting.plot_training(load_history(args.run_dir), os.path.join(args.run_dir, 'training.png'))

    low, high = args.sweep_range or args.lam_range
    grid = [system.context(args.electrons, 0, lam=float(lam)) for lam in np.linspace(low, high, args.sweep_points)]
    sweep = Sweep(wavefunction, system, config, density_bins=36, pair_bins=30, slice_bins=36)
    result = sweep.run(state.params, grid, key_sweep, num_walkers=args.eval_walkers, num_steps=args.eval_steps,
                       burn_in_chunk=burn['chunk'], min_burn_in=burn['min_steps'], max_burn_in=burn['max_steps'],
                       print_fn=print)
    out = os.path.join(args.run_dir, 'sweep')
    result.save(out)

    table = result.energies.sort_values('lam')
    transition = transition_from_sweep(table, 'lam', 'interaction_per_electron')
    pd.DataFrame([{'epsilon': args.epsilon, 'N': args.electrons, 'position': transition.position,
                   'position_err': transition.position_err, 'gap_low': transition.interval[0],
                   'gap_high': transition.interval[1], 'jump_meV': transition.jump, 'jump_err_meV': transition.jump_err,
                   'delta_chi2': transition.delta_chi2, 'chi2': transition.chi2, 'dof': transition.dof}]
                 ).to_csv(os.path.join(out, 'transition.csv'), index=False)
    plotting.plot_transition(table['lam'], table['interaction_per_electron'], table['interaction_per_electron_err'],
                             transition, os.path.join(out, 'transition.png'),
                             ylabel=f'interaction energy per electron (meV, ε = {args.epsilon:g})')
    plotting.plot_sweep_energies(result.energies, os.path.join(out, 'energies.png'),
                                 components=('energy', 'interaction', 'moire', 'kinetic'))
    plotting.plot_density_maps(result.density, os.path.join(out, 'densities.png'))
    plotting.plot_pair_correlation(result.pair_correlation, os.path.join(out, 'pair_correlation.png'))
    plotting.plot_wavefunction_slices(result.wavefunction_slice, result.slice_electrons,
                                      os.path.join(out, 'wavefunction_slices.png'))
    with pd.option_context('display.width', 160, 'display.float_format', '{:.4f}'.format):
        print(table[['lam', 'energy_per_electron', 'energy_per_electron_err', 'interaction_per_electron',
                     'interaction_per_electron_err', 'burn_in_steps']].to_string(index=False))
    print(f'jump in interaction energy per electron at λ = {transition.position:.3f} ± {transition.position_err:.3f} '
          f'(between sweep points {transition.interval[0]:.3f} and {transition.interval[1]:.3f}), size '
          f'{transition.jump:.3f} ± {transition.jump_err:.3f} meV; Δχ² vs one line = {transition.delta_chi2:.1f}')
    print(f'wrote {args.run_dir} and {out} in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
