"""Compile time per particle content: the first content of a process, a new content once one has
compiled, and the same content again through the persistent compilation cache.

What is compiled (``jax.jit(...).lower(...).compile()``, nothing else timed):

* ``train step``: ``VMC.train_step`` of one context with minSR (float32 network, float64
  reductions and solve): sampling, folx local energies, per-walker scores, the solve;
* ``runner``: the measurement engine's runner of one content (sampling + local energies, as
  ``Predictor``, ``Sweep`` and burn-in use it).

Systems: the quantum-dot foundation model (Fermi Sets defaults; contents N = 6, then N = 7)
and the moiré QERNEL (defaults; N = 6, then N = 8 in its own supercell).

Sizes from the environment: ``QVMC_BENCH_COMPILE_WALKERS`` (64; compile time hardly depends
on it), ``QVMC_BENCH_COMPILE_SYSTEMS`` (``quantum_dot,moire``).
"""

import time

import jax
import numpy as np
import pytest

jax.config.update('jax_enable_x64', True)

from ansatz import FermiSetsConfig, make_fermi_sets  # noqa: E402
from ansatz.qernel import QernelConfig  # noqa: E402
from ansatz.registry import make_ansatz  # noqa: E402
from hamiltonians import MoireSystem, QuantumDot  # noqa: E402
from qvmc import VMC, VMCConfig, natgrad  # noqa: E402
from qvmc.runtime import enable_compilation_cache  # noqa: E402
from envvars import env_int, env_list  # noqa: E402

WALKERS = env_int('QVMC_BENCH_COMPILE_WALKERS', 64)
SYSTEMS = env_list('QVMC_BENCH_COMPILE_SYSTEMS', 'quantum_dot,moire', cast=str, choices=('quantum_dot', 'moire'))


def _build(name):
    """``(wavefunction, system, [first N, new N], substeps)``."""
    if name == 'quantum_dot':
        return make_fermi_sets(FermiSetsConfig()), QuantumDot(), [6, 7], 10
    system = MoireSystem(epsilon=5.0)
    return make_ansatz('qernel', QernelConfig(), lattice=system.network_lattice), system, [6, 8], 30


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _compile_times(wf, system, n, substeps):
    """Seconds to compile the training step and the runner of content ``(n, 0)``."""
    config = VMCConfig(num_walkers=WALKERS, mcmc_substeps=substeps, network_dtype='float32')
    vmc = VMC(wf, system, [system.context(n, 0, lam=1.0)], natgrad.minsr(0.05, 1e-3, max_norm=1e-2), config)
    state = vmc.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    step = _seconds(lambda: jax.jit(vmc.train_step).lower(key, state).compile())
    run = vmc.runner((n, 0))
    args = (state.params, state.values[0])
    runner = _seconds(lambda: run.lower(key, state.chains[0], args, True, num_steps=10).compile())
    return step, runner


@pytest.mark.parametrize('name', SYSTEMS)
def test_compile_per_particle_content(name, report, tmp_path_factory):
    enable_compilation_cache(str(tmp_path_factory.mktemp('jax_cache')))  # empty: only repeats hit it
    wf, system, (first, new), substeps = _build(name)
    times = {'first content': _compile_times(wf, system, first, substeps),
             'new content': _compile_times(wf, system, new, substeps),
             'same content, cached': _compile_times(wf, system, new, substeps)}
    for what, (step, runner) in times.items():
        report({'benchmark': f'compile ({name})', 'case': what, 'N': new if what != 'first content' else first,
                'train step s': round(step, 1), 'runner s': round(runner, 1)})
    assert all(np.isfinite(t) for pair in times.values() for t in pair)


def test_new_content_in_a_padded_program(report, tmp_path_factory):
    """The measurement of a new N with and without padding (``hamiltonians.padding``): wall time of
    ``Predictor.estimate`` (compile + 10 burn-in + 10 measurement calls) at N = 6, then at a new
    N = 7, then N = 7 again (run only); compile ≈ a call minus the repeat. Padded to (8, 0), N = 7
    reuses the program of N = 6."""
    from qvmc.inference import Predictor  # pylint: disable=import-outside-toplevel
    enable_compilation_cache(str(tmp_path_factory.mktemp('jax_cache_pad')))
    wf, system = make_fermi_sets(FermiSetsConfig()), QuantumDot()
    ctx = system.context(6, 0, lam=1.0)
    x = system.init_walkers(jax.random.PRNGKey(0), ctx, 1)[0]
    params = wf.init(jax.random.PRNGKey(1), x, system.context_features(ctx.values, 6, 0), (6, 0), 1.0)
    kw = dict(num_walkers=WALKERS, num_steps=10, burn_in_chunk=10, min_burn_in=10, max_burn_in=20)
    for pad in (None, (8, 0)):
        predictor = Predictor(wf, system, VMCConfig(mcmc_substeps=10), pad=pad)
        calls = [(6, 'first content'), (7, 'new content'), (7, 'same content, in process')]
        seconds = [_seconds(lambda n=n: predictor.estimate(params, system.context(n, 0, lam=1.0),
                                                           jax.random.PRNGKey(n), **kw)) for n, _ in calls]
        for (n, what), sec in zip(calls, seconds):
            report({'benchmark': 'compile + measure (quantum_dot, Predictor)', 'case': what, 'N': n,
                    'padded to': 'no' if pad is None else sum(pad), 'wall s': round(sec, 1),
                    'compile s (≈ wall - repeat)': round(sec - seconds[-1], 1)})
        assert all(np.isfinite(seconds))


def test_training_step_padded(report, tmp_path_factory):
    """The minSR training step of polarized N = 6, 8, 10 (one block each): unpadded (three groups of
    the step, one per content) and padded to (10, 0) (one vmapped group); then the padded step of a
    new set N = 7, 9, 10, the same program (loaded from the persistent cache by a new ``VMC``)."""
    enable_compilation_cache(str(tmp_path_factory.mktemp('jax_cache_pad_train')))
    wf, system = make_fermi_sets(FermiSetsConfig()), QuantumDot()
    config = VMCConfig(num_walkers=WALKERS, mcmc_substeps=10, network_dtype='float32')
    key = jax.random.PRNGKey(1)
    for sizes, pad in (((6, 8, 10), None), ((6, 8, 10), (10, 0)), ((7, 9, 10), (10, 0))):
        contexts = [system.context(n, 0, lam=1.0) for n in sizes]
        vmc = VMC(wf, system, contexts, natgrad.minsr(0.05, 1e-3, max_norm=1e-2), config, pad=pad)
        state = vmc.init(jax.random.PRNGKey(0))
        seconds = _seconds(lambda: jax.jit(vmc.train_step).lower(key, state).compile())
        compiled = jax.jit(vmc.train_step).lower(key, state).compile()
        step = _seconds(lambda: jax.block_until_ready(compiled(key, state)))
        report({'benchmark': 'compile (quantum_dot, training step)', 'case': f'N = {sizes}',
                'padded to': 'no' if pad is None else sum(pad), 'compile s': round(seconds, 1),
                'step s': round(step, 2)})
        assert np.isfinite(seconds)
