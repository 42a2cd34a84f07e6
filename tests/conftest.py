"""Session-wide pytest setup: CPU-only JAX with 64-bit floats."""

import os

os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402

jax.config.update('jax_enable_x64', True)
# The tests are dominated by XLA compile time of tiny networks on few cores; skipping
# most XLA optimization passes roughly halves it and does not change float64 results
# beyond round-off.
jax.config.update('jax_disable_most_optimizations', True)
