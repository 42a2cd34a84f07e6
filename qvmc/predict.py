"""Predict with a shipped foundation model: energy, components, density and g(r) at any (N, λ).

    qvmc-predict --n 9 --lam 3.7                 # or: python -m qvmc.predict --n 9 --lam 3.7
    qvmc-predict --n 7 --lam 8 --model foundation_polarized --walkers 512 --steps 400
    qvmc-predict --n 6 --lam 1 --omega 0.5 --model foundation_unpolarized   # S_z = 0, trap frequency ω
    qvmc-predict --n 9 --lam 3.7 --pad-n 12   # one compiled program for every N ≤ 12

Loads a shipped model by name (``qvmc.pretrained``; or a model file given by path), equilibrates fresh walkers at the
context, and measures with a frozen step size: the energy with its blocking error bar, the kinetic,
trap and interaction components, the reference energy where ``hamiltonians.references`` has one,
and ``energy.csv``, ``density.csv``/``density.png`` and ``pair_correlation.csv``/``pair_correlation.png``
in ``--out`` (default ``predictions/N<n>_lam<λ>``). No training: nothing but the model file is read.
"""

import argparse
import os
import time

import jax
import numpy as np
import pandas as pd

from hamiltonians.references import reference
from qvmc import plotting, pretrained
from qvmc.runtime import enable_compilation_cache
from samplers.stats import format_value_error

from qvmc.flags import check, fail, nonnegative_float, nonnegative_int, parse_burn_in, positive_float, positive_int


def validate_args(args, parser):
    """Checks the flags argparse cannot check alone (``parser.error``, exit status 2), compiling nothing.

    Reads only the model file's verified metadata to learn the system (largest N) and spin sector.
    """
    if not -2**63 <= args.seed < 2**63:
        parser.error(f"--seed: bad value '{args.seed}' (expected an integer in [-2^63, 2^63))")
    check(parser, parse_burn_in, args.burn_in, '--burn-in')
    if args.model is None:
        names = pretrained.available()
        args.model = names[0] if len(names) == 1 else pretrained.DEFAULT_MODEL
    try:
        args.model_path = pretrained.resolve(args.model)
        meta = pretrained.read(args.model_path)[1]
        _, system = pretrained.build(meta)
    except ValueError as err:
        parser.error(f'--model: {err}')
    spins = pretrained.spins_for(meta['spin_sector'], args.n)
    limit = getattr(system, 'max_electrons', None)
    if limit is not None and args.n > limit:
        parser.error(f"--n: bad value '{args.n}' (the model supports 1 ≤ N ≤ {limit})")
    if args.pad_n is not None and not args.n <= args.pad_n <= (limit or args.pad_n):
        parser.error(f"--pad-n: bad value '{args.pad_n}' (must be at least --n = {args.n}"
                     f"{'' if limit is None else f' and at most {limit}'})")
    try:
        system.context(*spins, lam=args.lam, omega=args.omega)
    except ValueError as err:
        flag, value = ('--omega', args.omega) if 'omega' in str(err) else ('--n', args.n)
        parser.error(f"{flag}: bad value '{value}' ({err})")
    if args.out is None:
        args.out = os.path.join('predictions', f'N{args.n}_lam{args.lam:g}'
                                + ('' if args.omega is None else f'_omega{args.omega:g}'))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f'--out: bad path {args.out!r} (exists and is not a directory)')
    return args


def make_out_dir(out: str) -> None:
    """Creates the output directory before anything is measured; one line and exit status 2 if it cannot
    be created or written."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        fail('qvmc-predict', f'--out: cannot create directory {out!r} ({err.strerror or err})')
    if not os.access(out, os.W_OK | os.X_OK):
        fail('qvmc-predict', f'--out: directory {out!r} is not writable')


def parse_args(argv=None):
    """Parses and validates the flags (``argv``: default ``sys.argv[1:]``); exits with status 2 on a bad one."""
    p = argparse.ArgumentParser(prog='qvmc-predict', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=positive_int, required=True, help='number of electrons N')
    p.add_argument('--lam', type=nonnegative_float, required=True, help='Coulomb strength λ ≥ 0')
    p.add_argument('--omega', type=positive_float, default=None,
                   help="trap frequency ω > 0 (default: the model system's, ω = 1)")
    p.add_argument('--model', default=None,
                   help='shipped model name or model file '
                        f'(default: the only shipped one, else {pretrained.DEFAULT_MODEL})')
    p.add_argument('--walkers', type=positive_int, default=128, help='independent walkers')
    p.add_argument('--steps', type=positive_int, default=100,
                   help='measurement MCMC calls per walker (a multiple of CHUNK avoids a second compile)')
    p.add_argument('--burn-in', type=nonnegative_int, nargs=3, default=(20, 40, 300), metavar=('CHUNK', 'MIN', 'MAX'),
                   help='burn-in in chunks of CHUNK MCMC calls until the drift check passes, at least MIN, '
                        'at most MAX calls')
    p.add_argument('--out', default=None, help='output directory (default predictions/N<n>_lam<λ>[_omega<ω>])')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--pad-n', type=positive_int, default=None,
                   help='measure N padded to this many electrons (≥ N): every N up to it then shares one compiled '
                        'program (per open-shell order), loaded from the compilation cache after its first use, '
                        "at the padded size's cost per step (hamiltonians.padding)")
    return validate_args(p.parse_args(argv), p)


def report(model, ctx, row) -> pd.DataFrame:
    """Prints the energy, its components and the reference; returns the one-row energy table."""
    ref = reference(ctx.n_up, ctx.n_down, ctx['lam'], ctx['omega'])
    row = dict(row, model=model.name, reference=ref[0] if ref else np.nan,
               reference_err=(ref[1] if ref and ref[1] is not None else np.nan),
               reference_source=ref[2] if ref else '')
    print(f'{model.name}: {ctx.label()}  ({row["num_walkers"]} walkers × {row["num_steps"]} steps, '
          f'burn-in {row["burn_in_steps"]}{"" if row["equilibrated"] else " — NOT equilibrated"}, '
          f'acceptance {row["acceptance"]:.2f})')
    print(f'  E           = {format_value_error(row["energy"], row["energy_err"])} Ha  '
          f'(blocking error; τ = {row["energy_tau"]:.1f}, R̂ = {row["energy_rhat"]:.3f}, '
          f'σ² = {row["energy_var"]:.4g})')
    for name in ('kinetic', 'trap', 'interaction'):
        if name in row:
            print(f'  {name:<11} = {format_value_error(row[name], row[name + "_err"])} Ha')
    if ref:
        dev = row['energy'] - ref[0]
        sigma = np.hypot(row['energy_err'], ref[1] or 0.0)
        print(f'  reference   = {ref[0]:.6g} Ha ({ref[2]}); deviation {dev:+.5f} Ha = {dev / sigma:+.1f} σ')
    else:
        print('  reference   = none known for this context')
    row['deviation'] = row['energy'] - row['reference']
    return pd.DataFrame([row])


def main(argv=None):
    args = parse_args(argv)
    make_out_dir(args.out)
    enable_compilation_cache()  # a re-run, a resume or a known particle content loads its programs from disk
    start = time.time()
    model = pretrained.load(args.model_path)
    ctx = model.context(args.n, args.lam, args.omega)
    found = {}  # every open-shell order of N with the same key (one for closed shells); the lowest energy wins
    for order in model.open_shell_orders(args.n):
        found[order] = model.sweep(open_shell_order=order, pad=model.layout(args.pad_n)).measure(
            model.params, ctx, jax.random.PRNGKey(args.seed), num_walkers=args.walkers, num_steps=args.steps,
            burn_in_chunk=args.burn_in[0], min_burn_in=args.burn_in[1], max_burn_in=args.burn_in[2])
    order, measured = min(found.items(), key=lambda item: item[1].row['energy'])
    if len(found) > 1:
        others = ', '.join(f'{o}: {format_value_error(m.row["energy"], m.row["energy_err"])}'
                           for o, m in found.items() if o != order)
        print(f'open shell: the {order!r} sector has the lowest energy ({others})')
    table = report(model, ctx, dict(measured.row, open_shell_order=order))
    table.to_csv(os.path.join(args.out, 'energy.csv'), index=False)
    measured.density.to_csv(os.path.join(args.out, 'density.csv'), index=False)
    measured.pair_correlation.to_csv(os.path.join(args.out, 'pair_correlation.csv'), index=False)
    plotting.plot_density_maps(measured.density, os.path.join(args.out, 'density.png'))
    plotting.plot_pair_correlation(measured.pair_correlation, os.path.join(args.out, 'pair_correlation.png'))
    print(f'wrote {args.out}/{{energy.csv, density.csv, density.png, pair_correlation.csv, pair_correlation.png}} '
          f'in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
