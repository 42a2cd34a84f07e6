"""Cost of the 2D Ewald interaction vs N on the moiré system (ν = 2/3 supercells) and its share of
the whole local energy (QERNEL, forward Laplacian) at the sizes the CPU allows.

Sizes from the environment: QVMC_BENCH_EWALD_N (6,18,24,54,96,150), QVMC_BENCH_SHARE_N (6,18),
QVMC_BENCH_WALKERS (64).
"""

import time

import jax
import pytest

from ansatz.qernel import QernelConfig
from ansatz.registry import make_ansatz
from hamiltonians import MoireSystem, make_local_energy
from qvmc import make_log_psi
from envvars import env_int, env_list


def _time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats


def _walkers(system, n, count):
    ctx = system.context(n, 0, lam=1.0)
    return ctx, system.init_walkers(jax.random.PRNGKey(0), ctx, count)


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_EWALD_N', '6,18,24,54,96,150', minimum=1))
def test_ewald_cost_vs_n(n, report):
    system = MoireSystem()
    ctx, walkers = _walkers(system, n, env_int('QVMC_BENCH_WALKERS', 64))
    ewald = system.ewald(n)
    energy = jax.jit(jax.vmap(ewald.energy))
    grad = jax.jit(jax.vmap(jax.grad(ewald.energy)))
    report({'benchmark': 'Ewald cost', 'N': n, 'cells': system.num_cells(n), 'alpha': float(ewald.alpha),
            'real images': len(ewald.images), 'G vectors': len(ewald.gvecs),
            'energy ms/walker': 1e3 * _time(energy, walkers) / walkers.shape[0],
            'gradient ms/walker': 1e3 * _time(grad, walkers) / walkers.shape[0]})


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_SHARE_N', '6,18', minimum=1))
def test_ewald_share_of_local_energy(n, report):
    system = MoireSystem()
    ctx, walkers = _walkers(system, n, env_int('QVMC_BENCH_WALKERS', 64))
    wf = make_ansatz('qernel', QernelConfig(width=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                            expert_hidden=16, num_determinants=2, max_orbitals=max(16, n)),
                     lattice=system.network_lattice)
    x0 = walkers[0] / system.length_scale(ctx.values)
    params = wf.init(jax.random.PRNGKey(1), x0, system.context_features(ctx.values, *ctx.spins), ctx.spins,
                     system.coupling(ctx.values))
    local = make_local_energy(make_log_psi(wf, system, ctx.spins), system.potential_components, 'folx',
                              system.kinetic_scale)
    e_loc = jax.jit(jax.vmap(lambda x: local(params, x, ctx.values)[0]))
    ewald = jax.jit(jax.vmap(system.ewald(n).energy))
    total, interaction = _time(e_loc, walkers), _time(ewald, walkers)
    report({'benchmark': 'Ewald share of E_L (QERNEL, folx)', 'N': n,
            'E_L ms/walker': 1e3 * total / walkers.shape[0], 'Ewald ms/walker': 1e3 * interaction / walkers.shape[0],
            'Ewald share': interaction / total})
