"""Command-line flag checks shared by the console tools and the example drivers (plain Python, no JAX).

``type=`` helpers for ``argparse`` (``positive_int``, ``nonnegative_int``, ``int_at_least``,
``positive_float``, ``finite_float``, ``nonnegative_float``, ``probability``) raise
``argparse.ArgumentTypeError`` naming the bad token and what is expected, so ``argparse`` reports e.g.
``argument --lr: bad value 'nan' (expected a finite number > 0)`` with exit status 2;
``parse_burn_in`` checks the burn-in triple and ``check`` turns a ``ValueError`` into
``parser.error``; ``fail`` ends a console tool with one line and exit status 2.
"""

import argparse
import math
import sys

__all__ = ['positive_int', 'nonnegative_int', 'int_at_least', 'positive_float', 'finite_float', 'nonnegative_float',
           'probability', 'parse_burn_in', 'check', 'fail']


# ----- argparse type= helpers -----

def _convert(text, cast, ok, expected):
    """``cast(text)`` if that works and passes ``ok``, else ``ArgumentTypeError`` naming the token."""
    try:
        value = cast(text)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f'bad value {text!r} (expected {expected})') from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f'bad value {text!r} (expected {expected})')
    return value


def positive_int(text):
    """An integer ≥ 1."""
    return _convert(text, int, lambda v: v >= 1, 'an integer ≥ 1')


def nonnegative_int(text):
    """An integer ≥ 0."""
    return _convert(text, int, lambda v: v >= 0, 'an integer ≥ 0')


def int_at_least(minimum, why=''):
    """A ``type=`` helper accepting integers ``≥ minimum`` (``why``: the reason, shown in the message)."""
    expected = f'an integer ≥ {minimum}' + (f': {why}' if why else '')

    def integer(text):
        return _convert(text, int, lambda v: v >= minimum, expected)
    integer.__name__ = f'int_at_least_{minimum}'
    return integer


def finite_float(text):
    """A finite number (no nan, no inf)."""
    return _convert(text, float, math.isfinite, 'a finite number')


def positive_float(text):
    """A finite number > 0."""
    return _convert(text, float, lambda v: math.isfinite(v) and v > 0, 'a finite number > 0')


def nonnegative_float(text):
    """A finite number ≥ 0."""
    return _convert(text, float, lambda v: math.isfinite(v) and v >= 0, 'a finite number ≥ 0')


def probability(text):
    """A number strictly between 0 and 1."""
    return _convert(text, float, lambda v: 0 < v < 1, 'a number with 0 < x < 1')


def parse_burn_in(values, flag='--burn-in', min_chunk=4):
    """``(chunk, min, max)`` of the equilibration check: ``chunk ≥ 4``, ``0 ≤ min ≤ max``,
    ``max ≥ 2·chunk`` -> the three integers."""
    chunk, low, high = (int(v) for v in values)
    shown = f'{chunk} {low} {high}'
    if chunk < min_chunk:
        raise argparse.ArgumentTypeError(f'{flag}: bad CHUNK {chunk} in {shown!r} '
                                         f'(must be ≥ {min_chunk}: the checked window is two chunks)')
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f'{flag}: bad MIN {low} in {shown!r} (needs 0 ≤ MIN ≤ MAX)')
    if high < 2 * chunk:
        raise argparse.ArgumentTypeError(f'{flag}: bad MAX {high} in {shown!r} (needs MAX ≥ 2·CHUNK = {2 * chunk})')
    return chunk, low, high


def check(parser, function, *args, **kwargs):
    """``function(*args, **kwargs)``; an ``ArgumentTypeError`` or ``ValueError`` becomes ``parser.error``."""
    try:
        return function(*args, **kwargs)
    except (argparse.ArgumentTypeError, ValueError) as err:
        parser.error(str(err))


def fail(prog: str, message: str, status: int = 2):
    """Ends a console tool as ``argparse`` does on a bad flag: ``prog: error: message`` on stderr, exit ``status``."""
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(status)
