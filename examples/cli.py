"""Command-line validation shared by the example drivers.

``type=`` helpers for ``argparse`` (``positive_int``, ``nonnegative_int``, ``int_at_least``, ``positive_float``,
``finite_float``, ``nonnegative_float``, ``probability``) raise ``argparse.ArgumentTypeError``
naming the bad token and what is expected, so ``argparse`` reports e.g.
``argument --lr: bad value 'nan' (expected a finite number > 0)`` with exit status 2.

The parsers of list-like flags (``parse_points``, ``parse_range``, ``parse_stages``,
``parse_interval``, ``parse_burn_in``) raise ``argparse.ArgumentTypeError`` whose message names
the flag and the bad token; a driver's ``validate_args`` turns it into ``parser.error`` via
``check``, so every flag is rejected before JAX compiles anything or training starts.

The ``type=`` helpers, ``parse_burn_in`` and ``check`` live in ``qvmc.flags`` (the installed console
tools use them too) and are imported here for the drivers.
"""

import argparse
import math
import os
import sys

import numpy as np

from qvmc.flags import (check, finite_float, int_at_least, nonnegative_float, nonnegative_int,  # noqa: F401
                        parse_burn_in, positive_float, positive_int, probability)

__all__ = ['positive_int', 'nonnegative_int', 'int_at_least', 'positive_float', 'finite_float', 'nonnegative_float',
           'probability', 'parse_points', 'parse_range', 'parse_stages', 'parse_interval', 'parse_burn_in',
           'spins_of', 'check', 'lock_run_dir']


# ----- list-like flags (parsed in the drivers' validate_args) -----

def _prefix(flag):
    return f'{flag}: ' if flag else ''


def _lam_rule(min_lam):
    return 'λ must be a finite number' + ('' if min_lam is None else f' ≥ {min_lam:g}')


def parse_points(items, flag=None, min_lam=0.0, min_n=1, with_omega=False):
    """``['2:0,2,8', '6:1']`` -> ``[(2, 0.0), (2, 2.0), (2, 8.0), (6, 1.0)]``.

    Each item is ``N:λ1,λ2,…`` with an integer ``N ≥ min_n`` and finite ``λ ≥ min_lam``
    (``min_lam=None``: any finite λ). With ``with_omega`` an item may end in ``@ω1,ω2,…``
    (finite ``ω > 0``; default 1) and the points are ``(N, λ, ω)`` triples, every λ with every ω:
    ``'6:1,2@1,0.5'`` -> ``[(6, 1.0, 1.0), (6, 1.0, 0.5), (6, 2.0, 1.0), (6, 2.0, 0.5)]``.
    Raises ``argparse.ArgumentTypeError`` naming ``flag``, the bad token and the item.
    """
    where = _prefix(flag)
    form = 'N:λ1,λ2,…[@ω1,ω2,…], e.g. 6:0,2,8@1,0.5' if with_omega else 'N:λ1,λ2,…, e.g. 6:0,2,8'
    if isinstance(items, str):
        items = [items]
    if not items:
        raise argparse.ArgumentTypeError(f'{where}needs at least one point list ({form})')
    points = []
    for item in items:
        body, at, omegas = item.partition('@')
        if at and not with_omega:
            raise argparse.ArgumentTypeError(f'{where}bad point list {item!r} (no @ω here: use {form})')
        omega_values = [1.0]
        if at:
            omega_values = []
            for token in omegas.split(','):
                try:
                    omega = float(token)
                except ValueError:
                    omega = None
                if omega is None or not math.isfinite(omega) or omega <= 0:
                    raise argparse.ArgumentTypeError(f'{where}bad ω {token!r} in {item!r} (ω must be a finite '
                                                     f'number > 0; use {form})')
                omega_values.append(omega)
        n_text, sep, lams = body.partition(':')
        if not sep or not lams:
            raise argparse.ArgumentTypeError(f'{where}bad point list {item!r} (use {form})')
        try:
            n = int(n_text)
        except ValueError:
            n = None
        if n is None or n < min_n:
            raise argparse.ArgumentTypeError(f'{where}bad N {n_text!r} in {item!r} (N must be an integer ≥ {min_n})')
        for token in lams.split(','):
            try:
                lam = float(token)
            except ValueError:
                lam = None
            if lam is None or not math.isfinite(lam) or (min_lam is not None and lam < min_lam):
                raise argparse.ArgumentTypeError(f'{where}bad λ {token!r} in {item!r} ({_lam_rule(min_lam)})')
            points.extend([(n, lam, omega) for omega in omega_values] if with_omega else [(n, lam)])
    return points


def parse_range(text, cast=float, flag=None, minimum=None, name='value'):
    """``'0:10:11'`` -> 11 values from 0 to 10; ``'5-11'`` -> 5, 6, …, 11; ``'3,5'`` -> 3, 5.

    ``cast`` converts the values (``int`` for electron numbers); every value must be finite
    and, if ``minimum`` is given, ``≥ minimum``. Raises ``argparse.ArgumentTypeError`` naming
    ``flag``, the bad token and the accepted forms; ``name`` says what the values are (e.g. ``'λ'``).
    """
    where = _prefix(flag)
    forms = 'use start:stop:num, a-b or a,b,c'
    rule = f'{name} must be ' + ('an integer' if cast is int else 'a finite number') + (
        '' if minimum is None else f' ≥ {minimum:g}')

    def bad(token, why):
        return argparse.ArgumentTypeError(f'{where}bad {token!r} in {text!r} ({why})')

    def number(token, converter=float, why=rule):
        try:
            value = converter(token)
        except (TypeError, ValueError, OverflowError):
            raise bad(token, why) from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise bad(token, why)
        return value

    text = str(text)
    if ':' in text:
        parts = text.split(':')
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f'{where}bad range {text!r} ({forms}; start:stop:num has three fields)')
        start, stop = (number(v) for v in parts[:2])
        try:
            num = int(parts[2])
        except ValueError:
            num = None
        if num is None or num < 1:
            raise bad(parts[2], 'the number of points num in start:stop:num must be an integer ≥ 1')
        values = [cast(v) for v in np.linspace(start, stop, num)]
    elif '-' in text[1:]:
        parts = text.split('-')
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f'{where}bad range {text!r} ({forms}; a-b takes integers a ≤ b)')
        bounds = 'a-b takes integers a ≤ b' + ('' if minimum is None else f', both ≥ {minimum:g}')
        start, stop = (number(v, int, bounds) for v in parts)
        if start > stop:
            raise argparse.ArgumentTypeError(f'{where}bad range {text!r} (a-b is empty: needs a ≤ b)')
        values = list(range(start, stop + 1))
    else:
        values = [cast(number(v, cast)) for v in text.split(',')]
    return values


def parse_stages(text, flag='--stages'):
    """``'0:4,2000:16'`` -> ``[(0, 4), (2000, 16)]`` (start step: contexts per block).

    Start steps are integers ≥ 0, the first 0, strictly increasing; counts are integers ≥ 1.
    """
    where = _prefix(flag)
    forms = 'use start:count,start:count, e.g. 0:4,2000:16'
    stages = []
    for item in str(text).split(','):
        parts = item.split(':')
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f'{where}bad stage {item!r} in {text!r} ({forms})')
        try:
            start, count = int(parts[0]), int(parts[1])
        except ValueError:
            raise argparse.ArgumentTypeError(f'{where}bad stage {item!r} in {text!r} ({forms}; integers)') from None
        if start < 0:
            raise argparse.ArgumentTypeError(f'{where}bad start step {parts[0]!r} in {text!r} (must be ≥ 0)')
        if count < 1:
            raise argparse.ArgumentTypeError(f'{where}bad count {parts[1]!r} in {text!r} '
                                             '(contexts per block must be ≥ 1)')
        stages.append((start, count))
    if stages[0][0] != 0:
        raise argparse.ArgumentTypeError(f'{where}bad first stage {text.split(",")[0]!r} in {text!r} '
                                         '(the first stage must start at step 0)')
    for (a, _), (b, _), item in zip(stages, stages[1:], str(text).split(',')[1:]):
        if b <= a:
            raise argparse.ArgumentTypeError(f'{where}bad stage {item!r} in {text!r} '
                                             '(start steps must increase strictly)')
    return stages


def parse_interval(values, flag, minimum=None, name='value'):
    """``(lo, hi)`` with finite ``lo < hi`` (and ``lo ≥ minimum`` if given) -> ``(lo, hi)`` as floats."""
    lo, hi = (float(v) for v in values)
    shown = f'{lo:g} {hi:g}'
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f'{flag}: bad interval {shown!r} (both ends must be finite numbers)')
    if not lo < hi:
        raise argparse.ArgumentTypeError(f'{flag}: bad interval {shown!r} (needs lo < hi)')
    if minimum is not None and lo < minimum:
        raise argparse.ArgumentTypeError(f'{flag}: bad lower end {lo:g} in {shown!r} ({name} must be ≥ {minimum:g})')
    return lo, hi


def spins_of(n, spin):
    """(n_up, n_down) of N electrons: ``unpolarized`` (n_up = ⌈N/2⌉) or ``polarized``."""
    return (n, 0) if spin == 'polarized' else ((n + 1) // 2, n // 2)


def lock_run_dir(run_dir):
    """Takes the one-writer lock of ``run_dir`` for the rest of the process (``qvmc.runlock``), before
    anything compiles; if another run holds it, prints one line naming the owner and exits with status 2."""
    from qvmc import runlock
    from qvmc.flags import fail
    try:
        runlock.acquire(run_dir)
    except (runlock.RunDirectoryLocked, OSError) as err:
        fail(os.path.basename(sys.argv[0]), f'--run-dir: {err}')


def make_optimizer(args):
    """The drivers' optimizer from their flags: Adam (global-norm clipping, linear warm-up, cosine decay
    to 5 % of ``--lr``) or a natural gradient (``qvmc.natgrad`` sr/minsr/spring; warm-up from 10 % to
    ``--lr``, cosine decay back to 10 %; the schedule runs in float64, the natural gradient's precision).

    A natural gradient's Fisher-norm cap ``--max-norm`` follows the same schedule, squared
    (``max_norm · (lr(t)/lr)²``): while the cap binds, the step length is ``sqrt(max_norm)`` whatever the
    learning rate, so a schedule on the learning rate alone would leave the step unchanged."""
    import optax  # the flag helpers above stay importable without JAX

    from qvmc import natgrad
    warmup = min(50, args.steps // 5 + 1)
    steps = max(args.steps, 1)
    if args.optimizer == 'adam':
        lr = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, steps, end_value=args.lr * 0.05)
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    lr = optax.warmup_cosine_decay_schedule(args.lr * 0.1, args.lr, warmup, steps, end_value=args.lr * 0.1)

    max_norm = None if args.max_norm is None else natgrad.max_norm_following(lr, float(args.lr), args.max_norm)
    if args.optimizer == 'sr':
        return natgrad.sr(lr, args.diag_shift, max_norm=max_norm, solver='cg', cg_maxiter=100)
    kernel_precision = getattr(args, 'kernel_precision', None) or 'float64'
    if args.optimizer == 'minsr':
        return natgrad.minsr(lr, args.diag_shift, max_norm=max_norm, kernel_precision=kernel_precision)
    return natgrad.spring(lr, args.diag_shift, args.momentum, max_norm=max_norm, kernel_precision=kernel_precision)


KERNEL_PRECISIONS = ('float64', 'float32')  # = qvmc.score_kernel.KERNEL_PRECISIONS (this module imports no JAX)
KERNEL_PRECISION_HELP = ('minsr / spring: precision of the kernel product ŌŌᵀ (float32: products of float32 '
                         'chunks summed in float64, about half the cost, error ~1e-5 of the diagonal; the solve '
                         'stays float64; default float64)')


def check_kernel_precision(args, parser):
    """``--kernel-precision`` is for the sample-space natural gradients only."""
    if getattr(args, 'kernel_precision', None) is not None and args.optimizer not in ('minsr', 'spring'):
        parser.error(f"--kernel-precision: bad value '{args.kernel_precision}' (only used by --optimizer "
                     f"minsr / spring, not {args.optimizer})")
