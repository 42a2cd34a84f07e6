"""Local-energy throughput (walkers/s): folx forward Laplacian vs the Hessian (JVP-of-gradient) path.

Sizes: ``QVMC_BENCH_SIZES`` (comma-separated even N, unpolarized, default ``6,12,20,30``);
precision ``QVMC_BENCH_LE_DTYPE`` (``float64``, default: both paths must agree to 1e-8; or
``float32``, the training network's precision: agreement judged on the median walker, since
single float32 walkers near a node lose digits to cancellation in the Laplacian).

jaxlib 0.10.2's XLA CPU runtime can deadlock in the N = 20 program on 2-core hosts (every thread
parked, the main thread in ``BlockUntilReady``). ``benchmarks/conftest.py`` turns off its
concurrency-optimized scheduler, which cured the hang on one host but not on another (see
benchmarks/README.md). The folx/Hessian ratio test therefore runs every N in a watched subprocess
(``watch.py``): a stalled run is killed and restarted pinned to one CPU (``QVMC_BENCH_RESTARTS``,
default 2, after ``QVMC_BENCH_STALL_SECONDS``, default 120, without CPU progress; the deadlock needs
multi-threaded execution: N = 30 stalled in every two-core try and finished pinned), and a size that
never finishes is reported as stalled while the other sizes are still measured. A pinned size's
row says ``cores: 1``: its ratio is measured in one run like the others, its walkers/s are single-core.
The in-process pytest-benchmark throughput test shares those runs and runs only the sizes whose
two-core run finished.
"""

import json
import os
import sys
import time

import jax
import numpy as np
import pytest

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot, make_local_energy
from hamiltonians import make_log_psi

from envvars import env_choice, env_list
from watch import measure

DTYPE = env_choice('QVMC_BENCH_LE_DTYPE', 'float64', ('float32', 'float64'))
jax.config.update('jax_enable_x64', True)


# Unpolarized closed spin channels N/2 + N/2.
SIZES = [(n // 2, n // 2) for n in env_list('QVMC_BENCH_SIZES', '6,12,20,30', minimum=2, even=True)]
NUM_WALKERS = 64


def _setup(spins, method):
    dot = QuantumDot()
    ctx = dot.context(*spins, lam=2.0)
    wf = make_fermi_sets(FermiSetsConfig())
    walkers = dot.init_walkers(jax.random.PRNGKey(0), ctx, NUM_WALKERS).astype(DTYPE)
    cond = dot.context_features(ctx.values, *spins)
    params = jax.tree.map(lambda a: a.astype(DTYPE), wf.init(jax.random.PRNGKey(1), walkers[0], cond, spins, 0.0))
    e_loc = make_local_energy(make_log_psi(wf, dot, spins), dot.potential_components, method)
    batched = jax.jit(jax.vmap(lambda p, x, v: e_loc(p, x, v)[0], in_axes=(None, 0, None)))
    values = ctx.values

    def fn(x):
        return batched(params, x, values)  # parameters are arguments, not baked-in constants
    fn(walkers).block_until_ready()  # compile outside the timing
    return fn, walkers


def _time(fn, walkers, repeats=5):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(walkers).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


_WATCHED = {}


def _watched(n):
    """``(result, restarts)`` of the watched subprocess run of size ``n``, run once per session."""
    if n not in _WATCHED:
        _WATCHED[n] = measure(__file__, {'n': n}, dict(os.environ), one_core_after_stall=True)
    return _WATCHED[n]


@pytest.mark.parametrize('spins', SIZES, ids=lambda s: f'N{sum(s)}')
@pytest.mark.parametrize('method', ['folx', 'hessian'])
def test_local_energy_throughput(benchmark, spins, method):
    """pytest-benchmark statistics in this process, only for sizes whose watched subprocess run
    finished: a size that stalls there would hang the session here."""
    result = _watched(sum(spins))[0]
    if result is None or result['one_core']:
        pytest.skip(f'N = {sum(spins)} stalled in its watched two-core subprocess (XLA CPU runtime deadlock); '
                    'not run in-process, where it could hang the session')
    fn, walkers = _setup(spins, method)
    benchmark(lambda: fn(walkers).block_until_ready())


def _ratio(n):
    """Both paths timed in one process on the same walkers (run as this script's subprocess job)."""
    spins = (n // 2, n // 2)
    f_folx, walkers = _setup(spins, 'folx')
    f_hess, _ = _setup(spins, 'hessian')
    e_folx, e_hess = np.asarray(f_folx(walkers), np.float64), np.asarray(f_hess(walkers), np.float64)
    rel = np.abs(e_folx - e_hess) / np.abs(e_hess)
    t_folx, t_hess = _time(f_folx, walkers), _time(f_hess, walkers)
    return {'max_rel': float(rel.max()), 'median_rel': float(np.median(rel)),
            'agree_1e-8': bool(np.allclose(e_folx, e_hess, rtol=1e-8, atol=0.0)),
            't_folx': t_folx, 't_hess': t_hess, 'backend': jax.default_backend()}


@pytest.mark.parametrize('spins', SIZES, ids=lambda s: f'N{sum(s)}')
def test_folx_vs_hessian_ratio(spins, report):
    """The ratio is what to compare across machines. Each N runs in a watched subprocess
    (``watch.measure``): a run stalled by the XLA CPU deadlock is restarted, and a size that
    never finishes is reported as stalled instead of hanging the session."""
    n = sum(spins)
    result, restarts = _watched(n)
    row = {'benchmark': 'local energy', 'N': n, 'walkers': NUM_WALKERS, 'dtype': DTYPE, 'restarts': restarts,
           'cores': '1 (pinned after a stall)' if result and result['one_core'] else 'all'}
    if result is None:
        report(dict(row, **{'folx walkers/s': 'stalled', 'hessian walkers/s': 'stalled'}))
        pytest.fail(f'N = {n}: every try stalled (XLA CPU runtime deadlock, {restarts} tries); '
                    'see benchmarks/README.md')
    report(dict(row, **{'folx walkers/s': NUM_WALKERS / result['t_folx'],
                        'hessian walkers/s': NUM_WALKERS / result['t_hess'],
                        'speed-up (hessian/folx time)': result['t_hess'] / result['t_folx'],
                        'max rel. diff': result['max_rel'], 'backend': result['backend']}))
    if DTYPE == 'float64':
        assert result['agree_1e-8'], f'folx and Hessian differ by up to {result["max_rel"]:.2e} (relative)'
    else:
        assert result['median_rel'] < 1e-4, f'median relative difference {result["median_rel"]:.2e}'


if __name__ == '__main__':
    print(json.dumps(_ratio(int(json.loads(sys.argv[1])['n']))))
