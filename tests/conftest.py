"""Session-wide pytest setup: CPU-only JAX with 64-bit floats."""

import os

os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402

jax.config.update('jax_enable_x64', True)
# The tests are dominated by XLA compile time of tiny networks on few cores; skipping
# most XLA optimization passes roughly halves it and does not change float64 results
# beyond round-off.
jax.config.update('jax_disable_most_optimizations', True)

import pytest  # noqa: E402

from qvmc.runtime import enable_compilation_cache  # noqa: E402

# Many tests compile the same small programs (the same tiny VMC step in several tests, drivers
# re-run for resume): the persistent cache turns the repeats into file reads.
CACHE_DIR = enable_compilation_cache()


@pytest.fixture
def worker_cache(tmp_path):
    """Compilation cache directory for the training-worker subprocesses (tests/_train_worker.py):
    the session's, so only the first worker process of a test run compiles (none on a warm
    cache); a fresh one under ``tmp_path`` when the cache is off."""
    return CACHE_DIR or str(tmp_path / 'jax_cache')
