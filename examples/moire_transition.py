"""Moiré transition: one periodic network conditioned on the moiré depth λ, trained with a blockwise
schedule over an interval of λ (or at one λ with ``--lam``), then swept over λ (no optimization) to
locate the jump in the interaction energy per electron between the Fermi liquid and the
generalized Wigner crystal, with the honeycomb order parameters of ν = 2/3 next to it.

    python examples/moire_transition.py --run-dir runs/moire
    python examples/moire_transition.py --lam 1.0 --optimizer minsr --ansatz qernel --width 64 --layers 3 \\
        --heads 4 --kv-heads 2 --experts 4 --expert-hidden 32 --determinants 4 --walkers 1024 --substeps 30

MoireSystem (ε explicit, default 5; meV and nm), N = 6 spin-polarized electrons at ν = 2/3.
Optimizers: adam, or the natural gradients sr / minsr / spring (``qvmc.natgrad``); with a natural
gradient, float64 is switched on for reductions and solves and the network runs in float32
(``--x64``: float64 throughout). Writes ``history.csv``, ``burn_in.csv``, checkpoints,
``training.png`` and, under ``sweep/``, ``energies.csv`` (with the order-parameter columns),
``order_parameters.csv``, ``order_traces.npz``, ``density.csv``, ``pair_correlation.csv``,
``wavefunction_slice.csv``, ``traces.nc``, ``transition.csv`` and PNGs (``order_parameters.png``,
``sublattice_density.png``: density maps with the three sublattices of moiré minima marked).

Order parameters (``hamiltonians.moire_order``, per configuration, averaged with blocking errors):
``honeycomb_order`` Φ = 4|(1/N) Σ_i ω^{s_i}|² (s_i the sublattice of electron i's nearest moiré
minimum, ω = e^{2πi/3}): 1 for a perfect honeycomb, 0 for equal sublattice occupations, 4/N
on average for uncorrelated electrons; ``honeycomb_contrast`` (o₁ + o₂)/2 − o₃ of the per-site
occupations sorted per configuration (``occupations_sorted_0..2``; ``_2`` is the emptiest
sublattice); ``structure_factor_k`` S(K) of the positions at the moiré zone corners (N/4 for
the honeycomb, 1 for uncorrelated electrons). Only for supercells commensurate with the √3×√3
superlattice (N = 6, 8, 14, 18, 24, 54, …); otherwise they are skipped with a note.

Re-running with the same directory resumes; SIGTERM or Ctrl-C stops training after a checkpoint
with exit status 75. ``--init-from RUN_DIR`` starts a new run from another run's parameters (same
network flags), e.g. a λ-range run from a fixed-λ run that found the crystal.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ansatz.psiformer import PsiFormerConfig
from ansatz.qernel import QernelConfig
from ansatz.registry import make_ansatz
from ansatz.slater_jastrow import SlaterJastrowConfig
from hamiltonians.moire import MoireSystem
from hamiltonians.moire_order import sublattice_geometry
from hamiltonians.system import parameter_label
from qvmc import VMC, VMCConfig, plotting
from qvmc.runtime import enable_compilation_cache
from qvmc.analysis import transition_from_sweep
from qvmc.order_sweep import ObservableSweep, moire_order_observables
from qvmc.schedule import BlockwiseSchedule
from qvmc.checkpoint import CHECKPOINT_NAME
from qvmc.train import TrainingInterrupted, load_history, train
from qvmc.transfer import transfer_state

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import (KERNEL_PRECISION_HELP, KERNEL_PRECISIONS, check, check_kernel_precision,  # noqa: E402
                 finite_float, int_at_least, lock_run_dir, make_optimizer, nonnegative_float, nonnegative_int,
                 parse_burn_in, parse_interval, parse_stages, positive_float, positive_int)

STEPS_WHY = 'the warmup-cosine learning-rate schedule needs at least two steps'
MIN_SWEEP_POINTS = 5  # the transition fit needs two straight branches of ≥ 2 points each, plus one
SWEEP_POINTS_WHY = 'the transition fit needs two straight branches of at least two points each, plus one'
NATURAL_GRADIENTS = ('sr', 'minsr', 'spring')
DEFAULT_LAM_RANGE = (0.6, 1.6)
DEFAULT_STAGES = '0:4,200:8'
ORDER_PREFIXES = ('honeycomb_', 'structure_factor_k', 'occupations')  # order-parameter columns of a sweep
DEFAULT_HEADS = 2  # attention heads of qernel / psiformer at the driver's default width 16
# Network flags and the ansätze that use them (None defaults: resolved in validate_args).
ANSATZ_FLAGS = {'heads': ('qernel', 'psiformer'), 'kv_heads': ('qernel',), 'experts': ('qernel',),
                'shared_experts': ('qernel',), 'expert_hidden': ('qernel',), 'pair_hidden': ('qernel',),
                'mlp_hidden': ('psiformer',)}


def _flag(dest):
    return '--' + dest.replace('_', '-')


def network_config(args, n_electrons=None):
    """The ansatz config of the flags (``max_orbitals`` ≥ N, at least the configs' default 16)."""
    n = args.electrons if n_electrons is None else n_electrons
    orbitals = max(16, n)
    if args.ansatz == 'qernel':
        return QernelConfig(width=args.hidden, num_layers=args.layers, num_heads=args.heads,
                            num_kv_heads=args.kv_heads, num_experts=args.experts,
                            num_shared_experts=args.shared_experts, expert_hidden=args.expert_hidden,
                            num_determinants=args.determinants, max_orbitals=orbitals,
                            pair_hidden=args.pair_hidden, num_kvecs=args.kvecs)
    if args.ansatz == 'psiformer':
        return PsiFormerConfig(width=args.hidden, num_layers=args.layers, num_heads=args.heads,
                               mlp_hidden=args.mlp_hidden, num_determinants=args.determinants,
                               max_orbitals=orbitals, num_kvecs=args.kvecs)
    return SlaterJastrowConfig(hidden=args.hidden, num_layers=args.layers, num_determinants=args.determinants,
                               jastrow_hidden=args.hidden, max_orbitals=orbitals, num_kvecs=args.kvecs)


def _validate_network(args, parser):
    """Ansatz-specific flags: given only for the ansätze that use them, defaults filled in, config checked."""
    for dest, users in ANSATZ_FLAGS.items():
        if getattr(args, dest) is not None and args.ansatz not in users:
            parser.error(f"{_flag(dest)}: bad value '{getattr(args, dest)}' (only used by --ansatz "
                         f"{' / '.join(users)}, not {args.ansatz})")
    defaults = {'heads': DEFAULT_HEADS, 'kv_heads': 1, 'experts': QernelConfig.num_experts,
                'shared_experts': QernelConfig.num_shared_experts, 'expert_hidden': args.hidden,
                'pair_hidden': QernelConfig.pair_hidden, 'mlp_hidden': args.hidden}
    for dest, value in defaults.items():
        if getattr(args, dest) is None and args.ansatz in ANSATZ_FLAGS[dest]:
            setattr(args, dest, value)
    if args.ansatz in ('qernel', 'psiformer'):
        if args.hidden % args.heads:
            parser.error(f"--hidden: bad value '{args.hidden}' ({args.ansatz} needs a width divisible by "
                         f"--heads = {args.heads})")
    if args.ansatz == 'qernel' and args.heads % args.kv_heads:
        parser.error(f"--kv-heads: bad value '{args.kv_heads}' (must divide --heads = {args.heads})")
    check(parser, network_config, args)


def _validate_optimizer(args, parser):
    """Optimizer flags: natural-gradient settings only with a natural gradient, defaults filled in."""
    natural = args.optimizer in NATURAL_GRADIENTS
    for dest, users in (('diag_shift', NATURAL_GRADIENTS), ('max_norm', NATURAL_GRADIENTS),
                        ('momentum', ('spring',))):
        if getattr(args, dest) is not None and args.optimizer not in users:
            parser.error(f"{_flag(dest)}: bad value '{getattr(args, dest):g}' (only used by --optimizer "
                         f"{' / '.join(users)}, not {args.optimizer})")
    check_kernel_precision(args, parser)
    if args.momentum is not None and not 0.0 <= args.momentum < 1.0:
        parser.error(f"--momentum: bad value '{args.momentum:g}' (expected 0 ≤ μ < 1)")
    if args.lr is None:
        args.lr = 0.05 if natural else 3e-3
    if natural:
        args.diag_shift = 1e-3 if args.diag_shift is None else args.diag_shift
        args.max_norm = 1e-2 if args.max_norm is None else args.max_norm
    if args.optimizer == 'spring' and args.momentum is None:
        args.momentum = 0.9


def validate_args(args, parser):
    """Checks every flag that ``argparse`` cannot check alone; ``parser.error`` (exit status 2) on the first bad one.

    Runs before JAX compiles anything: builds the system, the supercell, the network config and
    the schedule (plain Python), and fills in the defaults that depend on other flags.
    """
    if args.seed >= 2**63:
        parser.error(f"--seed: bad value '{args.seed}' (expected an integer in [0, 2^63))")
    _validate_network(args, parser)
    _validate_optimizer(args, parser)
    try:
        system = MoireSystem(epsilon=args.epsilon)
    except ValueError as err:
        parser.error(f"--epsilon: bad value '{args.epsilon}' ({err})")
    try:
        system.context(args.electrons, 0, lam=0.0)  # N ≤ max_electrons and N/ν moiré cells (num_cells)
        system.supercell(args.electrons)
    except ValueError as err:
        parser.error(f"--electrons: bad value '{args.electrons}' ({err})")
    if args.sweep_range is not None:
        check(parser, parse_interval, args.sweep_range, '--sweep-range', minimum=0.0,
              name=parameter_label(system, 'lam'))
    check(parser, parse_burn_in, args.burn_in, '--burn-in')
    if args.lam is not None:  # single-λ mode: one context, no schedule
        for dest in ('lam_range', 'stages'):
            if getattr(args, dest) is not None:
                shown = getattr(args, dest)
                shown = ' '.join(f'{v:g}' for v in shown) if isinstance(shown, (list, tuple)) else shown
                parser.error(f"{_flag(dest)}: bad value '{shown}' (--lam {args.lam:g} trains one context; "
                             f"{_flag(dest)} belongs to the λ-range schedule: drop one of the two)")
        check(parser, system.context, args.electrons, 0, lam=args.lam)
    else:
        args.lam_range = DEFAULT_LAM_RANGE if args.lam_range is None else args.lam_range
        args.stages = DEFAULT_STAGES if args.stages is None else args.stages
        lam_range = check(parser, parse_interval, args.lam_range, '--lam-range', minimum=0.0,
                          name=parameter_label(system, 'lam'))
        stages = check(parser, parse_stages, args.stages, '--stages')
        for start, count in stages:
            if args.walkers % count:
                parser.error(f"--walkers: bad value '{args.walkers}' (must be divisible by the {count} λ blocks of "
                             f"stage '{start}:{count}' in --stages {args.stages!r})")
        base = system.context(args.electrons, 0, lam=float(np.mean(lam_range)))
        schedule = check(parser, BlockwiseSchedule, base, 'lam', args.lam_range, args.block_length, stages=stages,
                         seed=args.seed)
        check(parser, schedule.validate, system, args.walkers)
    if args.init_from is not None and not os.path.exists(args.init_from):
        parser.error(f'--init-from: bad path {args.init_from!r} (no such checkpoint file or run directory)')
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        parser.error(f'--run-dir: bad path {args.run_dir!r} (exists and is not a directory)')
    return args


def parse_args(argv=None):
    """Parses and validates the flags (``argv``: default ``sys.argv[1:]``); exits with status 2 on a bad one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run-dir', default='runs/moire_transition')
    p.add_argument('--electrons', type=positive_int, default=6, help='N (spin-polarized; N/ν moiré cells)')
    p.add_argument('--epsilon', type=positive_float, default=5.0, help='dielectric constant ε')
    net = p.add_argument_group('network')
    net.add_argument('--ansatz', choices=('slater_jastrow', 'qernel', 'psiformer'), default='slater_jastrow')
    net.add_argument('--hidden', '--width', dest='hidden', type=positive_int, default=16,
                     help='network width (qernel / psiformer: stream width, a multiple of --heads)')
    net.add_argument('--layers', type=positive_int, default=1, help='layers / transformer blocks')
    net.add_argument('--determinants', type=positive_int, default=1, help='determinants K')
    net.add_argument('--heads', type=positive_int, default=None,
                     help=f'qernel / psiformer: attention (query) heads (default {DEFAULT_HEADS})')
    net.add_argument('--kv-heads', type=positive_int, default=None,
                     help='qernel: key/value heads, dividing --heads (default 1: multi-query attention)')
    net.add_argument('--experts', type=positive_int, default=None,
                     help=f'qernel: routed experts per mixture-of-experts layer (default {QernelConfig.num_experts})')
    net.add_argument('--shared-experts', type=nonnegative_int, default=None,
                     help=f'qernel: always-on experts (default {QernelConfig.num_shared_experts})')
    net.add_argument('--expert-hidden', type=positive_int, default=None,
                     help='qernel: hidden width of each expert (default: --width)')
    net.add_argument('--pair-hidden', type=positive_int, default=None,
                     help=f'qernel: width of the pair embedding (default {QernelConfig.pair_hidden})')
    net.add_argument('--mlp-hidden', type=positive_int, default=None,
                     help='psiformer: hidden width of the block MLPs (default: --width)')
    net.add_argument('--kvecs', type=positive_int, default=3, help='reciprocal ±G pairs in the periodic features')
    train_group = p.add_argument_group('training')
    train_group.add_argument('--lam', type=nonnegative_float, default=None,
                             help='single-λ mode: train one context at this λ ≥ 0 '
                                  '(instead of --lam-range/--stages)')
    train_group.add_argument('--lam-range', type=finite_float, nargs=2, default=None,
                             help=f'training interval of λ (0 ≤ lo < hi; default {DEFAULT_LAM_RANGE[0]:g} '
                                  f'{DEFAULT_LAM_RANGE[1]:g})')
    train_group.add_argument('--steps', type=int_at_least(2, STEPS_WHY), default=400, help='training steps (≥ 2)')
    train_group.add_argument('--block-length', type=positive_int, default=50, help='K: steps per block of contexts')
    train_group.add_argument('--stages', default=None,
                             help=f'start:N_λ,… (default {DEFAULT_STAGES}; the study: 0:4,<later>:16)')
    train_group.add_argument('--walkers', type=positive_int, default=128,
                             help='total walkers (divisible by every N_λ)')
    train_group.add_argument('--substeps', type=positive_int, default=10, help='MCMC sub-steps per training step')
    train_group.add_argument('--chunk-size', type=positive_int, default=None,
                             help='walkers per micro-batch of local energies and gradients (bounds memory; '
                                  'default: all at once)')
    train_group.add_argument('--energy-batch-size', type=positive_int, default=None,
                             help='walkers per pass of the local energies (default: on a CPU about 9216/(N·D)², '
                                  'a power of two, so that the forward Laplacian stays in cache; on a GPU all at '
                                  'once)')
    train_group.add_argument('--optimizer', choices=('adam',) + NATURAL_GRADIENTS, default='adam',
                             help='adam, or a natural gradient (sr: parameter space, CG; minsr / spring: sample '
                                  'space); natural gradients switch on float64 reductions and solves, the network '
                                  'runs in float32 (unless --x64)')
    train_group.add_argument('--lr', type=positive_float, default=None,
                             help='peak learning rate (default: 3e-3 for adam, 0.05 for sr / minsr / spring)')
    train_group.add_argument('--diag-shift', type=positive_float, default=None,
                             help='sr / minsr / spring: diagonal shift ε (default 1e-3)')
    train_group.add_argument('--max-norm', type=positive_float, default=None,
                             help='sr / minsr / spring: bound on the Fisher norm of the update (default 1e-2)')
    train_group.add_argument('--momentum', type=finite_float, default=None, help='spring: momentum μ in [0, 1) '
                                                                                  '(default 0.9)')
    train_group.add_argument('--kernel-precision', choices=KERNEL_PRECISIONS, default=None,
                             help=KERNEL_PRECISION_HELP)
    train_group.add_argument('--checkpoint-every', type=positive_int, default=50)
    init_help = ('checkpoint file or run directory whose parameters start the training (same ansatz and network '
                 'flags; fresh optimizer state and walkers; e.g. a fixed-λ run in the crystal to start a λ-range '
                 'run from the crystal side). Ignored when --run-dir holds a checkpoint: that run resumes')
    train_group.add_argument('--init-from', default=None, help=init_help)
    train_group.add_argument('--seed', type=nonnegative_int, default=0)
    train_group.add_argument('--x64', action='store_true', help='float64 throughout (network included)')
    sweep = p.add_argument_group('sweep')
    sweep.add_argument('--sweep-points', type=int_at_least(MIN_SWEEP_POINTS, SWEEP_POINTS_WHY), default=11,
                       help=f'λ values in the sweep (≥ {MIN_SWEEP_POINTS} for the transition fit)')
    sweep.add_argument('--sweep-range', type=finite_float, nargs=2, default=None,
                       help='sweep interval (default: the training interval; with --lam: that λ alone; 0 ≤ lo < hi)')
    sweep.add_argument('--eval-walkers', type=positive_int, default=128)
    sweep.add_argument('--eval-steps', type=positive_int, default=100, help='measurement MCMC calls per λ')
    sweep.add_argument('--sweep-start', choices=('fresh', 'trained'), default='fresh',
                       help='walkers of the first sweep point: fresh ones, or the final training walkers of the '
                            'block nearest in λ (--eval-walkers of them; what a fixed-λ measurement should use where '
                            'fresh walkers equilibrate slowly); later points carry over either way')
    sweep.add_argument('--burn-in', type=nonnegative_int, nargs=3, default=(10, 20, 300),
                       metavar=('CHUNK', 'MIN', 'MAX'),
                       help='equilibration: CHUNK ≥ 4, 0 ≤ MIN ≤ MAX, MAX ≥ 2·CHUNK')
    return validate_args(p.parse_args(argv), p)


def precision_policy(args):
    """``(jax_enable_x64, VMCConfig.network_dtype)``: natural gradients reduce and solve in float64 with a
    float32 network; ``--x64`` runs everything in float64; Adam keeps JAX's default float32."""
    if args.x64:
        return True, 'float64'
    if args.optimizer in NATURAL_GRADIENTS:
        return True, 'float32'
    return False, None


def sweep_grid(args):
    """The sweep's λ values: ``--sweep-range`` (``--sweep-points`` of them), else the training interval, or
    the single λ of ``--lam``."""
    if args.sweep_range is None and args.lam is not None:
        return [float(args.lam)]
    low, high = args.sweep_range or args.lam_range
    return [float(lam) for lam in np.linspace(low, high, args.sweep_points)]


def main():
    args = parse_args()
    lock_run_dir(args.run_dir)  # one writer per run directory: a second one exits 2 here, before compiling
    enable_compilation_cache()  # a re-run, a resume or a known particle content loads its programs from disk
    x64, network_dtype = precision_policy(args)
    if x64:
        jax.config.update('jax_enable_x64', True)
    start = time.time()
    system = MoireSystem(epsilon=args.epsilon)
    if args.lam is None:
        base = system.context(args.electrons, 0, lam=float(np.mean(args.lam_range)))
        schedule = BlockwiseSchedule(base, 'lam', args.lam_range, args.block_length,
                                     stages=parse_stages(args.stages), seed=args.seed)
        schedule.validate(system, args.walkers)
        contexts = schedule.contexts_at(0)
    else:
        schedule, contexts = None, [system.context(args.electrons, 0, lam=args.lam)]
    wavefunction = make_ansatz(args.ansatz, network_config(args), lattice=system.network_lattice)
    config = VMCConfig(num_walkers=args.walkers // len(contexts), mcmc_substeps=args.substeps,
                       chunk_size=args.chunk_size, energy_batch_size=args.energy_batch_size,
                       network_dtype=network_dtype)
    vmc = VMC(wavefunction, system, contexts, make_optimizer(args), config)
    burn = dict(zip(('chunk', 'min_steps', 'max_steps'), args.burn_in))

    key_init, key_train, key_sweep = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    resuming = os.path.exists(os.path.join(args.run_dir, CHECKPOINT_NAME))
    if args.init_from and not resuming:
        try:  # shapes are checked against the network flags before anything compiles
            state = transfer_state(vmc, key_init, args.init_from)
        except ValueError as err:
            sys.exit(f'--init-from: {args.init_from!r} does not fit this network ({err})')
        print(f'parameters from {args.init_from}')
    else:
        state = vmc.init(key_init)
    if not resuming:  # a resumed run brings its walkers
        state, reports = vmc.equilibrate(key_init, state, **burn)
        print('initial burn-in: ' + ', '.join(f'{r.steps} calls' + ('' if r.equilibrated else ' (not equilibrated)')
                                              for r in reports.values()))
    training = (f'λ ∈ {tuple(args.lam_range)}, blocks of {args.block_length} steps, stages {schedule.stages}'
                if schedule else f'λ = {args.lam:g} (single context)')
    print(f'{args.ansatz}: {sum(np.size(p) for p in jax.tree.leaves(state.params))} parameters; N = {args.electrons}, '
          f'ε = {args.epsilon}; {training}; {args.optimizer} (lr {args.lr:g}), network '
          f'{network_dtype or "float32"}, x64 {"on" if x64 else "off"}')
    try:
        state = train(vmc, state, key_train, args.steps, run_dir=args.run_dir, checkpoint_every=args.checkpoint_every,
                      log_every=max(1, args.block_length // 2), schedule=schedule, total_walkers=args.walkers,
                      burn_in_options=burn, run_config=vars(args))
    except TrainingInterrupted as stop:  # SIGTERM / SIGINT: checkpoint written, exit 75 (EX_TEMPFAIL)
        print(f'stopped at step {stop.step}; re-run the same command to resume')
        sys.exit(stop.exit_code)
    print(f'training done in {time.time() - start:.0f} s')
    plotting.plot_training(load_history(args.run_dir), os.path.join(args.run_dir, 'training.png'))
    first = training_chain(state, sweep_grid(args)[0], args.eval_walkers) if args.sweep_start == 'trained' else None
    run_sweep(args, system, wavefunction, config, state.params, key_sweep, burn, start, first=first)


def training_chain(state, lam, num_walkers):
    """``num_walkers`` final training walkers (fewer if training had fewer), taken from the blocks in order of
    their λ's distance to ``lam`` (a 16-block stage has 1/16 of the walkers in each), with the step size of
    the nearest block."""
    distance = np.abs(np.asarray([float(ctx.as_dict()['lam']) for ctx in state.contexts]) - lam)
    order = np.argsort(distance, kind='stable')
    walkers = np.concatenate([np.asarray(state.chains[i].walkers) for i in order])[:num_walkers]
    return state.chains[order[0]]._replace(walkers=jnp.asarray(walkers))


def run_sweep(args, system, wavefunction, config, params, key_sweep, burn, start, first=None):
    """The λ sweep with order parameters, the transition fit (≥ 5 points) and every table and figure
    (``first``: the chain that starts the first sweep point, default fresh walkers)."""
    grid = [system.context(args.electrons, 0, lam=lam) for lam in sweep_grid(args)]
    num_steps = args.eval_steps  # the order parameters are recorded on the same measurement draws
    sweep = ObservableSweep(wavefunction, system, config, observables=moire_order_observables(system),
                            density_bins=36, pair_bins=30, slice_bins=36)
    result = sweep.run(params, grid, key_sweep, start=first, num_walkers=args.eval_walkers, num_steps=num_steps,
                       burn_in_chunk=burn['chunk'], min_burn_in=burn['min_steps'], max_burn_in=burn['max_steps'],
                       print_fn=print)
    out = os.path.join(args.run_dir, 'sweep')
    result.save(out)
    table = result.energies.sort_values('lam')
    has_order = 'honeycomb_order' in table
    if has_order:
        order_columns = ['lam'] + [c for c in table.columns if c.startswith(ORDER_PREFIXES)]
        table[order_columns].to_csv(os.path.join(out, 'order_parameters.csv'), index=False)
        sweep.save_observable_traces(os.path.join(out, 'order_traces.npz'))
        geometry = sublattice_geometry(system, args.electrons)
        plotting.plot_order_parameters(table, os.path.join(out, 'order_parameters.png'),
                                       xlabel=parameter_label(system, 'lam'))
        plotting.plot_sublattice_density(result.density, geometry.sites, geometry.labels,
                                         os.path.join(out, 'sublattice_density.png'))
    else:
        print(f'order parameters: not defined for N = {args.electrons} (its supercell does not fit the √3×√3 '
              'superlattice of moiré minima)')
    if len(table) >= MIN_SWEEP_POINTS:
        fit_transitions(args, table, out, has_order, xlabel=parameter_label(system, 'lam'))
    plotting.plot_sweep_energies(result.energies, os.path.join(out, 'energies.png'),
                                 components=('energy', 'interaction', 'moire', 'kinetic'))
    plotting.plot_density_maps(result.density, os.path.join(out, 'densities.png'))
    plotting.plot_pair_correlation(result.pair_correlation, os.path.join(out, 'pair_correlation.png'))
    plotting.plot_wavefunction_slices(result.wavefunction_slice, result.slice_electrons,
                                      os.path.join(out, 'wavefunction_slices.png'))
    shown = ['lam', 'energy_per_electron', 'energy_per_electron_err', 'interaction_per_electron',
             'interaction_per_electron_err'] + (['honeycomb_order', 'honeycomb_order_err', 'honeycomb_contrast',
                                                 'honeycomb_contrast_err'] if has_order else []) + ['burn_in_steps']
    with pd.option_context('display.width', 200, 'display.float_format', '{:.4f}'.format):
        print(table[shown].to_string(index=False))
    print(f'wrote {args.run_dir} and {out} in {time.time() - start:.0f} s')


def fit_transitions(args, table, out, has_order, xlabel='λ'):
    """Two-branch fits of the interaction energy per electron (first row) and of Φ; ``transition.csv``."""
    rows = []
    targets = [('interaction_per_electron', f'interaction energy per electron (meV, ε = {args.epsilon:g})', 'meV')]
    if has_order:
        targets.append(('honeycomb_order', 'honeycomb order parameter Φ', ''))
    for column, label, unit in targets:
        try:
            transition = transition_from_sweep(table, 'lam', column)
        except ValueError as err:  # e.g. a zero error bar (all walkers frozen in one configuration)
            print(f'no transition fit of {column}: {err}')
            continue
        rows.append({'observable': column, 'epsilon': args.epsilon, 'N': args.electrons,
                     'position': transition.position, 'position_err': transition.position_err,
                     'gap_low': transition.interval[0], 'gap_high': transition.interval[1], 'jump': transition.jump,
                     'jump_err': transition.jump_err, 'delta_chi2': transition.delta_chi2, 'chi2': transition.chi2,
                     'dof': transition.dof})
        name = 'transition.png' if column == 'interaction_per_electron' else f'transition_{column}.png'
        plotting.plot_transition(table['lam'], table[column], table[f'{column}_err'], transition,
                                 os.path.join(out, name), xlabel=xlabel, ylabel=label)
        print(f'jump in {label.split(" (")[0]} at λ = {transition.position:.3f} ± {transition.position_err:.3f} '
              f'(between sweep points {transition.interval[0]:.3f} and {transition.interval[1]:.3f}), size '
              f'{transition.jump:.3f} ± {transition.jump_err:.3f} {unit}; '
              f'Δχ² vs one line = {transition.delta_chi2:.1f}')
    if rows:
        pd.DataFrame(rows).to_csv(os.path.join(out, 'transition.csv'), index=False)


if __name__ == '__main__':
    main()
