"""Scaling: VMC step throughput on 1..4 devices; moiré QERNEL step time and peak memory vs N.

Power laws are fitted to the time and memory per walker vs N.

Every measurement runs in a fresh subprocess (this file is also its entry point), so the virtual
device count (``XLA_FLAGS=--xla_force_host_platform_device_count``), 64-bit mode and the memory
high-water mark belong to that measurement alone. Sizes from the environment:

* ``QVMC_BENCH_DEVICES`` (``1,2,4``): device counts of the throughput benchmark; on a CPU host
  these are virtual devices sharing the host's cores, so the speed-up is bounded by the cores.
* ``QVMC_BENCH_SCALING_WALKERS`` (64), ``QVMC_BENCH_SCALING_STEPS`` (5): total walkers (fixed,
  i.e. strong scaling) and timed steps of the throughput benchmark (N = 6 moiré, QERNEL).
* ``QVMC_BENCH_MOIRE_N`` (``6,18,54,96``): electron numbers of the moiré benchmark (ν = 2/3:
  9, 27, 81, 144 moiré cells), step time and memory.
* ``QVMC_BENCH_MOIRE_MEMORY_N`` (``150``): sizes whose memory is measured but whose step is not
  timed (150 electrons = 225 cells, the large-system target; one step takes minutes on a CPU).
* ``QVMC_BENCH_MOIRE_WALKERS`` (8): W; the step is compiled for W and 2W walkers and the
  difference of XLA's buffer assignment gives the memory per walker.
* ``QVMC_BENCH_CHUNK_N`` (``54,150``), ``QVMC_BENCH_CHUNK`` (8): sizes and micro-batch of the
  memory measurement with ``VMCConfig(chunk_size=...)`` (64 and 128 walkers).
* ``QVMC_BENCH_QERNEL_WIDTH`` (64), ``QVMC_BENCH_QERNEL_LAYERS`` (3): network size (the
  ``QernelConfig`` defaults; ``max_orbitals`` grows with N).
* ``QVMC_BENCH_DTYPE`` (``float32``): ``VMCConfig.network_dtype`` (x64 stays on for reductions).
* ``QVMC_BENCH_XLA_FLAGS``: extra XLA flags on CPU (default ``CPU_FLAGS``: the concurrency-
  optimized scheduler off, which avoids an XLA CPU hang seen on our 2-core hosts); a run whose
  CPU time stops growing for
  ``QVMC_BENCH_STALL_SECONDS`` (120) is killed and restarted (``QVMC_BENCH_RESTARTS``, 2);
  the ``restarts`` column says how often that happened.

Peak memory is XLA's compiled memory analysis of one VMC task step (sampling, local energies
and gradient of one context): arguments + outputs + temporaries, i.e. what the step needs on a
device (compiled, never run, in its own process); the resident-set high-water mark of the
process that times the 2W step is reported next to it.
"""

import json
import os
import sys

import numpy as np
import pytest

from envvars import env_choice, env_int, env_list
from watch import measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Extra XLA flags on CPU. The XLA CPU runtime of jaxlib 0.10.2 hangs on our 2-core hosts in
# some programs (every thread parked, the main thread in BlockUntilReady; reproducible for the
# N = 18, 16-walker float32 step). Its concurrency-optimized scheduler is the trigger: with it off
# that program ran 3 times out of 3, with it on 0 out of 4. Runs are still watched and restarted.
CPU_FLAGS = '--xla_cpu_enable_concurrency_optimized_scheduler=false'
DTYPE = env_choice('QVMC_BENCH_DTYPE', 'float32', ('float32', 'float64'))
MOIRE_ROWS = []   # timed sizes
MEMORY_ROWS = []  # untimed sizes (memory only)


def _measure(job, host_devices=1):
    """Runs ``job`` in a subprocess with ``host_devices`` virtual devices; returns its JSON result
    with ``'restarts'``: how often a stalled run (see ``CPU_FLAGS``) was killed and started again."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
    if env['JAX_PLATFORMS'] == 'cpu':
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={host_devices} ' + os.environ.get(
            'QVMC_BENCH_XLA_FLAGS', CPU_FLAGS)
    result, restarts = measure(__file__, job, env)
    if result is None:
        pytest.fail(f'{job} stalled {restarts} times (XLA CPU deadlock); try QVMC_BENCH_XLA_FLAGS or a GPU.')
    return dict(result, restarts=restarts)


def power_law(n, y):
    """Least-squares fit ``y = a · n^b`` in log space; returns ``(a, b)``."""
    b, log_a = np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(y, float)), 1)
    return float(np.exp(log_a)), float(b)


@pytest.mark.parametrize('devices', env_list('QVMC_BENCH_DEVICES', '1,2,4', minimum=1))
def test_throughput_vs_devices(devices, report):
    walkers = env_int('QVMC_BENCH_SCALING_WALKERS', 64)
    result = _measure({'mode': 'throughput', 'devices': devices, 'walkers': walkers, 'n': 6,
                       'steps': env_int('QVMC_BENCH_SCALING_STEPS', 5)}, host_devices=devices)
    report({'benchmark': 'throughput vs devices (moiré N=6, QERNEL)', 'devices': devices, 'walkers': walkers,
            's/step': result['seconds_per_step'], 'walkers/s': walkers / result['seconds_per_step'],
            'compile s': result['compile_seconds'], 'backend': result['backend'], 'restarts': result['restarts']})
    assert np.isfinite(result['energy'])


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_MOIRE_N', '6,18,54,96', minimum=1))
def test_moire_step_time_and_memory_vs_n(n, report):
    walkers = env_int('QVMC_BENCH_MOIRE_WALKERS', 8)
    memory = _measure({'mode': 'moire_memory', 'n': n, 'walkers': walkers})
    timing = _measure({'mode': 'moire_time', 'n': n, 'walkers': 2 * walkers})
    row = {'benchmark': 'moiré QERNEL step vs N', 'N': n, 'walkers': 2 * walkers,
           's/step': timing['seconds_per_step'], 'ms/walker': 1e3 * timing['seconds_per_step'] / (2 * walkers),
           'peak MB': memory['peak_bytes'][1] / 2**20, 'MB/walker': memory['bytes_per_walker'] / 2**20,
           'fixed MB': memory['fixed_bytes'] / 2**20, 'RSS MB': timing['max_rss_bytes'] / 2**20,
           'params': memory['num_params'], 'dtype': memory['dtype'], 'compile s': timing['compile_seconds'],
           'restarts': memory['restarts'] + timing['restarts']}
    MOIRE_ROWS.append(row)
    report(row)
    assert memory['bytes_per_walker'] > 0 and timing['seconds_per_step'] > 0


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_MOIRE_MEMORY_N', '150', minimum=1))
def test_moire_memory_vs_n_untimed(n, report):
    walkers = env_int('QVMC_BENCH_MOIRE_WALKERS', 8)
    memory = _measure({'mode': 'moire_memory', 'n': n, 'walkers': walkers})
    row = {'benchmark': 'moiré QERNEL memory vs N (untimed)', 'N': n, 'walkers': 2 * walkers,
           'peak MB': memory['peak_bytes'][1] / 2**20, 'MB/walker': memory['bytes_per_walker'] / 2**20,
           'fixed MB': memory['fixed_bytes'] / 2**20, 'params': memory['num_params'], 'dtype': memory['dtype'],
           'restarts': memory['restarts']}
    MEMORY_ROWS.append(row)
    report(row)
    assert memory['bytes_per_walker'] > 0


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_CHUNK_N', '54,150', minimum=1))
def test_moire_memory_with_micro_batches(n, report):
    """The same step with ``VMCConfig(chunk_size=C)``: local energies and gradients of C walkers
    at a time, so the memory per extra walker drops to what sampling and the stored walkers need
    and the chunk's cost becomes a fixed part (W = 64 and 128 walkers, C from
    ``QVMC_BENCH_CHUNK``, 8)."""
    chunk = env_int('QVMC_BENCH_CHUNK', 8)
    memory = _measure({'mode': 'moire_memory', 'n': n, 'walkers': 64, 'chunk': chunk})
    report({'benchmark': 'moiré QERNEL memory, micro-batched', 'N': n, 'chunk': chunk, 'walkers': 128,
            'peak MB': memory['peak_bytes'][1] / 2**20, 'MB/walker': memory['bytes_per_walker'] / 2**20,
            'fixed MB': memory['fixed_bytes'] / 2**20, 'dtype': memory['dtype'], 'restarts': memory['restarts']})
    assert memory['bytes_per_walker'] > 0


def test_moire_fitted_exponents(report):
    """``time/walker ∝ N^b`` (timed sizes) and ``memory/walker ∝ N^b`` (all sizes), and the
    largest micro-batch (``VMCConfig.chunk_size``) that the memory per walker at N = 150
    (measured when 150 was among the sizes, else from the fit) allows on 80 and 141 GB."""
    if len(MOIRE_ROWS) < 2:
        pytest.skip('needs at least two N from test_moire_step_time_and_memory_vs_n')
    n = [r['N'] for r in MOIRE_ROWS]
    n_all = n + [r['N'] for r in MEMORY_ROWS]
    a_t, b_t = power_law(n, [r['ms/walker'] for r in MOIRE_ROWS])
    a_m, b_m = power_law(n_all, [r['MB/walker'] for r in MOIRE_ROWS + MEMORY_ROWS])
    measured = [r['MB/walker'] for r in MOIRE_ROWS + MEMORY_ROWS if r['N'] == 150]
    per_walker_150 = measured[0] if measured else a_m * 150 ** b_m  # MB
    report({'benchmark': 'moiré QERNEL fitted exponents', 'N range (time)': f'{min(n)}-{max(n)}',
            'N range (memory)': f'{min(n_all)}-{max(n_all)}',
            'time/walker exponent': b_t, 'memory/walker exponent': b_m,
            'MB/walker at N=150': per_walker_150, 'N=150 memory': 'measured' if measured else 'fit',
            'ms/walker at N=150 (fit, this host)': a_t * 150 ** b_t,
            'chunk fitting 80 GB': int(0.9 * 80e3 / per_walker_150),
            'chunk fitting 141 GB': int(0.9 * 141e3 / per_walker_150)})


# ----------------------------------------------------------------------------------------------
# Subprocess side: python benchmarks/test_scaling.py '<json job>' prints one JSON line.

def _moire_vmc(n, walkers, mesh=None, chunk_size=None):
    import dataclasses
    import optax
    from ansatz.qernel import QernelConfig
    from ansatz.registry import make_ansatz
    from hamiltonians import MoireSystem
    from qvmc import VMC, VMCConfig
    system = MoireSystem()
    config = dataclasses.replace(QernelConfig(), width=env_int('QVMC_BENCH_QERNEL_WIDTH', 64),
                                 num_layers=env_int('QVMC_BENCH_QERNEL_LAYERS', 3), max_orbitals=max(16, n))
    wavefunction = make_ansatz('qernel', config, lattice=system.network_lattice)
    vmc_config = VMCConfig(num_walkers=walkers, mcmc_substeps=5, chunk_size=chunk_size,
                           network_dtype=DTYPE)
    return VMC(wavefunction, system, [system.context(n, 0, lam=1.0)], optax.adam(1e-3), vmc_config, mesh=mesh)


def _throughput(job):
    import time
    import jax
    from qvmc import parallel
    mesh = parallel.make_mesh(jax.devices()[:job['devices']])
    vmc = _moire_vmc(job['n'], job['walkers'], mesh)
    state = vmc.init(jax.random.PRNGKey(0))
    start = time.perf_counter()
    for t in range(2):  # compiles (a second compile can follow once the optimizer state dtypes settle)
        state, info = vmc.step(jax.random.PRNGKey(t), state)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(job['steps']):
        state, info = vmc.step(jax.random.PRNGKey(100 + t), state)
    return {'seconds_per_step': (time.perf_counter() - start) / job['steps'], 'compile_seconds': compile_seconds,
            'energy': float(info.loss), 'backend': jax.default_backend()}


def _moire_args(n, walkers, chunk_size=None):
    import jax
    vmc = _moire_vmc(n, walkers, chunk_size=chunk_size)
    state = vmc.init(jax.random.PRNGKey(0))
    return vmc, state, (jax.random.PRNGKey(1), state)


def _moire_memory(job):
    """Compiles (never runs) the training step for W and 2W walkers: XLA's buffer sizes."""
    import jax
    from qvmc.scores import num_params
    peaks = []
    for walkers in (job['walkers'], 2 * job['walkers']):
        vmc, state, args = _moire_args(job['n'], walkers, job.get('chunk'))
        stats = vmc._step.lower(*args).compile().memory_analysis()  # the jitted pure step
        peaks.append(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
                     - stats.alias_size_in_bytes)
    per_walker = (peaks[1] - peaks[0]) / job['walkers']
    return {'peak_bytes': peaks, 'bytes_per_walker': per_walker, 'fixed_bytes': peaks[0] - per_walker * job['walkers'],
            'num_params': num_params(state.params), 'dtype': str(jax.tree.leaves(state.params)[0].dtype)}


def _moire_time(job):
    """Runs the training step for ``walkers`` walkers: compile time, then the median of 3 runs.

    One program per process: with jaxlib 0.10.2 on CPU, running a program after another one of
    the same function was compiled and dropped hangs now and then (seen at N = 18, float32).
    """
    import resource
    import time
    import jax
    vmc, state, args = _moire_args(job['n'], job['walkers'])
    step = vmc._step  # the jitted pure step
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    compile_seconds, timings = time.perf_counter() - start, []
    for t in range(3):
        start = time.perf_counter()
        jax.block_until_ready(step(jax.random.PRNGKey(2 + t), state))
        timings.append(time.perf_counter() - start)
    return {'seconds_per_step': float(np.median(timings)), 'compile_seconds': compile_seconds,
            'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _main(job):
    sys.path.insert(0, ROOT)
    import jax
    jax.config.update('jax_enable_x64', True)
    result = {'throughput': _throughput, 'moire_memory': _moire_memory, 'moire_time': _moire_time}[job['mode']](job)
    print(json.dumps(result))


if __name__ == '__main__':
    _main(json.loads(sys.argv[1]))
