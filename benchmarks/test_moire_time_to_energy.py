"""The FermiNet-family peer's own moiré benchmark: seconds per step (split into its parts) and energy
per electron against wall time from a cold start.

Physics (as the peer, PeriodicWave): 6 spin-polarized electrons in a 3×3 moiré supercell (ν = 2/3),
ε = 5, λ = 1 (V0 = 15 meV, φ = π/4, a_M = 8.031 nm, m* = 0.35). qvmc: QERNEL default config
(~108K parameters), float32 network with float64 reductions and solves, RWM, minSR.

Peer numbers (measured on this machine class, ../shared/PERF-BASELINE.md): 2.2–2.7 s per
iteration at 1024 walkers and 30 MCMC steps; −59.36 meV/electron after ~1000 iterations and
−59.41 after 1500 iterations (73 min); 102 s to its first iteration.

Sizes from the environment:

* ``QVMC_BENCH_TTE_N`` (6): electrons of the step breakdown (``test_step_breakdown``, and
  ``test_step_prefixes``: growing prefixes of the step jitted as one program each); 24 is the
  issue's 6×6 supercell at ν = 2/3 (run it with ``QVMC_BENCH_TTE_WALKERS=256``). The network is the
  same with ``max_orbitals`` raised to N where N exceeds its default. The time-to-energy run stays at 6.
* ``QVMC_BENCH_TTE_WALKERS`` (1024), ``QVMC_BENCH_TTE_SUBSTEPS`` (30): walkers and MCMC
  sub-steps per step (the peer's matched work).
* ``QVMC_BENCH_TTE_REPEATS`` (3): timed repeats of every part (the median is reported).
* ``QVMC_BENCH_TTE_MINUTES`` (24): wall-time budget of the time-to-energy run (a third of the
  peer's 73 minutes); ``QVMC_BENCH_TTE_LR`` (0.05), ``QVMC_BENCH_TTE_SHIFT`` (1e-3),
  ``QVMC_BENCH_TTE_MAX_NORM`` (1e-2): minSR settings; ``QVMC_BENCH_TTE_OUT``
  (``runs/bench_moire_tte``): CSV and plot of energy per electron vs wall time.
* ``QVMC_BENCH_TTE_LR_DECAY`` (0: constant): step length decayed as ``1 / (1 + step / T)`` with ``T``
  this many steps (0 keeps it constant): the learning rate ``lr / (1 + step / T)`` and the Fisher-norm
  cap ``max_norm / (1 + step / T)²``. (The cap binds at every step of this benchmark, and while it
  binds the step does not depend on the learning rate: a decay of the learning rate alone gave a
  trajectory identical to the constant one.)
* ``QVMC_BENCH_TTE_EWALD`` (1e-10): relative precision of the Ewald sums in training.
* ``QVMC_BENCH_TTE_KERNEL`` (``float64``): precision of minSR's kernel product ŌŌᵀ (``float32``: float32
  chunk products summed in float64, ``natgrad.minsr(kernel_precision=...)``). The step breakdown also
  times the solve + update with the other precision, in the same run.
* ``QVMC_BENCH_TTE_NETWORK`` (``peer``): ``peer`` is the default QERNEL config (~108K parameters, the
  peer's size); ``small`` is the 30,020-parameter QERNEL of the wide moiré runs (width 32, 2 blocks,
  4 query / 2 key-value heads, 4 experts, 2 determinants; ``examples/moire_transition.py --hidden 32
  --layers 2 --heads 4 --kv-heads 2 --experts 4 --determinants 2``).
* ``QVMC_BENCH_TTE_STEPS`` (0: none): a step budget. With one, the run uses the drivers' schedule
  (``examples/cli.make_optimizer``: warm-up from 10 % of the learning rate, cosine decay back to 10 % at
  the last step, the Fisher-norm cap scaled by the square of the learning-rate ratio) and stops at the
  budget or at the wall-time limit, whichever comes first. Excludes ``QVMC_BENCH_TTE_LR_DECAY``.
* ``QVMC_BENCH_TTE_SEED`` (0): the time-to-energy run starts as ``examples/moire_transition.py --seed``
  does (the same key split for parameters, walkers and training, then the driver's burn-in with the
  equilibration check). The start matters at λ = 1, where a liquid and a crystal-like state compete:
  see benchmarks/README.md.
* ``QVMC_BENCH_TTE_EVAL`` (0: none): after training, measurement draws per walker of a frozen-step
  evaluation of the energy and of the honeycomb order Φ (``qvmc.order_sweep.ObservableSweep.measure``:
  equilibration check, blocking errors; Φ ≈ 0.3 liquid, ≈ 0.9 crystal); its energy, Φ and the wall time
  at which it ends are reported beside the training average.
"""

import dataclasses
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update('jax_enable_x64', True)

from ansatz.qernel import QernelConfig  # noqa: E402
from ansatz.registry import make_ansatz  # noqa: E402
from hamiltonians import MoireSystem  # noqa: E402
from qvmc import VMC, VMCConfig, natgrad, score_kernel  # noqa: E402
from qvmc.estimator import block_score_rows, estimate_block, make_block_functions  # noqa: E402
from qvmc.scores import make_unravel  # noqa: E402
from envvars import env_choice, env_float, env_int, env_str  # noqa: E402


WALKERS = env_int('QVMC_BENCH_TTE_WALKERS', 1024)
SUBSTEPS = env_int('QVMC_BENCH_TTE_SUBSTEPS', 30)
BREAKDOWN_N = env_int('QVMC_BENCH_TTE_N', 6)
REPEATS = env_int('QVMC_BENCH_TTE_REPEATS', 3)
MINUTES = env_float('QVMC_BENCH_TTE_MINUTES', 24.0)
LR, SHIFT, MAX_NORM = (env_float('QVMC_BENCH_TTE_LR', 0.05), env_float('QVMC_BENCH_TTE_SHIFT', 1e-3),
                       env_float('QVMC_BENCH_TTE_MAX_NORM', 1e-2))
EWALD = env_float('QVMC_BENCH_TTE_EWALD', 1e-10)
LR_DECAY = env_float('QVMC_BENCH_TTE_LR_DECAY', 0.0, inclusive=True)
OUT = env_str('QVMC_BENCH_TTE_OUT', 'runs/bench_moire_tte')
KERNEL = env_choice('QVMC_BENCH_TTE_KERNEL', 'float64', score_kernel.KERNEL_PRECISIONS)
NETWORK = env_choice('QVMC_BENCH_TTE_NETWORK', 'peer', ('peer', 'small'))
STEP_BUDGET = env_int('QVMC_BENCH_TTE_STEPS', 0, minimum=0)
EVAL_DRAWS = env_int('QVMC_BENCH_TTE_EVAL', 0, minimum=0)
SEED = env_int('QVMC_BENCH_TTE_SEED', 0, minimum=0)
if STEP_BUDGET and LR_DECAY:
    raise ValueError('QVMC_BENCH_TTE_STEPS (the drivers\' warm-up cosine schedule) and QVMC_BENCH_TTE_LR_DECAY '
                     '(1 / (1 + t / T)) are two schedules: set one of them, unset the other.')
if STEP_BUDGET == 1:
    raise ValueError('QVMC_BENCH_TTE_STEPS must be 0 (no budget) or >= 2 (the warm-up cosine schedule needs two '
                     'steps), got 1.')
SMALL = dict(width=32, num_layers=2, num_heads=4, num_kv_heads=2, num_experts=4, expert_hidden=32,
             num_determinants=2)  # examples/moire_transition.py's flags of the wide runs
PEER = {'seconds per step': (2.2, 2.7), 'meV/e after 1500 its (73 min)': -59.41, 'first step s': 102}


def setup(walkers=WALKERS, substeps=SUBSTEPS, init_key=None, n=6):
    """The peer's system and our matched model at ``n`` electrons; returns ``(vmc, state, context)``."""
    system = MoireSystem(epsilon=5.0, ewald_precision=EWALD)
    ctx = system.context(n, 0, lam=1.0)
    net = QernelConfig(**SMALL) if NETWORK == 'small' else QernelConfig()
    if n > net.max_orbitals:
        net = dataclasses.replace(net, max_orbitals=n)
    wf = make_ansatz('qernel', net, lattice=system.network_lattice)
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=substeps, network_dtype='float32', sampler='rwm')
    lr, max_norm = LR, MAX_NORM
    if STEP_BUDGET:
        return _budgeted(system, ctx, wf, config, init_key)
    if LR_DECAY:
        lr = lambda count: LR / (1.0 + count / LR_DECAY)  # noqa: E731
        max_norm = natgrad.max_norm_following(lr, LR, MAX_NORM)
    vmc = VMC(wf, system, [ctx], natgrad.minsr(lr, SHIFT, max_norm=max_norm, kernel_precision=KERNEL), config)
    return vmc, vmc.init(jax.random.PRNGKey(0)), ctx


def _budgeted(system, ctx, wf, config, init_key):
    """``setup`` with the drivers' warm-up cosine schedule over ``STEP_BUDGET`` steps."""
    import argparse
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, 'examples'))
    from cli import make_optimizer
    args = argparse.Namespace(optimizer='minsr', lr=LR, diag_shift=SHIFT, max_norm=MAX_NORM, steps=STEP_BUDGET,
                              kernel_precision=KERNEL)
    vmc = VMC(wf, system, [ctx], make_optimizer(args), config)
    return vmc, vmc.init(jax.random.PRNGKey(0) if init_key is None else init_key), ctx


def _median_seconds(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_breakdown(vmc, state, ctx):
    """Seconds of each part of one step, each jitted alone (parameters, walkers and values as
    arguments, as in the step), and of the whole step."""
    fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, vmc.config)
    params, chain, values = state.params, state.chains[0], state.values[0]
    key = jax.random.PRNGKey(1)
    sample, energies, scores = jax.jit(fns.sample), jax.jit(fns.energies), jax.jit(fns.scores)
    e_loc, comps = energies(params, chain.walkers, values)
    est = estimate_block(e_loc, comps, np.int32(0), vmc.config)
    o, _ = jax.jit(lambda w: block_score_rows(fns, params, w, values, est))(chain.walkers)  # masked rows
    ids = jax.numpy.zeros(o.shape[0], jax.numpy.int32)
    weights = jax.numpy.ones(1)

    def solver(tx):
        def solve(o):
            updates, _ = tx.update(None, state.opt_state, params, scores=o, local_energies=est.centred,
                                   context_ids=ids, context_weights=weights)
            return updates
        return jax.jit(solve)
    other = 'float32' if KERNEL == 'float64' else 'float64'
    parts = {'sampling': _median_seconds(sample, key, params, chain, values),
             'local energy': _median_seconds(energies, params, chain.walkers, values),
             'scores': _median_seconds(scores, params, chain.walkers, values),
             'solve + update': _median_seconds(solver(vmc.optimizer), o),
             f'solve + update ({other} kernel)': _median_seconds(
                 solver(natgrad.minsr(LR, SHIFT, max_norm=MAX_NORM, kernel_precision=other)), o),
             'whole step': _median_seconds(vmc.step, key, state)}
    return parts


def _gflop(fn, *args):
    """XLA's cost analysis of ``fn(*args)`` in GFLOP (a loop body is counted once, whatever its trips)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis['flops']) / 1e9


def step_flops(vmc, state, ctx):
    """GFLOP of one step's parts from XLA's cost analysis of loop-free programs: one sampling sub-step
    (the network on every walker) times the sub-steps; one pass of the local energies times the passes;
    the score rows (a gradient per walker)."""
    fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, vmc.config)
    params, chain, values = state.params, state.chains[0], state.values[0]
    walkers = chain.walkers
    num_walkers, num_coords = walkers.shape[0], walkers.shape[1] * walkers.shape[2]
    per_pass = vmc.config.energy_chunk(num_coords, num_walkers) or num_walkers
    one_pass = dataclasses.replace(vmc.config, energy_batch_size=per_pass, chunk_size=None)
    pass_fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, one_pass)
    forward = _gflop(jax.vmap(lambda x: fns.log_psi(params, x, values)), walkers)
    energy = _gflop(lambda w: pass_fns.energies(params, w, values), walkers[:per_pass])
    score = _gflop(lambda w: pass_fns.scores(params, w, values), walkers)  # the step's score function, unchunked
    return {'forward (all walkers)': forward, 'sampling': forward * vmc.config.mcmc_substeps,
            'local energy': energy * -(-num_walkers // per_pass), 'scores': score, 'energy pass walkers': per_pass}


def test_step_flops(report):
    """Floating-point work of the step's parts and the rate each part reaches (the parts' seconds as in
    test_step_breakdown): whether the step is bound by its arithmetic or by overheads."""
    vmc, state, ctx = setup(n=BREAKDOWN_N)
    parts = step_breakdown(vmc, state, ctx)
    flops = step_flops(vmc, state, ctx)
    row = {'benchmark': 'moiré step FLOPs', 'N': BREAKDOWN_N, 'walkers': WALKERS, 'substeps': SUBSTEPS,
           'energy pass walkers': flops['energy pass walkers'],
           'forward GFLOP (all walkers)': round(flops['forward (all walkers)'], 3)}
    total = 0.0
    for part in ('sampling', 'local energy', 'scores'):
        total += flops[part]
        row[f'{part} GFLOP'] = round(flops[part], 2)
        row[f'{part} GFLOP/s'] = round(flops[part] / parts[part], 1)
    row.update({'step GFLOP (three parts)': round(total, 1), 'whole step s': round(parts['whole step'], 3),
                'step GFLOP/s': round(total / parts['whole step'], 1),
                'local energy / forward': round(flops['local energy'] / flops['forward (all walkers)'], 1)})
    print(row)
    report(row)


PEER_STEP = {6: ('2.2-2.7', 2.45), 24: ('5.1-5.9', 5.5)}  # N -> the peer's s/step (1024 / 256 walkers), mid


def _peer_columns(seconds):
    if BREAKDOWN_N not in PEER_STEP:
        return {}
    span, mid = PEER_STEP[BREAKDOWN_N]
    return {'peer s/step': span, f'ratio to peer ({mid} s)': round(seconds / mid, 2)}


def test_step_breakdown(report):
    vmc, state, ctx = setup(n=BREAKDOWN_N)
    parts = step_breakdown(vmc, state, ctx)
    num_params = sum(int(np.size(p)) for p in jax.tree.leaves(state.params))
    row = {'benchmark': 'moiré step (peer matched)', 'N': BREAKDOWN_N, 'walkers': WALKERS, 'substeps': SUBSTEPS, 'kernel': KERNEL,
           'parameters': num_params, **{f'{k} s': round(v, 3) for k, v in parts.items()},
           **_peer_columns(parts['whole step'])}
    print(row)
    report(row)


def step_prefixes(vmc, state, ctx):
    """Seconds of growing prefixes of one step, each jitted as one program with the parameters, chain and
    values as arguments (as in the step; parameters closed over as constants time differently): where the
    whole step's time goes beyond its parts timed alone (fusion, copies of the score matrix, the update)."""
    fns = make_block_functions(vmc.wavefunction, vmc.system, ctx.spins, vmc.config)
    params, chain, values, opt = state.params, state.chains[0], state.values[0], state.opt_state
    key, config = jax.random.PRNGKey(1), vmc.config
    tx = optax.with_extra_args_support(vmc.optimizer)

    def sample_energies(k, p, c, v):
        c, info = fns.sample(k, p, c, v)
        return c, info, fns.energies(p, c.walkers, v)

    def with_rows(k, p, c, v):
        c, info, (e, comps) = sample_energies(k, p, c, v)
        return block_score_rows(fns, p, c.walkers, v, estimate_block(e, comps, info.num_reseeded, config))

    def with_update(k, p, s, c, v):  # the step's one-block update, without the finiteness guard
        o, e = with_rows(k, p, c, v)
        g = (o.T @ (2.0 * e / e.shape[0]).astype(o.dtype)).astype(jnp.float64)
        updates, s = tx.update(make_unravel(p)(g), s, p, scores=o, local_energies=e,
                               context_ids=jnp.zeros(e.shape[0], jnp.int32), context_weights=jnp.ones(1))
        return optax.apply_updates(p, updates), s
    return {'sampling': _median_seconds(jax.jit(fns.sample), key, params, chain, values),
            'local energy': _median_seconds(jax.jit(fns.energies), params, chain.walkers, values),
            'sampling + local energy': _median_seconds(jax.jit(sample_energies), key, params, chain, values),
            '+ score rows': _median_seconds(jax.jit(with_rows), key, params, chain, values),
            '+ gradient, solve, update': _median_seconds(jax.jit(with_update), key, params, opt, chain, values),
            'whole step': _median_seconds(vmc.step, key, state)}


def test_step_prefixes(report):
    vmc, state, ctx = setup(n=BREAKDOWN_N)
    parts = step_prefixes(vmc, state, ctx)
    row = {'benchmark': 'moiré step prefixes', 'N': BREAKDOWN_N, 'walkers': WALKERS, 'substeps': SUBSTEPS,
           'kernel': KERNEL, **{f'{k} s': round(v, 3) for k, v in parts.items()}}
    print(row)
    report(row)


def test_time_to_energy(report):
    """Trains from a cold start for the wall-time budget; energy per electron vs wall time to CSV + plot."""
    import pandas as pd
    start = time.time()
    key_init, key, key_eval = jax.random.split(jax.random.PRNGKey(SEED), 3)  # as examples/moire_transition.py
    vmc, state, ctx = setup(init_key=key_init)
    n = ctx.n_electrons
    rows, t = [], 0
    state, _ = vmc.equilibrate(key_init, state, chunk=10, min_steps=20, max_steps=300)  # the driver's burn-in
    while time.time() - start < 60 * MINUTES and (not STEP_BUDGET or t < STEP_BUDGET):
        state, info = vmc.step(jax.random.fold_in(key, t), state)
        t += 1
        if t % 5 == 0:
            ng = natgrad.last_info(state.opt_state)
            rows.append({'step': t, 'wall_s': time.time() - start, 'energy_per_electron': float(info.loss) / n,
                         'variance': float(info.blocks[0].variance), 'norm_scale': float(ng.norm_scale)})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame['smoothed_50'] = frame['energy_per_electron'].rolling(10, min_periods=1).mean()
    os.makedirs(OUT, exist_ok=True)
    frame.to_csv(os.path.join(OUT, 'energy_vs_time.csv'), index=False)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frame['wall_s'] / 60, frame['energy_per_electron'], lw=0.5, alpha=0.5, label='qvmc (per step)')
    ax.plot(frame['wall_s'] / 60, frame['smoothed_50'], label='qvmc (50-step mean)')
    ax.axhline(PEER['meV/e after 1500 its (73 min)'], color='k', ls='--', label='peer after 73 min')
    ax.set(xlabel='wall time (min, compile included)', ylabel='E / N (meV)', ylim=(-59.8, -57.0))
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, 'energy_vs_time.png'), dpi=120)
    last = frame.tail(max(1, len(frame) // 10))
    evaluation = {}
    if EVAL_DRAWS:
        from qvmc.order_sweep import ObservableSweep, moire_order_observables
        chain = state.chains[0]
        sweep = ObservableSweep(vmc.wavefunction, vmc.system, vmc.config,
                                observables=moire_order_observables(vmc.system))
        row = sweep.measure(
            state.params, ctx, key_eval, walkers=chain.walkers, step_size=chain.step_size,
            num_steps=EVAL_DRAWS).row
        evaluation = {'eval meV/e': round(row['energy_per_electron'], 4),
                      'eval err': round(row['energy_per_electron_err'], 4),
                      'eval honeycomb order': round(row['honeycomb_order'], 3),  # ~0.3 liquid, ~0.9 crystal
                      'eval ends at min': round((time.time() - start) / 60, 2)}
        print(evaluation, flush=True)
    report({'benchmark': 'moiré time to energy', 'minutes': MINUTES, 'walkers': WALKERS, 'lr decay steps': LR_DECAY,
            'kernel': KERNEL, 'network': NETWORK, 'substeps': SUBSTEPS, 'step budget': STEP_BUDGET,
            'training ends at min': round(frame['wall_s'].iloc[-1] / 60, 2),
            'steps': t,
            'final meV/e (last 10%)': round(last['energy_per_electron'].mean(), 3),
            **evaluation, 'peer meV/e (73 min)': PEER['meV/e after 1500 its (73 min)']})
