"""Subprocess entry point for tests/test_parallel.py: tiny VMC runs on several virtual CPU devices.

Usage: ``python tests/parallel_worker.py JOB.json``. The job names the virtual device count
(``host_devices``), optionally a multi-process setting (``process_id``, ``num_processes``,
``coordinator``) and a list of ``runs``; every run writes ``<out>.npz`` (energies per step,
final parameters and walkers) and the job writes ``<job>.result.json`` (sharding facts).
Not a test module (no ``test_`` prefix): pytest never imports it.
"""

import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(job):
    # The concurrency-optimized scheduler of jaxlib 0.10.2's CPU runtime can deadlock on small hosts
    # (benchmarks/test_scaling.py); seen here as a two-process run stalled inside a checkpoint gather.
    os.environ['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={job["host_devices"]} '
                               '--xla_cpu_enable_concurrency_optimized_scheduler=false '
                               '--xla_cpu_use_fusion_emitters=false')  # as tests/conftest.py: compile time
    os.environ['JAX_PLATFORMS'] = 'cpu'
    sys.path.insert(0, ROOT)
    import jax
    jax.config.update('jax_enable_x64', True)
    jax.config.update('jax_disable_most_optimizations', True)
    if 'coordinator' in job:  # before `import qvmc`, whose BlackJAX import starts the backend
        spec = importlib.util.spec_from_file_location('qvmc_parallel_alone', os.path.join(ROOT, 'qvmc', 'parallel.py'))
        alone = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(alone)
        env = {alone.COORDINATOR_ADDRESS_ENV: job['coordinator'], alone.NUM_PROCESSES_ENV: str(job['num_processes']),
               alone.PROCESS_ID_ENV: str(job['process_id'])}
        assert alone.distributed_initialize(environ=env)


def make_vmc(run, mesh=None):
    """The tiny dot problem (N = 3, and N = 2 for ``contexts=2``) of the worker and the tests."""
    import optax
    from ansatz import FermiSetsConfig, make_fermi_sets
    from hamiltonians import QuantumDot
    from qvmc import VMC, VMCConfig, natgrad
    tiny = FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)
    dot = QuantumDot()
    contexts = [dot.context(2, 1, lam=2.0), dot.context(1, 1, lam=1.0)][:run.get('contexts', 1)]
    optimizer = {'sgd': lambda: optax.sgd(0.02), 'adam': lambda: optax.adam(0.01),
                 'minsr': lambda: natgrad.minsr(0.05, 1e-3)}[run.get('optimizer', 'sgd')]()
    config = VMCConfig(num_walkers=run.get('walkers', 16), mcmc_substeps=2, chunk_size=run.get('chunk_size'),
                       network_dtype=run.get('network_dtype'))
    return VMC(make_fermi_sets(tiny), dot, contexts, optimizer, config, mesh=mesh)


def run_steps(vmc, state, rng_key, num_steps):
    """Steps until ``state.step == num_steps`` with the driver's key rule ``fold_in(key, step)``."""
    import jax
    energies = []
    while state.step < num_steps:
        state, info = vmc.step(jax.random.fold_in(rng_key, state.step), state)
        energies.append([float(s.energy) for s in info.blocks])
    return state, energies


def save_npz(path, state, energies):
    """Gathers ``state`` (a collective: every process calls it) and writes it from process 0."""
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree
    from qvmc import parallel
    host = parallel.gather_state(state)
    if jax.process_index() != 0:
        return
    np.savez(path, energies=np.asarray(energies, np.float64).reshape(-1, len(host.chains)),
             params=np.asarray(ravel_pytree(host.params)[0]),
             walkers=np.concatenate([t.walkers.reshape(-1) for t in host.chains]), step=host.step)


def sharding_facts(state):
    """Walker shards per context (distinct index ranges) and whether parameters are replicated."""
    import jax
    facts = {'walker_shards': [], 'params_replicated': all(
        leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))}
    for task in state.chains:
        indices = task.walkers.sharding.devices_indices_map(task.walkers.shape).values()
        facts['walker_shards'].append(len({str(index) for index in indices}))
    return facts


def _wait_for(path, timeout=600.0):
    """Waits until the test process has written ``path`` (checkpoints appear atomically)."""
    start = time.time()
    while not os.path.exists(path):
        if time.time() - start > timeout:
            raise TimeoutError(f'{path} did not appear within {timeout} s.')
        time.sleep(0.2)


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    _setup(job)
    import jax
    from qvmc import parallel, resume
    from qvmc.estimator import make_block_functions
    result = {'devices': jax.device_count(), 'processes': jax.process_count(), 'runs': []}
    cache = {}  # runs with equal settings share one VMC, hence one compilation
    for run in job['runs']:
        setting = json.dumps({k: run.get(k) for k in ('devices', 'optimizer', 'walkers', 'chunk_size',
                                                      'network_dtype', 'contexts')}, sort_keys=True)
        if setting not in cache:
            mesh = parallel.make_mesh(jax.devices()[:run['devices']])
            cache[setting] = make_vmc(run, mesh)
        vmc = cache[setting]
        mesh = vmc.mesh
        key = jax.random.PRNGKey(run.get('seed', 0))
        if run.get('resume_from'):
            _wait_for(run['resume_from'])
            state = parallel.shard_state(resume.load_state(run['resume_from'], vmc.init(key))[0], mesh)
        else:
            state = vmc.init(key)
        energies = []
        if run.get('save_at'):
            state, energies = run_steps(vmc, state, key, run['save_at'])
            resume.save_state(run['save_to'], state)  # gathers (a collective); process 0 writes
        facts = sharding_facts(state)
        state, more = run_steps(vmc, state, key, run['steps'])
        facts.update({'final': sharding_facts(state), 'trace_counts': {'step': vmc.num_step_traces}})
        if run.get('count_all_gathers'):  # the micro-batched local energies must not gather walkers
            ctx = vmc.contexts[0]
            fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, vmc.config)
            fn = jax.jit(lambda p, w: fns.energies(p, w, ctx.values))
            facts['energies_all_gathers'] = fn.lower(state.params, state.chains[0].walkers).compile().as_text().count(
                'all-gather')
        save_npz(run['out'], state, energies + more)
        result['runs'].append(facts)
    if jax.process_index() == 0:
        with open(job_path + '.result.json', 'w') as f:
            json.dump(result, f)


if __name__ == '__main__':
    main(sys.argv[1])
