"""Process-wide JAX settings for drivers and tests: the persistent compilation cache."""

import os
from typing import Optional

import jax

CACHE_ENV = 'QVMC_COMPILATION_CACHE'  # a directory, or 'off'
DEFAULT_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'qvmc', 'jax')


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
    """Turns on JAX's persistent compilation cache (every program, however fast it compiled).

    A program compiled once (same computation, shapes, dtypes, JAX version and backend) is
    loaded from disk afterwards: re-running a driver, resuming a run or compiling the same
    training step in another test costs a file read instead of a compile. ``path`` defaults
    to ``$QVMC_COMPILATION_CACHE`` or ``~/.cache/qvmc/jax``; ``QVMC_COMPILATION_CACHE=off``
    disables it. Returns the directory used, or None when disabled.
    """
    path = path or os.environ.get(CACHE_ENV, '').strip() or DEFAULT_CACHE
    if path.lower() == 'off':
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable cache location must not stop a run
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
    return path
