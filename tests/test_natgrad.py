"""Natural-gradient optimizers and scores against dense numpy references (float64)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from qvmc import natgrad, score_kernel, scores as scores_lib

RTOL = 1e-10
VALUES = {'omega': jnp.asarray(1.3)}


def _log_psi_apply():
    """A permutation-invariant MLP log|ψ| of one walker [N, 2], any N; P = 33."""
    def fn(x, omega):
        h = jnp.tanh(hk.Linear(8)(x))  # [N, 8]
        return hk.Linear(1)(jnp.mean(h, axis=0))[0] - 0.5 * omega * jnp.sum(x ** 2)
    net = hk.without_apply_rng(hk.transform(fn))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), 1.0)
    return params, lambda p, x, values: net.apply(p, x, values['omega'])


PARAMS, LOG_PSI = _log_psi_apply()
P = scores_lib.num_params(PARAMS)


def _walkers(seed, w, n):
    return jax.random.normal(jax.random.PRNGKey(seed), (w, n, 2))


def _dense_reference(o, e, ids, weights, shift, normalize=False):
    """S, g by explicit per-context covariances and δ = (S + εI)⁻¹ g, all in numpy."""
    o, e = np.asarray(o, np.float64), np.asarray(e, np.float64)
    s_mat, g = np.zeros((o.shape[1],) * 2), np.zeros(o.shape[1])
    for c, w in enumerate(weights):
        rows = np.flatnonzero(np.asarray(ids) == c)
        oc = o[rows] - o[rows].mean(axis=0)
        ec = e[rows] - e[rows].mean()
        if normalize:
            ec = ec / e[rows].std()
        for s in range(len(rows)):
            s_mat += w * np.outer(oc[s], oc[s]) / len(rows)
            g += w * 2.0 * oc[s] * ec[s] / len(rows)
    return s_mat, g, np.linalg.solve(s_mat + shift * np.eye(len(g)), g)


def _synthetic(seed, counts, p):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)  # unsorted
    o = rng.normal(size=(len(ids), p)) + 3.0 * ids[:, None]
    e = rng.normal(size=len(ids)) * (1.0 + ids) + 10.0 * ids
    return jnp.asarray(o), jnp.asarray(e), jnp.asarray(ids)


def _flat_update(tx, o, e, ids, num_contexts, weights=None, params=None, state=None):
    params = PARAMS if params is None else params
    state = tx.init(params) if state is None else state
    updates, state = tx.update(None, state, params, scores=o, local_energies=e, context_ids=ids,
                               num_contexts=num_contexts, context_weights=weights)
    return np.asarray(ravel_pytree(updates)[0]), state


def test_scores_equal_per_walker_grads_and_chunking():
    walkers = _walkers(1, 23, 3)
    o = scores_lib.make_score_fn(LOG_PSI)(PARAMS, walkers, VALUES)
    loop = np.stack([ravel_pytree(jax.grad(LOG_PSI)(PARAMS, x, VALUES))[0] for x in walkers])
    np.testing.assert_allclose(o, loop, rtol=1e-12, atol=1e-14)
    chunked = jax.jit(scores_lib.make_score_fn(LOG_PSI, chunk_size=5))(PARAMS, walkers, VALUES)
    assert chunked.shape == (23, P)
    np.testing.assert_allclose(chunked, o, rtol=1e-12, atol=1e-14)
    unravel = scores_lib.make_unravel(PARAMS)
    back = unravel(ravel_pytree(PARAMS)[0])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), back, PARAMS)
    with pytest.raises(ValueError, match='chunk_size'):
        scores_lib.make_score_fn(LOG_PSI, chunk_size=0)


@pytest.mark.parametrize('num_walkers', [64, 16])  # B > P and B < P
def test_sr_and_minsr_equal_dense_natural_gradient_one_context(num_walkers):
    o = scores_lib.make_score_fn(LOG_PSI)(PARAMS, _walkers(2, num_walkers, 2), VALUES)
    e = jnp.asarray(np.random.default_rng(0).normal(size=num_walkers))
    ids = jnp.zeros(num_walkers, jnp.int32)
    shift, lr = 1e-3, 0.05
    _, g, delta = _dense_reference(o, e, ids, [1.0], shift)
    np.testing.assert_allclose(natgrad.energy_gradient(o, e, ids, 1), g, rtol=RTOL, atol=1e-13)
    for tx in (natgrad.sr(lr, shift), natgrad.minsr(lr, shift)):
        update, _ = _flat_update(tx, o, e, ids, 1)
        np.testing.assert_allclose(update, -lr * delta, rtol=RTOL, atol=1e-12 * np.abs(delta).max())
    cg = natgrad.sr(lr, shift, solver='cg', cg_tol=1e-13, cg_maxiter=1000)
    cg_update, _ = _flat_update(cg, o, e, ids, 1)
    np.testing.assert_allclose(cg_update, -lr * delta, rtol=1e-7, atol=1e-9 * np.abs(delta).max())


@pytest.mark.parametrize('p', [50, 20])  # B = 36 < P and B > P
@pytest.mark.parametrize('normalize', [False, True])
def test_three_contexts_synthetic_weighted(p, normalize):
    o, e, ids = _synthetic(p, (5, 11, 20), p)
    weights = jnp.asarray([0.2, 0.5, 0.3])
    shift, lr = 1e-2, 0.1
    _, g, delta = _dense_reference(o, e, ids, weights, shift, normalize)
    grad = natgrad.energy_gradient(o, e, ids, 3, weights, normalize)
    np.testing.assert_allclose(grad, g, rtol=RTOL)
    params = {'w': jnp.zeros(p)}
    for tx in (natgrad.sr(lr, shift, normalize_energy_scale=normalize),
               natgrad.minsr(lr, shift, normalize_energy_scale=normalize)):
        update, _ = _flat_update(tx, o, e, ids, 3, weights, params=params)
        np.testing.assert_allclose(update, -lr * delta, rtol=RTOL, atol=1e-12 * np.abs(delta).max())


@pytest.mark.parametrize('num_rows', [7, 16, 35])  # one block, even blocks, uneven blocks
def test_block_triangle_gram_equals_the_full_product(monkeypatch, num_rows):
    monkeypatch.setattr(score_kernel, 'GRAM_BLOCK_ROWS', 8)
    rows = jnp.asarray(np.random.default_rng(num_rows).normal(size=(num_rows, 13)))
    kernel = np.asarray(natgrad.gram(rows))
    np.testing.assert_allclose(kernel, np.asarray(rows) @ np.asarray(rows).T, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(kernel, kernel.T)  # exactly symmetric


def test_minsr_and_spring_with_a_blocked_gram_match_the_dense_reference(monkeypatch):
    monkeypatch.setattr(score_kernel, 'GRAM_BLOCK_ROWS', 8)  # 36 rows: 4 blocks of 9
    o, e, ids = _synthetic(50, (5, 11, 20), 50)
    weights = jnp.asarray([0.2, 0.5, 0.3])
    _, _, delta = _dense_reference(o, e, ids, weights, 1e-2)
    params = {'w': jnp.zeros(50)}
    for tx in (natgrad.minsr(0.1, 1e-2), natgrad.spring(0.1, 1e-2, momentum=0.0)):
        update, _ = _flat_update(tx, o, e, ids, 3, weights, params=params)
        np.testing.assert_allclose(update, -0.1 * delta, rtol=RTOL, atol=1e-12 * np.abs(delta).max())


@pytest.mark.parametrize('chunk', [7, 10, 64])  # chunks and a remainder, exact chunks, one piece
def test_chunked_score_products_match_the_dense_reference(monkeypatch, chunk):
    """minSR and SPRING form ŌŌᵀ, Ō v and Ōᵀζ from column chunks of O (qvmc.score_kernel); the
    direction, SPRING's recursion and the Fisher norm of the step must not depend on the chunking."""
    monkeypatch.setattr(score_kernel, 'SCORE_CHUNK', chunk)
    p, shift, mu, lr = 30, 1e-2, 0.9, 0.3
    params = {'w': jnp.zeros(p)}
    weights = jnp.asarray([0.3, 0.7])
    tx = natgrad.spring(lr, shift, momentum=mu)
    state, previous = tx.init(params), np.zeros(p)
    for k in range(2):
        o, e, ids = _synthetic(40 + k, (9, 14), p)
        o = o.astype(jnp.float32)  # as from a float32 network: each chunk is cast to float64
        s_mat, g, _ = _dense_reference(o, e, ids, np.asarray(weights), shift)
        expected = mu * previous + np.linalg.solve(s_mat + shift * np.eye(p), g - mu * s_mat @ previous)
        update, state = _flat_update(tx, o, e, ids, 2, weights, params=params, state=state)
        atol = 1e-12 * np.abs(expected).max()
        np.testing.assert_allclose(update, -lr * expected, rtol=RTOL, atol=atol)
        np.testing.assert_allclose(state.info.fisher_norm_sq, lr ** 2 * expected @ s_mat @ expected, rtol=1e-9)
        previous = expected
    _, _, delta = _dense_reference(o, e, ids, np.asarray(weights), shift)
    update, _ = _flat_update(natgrad.minsr(lr, shift), o, e, ids, 2, weights, params=params)
    np.testing.assert_allclose(update, -lr * delta, rtol=RTOL, atol=1e-12 * np.abs(delta).max())


def _ill_conditioned(seed, rows, cols):
    """float32 scores with a spread spectrum (as a network's: a few large directions, many small)."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(1, -3, cols)
    return jnp.asarray((rng.normal(size=(rows, cols)) * scales + rng.normal(size=(rows, 1))).astype(np.float32))


def test_float32_kernel_within_its_rounding_bound(monkeypatch):
    """``precision='float32'``: |ΔK_ij| ≤ (k + 2) u √(K_ii K_jj) for chunks of k columns (u = 2⁻²⁴: rounding
    the centred inputs, then a k-term float32 dot product per chunk, Cauchy–Schwarz over the chunks)."""
    chunk = 97
    monkeypatch.setattr(score_kernel, 'SCORE_CHUNK', chunk)
    o = _ill_conditioned(3, 48, 1000)
    ids = jnp.asarray(np.repeat([0, 1], 24).astype(np.int32))
    centre, _ = score_kernel.centring(o, jnp.zeros(48), ids, jnp.asarray([0.5, 0.5]))
    k64, _ = score_kernel.kernel(o, centre)
    k32, _ = score_kernel.kernel(o, centre, precision='float32')
    assert k32.dtype == jnp.float64
    diag = np.sqrt(np.diag(np.asarray(k64)))
    bound = (chunk + 2) * 2.0 ** -24 * np.outer(diag, diag)
    diff = np.abs(np.asarray(k32 - k64))
    assert np.all(diff <= bound) and diff.max() > 0  # really computed in float32
    with pytest.raises(ValueError, match='kernel precision'):
        score_kernel.kernel(o, centre, precision='bfloat16')
    with pytest.raises(ValueError, match='kernel_precision'):
        natgrad.minsr(0.1, kernel_precision='float16')


def test_float32_kernel_changes_the_update_only_through_the_kernel():
    """minSR / SPRING (first step) with the float32 kernel K' = K + ΔK: A ζ = r and A' ζ' = r give
    ζ − ζ' = A⁻¹ ΔK ζ' exactly, so the update moves by lr Ōᵀ Π A⁻¹ ΔK ζ' (Π: the per-context projection)
    and by nothing else; and that change is small against the update at the usual shift."""
    shift, lr, n = 1e-3, 0.1, 64
    o = _ill_conditioned(5, n, 3000)
    ids = jnp.asarray(np.repeat([0, 1], n // 2).astype(np.int32))
    e = jnp.asarray(np.random.default_rng(6).normal(size=n))
    weights = jnp.asarray([0.5, 0.5])
    params = {'w': jnp.zeros(3000)}
    centre, e_bar = score_kernel.centring(o, e, ids, weights)
    k64, _ = score_kernel.kernel(o, centre)
    k32, _ = score_kernel.kernel(o, centre, precision='float32')
    same = np.asarray(ids[:, None] == ids[None, :], np.float64) / (n // 2)
    a64, a32 = np.asarray(k64) + shift * np.eye(n) + same, np.asarray(k32) + shift * np.eye(n) + same
    zeta32 = np.linalg.solve(a32, 2.0 * np.asarray(e_bar))
    moved = np.linalg.solve(a64, np.asarray(k32 - k64) @ zeta32)
    for c in (0, 1):  # Π: zero mean per context
        moved[np.asarray(ids) == c] -= moved[np.asarray(ids) == c].mean()
    expected = lr * np.asarray(centre(o)).T @ moved
    for make in (natgrad.minsr, lambda lr_, eps, **kw: natgrad.spring(lr_, eps, momentum=0.5, **kw)):
        exact, _ = _flat_update(make(lr, shift), o, e, ids, 2, weights, params=params)
        fast, _ = _flat_update(make(lr, shift, kernel_precision='float32'), o, e, ids, 2, weights, params=params)
        np.testing.assert_allclose(fast - exact, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        assert 0 < np.linalg.norm(fast - exact) < 1e-4 * np.linalg.norm(exact)


def test_contexts_with_different_particle_numbers_real_scores():
    score_fn = scores_lib.make_score_fn(LOG_PSI, chunk_size=7)
    o_list = [score_fn(PARAMS, _walkers(3, 12, 2), VALUES), score_fn(PARAMS, _walkers(4, 20, 3), VALUES)]
    rng = np.random.default_rng(1)
    e_list = [jnp.asarray(rng.normal(size=12)), jnp.asarray(rng.normal(size=20) - 4.0)]
    o, e, ids = natgrad.stack_contexts(o_list, e_list)
    _, _, delta = _dense_reference(o, e, ids, [0.5, 0.5], 1e-3)
    sr_update, _ = _flat_update(natgrad.sr(1.0, 1e-3), o, e, ids, 2)
    minsr_update, _ = _flat_update(natgrad.minsr(1.0, 1e-3), o, e, ids, 2)
    np.testing.assert_allclose(sr_update, -delta, rtol=RTOL, atol=1e-12 * np.abs(delta).max())
    np.testing.assert_allclose(minsr_update, sr_update, rtol=RTOL, atol=1e-12 * np.abs(delta).max())


def test_per_context_constants_do_not_change_the_update():
    o, e, ids = _synthetic(7, (6, 9, 13), 40)
    params = {'w': jnp.zeros(40)}
    rng = np.random.default_rng(3)
    o_shift = o + jnp.asarray(rng.normal(size=(3, 40)))[ids]
    e_shift = e + jnp.asarray([5.0, -2.0, 30.0])[ids]
    for tx in (natgrad.sr(0.1, 1e-2), natgrad.minsr(0.1, 1e-2)):
        ref, _ = _flat_update(tx, o, e, ids, 3, params=params)
        moved, _ = _flat_update(tx, o_shift, e_shift, ids, 3, params=params)
        np.testing.assert_allclose(moved, ref, rtol=1e-9, atol=1e-11 * np.abs(ref).max())


def test_spring_momentum_recursion_and_zero_momentum_is_minsr():
    params = {'w': jnp.zeros(30)}
    steps = [_synthetic(10 + k, (8, 12), 30) for k in range(3)]
    shift, mu, lr = 1e-2, 0.9, 0.3
    zero, _ = _flat_update(natgrad.spring(lr, shift, momentum=0.0), *steps[0], 2, params=params)
    minsr, _ = _flat_update(natgrad.minsr(lr, shift), *steps[0], 2, params=params)
    np.testing.assert_allclose(zero, minsr, rtol=1e-12)
    tx = natgrad.spring(lr, shift, momentum=mu)
    state, previous = tx.init(params), np.zeros(30)
    for o, e, ids in steps:
        s_mat, g, _ = _dense_reference(o, e, ids, [0.5, 0.5], shift)
        expected = mu * previous + np.linalg.solve(s_mat + shift * np.eye(30), g - mu * s_mat @ previous)
        update, state = _flat_update(tx, o, e, ids, 2, params=params, state=state)
        atol = 1e-12 * np.abs(expected).max()
        np.testing.assert_allclose(update, -lr * expected, rtol=RTOL, atol=atol)
        np.testing.assert_allclose(state.previous_update, expected, rtol=RTOL, atol=atol)
        previous = expected
    assert int(state.count) == 3


def test_norm_constraint_caps_fisher_norm():
    o, e, ids = _synthetic(5, (10, 14), 25)
    params = {'w': jnp.zeros(25)}
    s_mat, _, _ = _dense_reference(o, e, ids, [0.5, 0.5], 1e-2)
    free, _ = _flat_update(natgrad.spring(0.5, 1e-2, 0.5), o, e, ids, 2, params=params)
    free_norm = free @ s_mat @ free
    capped_tx = natgrad.spring(0.5, 1e-2, 0.5, max_norm=0.1 * free_norm)
    capped, state = _flat_update(capped_tx, o, e, ids, 2, params=params)
    np.testing.assert_allclose(capped @ s_mat @ capped, 0.1 * free_norm, rtol=1e-9)
    np.testing.assert_allclose(capped, free * np.sqrt(0.1), rtol=1e-9)
    np.testing.assert_allclose(state.info.fisher_norm_sq, free_norm, rtol=1e-9)
    loose_tx = natgrad.spring(0.5, 1e-2, 0.5, max_norm=10 * free_norm)
    loose, _ = _flat_update(loose_tx, o, e, ids, 2, params=params)
    np.testing.assert_allclose(loose, free, rtol=1e-12)


def test_schedules_follow_the_step_count():
    o, e, ids = _synthetic(6, (9, 9), 12)
    params = {'w': jnp.zeros(12)}
    lr_schedule = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.5)
    shift_schedule = lambda count: 1e-2 * (1.0 + count)
    tx = natgrad.minsr(lr_schedule, shift_schedule)
    update = jax.jit(lambda state: tx.update(None, state, params, scores=o, local_energies=e,
                                             context_ids=ids, num_contexts=2))
    state = tx.init(params)
    for k in range(3):
        _, _, delta = _dense_reference(o, e, ids, [0.5, 0.5], 1e-2 * (1 + k))
        updates, state = update(state)
        lr = float(lr_schedule(jnp.asarray(k, jnp.int32)))  # optax: float32 for an int32 count
        np.testing.assert_allclose(lr, 0.2 * 0.5 ** k, rtol=1e-7)
        np.testing.assert_allclose(updates['w'], -lr * delta, rtol=RTOL)
    assert int(state.count) == 3


def test_binding_norm_constraint_ignores_lr_but_follows_a_max_norm_schedule():
    """While the constraint binds the step's Fisher norm is sqrt(max_norm) whatever the lr, so a
    decay must act on max_norm; a max_norm schedule is followed step by step."""
    o, e, ids = _synthetic(5, (10, 14), 25)
    params = {'w': jnp.zeros(25)}
    s_mat, _, _ = _dense_reference(o, e, ids, [0.5, 0.5], 1e-2)
    free, _ = _flat_update(natgrad.minsr(0.5, 1e-2), o, e, ids, 2, params=params)
    cap = 1e-3 * float(free @ s_mat @ free)
    slow, _ = _flat_update(natgrad.minsr(0.05, 1e-2, max_norm=cap), o, e, ids, 2, params=params)
    fast, _ = _flat_update(natgrad.minsr(0.5, 1e-2, max_norm=cap), o, e, ids, 2, params=params)
    np.testing.assert_allclose(slow, fast, rtol=1e-10)  # lr 10x apart, same step
    schedule = lambda count: cap / (1.0 + count) ** 2
    tx = natgrad.minsr(0.5, 1e-2, max_norm=schedule)
    update = jax.jit(lambda state: tx.update(None, state, params, scores=o, local_energies=e,
                                             context_ids=ids, num_contexts=2))
    state = tx.init(params)
    for k in range(3):
        updates, state = update(state)
        step = np.asarray(updates['w'])
        np.testing.assert_allclose(step @ s_mat @ step, cap / (1.0 + k) ** 2, rtol=1e-9)
        np.testing.assert_allclose(step, fast / (1.0 + k), rtol=1e-9)
        info = natgrad.last_info((optax.EmptyState(), state))  # found inside any chain
        assert float(info.norm_scale) < 1.0 and float(info.learning_rate) == 0.5
    assert natgrad.last_info(optax.adam(0.1).init(params)) is None
    with pytest.raises(ValueError, match='max_norm'):
        natgrad.minsr(0.1, 1e-2, max_norm=0.0)


@pytest.mark.parametrize('optimizer', ['minsr', 'spring'])
def test_driver_schedule_scales_the_norm_cap_with_the_learning_rate(optimizer):
    """examples/cli.make_optimizer: warm-up from 10 % of --lr; with a binding cap the step's Fisher norm
    is max_norm · (lr(t)/lr)², i.e. the step length follows the learning-rate schedule."""
    import argparse
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples'))
    import cli
    o, e, ids = _synthetic(5, (10, 14), 25)
    params = {'w': jnp.zeros(25)}
    s_mat, _, _ = _dense_reference(o, e, ids, [0.5, 0.5], 1e-2)
    free, _ = _flat_update(natgrad.minsr(0.05, 1e-2), o, e, ids, 2, params=params)
    cap = 1e-3 * float(free @ s_mat @ free)
    args = argparse.Namespace(optimizer=optimizer, lr=0.05, steps=100, max_norm=cap, diag_shift=1e-2, momentum=0.0)
    tx = cli.make_optimizer(args)
    state = tx.init(params)
    for count, factor in ((0, 0.1), (21, 1.0), (100, 0.1)):  # warm-up start, peak (21 warm-up steps), end
        updates, _ = tx.update(None, state._replace(count=jnp.asarray(count, jnp.int32)), params, scores=o,
                               local_energies=e, context_ids=ids, num_contexts=2)
        step = np.asarray(updates['w'])
        np.testing.assert_allclose(step @ s_mat @ step, cap * factor ** 2, rtol=1e-5)  # float32 schedule


def test_nonfinite_step_is_rejected_and_state_kept():
    o, e, ids = _synthetic(8, (7, 9), 10)
    params = {'w': jnp.linspace(0.0, 1.0, 10)}
    tx = natgrad.spring(0.1, 1e-2, 0.9)

    traces = []

    @jax.jit
    def step(params, state, energies):
        traces.append(1)  # runs at trace time only
        updates, new_state = tx.update(None, state, params, scores=o, local_energies=energies,
                                       context_ids=ids, num_contexts=2)
        return natgrad.apply_if_finite(params, state, updates, new_state)

    params1, state1, ok = step(params, jax.jit(tx.init)(params), e)
    assert bool(ok) and int(state1.count) == 1
    params2, state2, ok = step(params1, state1, e.at[3].set(jnp.nan))
    assert not bool(ok)
    jax.tree.map(np.testing.assert_array_equal, (params2, state2), (params1, state1))
    assert len(traces) == 1


def test_float32_network_gives_float32_updates_from_float64_solve():
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), PARAMS)
    o32 = scores_lib.make_score_fn(LOG_PSI)(params32, _walkers(9, 24, 2).astype(jnp.float32), VALUES)
    assert o32.dtype == jnp.float32
    e = jnp.asarray(np.random.default_rng(2).normal(size=24), jnp.float32)
    ids = jnp.zeros(24, jnp.int32)
    tx = natgrad.minsr(0.1, 1e-3)
    updates, _ = tx.update(None, tx.init(params32), params32, scores=o32, local_energies=e,
                           context_ids=ids, num_contexts=1)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))
    _, _, delta = _dense_reference(o32, e, ids, [1.0], 1e-3)  # exact solve on the float32 inputs
    np.testing.assert_allclose(ravel_pytree(updates)[0], -0.1 * delta, rtol=1e-5,
                               atol=1e-6 * np.abs(delta).max())


def test_vjp_gradient_equals_score_gradient_and_surrogate():
    """The one estimator: chunked VJP with cotangent 2(E - Ē)/n per context equals 2 Ōᵀē from
    stored scores and the surrogate-loss gradient."""
    walkers = [_walkers(11, 30, 2), _walkers(12, 17, 3)]
    rng = np.random.default_rng(4)
    energies = [jnp.asarray(rng.normal(size=30) + 50.0), jnp.asarray(rng.normal(size=17) * 3 - 20.0)]
    vjp_fn = jax.jit(scores_lib.make_vjp_fn(LOG_PSI, chunk_size=7))
    score_fn = scores_lib.make_score_fn(LOG_PSI)
    o, e, ids = natgrad.stack_contexts([score_fn(PARAMS, w, VALUES) for w in walkers], energies)
    for weights in (jnp.asarray([0.5, 0.5]), jnp.asarray([0.3, 0.7])):
        g = sum(wc * vjp_fn(PARAMS, w, VALUES, 2.0 * (en - jnp.mean(en)) / en.shape[0])
                for wc, w, en in zip(weights, walkers, energies))
        np.testing.assert_allclose(g, natgrad.energy_gradient(o, e, ids, context_weights=weights), rtol=RTOL,
                                   atol=1e-13)

    def surrogate(p):  # mean over contexts of 2 E[(E - Ē) log|ψ|]
        terms = [2.0 * jnp.mean((en - jnp.mean(en)) * jax.vmap(LOG_PSI, (None, 0, None))(p, w, VALUES))
                 for w, en in zip(walkers, energies)]
        return 0.5 * (terms[0] + terms[1])
    surrogate_grad = ravel_pytree(jax.grad(surrogate)(PARAMS))[0]
    np.testing.assert_allclose(natgrad.energy_gradient(o, e, ids, 2), surrogate_grad,
                               rtol=RTOL, atol=1e-13)  # the output bias has O = 1: exactly zero here
    rows = jnp.arange(23.0)
    total = scores_lib.accumulate(lambda r: {'s': jnp.sum(r), 'q': jnp.sum(r ** 2)}, rows, chunk_size=5)
    assert float(total['s']) == float(jnp.sum(rows)) and float(total['q']) == float(jnp.sum(rows ** 2))


def test_natural_gradients_compose_in_an_optax_chain():
    """minSR inside optax.chain with clipping and apply_if_finite receives the extra arguments."""
    o, e, ids = _synthetic(13, (6, 6), 33)
    o = o[:, :P]
    weights = jnp.asarray([0.5, 0.5])
    tx = optax.apply_if_finite(optax.chain(natgrad.minsr(0.1, 1e-3), optax.clip_by_global_norm(1e9)), 3)
    state = tx.init(PARAMS)
    assert natgrad.uses_scores(state) and not natgrad.uses_scores(optax.adam(1e-3).init(PARAMS))
    g = jax.tree.map(jnp.ones_like, PARAMS)
    chained, _ = jax.jit(tx.update)(g, state, PARAMS, scores=o, local_energies=e, context_ids=ids,
                                    context_weights=weights)
    alone, _ = natgrad.minsr(0.1, 1e-3).update(g, natgrad.minsr(0.1, 1e-3).init(PARAMS), PARAMS, scores=o,
                                              local_energies=e, context_ids=ids, context_weights=weights)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), chained, alone)
    plain, _ = optax.chain(optax.sgd(0.1)).update(g, optax.chain(optax.sgd(0.1)).init(PARAMS), PARAMS)
    wrapped, _ = optax.with_extra_args_support(optax.sgd(0.1)).update(
        g, optax.sgd(0.1).init(PARAMS), PARAMS, scores=o, local_energies=e, context_ids=ids)
    jax.tree.map(np.testing.assert_array_equal, plain, wrapped)




def test_max_norm_following_a_learning_rate_schedule():
    """The cap is max_norm · (lr(t)/peak)²: the rule the drivers and benchmarks share."""
    lr = optax.warmup_cosine_decay_schedule(0.005, 0.05, 10, 100, end_value=0.005)
    cap = natgrad.max_norm_following(lr, 0.05, 1e-2)
    for count in (0, 10, 55, 100):
        np.testing.assert_allclose(float(cap(count)), 1e-2 * (float(lr(count)) / 0.05) ** 2, rtol=1e-6)
    np.testing.assert_allclose(float(cap(10)), 1e-2, rtol=1e-6)  # at the peak the cap is max_norm
    for bad in (dict(learning_rate=0.05, peak=0.05, max_norm=1e-2), dict(learning_rate=lr, peak=0.0, max_norm=1e-2),
                dict(learning_rate=lr, peak=0.05, max_norm=float('nan'))):
        with pytest.raises(ValueError, match='max_norm_following'):
            natgrad.max_norm_following(**bad)
