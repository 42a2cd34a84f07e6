"""Accuracy: one conditional run on polarized dots (N = 6, 8; λ = 0..10), then inference at the
published points, including the unseen N = 7.

Sizes come from environment variables so that the same benchmark runs at CPU scale and at
GPU scale (defaults are CPU scale and far from converged; see benchmarks/README.md):
QVMC_BENCH_STEPS (600), QVMC_BENCH_WALKERS (128), QVMC_BENCH_WIDTH (32),
QVMC_BENCH_EVAL_STEPS (100), QVMC_BENCH_RUN_DIR (runs/bench_accuracy).
"""

import os
import time

import jax
import numpy as np
import optax
import pandas as pd

from ansatz import FermiSetsConfig, make_fermi_sets
from hamiltonians import QuantumDot
from hamiltonians.references import LEM_PUBLISHED, reference
from qvmc import VMC, VMCConfig
from qvmc.inference import Predictor
from qvmc.train import train
from envvars import env_int, env_str

TRAIN_N = (6, 8)
TRAIN_LAMBDAS = (0.0, 1.0, 2.0, 5.0, 8.0, 10.0)
TARGETS = [(6, 8.0), (6, 10.0), (7, 8.0), (8, 8.0)]


def test_polarized_conditional_accuracy(report):
    steps, walkers = env_int('QVMC_BENCH_STEPS', 600), env_int('QVMC_BENCH_WALKERS', 128)
    width, eval_steps = env_int('QVMC_BENCH_WIDTH', 32), env_int('QVMC_BENCH_EVAL_STEPS', 100)
    run_dir = env_str('QVMC_BENCH_RUN_DIR', 'runs/bench_accuracy')
    dot = QuantumDot()
    contexts = [dot.context(n, 0, lam=lam) for n in TRAIN_N for lam in TRAIN_LAMBDAS]
    wf = make_fermi_sets(FermiSetsConfig(width=width, hidden=width))
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, min(100, steps // 5 + 1), steps, end_value=1e-4)
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=10)
    vmc = VMC(wf, dot, contexts, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)), config)
    start = time.time()
    key = jax.random.PRNGKey(0)
    state = vmc.run_mcmc(key, vmc.init(key), 20)
    state = train(vmc, state, key, steps, run_dir=run_dir, log_every=100)
    train_seconds = time.time() - start

    predictor = Predictor(wf, dot, config, density_bins=0)
    rows = []
    for i, (n, lam) in enumerate(TARGETS):
        est = predictor.estimate(state.params, dot.context(n, 0, lam=lam), jax.random.PRNGKey(100 + i),
                                 num_walkers=512, num_steps=eval_steps)
        ref = reference(n, 0, lam)[0]
        rows.append({'N': n, 'lam': lam, 'seen in training': n in TRAIN_N, 'energy': est.energy.mean,
                     'error': est.energy.error, 'DMC': ref, 'deviation': est.energy.mean - ref,
                     'LEM published': LEM_PUBLISHED[(n, 0, lam, 1.0)]})
        assert np.isfinite(est.energy.mean)
    frame = pd.DataFrame(rows)
    frame.to_csv(os.path.join(run_dir, 'accuracy.csv'), index=False)
    for row in rows:
        report({'benchmark': 'polarized accuracy', 'steps': steps, 'walkers/context': walkers,
                'train s': round(train_seconds), **row})
