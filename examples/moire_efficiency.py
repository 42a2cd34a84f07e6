"""Architecture efficiency on the moiré system: QERNEL against PsiFormer at several sizes, same
steps, walkers, optimizer and sampler, each evaluated at the end with frozen parameters.

    python examples/moire_efficiency.py --run-dir runs/eff18 --electrons 18 \
        --members qernel:16,32,64 psiformer:16,32,64,128 --steps 1000 --walkers 256
    python examples/moire_efficiency.py --run-dir runs/eff18 --electrons 18 \
        --members qernel:16,32,64 psiformer:16,32,64,128 --steps 1000 --walkers 256 --summarize-only

Every member is one fixed-λ run of ``moire_transition.py`` in ``<run dir>/<ansatz>-w<width>``
(started, or resumed, one after the other; a member with a usable frozen measurement,
``sweep/energies.csv``, is skipped), with ``--layers``, ``--heads`` and ``--determinants`` shared; QERNEL members get
``--kv-heads`` key/value heads, ``--experts`` experts of hidden width width/2. The summary reads
the run directories only (nothing is compiled) and writes into the run directory:

- ``members.csv``: per member the parameter count, steps, walkers, wall time (and the median seconds per
  step, which a pause or a shared core moves less than the sum), the frozen energy
  per electron with its blocking error, and how the training curve ends (mean and scatter of
  the last ``--window`` steps, the largest rise of the trailing mean: the stability);
- ``ratios.csv``: for every member of the first family, (a) the parameter count the second
  family needs for the same frozen energy (interpolated in log parameters, bootstrap error) and
  the ratio, (b) against the second family's member nearest in size, the steps and seconds each
  needs for its trailing mean to reach the second member's final mean (the interval from that
  threshold ± its standard error) and their ratios;
- ``energy_vs_parameters.png`` and ``training_curves.png``.

The frozen measurement starts from the member's final training walkers (``--frozen-start trained``,
``moire_transition.py --sweep-start trained``) and burns in until the drift check passes. At N = 18 fresh
walkers can pass the drift check in a region of higher energy (PsiFormer-16: −55.43 ± 0.05 meV/e from
fresh walkers, −55.99 ± 0.04 from the trained ones), so fresh starts are not compared with trained ones.
A measurement is usable if it passed the drift check within ``--burn-in``'s MAX calls and started from
``--frozen-start`` walkers; any other is left out of ``ratios.csv`` and measured again (nothing retrained)
by the next run without ``--summarize-only``.

SIGTERM or Ctrl-C reaches the running member, which stops after a checkpoint (exit status 75);
re-running the same command resumes it. A member that another process writes (its run lock is held)
is skipped, so the same command started once per core shares the members between the drivers.
"""

import argparse
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # examples/cli.py, also when imported by path
from cli import (check, int_at_least, nonnegative_float, nonnegative_int, parse_burn_in, positive_float,  # noqa: E402
                 positive_int)

from qvmc import efficiency, runlock  # noqa: E402
from qvmc.checkpoint_format import load_payload  # noqa: E402

FAMILIES = ('qernel', 'psiformer')
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'moire_transition.py')
FROZEN = os.path.join('sweep', 'energies.csv')
PARAMS_KEY = "['params']"  # the state's parameter leaves in a checkpoint


def parse_members(items):
    """``['qernel:16,32', 'psiformer:32']`` -> ``[('qernel', 16), ('qernel', 32), ('psiformer', 32)]``."""
    members = []
    for item in items:
        name, sep, widths = item.partition(':')
        if name not in FAMILIES or not sep or not widths:
            raise argparse.ArgumentTypeError(f"--members: bad item {item!r} (use ansatz:width,width,… with ansatz "
                                             f"one of {', '.join(FAMILIES)}, e.g. qernel:16,32,64)")
        for token in widths.split(','):
            try:
                width = int(token)
            except ValueError:
                width = 0
            if width < 1:
                raise argparse.ArgumentTypeError(f'--members: bad width {token!r} in {item!r} (a positive integer)')
            members.append((name, width))
    if len(set(members)) != len(members):
        raise argparse.ArgumentTypeError('--members: a member is listed twice')
    if len({name for name, _ in members}) != 2:
        raise argparse.ArgumentTypeError('--members: give both families (qernel:… psiformer:…), the first is '
                                         'compared against the second')
    return members


def parse_args(argv=None):
    """Parses and validates the flags; exits with status 2 naming the bad one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run-dir', default='runs/moire_efficiency')
    p.add_argument('--members', nargs='+', default=['qernel:16,32,64', 'psiformer:16,32,64,128'],
                   help='ansatz:width,… per family; the first family is compared against the second')
    p.add_argument('--electrons', type=positive_int, default=18, help='N (spin-polarized, ν = 2/3)')
    p.add_argument('--lam', type=nonnegative_float, default=1.0, help='moiré depth λ of every run')
    p.add_argument('--epsilon', type=positive_float, default=5.0, help='dielectric constant ε')
    p.add_argument('--layers', type=positive_int, default=2)
    p.add_argument('--heads', type=positive_int, default=4, help='attention heads (each width a multiple)')
    p.add_argument('--kv-heads', type=positive_int, default=2, help='QERNEL key/value heads (divide --heads)')
    p.add_argument('--experts', type=positive_int, default=4, help='QERNEL routed experts')
    p.add_argument('--determinants', type=positive_int, default=2)
    p.add_argument('--steps', type=int_at_least(2, 'a training needs two steps'), default=600)
    p.add_argument('--walkers', type=positive_int, default=64)
    p.add_argument('--substeps', type=positive_int, default=10)
    p.add_argument('--optimizer', choices=('adam', 'sr', 'minsr', 'spring'), default='minsr')
    p.add_argument('--eval-walkers', type=positive_int, default=128)
    p.add_argument('--eval-steps', type=positive_int, default=100)
    p.add_argument('--burn-in', type=nonnegative_int, nargs=3, default=(10, 20, 1000), metavar=('CHUNK', 'MIN', 'MAX'),
                   help='equilibration of the members (start and frozen measurement): chunks of CHUNK calls until '
                        'the drift check passes, at least MIN, at most MAX calls')
    p.add_argument('--frozen-start', choices=('trained', 'fresh'), default='trained',
                   help='walkers of the frozen measurement: the final training walkers (default), or fresh ones '
                        '(which at N ≥ 18 can pass the drift check in a higher-energy region: see the docstring)')
    p.add_argument('--checkpoint-every', type=positive_int, default=50)
    p.add_argument('--seed', type=int_at_least(0, 'seeds are non-negative'), default=0)
    p.add_argument('--window', type=int_at_least(2, 'a trailing mean needs two steps'), default=50,
                   help='steps of the trailing mean (thresholds, final mean and scatter)')
    p.add_argument('--summarize-only', action='store_true', help='only read the finished members and tabulate')
    p.add_argument('--dry-run', action='store_true', help='print the members\' commands and stop')
    args = p.parse_args(argv)
    try:
        args.member_list = parse_members(args.members)
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    for name, width in args.member_list:
        if width % args.heads:
            p.error(f'--members: width {width} of {name} is not a multiple of --heads = {args.heads}')
        if name == 'qernel' and (args.heads % args.kv_heads or width // 2 < 1):
            p.error(f'--kv-heads: {args.kv_heads} must divide --heads = {args.heads}')
    check(p, parse_burn_in, args.burn_in, '--burn-in')
    if args.window > args.steps:
        p.error(f'--window: bad value {args.window} (at most --steps = {args.steps})')
    return args


def member_dir(args, name, width):
    return os.path.join(args.run_dir, f'{name}-w{width}')


def member_command(args, name, width):
    """The ``moire_transition.py`` command line of one member."""
    cmd = [sys.executable, '-u', DRIVER, '--run-dir', member_dir(args, name, width), '--electrons', str(args.electrons),
           '--lam', repr(args.lam), '--epsilon', repr(args.epsilon), '--ansatz', name, '--width', str(width),
           '--layers', str(args.layers), '--heads', str(args.heads), '--determinants', str(args.determinants)]
    if name == 'qernel':
        cmd += ['--kv-heads', str(args.kv_heads), '--experts', str(args.experts), '--expert-hidden', str(width // 2)]
    cmd += ['--optimizer', args.optimizer, '--walkers', str(args.walkers), '--substeps', str(args.substeps),
            '--steps', str(args.steps), '--checkpoint-every', str(args.checkpoint_every),
            '--eval-walkers', str(args.eval_walkers), '--eval-steps', str(args.eval_steps), '--seed', str(args.seed),
            '--burn-in', *(str(b) for b in args.burn_in), '--sweep-start', args.frozen_start]
    return cmd


def frozen_start(table):
    """'trained' or 'fresh': the walkers a frozen measurement (``sweep/energies.csv``) started from."""
    return 'trained' if 'carried_over' in table and bool(table['carried_over'].all()) else 'fresh'


def frozen_usable(directory, start):
    """Whether a member's frozen measurement exists (``None``: not yet), passed the drift check and
    started from ``start`` walkers ('trained' or 'fresh')."""
    path = os.path.join(directory, FROZEN)
    if not os.path.isfile(path):
        return None
    return table_usable(pd.read_csv(path), start)


def table_usable(table, start):
    """Whether a frozen measurement's table passed the drift check and started from ``start`` walkers."""
    equilibrated = bool(table['equilibrated'].all()) if 'equilibrated' in table else True
    return equilibrated and frozen_start(table) == start


def run_members(args):
    """Runs (or resumes) every unfinished member in turn; forwards SIGTERM / SIGINT to the running one.
    A member whose frozen measurement did not equilibrate, or started from other walkers than
    ``--frozen-start``, is run again: it resumes at its last step and only measures again."""
    for name, width in args.member_list:
        directory = member_dir(args, name, width)
        if frozen_usable(directory, args.frozen_start) or in_use(directory):
            continue
        cmd = member_command(args, name, width)
        print('$ ' + ' '.join(cmd[1:]), flush=True)
        child = subprocess.Popen(cmd)
        forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if code == 2 and in_use(directory):  # another driver started it first
            continue
        if code:
            sys.exit(code)


def in_use(directory):
    """Whether another process (e.g. a second driver with the same members, one per core) writes
    ``directory`` now; says so. The check takes the run lock and gives it back at once."""
    if not os.path.isdir(directory):
        return False
    try:
        runlock.acquire(directory)
    except runlock.RunDirectoryLocked as err:
        print(f"{os.path.basename(directory)}: skipped, process {err.owner.get('pid', '?')} writes it "
              f"(started {err.owner.get('started', '?')})", flush=True)
        return True
    runlock.release(directory)
    return False


def parameter_count(leaves):
    """The number of network parameters among a training checkpoint's leaves (keyed by pytree path)."""
    return int(sum(np.size(v) for k, v in leaves.items() if k.startswith(PARAMS_KEY)))


def member_history(args, name, width):
    """A member's training history (``history.csv``)."""
    return pd.read_csv(os.path.join(member_dir(args, name, width), 'history.csv'))


def member_row(args, name, width):
    """One member's numbers from its run directory, or ``None`` if it has not finished."""
    directory = member_dir(args, name, width)
    if not os.path.isfile(os.path.join(directory, FROZEN)):
        return None
    leaves = load_payload(os.path.join(directory, 'checkpoint.qvmc'))['leaves']
    table = pd.read_csv(os.path.join(directory, FROZEN))
    frozen = table.iloc[0]
    history = member_history(args, name, width)
    n = args.electrons
    end = efficiency.stability(history['energy'] / n, args.window)
    return {'ansatz': name, 'width': width, 'params': parameter_count(leaves),
            'steps': int(history['step'].max()), 'walkers': args.walkers,
            'wall_minutes': float(history['seconds'].sum() / 60),
            'median_seconds_per_step': float(history['seconds'].median()),
            'frozen_energy_per_electron': float(frozen['energy_per_electron']),
            'frozen_err': float(frozen['energy_per_electron_err']),
            'frozen_equilibrated': bool(frozen.get('equilibrated', True)),
            'frozen_burn_in': int(frozen.get('burn_in_steps', -1)),
            'frozen_start': frozen_start(table),
            'frozen_usable': table_usable(table, args.frozen_start),
            'final_mean': end.final_mean, 'final_err': end.final_err, 'spread': end.spread,
            'max_rise': end.max_rise}


def _crossings(history, n, threshold, threshold_err, window):
    """(steps, seconds) at which the trailing mean first reaches threshold, threshold ∓ err."""
    energy = history['energy'].to_numpy() / n
    steps, seconds = history['step'].to_numpy(), history['seconds'].cumsum().to_numpy()
    out = {}
    for label, times in (('steps', steps), ('seconds', seconds)):
        out[label] = [efficiency.first_crossing(times, energy, threshold + d, window)
                      for d in (0.0, threshold_err, -threshold_err)]
    return out


def _ratio(slow, fast):
    """slow / fast at the threshold, and its range over threshold ± err (NaN where one is missing)."""
    values = [s / f if s is not None and f else np.nan for s, f in zip(slow, fast)]
    return values[0], np.nanmin(values[1:] + [values[0]]), np.nanmax(values[1:] + [values[0]])


def ratio_rows(args, members):
    """Parameter ratio at equal frozen energy and step / time ratios at matched size."""
    first, second = members['ansatz'].unique()[:2]
    members = members[members.frozen_usable]  # unequilibrated, or from other walkers: not compared
    ours, theirs = members[members.ansatz == first], members[members.ansatz == second].sort_values('params')
    rows = []
    for _, q in ours.iterrows():
        row = {'member': f'{first}-w{q.width}', 'params': q.params, 'energy': q.frozen_energy_per_electron,
               'energy_err': q.frozen_err}
        if len(theirs) >= 2:
            need = efficiency.parameters_at_energy(theirs.params, theirs.frozen_energy_per_electron, theirs.frozen_err,
                                                   q.frozen_energy_per_electron, q.frozen_err)
            row.update({f'{second}_params_at_energy': need.value, f'{second}_params_err': need.err,
                        'status': need.status, 'param_ratio': need.value / q.params,
                        'param_ratio_err': need.err / q.params, 'bootstrap_inside': need.inside_fraction})
        match = theirs.iloc[int(np.argmin(np.abs(np.log(theirs.params.to_numpy() / q.params))))]
        hist = {m: member_history(args, a, w)
                for m, a, w in (('ours', first, q.width), ('theirs', second, match.width))}
        slow = _crossings(hist['theirs'], args.electrons, match.final_mean, match.final_err, args.window)
        fast = _crossings(hist['ours'], args.electrons, match.final_mean, match.final_err, args.window)
        row.update({'matched': f'{second}-w{match.width}', 'matched_params': match.params,
                    'threshold': match.final_mean, 'threshold_err': match.final_err,
                    f'{second}_steps': slow['steps'][0], f'{first}_steps': fast['steps'][0]})
        for label in ('steps', 'seconds'):
            value, low, high = _ratio(slow[label], fast[label])
            row.update({f'{label}_ratio': value, f'{label}_ratio_low': low, f'{label}_ratio_high': high})
        rows.append(row)
    return pd.DataFrame(rows)


def plot(args, members):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, group in members.groupby('ansatz', sort=False):
        group = group.sort_values('params')
        ax.errorbar(group.params, group.frozen_energy_per_electron, group.frozen_err, marker='o', capsize=3,
                    label=name)
    ax.set(xscale='log', xlabel='parameters', ylabel='frozen energy per electron (meV)',
           title=f'N = {args.electrons}, λ = {args.lam:g}, ε = {args.epsilon:g}, {int(members.steps.max())} steps')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.run_dir, 'energy_vs_parameters.png'), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for _, m in members.iterrows():
        history = member_history(args, m.ansatz, m.width)
        ax.plot(history.step, efficiency.rolling_mean(history.energy / args.electrons, args.window),
                ls='-' if m.ansatz == 'qernel' else '--', label=f'{m.ansatz} {m.params / 1e3:.1f}K')
    ax.set(xlabel='step', ylabel=f'energy per electron (meV, trailing mean of {args.window})')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.run_dir, 'training_curves.png'), dpi=120)
    plt.close(fig)


def summarize(args):
    rows = [r for r in (member_row(args, a, w) for a, w in args.member_list) if r is not None]
    if not rows:
        print(f'no finished member under {args.run_dir} yet')
        return
    members = pd.DataFrame(rows)
    members.to_csv(os.path.join(args.run_dir, 'members.csv'), index=False)
    for _, m in members[~members.frozen_usable].iterrows():
        why = (f'not equilibrated after {m.frozen_burn_in} calls' if not m.frozen_equilibrated else
               f'started from {m.frozen_start} walkers, not {args.frozen_start} ones')
        print(f'{m.ansatz}-w{m.width}: frozen measurement {why}; left out of the ratios (re-run without '
              '--summarize-only to measure it again)')
    with pd.option_context('display.width', 200, 'display.float_format', '{:.4f}'.format):
        print(members.to_string(index=False))
        if members[members.frozen_usable].ansatz.nunique() == 2:
            ratios = ratio_rows(args, members)
            ratios.to_csv(os.path.join(args.run_dir, 'ratios.csv'), index=False)
            print(ratios.to_string(index=False))
    plot(args, members)
    print(f'wrote {args.run_dir}/members.csv, ratios.csv and the plots')


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        for name, width in args.member_list:
            print(' '.join(member_command(args, name, width)[1:]))
        return
    os.makedirs(args.run_dir, exist_ok=True)
    if not args.summarize_only:
        run_members(args)
    summarize(args)


if __name__ == '__main__':
    main()
