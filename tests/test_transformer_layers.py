"""Transformer layers against hand-written references: GQA, mixture of experts, FiLM, RMSNorm, powertail."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ansatz.transformer import FiLM, GroupedQueryAttention, MixtureOfExperts, RMSNorm, powertail


def _init_apply(fn, *args, perturb=0.0, seed=0):
    """Initializes a transformed ``fn``; optionally adds noise to every parameter (non-zero biases)."""
    transformed = hk.without_apply_rng(hk.transform(fn))
    params = transformed.init(jax.random.PRNGKey(seed), *args)
    if perturb:
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
        leaves = [p + perturb * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
        params = jax.tree.unflatten(tree, leaves)
    return params, transformed.apply(params, *args)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def _attention_by_hand(p, h, bias, num_heads, kv_of_head, head_dim):
    """Multi-head attention written out head by head with numpy."""
    h, bias = np.asarray(h), np.asarray(bias)
    q = h @ np.asarray(p['query']['w'])
    k = h @ np.asarray(p['key']['w'])
    v = h @ np.asarray(p['value']['w'])
    heads = []
    for a in range(num_heads):
        b = kv_of_head(a)
        qa = q[:, a * head_dim:(a + 1) * head_dim]
        kb, vb = k[:, b * head_dim:(b + 1) * head_dim], v[:, b * head_dim:(b + 1) * head_dim]
        weights = _softmax(qa @ kb.T / np.sqrt(head_dim) + bias[a])
        heads.append(weights @ vb)
    return np.concatenate(heads, axis=-1) @ np.asarray(p['out']['w']) + np.asarray(p['out']['b'])


@pytest.mark.parametrize('num_heads, num_kv_heads', [(3, 3), (4, 2), (4, 1)])
def test_grouped_query_attention_matches_hand_written_attention(num_heads, num_kv_heads):
    """Equal head counts give standard MHA; otherwise query head a reads key/value head a // group."""
    n, width, head_dim = 5, 6, 2
    h = jax.random.normal(jax.random.PRNGKey(0), (n, width))
    bias = jax.random.normal(jax.random.PRNGKey(1), (num_heads, n, n))
    params, out = _init_apply(lambda h, b: GroupedQueryAttention(num_heads, num_kv_heads, head_dim,
                                                                 name='gqa')(h, b), h, bias, perturb=0.1)
    p = {k.split('/')[-1]: v for k, v in params.items()}
    assert p['key']['w'].shape == (width, num_kv_heads * head_dim)
    group = num_heads // num_kv_heads
    expected = _attention_by_hand(p, h, bias, num_heads, lambda a: a // group, head_dim)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-12)


def test_grouped_query_attention_is_permutation_equivariant():
    """Permuting electrons (and the pair bias consistently) permutes the output rows."""
    n = 4
    h = jax.random.normal(jax.random.PRNGKey(2), (n, 4))
    bias = jax.random.normal(jax.random.PRNGKey(3), (2, n, n))
    fn = hk.without_apply_rng(hk.transform(lambda h, b: GroupedQueryAttention(2, 1, 3)(h, b)))
    params = fn.init(jax.random.PRNGKey(4), h, bias)
    perm = np.array([2, 0, 3, 1])
    out = fn.apply(params, h, bias)
    out_perm = fn.apply(params, h[perm], bias[:, perm][:, :, perm])
    np.testing.assert_allclose(np.asarray(out_perm), np.asarray(out)[perm], rtol=0, atol=1e-12)


def _mlp(h, w_in, b_in, w_out, b_out):
    return np.asarray(powertail(jnp.asarray(h @ w_in + b_in))) @ w_out + b_out


def test_single_expert_mixture_is_an_mlp():
    """One routed expert and no shared expert: the router weight is 1 and MoE is the expert's MLP."""
    h = jax.random.normal(jax.random.PRNGKey(5), (4, 6))
    params, out = _init_apply(lambda h: MixtureOfExperts(1, 5, num_shared=0, name='moe')(h), h, perturb=0.3)
    p = {k: np.asarray(v) for k, v in params['moe'].items()}
    expected = _mlp(np.asarray(h), p['w_in'][0], p['b_in'][0], p['w_out'][0], p['b_out'][0])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-12)


def test_mixture_of_experts_soft_router_and_shared_expert():
    """Three experts plus a shared one: ``y = Σ_e softmax(router)_e E_e(h) + S(h)`` by hand."""
    h = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (4, 6)))
    params, out = _init_apply(lambda h: MixtureOfExperts(3, 5, num_shared=1, name='moe')(h), h, perturb=0.3)
    p = {k: np.asarray(v) for k, v in params['moe'].items()}
    router = params['moe/router']
    probs = _softmax(h @ np.asarray(router['w']) + np.asarray(router['b']))  # [N, 3]
    experts = np.stack([_mlp(h, p['w_in'][e], p['b_in'][e], p['w_out'][e], p['b_out'][e]) for e in range(3)], 1)
    sin, sout = params['moe/shared_0_in'], params['moe/shared_0_out']
    shared = _mlp(h, np.asarray(sin['w']), np.asarray(sin['b']), np.asarray(sout['w']), np.asarray(sout['b']))
    expected = np.einsum('ie,ieo->io', probs, experts) + shared
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-12)


def test_mixture_router_is_uniform_at_init():
    """The router starts at zero: at init the routed part is the plain average of the experts."""
    params = hk.transform(lambda h: MixtureOfExperts(4, 3)(h)).init(jax.random.PRNGKey(7), jnp.ones((2, 5)))
    router = [v for k, v in params.items() if k.endswith('router')][0]
    assert not np.any(np.asarray(router['w'])) and not np.any(np.asarray(router['b']))


def test_film_is_identity_at_init():
    """FiLM's scale and shift start at zero, so a fresh FiLM returns its input for any context."""
    h = jax.random.normal(jax.random.PRNGKey(8), (5, 7))
    cond = jax.random.normal(jax.random.PRNGKey(9), (6,))
    _, out = _init_apply(lambda h, c: FiLM()(h, c), h, cond)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(h))


def test_rms_norm_formula():
    """``y = x / sqrt(mean(x²) + ε) · g`` over the last axis (with a non-trivial gain g)."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(10), (3, 8))) * 4.0
    params, out = _init_apply(lambda x: RMSNorm(eps=1e-6, name='norm')(x), x, perturb=0.5)
    gain = np.asarray(params['norm']['scale'])
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * gain
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-13, atol=0)
    _, fresh = _init_apply(lambda x: RMSNorm()(x), x)
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(fresh)**2, axis=-1)), 1.0, rtol=1e-6)


@pytest.mark.parametrize('exponent', [0.25, 0.5, 0.75])
def test_powertail_has_power_law_tail(exponent):
    """The log-log slope of |f| tends to p at large |x| (tanh's would tend to 0); f is odd and f'(0) = 1."""
    x = np.array([1e4, 1e5, 1e6, 1e7])
    f = np.asarray(powertail(jnp.asarray(x), exponent))
    slopes = np.diff(np.log(f)) / np.diff(np.log(x))
    np.testing.assert_allclose(slopes, exponent, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(powertail(-jnp.asarray(x), exponent)), -f, rtol=1e-15)
    assert float(jax.grad(powertail)(0.0, exponent)) == 1.0
    assert float(jnp.tanh(1e4)) == 1.0  # tanh saturates; the power tail keeps growing
    np.testing.assert_allclose(f[-1] / f[0], 1e3**exponent, rtol=1e-6)


@pytest.mark.parametrize('exponent', [0.0, 0.5, 1.0])
def test_powertail_fast_forms_equal_the_power(exponent):
    """The sqrt/rsqrt forms used for p = 0, 1/2, 1 are the power law to rounding, with the same derivatives."""
    x = jnp.linspace(-50.0, 50.0, 2001)
    general = lambda z: z * (1.0 + z**2) ** (0.5 * (exponent - 1.0))  # noqa: E731
    np.testing.assert_allclose(np.asarray(powertail(x, exponent)), np.asarray(general(x)), rtol=1e-14, atol=0)
    for f, g in ((jax.grad(powertail), jax.grad(general)),
                 (jax.grad(jax.grad(powertail)), jax.grad(jax.grad(general)))):
        np.testing.assert_allclose(np.asarray(jax.vmap(lambda z: f(z, exponent))(x)), np.asarray(jax.vmap(g)(x)),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('exponent', [0.0, 0.5, 0.75])
def test_powertail_forward_laplacian_matches_hessian(exponent):
    """folx's Laplacian through powertail (its registered elementwise rule for p = 0, 1/2; the
    primitives' rules otherwise) equals the trace of the autodiff Hessian of a small dense network."""
    import folx
    from folx.wrapped_functions import is_registered
    rng = np.random.default_rng(3)
    w1, b1, w2 = rng.normal(size=(5, 7)), rng.normal(size=7), rng.normal(size=7)
    f = lambda x: jnp.dot(powertail(x @ w1 + b1, exponent) ** 2, w2)  # noqa: E731
    x = jnp.asarray(rng.normal(size=5))
    names = {e.params.get('name') for e in jax.make_jaxpr(f)(x).jaxpr.eqns}
    registered = {0.0: 'qvmc_powertail_zero', 0.5: 'qvmc_powertail_half'}.get(exponent)
    assert registered is None or (registered in names and is_registered(registered))
    out = folx.forward_laplacian(f, sparsity_threshold=0)(x)
    np.testing.assert_allclose(float(out.laplacian), float(jnp.trace(jax.hessian(f)(x))), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.jacobian.dense_array).reshape(-1), np.asarray(jax.grad(f)(x)),
                               rtol=1e-12)


def test_powertail_is_smooth():
    """f, f', f'' from autodiff are finite and continuous: f'' matches finite differences of f'."""
    x = jnp.linspace(-6.0, 6.0, 1201)  # includes 0
    d1 = jax.vmap(jax.grad(powertail))(x)
    d2 = jax.vmap(jax.grad(jax.grad(powertail)))(x)
    d3 = jax.vmap(jax.grad(jax.grad(jax.grad(powertail))))(x)
    assert np.all(np.isfinite(np.asarray(d3)))
    step = float(x[1] - x[0])
    fd2 = (np.asarray(d1)[2:] - np.asarray(d1)[:-2]) / (2 * step)
    np.testing.assert_allclose(fd2, np.asarray(d2)[1:-1], rtol=0, atol=1e-4)
    assert np.max(np.abs(np.diff(np.asarray(d2)))) < 0.05  # no jumps in f''


def _construct(make_module):
    """Builds a Haiku module inside a transform (Haiku forbids construction outside one)."""
    hk.transform(lambda: make_module()).init(jax.random.PRNGKey(0))


def test_bad_layer_configs_raise_at_construction():
    """Heads not divisible, zero sizes or experts, negative shared experts and ε ≤ 0 are ValueErrors."""
    with pytest.raises(ValueError, match='divisible by num_kv_heads'):
        _construct(lambda: GroupedQueryAttention(4, 3, 8))
    with pytest.raises(ValueError, match='num_heads'):
        _construct(lambda: GroupedQueryAttention(0, 1, 8))
    with pytest.raises(ValueError, match='head_dim'):
        _construct(lambda: GroupedQueryAttention(2, 2, 0))
    with pytest.raises(ValueError, match='num_experts'):
        _construct(lambda: MixtureOfExperts(0, 8))
    with pytest.raises(ValueError, match='num_shared'):
        _construct(lambda: MixtureOfExperts(2, 8, num_shared=-1))
    with pytest.raises(ValueError, match='hidden'):
        _construct(lambda: MixtureOfExperts(2, 0))
    with pytest.raises(ValueError, match='eps'):
        _construct(lambda: RMSNorm(eps=0.0))
