"""Session-wide pytest setup: CPU-only JAX with 64-bit floats."""

import os

os.environ['JAX_PLATFORMS'] = 'cpu'
# XLA:CPU's fusion emitters (MLIR code generation of fusions) take about half of the backend compile
# time of the tests' small programs; the classic emitters halve it (a tiny two-context minSR step: 65 s
# -> 31 s of backend compile). Set here, before JAX starts, so the subprocesses (drivers, training
# workers) inherit it; the compilation cache keys on the flags, so no program compiled under them
# is reused outside the tests.
TEST_XLA_FLAGS = '--xla_cpu_use_fusion_emitters=false'
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + TEST_XLA_FLAGS).strip()

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


def tiny_dot_vmc(width=8, walkers=16, contexts=None):
    """The tiny training problem several test files share: Fermi Sets of ``width``, two N = 2 contexts
    (λ = 1, 3) unless given, Adam 1e-3, ``walkers`` per block, 3 sub-steps, Hessian kinetic energy."""
    import optax
    from ansatz import FermiSetsConfig, make_fermi_sets
    from hamiltonians import QuantumDot
    from qvmc import VMC, VMCConfig
    dot = QuantumDot()
    config = FermiSetsConfig(width=width, num_layers=1, num_heads=2, num_determinants=1, hidden=8)
    contexts = contexts or [dot.context(1, 1, lam=1.0), dot.context(1, 1, lam=3.0)]
    return VMC(make_fermi_sets(config), dot, contexts, optax.adam(1e-3),
               VMCConfig(num_walkers=walkers, mcmc_substeps=3, kinetic_method='hessian'))


@pytest.fixture
def worker_cache(tmp_path):
    """Compilation cache directory for the training-worker subprocesses (tests/_train_worker.py):
    the session's, so only the first worker process of a test run compiles (none on a warm
    cache); a fresh one under ``tmp_path`` when the cache is off."""
    return CACHE_DIR or str(tmp_path / 'jax_cache')


# The longest test files first (2-core CPU, seconds per file in a full run: resume ~170, parallel ~130,
# examples ~95, vmc ~85, vmc_natgrad ~75, pretrained ~65, ansatz ~60, qernel ~55; the rest under 40).
# xdist's loadfile hands out files in collection order when run with --no-loadscope-reorder (the README's
# test command); its default order, by number of tests, sends these few-test files last, and one worker
# then finishes them alone. Longest first keeps both workers busy to the end. Order within a file is kept.
LONGEST_FILES_FIRST = ('test_resume.py', 'test_parallel.py', 'test_examples.py', 'test_vmc.py', 'test_vmc_natgrad.py',
                       'test_pretrained.py', 'test_ansatz.py', 'test_qernel.py', 'test_samplers.py', 'test_sweep.py',
                       'test_natgrad.py', 'test_reliability.py', 'test_local_energy.py', 'test_ewald.py',
                       'test_schedule.py', 'test_gpu_script.py')


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort
