"""Benchmark sizes from ``QVMC_BENCH_*`` environment variables, checked when the module loads.

Every benchmark reads its sizes here, so a malformed value (``QVMC_BENCH_WALKERS=0``, ``=12x``, a
negative learning rate, an unknown dtype) stops the session with a ``ValueError`` that names the
variable, says what it must be and what was given, before anything is traced or compiled.
Unset variables take the default. Imported as ``envvars`` (pytest puts ``benchmarks/`` on the
path because the folder has no ``__init__.py``).
"""

import math
import os

__all__ = ['env_int', 'env_float', 'env_list', 'env_choice', 'env_str']


def _fail(name, expected, text, default):
    raise ValueError(f'{name} must be {expected}, got {text!r}. Fix the value or unset {name} for the '
                     f'default ({default}).')


def env_int(name, default, minimum=1):
    """Integer ``>= minimum`` (``1`` unless given)."""
    text = os.environ.get(name, str(default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        _fail(name, f'an integer >= {minimum}', text, default)
    return value


def env_float(name, default, minimum=0.0, inclusive=False):
    """Finite float ``> minimum`` (``>= minimum`` with ``inclusive``)."""
    text = os.environ.get(name, str(default)).strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    below = value < minimum if inclusive else value <= minimum
    if not math.isfinite(value) or below:
        _fail(name, f'a finite number {">=" if inclusive else ">"} {minimum}', text, default)
    return value


def env_list(name, default, cast=int, minimum=None, even=False, choices=None):
    """Comma-separated values (``6,8,10``); for integers also an inclusive range (``5-11``).

    The list must not be empty; every value must be ``>= minimum`` when a minimum is given, even
    with ``even``, and one of ``choices`` when those are given (strings: ``cast=str``).
    """
    text = os.environ.get(name, default).strip()
    kind = {int: 'integers', float: 'numbers', str: 'names'}[cast]
    expected = f'comma-separated {"even " if even else ""}{kind}'
    expected += f' >= {minimum}' if minimum is not None else ''
    expected += f' from {", ".join(choices)}' if choices is not None else ''
    expected += ' or a range like 5-11' if cast is int and not even else ''
    try:
        if cast is int and ',' not in text and '-' in text[1:]:
            low, high = (int(v) for v in text.split('-', 1))
            values = list(range(low, high + 1))
        else:
            values = [cast(v.strip()) for v in text.split(',') if v.strip()]
    except ValueError:
        values = []
    numeric = cast is not str
    if (not values
            or (numeric and any(not math.isfinite(v) for v in values))
            or (minimum is not None and min(values) < minimum)
            or (even and any(v % 2 for v in values))
            or (choices is not None and not set(values) <= set(choices))):
        _fail(name, expected, text, default)
    return values


def env_choice(name, default, choices):
    """One of ``choices`` (strings)."""
    text = os.environ.get(name, default).strip()
    if text not in choices:
        _fail(name, f'one of {", ".join(choices)}', text, default)
    return text


def env_str(name, default):
    """A non-empty string (paths)."""
    text = os.environ.get(name, default)
    if not text.strip():
        _fail(name, 'a non-empty string', text, default)
    return text
