"""Session-wide pytest setup: CPU-only JAX with 64-bit floats."""

import os

os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402

jax.config.update('jax_enable_x64', True)
# The tests are dominated by XLA compile time of tiny networks on few cores; skipping
# most XLA optimization passes roughly halves it and does not change float64 results
# beyond round-off.
jax.config.update('jax_disable_most_optimizations', True)

from qvmc.runtime import enable_compilation_cache  # noqa: E402

# Many tests compile the same small programs (the same tiny VMC step in several tests, drivers
# re-run for resume): the persistent cache turns the repeats into file reads.
enable_compilation_cache()
