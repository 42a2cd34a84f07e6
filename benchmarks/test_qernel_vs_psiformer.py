"""QERNEL vs PsiFormer at CPU scale, in one run: energy vs training step and vs parameter count on
the polarized N = 6, λ = 8 dot (DMC 60.3924, Ghosal et al. 2007), same optimizer, batch and
steps; and the cost of a training step and of the forward-Laplacian local energy vs N.

Sizes from the environment: QVMC_BENCH_ARCH_STEPS (300), QVMC_BENCH_WALKERS (128),
QVMC_BENCH_ARCH_WIDTHS (comma-separated widths, default 16,32), QVMC_BENCH_COST_N (6,12),
QVMC_BENCH_RUN_DIR (runs/bench_arch). The energy curves are written to <run dir>/curves.csv.
"""

import dataclasses
import os
import time

import jax
import numpy as np
import optax
import pandas as pd
import pytest

from ansatz.param_count import parameter_report
from ansatz.psiformer import PsiFormerConfig
from ansatz.qernel import QernelConfig
from ansatz.registry import make_ansatz
from hamiltonians import QuantumDot, make_local_energy
from qvmc import VMC, VMCConfig, make_log_psi
from envvars import env_int, env_list, env_str

DMC = 60.3924
WINDOW = 20
CURVES = []


def _config(name, width):
    if name == 'qernel':
        return QernelConfig(width=width, num_layers=2, num_heads=4, num_kv_heads=2, num_experts=4,
                            expert_hidden=width // 2, num_determinants=2, max_orbitals=8)
    return PsiFormerConfig(width=width, num_layers=2, num_heads=4, mlp_hidden=width, num_determinants=2,
                           max_orbitals=8)


def _widths():
    return env_list('QVMC_BENCH_ARCH_WIDTHS', '16,32', minimum=1)


@pytest.mark.parametrize('width', _widths())
@pytest.mark.parametrize('name', ['qernel', 'psiformer'])
def test_energy_vs_steps_and_parameters(name, width, report):
    steps, walkers = env_int('QVMC_BENCH_ARCH_STEPS', 300), env_int('QVMC_BENCH_WALKERS', 128)
    run_dir = env_str('QVMC_BENCH_RUN_DIR', 'runs/bench_arch')
    dot = QuantumDot()
    ctx = dot.context(6, 0, lam=8.0)
    wf = make_ansatz(name, _config(name, width))
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, min(50, steps // 5 + 1), steps, end_value=1e-4)
    vmc = VMC(wf, dot, [ctx], optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)),
              VMCConfig(num_walkers=walkers, mcmc_substeps=10))
    state = vmc.run_mcmc(jax.random.PRNGKey(1), vmc.init(jax.random.PRNGKey(0)), 30)
    params = parameter_report(state.params)
    energies, start = [], time.time()
    for t in range(steps):
        state, info = vmc.step(jax.random.PRNGKey(100 + t), state)
        energies.append(float(info.loss))
    seconds = time.time() - start
    smoothed = pd.Series(energies).rolling(WINDOW).mean()
    CURVES.extend({'ansatz': name, 'width': width, 'params': params['total'], 'step': t + 1, 'energy': e,
                   'smoothed': s} for t, (e, s) in enumerate(zip(energies, smoothed)))
    os.makedirs(run_dir, exist_ok=True)
    pd.DataFrame(CURVES).to_csv(os.path.join(run_dir, 'curves.csv'), index=False)
    final = float(smoothed.iloc[-1])
    report({'benchmark': 'QERNEL vs PsiFormer, N=6 polarized, λ=8', 'ansatz': name, 'width': width,
            'params': params['total'], 'FiLM share': round(params['film_fraction'], 4), 'steps': steps,
            'final mean': final, 'minus DMC (mHa)': 1e3 * (final - DMC), 's/step': seconds / steps})
    assert np.isfinite(final)


def test_summary_ratios(report):
    """From the curves above: steps each QERNEL needs to reach the final energy of the PsiFormer
    with the nearest parameter count, and parameters needed for equal final energy."""
    if not CURVES:
        pytest.skip('run together with test_energy_vs_steps_and_parameters')
    frame = pd.DataFrame(CURVES)
    finals = frame.groupby(['ansatz', 'width', 'params'])['smoothed'].last().reset_index()
    for _, q in finals[finals.ansatz == 'qernel'].iterrows():
        psi = finals[finals.ansatz == 'psiformer']
        if psi.empty:
            continue
        match = psi.iloc[(psi.params - q.params).abs().argmin()]
        curve = frame[(frame.ansatz == 'qernel') & (frame.width == q.width)]
        hit = curve[curve.smoothed <= match.smoothed]
        report({'benchmark': 'QERNEL vs PsiFormer ratios', 'qernel params': q.params,
                'psiformer params': match.params, 'psiformer final': match.smoothed,
                'qernel steps to that energy': int(hit.step.iloc[0]) if len(hit) else None,
                'steps (psiformer)': int(curve.step.max()),
                'param ratio psiformer/qernel': match.params / q.params})


@pytest.mark.parametrize('n', env_list('QVMC_BENCH_COST_N', '6,12', minimum=1))
@pytest.mark.parametrize('name', ['qernel', 'psiformer'])
def test_step_and_laplacian_cost_vs_n(name, n, report):
    dot = QuantumDot()
    ctx = dot.context(n, 0, lam=8.0)
    wf = make_ansatz(name, dataclasses.replace(_config(name, 32), max_orbitals=max(8, n)))
    vmc = VMC(wf, dot, [ctx], optax.adam(1e-3), VMCConfig(num_walkers=64, mcmc_substeps=5))
    state = vmc.init(jax.random.PRNGKey(0))
    state, _ = vmc.step(jax.random.PRNGKey(1), state)  # compile
    start = time.perf_counter()
    for t in range(3):
        state, info = vmc.step(jax.random.PRNGKey(2 + t), state)
    step_seconds = (time.perf_counter() - start) / 3
    e_loc = jax.jit(jax.vmap(make_local_energy(make_log_psi(wf, dot, ctx.spins), dot.potential_components, 'folx'),
                             in_axes=(None, 0, None)))
    walkers = state.chains[0].walkers
    jax.block_until_ready(e_loc(state.params, walkers, ctx.values))
    start = time.perf_counter()
    jax.block_until_ready(e_loc(state.params, walkers, ctx.values))
    report({'benchmark': 'cost vs N (64 walkers)', 'ansatz': name, 'N': n, 's/train step': step_seconds,
            'folx E_L ms/walker': 1e3 * (time.perf_counter() - start) / walkers.shape[0]})
