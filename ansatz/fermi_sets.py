"""The conditional Fermi Sets wavefunction ``Ψ(R; Λ) = Σ_k ρ_k(ξ(R; Λ)) det M_k(R; Λ)``."""

import dataclasses
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from ansatz import harmonic_basis
from ansatz.base import Wavefunction, from_haiku, log_sum_determinants, slogdet_blocks
from ansatz.layers import FiLM, MLP, PairBiasedSelfAttention
from ansatz.jastrow import cusp_jastrow


@dataclasses.dataclass(frozen=True)
class FermiSetsConfig:
    """Sizes of the Fermi Sets network.

    Attributes:
      width: per-electron stream width F.
      num_layers: attention blocks in the equivariant network.
      num_heads: attention heads per block (``width`` must be divisible by it).
      num_determinants: K, the number of determinants and of coefficients ρ_k.
      hidden: width of the ρ, pooling and orbital-generator MLPs.
      cusp: include the exact electron–electron cusp factor (2D Kato conditions).
      open_shell_mixing: in a partly filled shell, each occupied orbital's polynomial prior is a
        learned, context-dependent combination of all orbitals of that shell (per determinant),
        so the network can choose the angular-momentum sector the interacting ground state
        needs (e.g. polarized N = 7 at λ = 8 wants ``|m| = 3``, not the filling order's ``|m| = 1``).
        The shell is degenerate, so λ = 0 stays exactly representable.
      open_shell_order: which members of a partly filled shell the polynomial priors start from
        (``harmonic_basis.OPEN_SHELL_ORDERS``): ``'filling'`` (``|m|`` ascending) or ``'high_m'``
        (``|m|`` descending). It changes no parameter shape: one parameter set can be evaluated in
        either sector and the lower energy kept (``qvmc.pretrained.PretrainedModel.estimate``).
    """
    width: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_determinants: int = 4
    hidden: int = 32
    cusp: bool = True
    open_shell_mixing: bool = True
    open_shell_order: str = 'filling'

    def __post_init__(self):
        for name in ('width', 'num_layers', 'num_heads', 'num_determinants', 'hidden'):
            if getattr(self, name) <= 0:
                raise ValueError(f'FermiSetsConfig.{name} must be > 0, got {getattr(self, name)}.')
        if self.open_shell_order not in harmonic_basis.OPEN_SHELL_ORDERS:
            raise ValueError(f'FermiSetsConfig.open_shell_order must be one of {harmonic_basis.OPEN_SHELL_ORDERS}, '
                             f'got {self.open_shell_order!r}.')
        if self.width % self.num_heads:
            raise ValueError(f'width={self.width} must be divisible by num_heads={self.num_heads}.')


def _electron_features(x):
    """Open-boundary features per electron ``[N, 4]``: position, smooth radius, r²."""
    r2 = jnp.sum(x**2, axis=-1, keepdims=True)
    return jnp.concatenate([x, jnp.sqrt(1.0 + r2) - 1.0, r2 / (1.0 + r2)], axis=-1)


def _pair_features(x):
    """Smooth pair features ``[N, N, 2]`` (no cusp: that is handled separately)."""
    d2 = jnp.sum((x[:, None, :] - x[None, :, :])**2, axis=-1, keepdims=True)
    return jnp.concatenate([jnp.log1p(d2), jnp.exp(-d2)], axis=-1)


def _mixer_inputs(cond) -> int:
    return 2 * harmonic_basis.label_features([]).shape[-1] + cond.shape[0] + 1


def _mix_open_shell(mixer, poly, xs, labels, cond, sigma):
    """Replace the open shell's polynomial priors by ``Σ_c B_k[j, c] p_c`` over the whole shell.

    ``B_k = 1 + W_k(label_j, label_c, Λ, σ)`` starts at the filling-order choice (``W`` is
    small and random, which breaks the symmetry between sectors). Returns ``(poly, mixed)``.
    """
    num_closed, shell = harmonic_basis.open_shell(len(labels))
    if not shell:
        return poly, False
    n_open, size = len(labels) - num_closed, len(shell)
    q_slot = jnp.asarray(harmonic_basis.label_features(labels[num_closed:]), poly.dtype)  # [n_open, 4]
    q_cand = jnp.asarray(harmonic_basis.label_features(shell), poly.dtype)  # [size, 4]
    pair_in = jnp.concatenate([
        jnp.broadcast_to(q_slot[:, None], (n_open, size, q_slot.shape[-1])),
        jnp.broadcast_to(q_cand[None], (n_open, size, q_cand.shape[-1])),
        jnp.broadcast_to(cond.astype(poly.dtype), (n_open, size, cond.shape[0])),
        jnp.full((n_open, size, 1), sigma, poly.dtype)], axis=-1)
    identity = jnp.asarray([[float(slot == cand) for cand in shell] for slot in labels[num_closed:]], poly.dtype)
    mixing = identity[..., None] + mixer(pair_in)  # [n_open, size, K]
    candidates = harmonic_basis.polynomial_part(xs, shell)  # [n_σ, size]
    open_poly = jnp.einsum('ic,jck->ijk', candidates, mixing)  # [n_σ, n_open, K]
    return jnp.concatenate([poly[:, :num_closed], open_poly], axis=1), True


def _padded_priors(mixer, xs, live, cond, sigma, k, order):
    """Label features ``[n_σ, 4]`` and polynomial priors ``[n_σ, n_σ, K]`` of a padded spin block.

    The occupied count ``c = Σ live`` is traced: static tables (``harmonic_basis.padded_orbitals``)
    give each slot its orbital and, in an open shell, the candidates it mixes, so every ``c`` up
    to the block size runs in one program. Slots ``j ≥ c`` hold placeholders that the caller
    replaces by an identity block. Equal to the unpadded ``_mix_open_shell`` path up to rounding.
    """
    size = xs.shape[0]
    tables = harmonic_basis.padded_orbitals(size, order)
    count = jnp.round(jnp.sum(live)).astype(jnp.int32)
    slot = jnp.asarray(tables.slot)[count]  # [n_σ]
    feats = jnp.asarray(harmonic_basis.label_features(tables.labels), xs.dtype)  # [A, 4]
    q = feats[slot]  # [n_σ, 4]
    weights = jax.nn.one_hot(slot, len(tables.labels), dtype=xs.dtype)[..., None]  # [n_σ, A, 1]
    if mixer is not None:
        num_cand = len(tables.labels)
        pair_in = jnp.concatenate([
            jnp.broadcast_to(q[:, None], (size, num_cand, 4)),
            jnp.broadcast_to(feats[None], (size, num_cand, 4)),
            jnp.broadcast_to(cond.astype(xs.dtype), (size, num_cand, cond.shape[0])),
            jnp.full((size, num_cand, 1), sigma, xs.dtype)], axis=-1)
        mixable = jnp.asarray(tables.mixable, xs.dtype)[count]  # [n_σ, A]
        weights = weights + mixable[..., None] * mixer(pair_in)  # [n_σ, A, K]
    else:
        weights = jnp.repeat(weights, k, axis=-1)
    candidates = harmonic_basis.polynomial_part(xs, tables.labels)  # [n_σ, A]
    return q, jnp.einsum('ia,jak->ijk', candidates, weights)


class FermiSets(hk.Module):
    """Haiku module for one walker; see ``make_fermi_sets`` for the pure-function wrapper."""

    def __init__(self, config: FermiSetsConfig, name: Optional[str] = None):
        super().__init__(name=name)
        self.config = config

    def __call__(self, x, cond, spins, coupling, mask=None):
        cfg = self.config
        n_up, n_down = spins
        spin = jnp.asarray([1.0] * n_up + [-1.0] * n_down, x.dtype)[:, None]  # [N, 1]
        if mask is not None:
            mask = mask.astype(x.dtype)  # [N], 1 = electron, 0 = padding row (hamiltonians.padding)
            keys = mask > 0.5

        # Permutation-equivariant attention network over electrons, FiLM-conditioned.
        h = hk.Linear(cfg.width, name='embed')(jnp.concatenate([_electron_features(x), spin], -1))
        h = FiLM(name='film_embed')(h, cond)  # [N, F]
        pair = _pair_features(x)  # [N, N, 2]
        for layer in range(cfg.num_layers):
            bias = jnp.moveaxis(MLP([cfg.hidden, cfg.num_heads], name=f'pair_bias_{layer}')(pair), -1, 0)
            attn = PairBiasedSelfAttention(cfg.num_heads, cfg.width // cfg.num_heads, name=f'attn_{layer}')
            h = h + attn(hk.LayerNorm(-1, True, True, name=f'ln_attn_{layer}')(h), bias,
                         key_mask=None if mask is None else keys)
            h = h + MLP([cfg.hidden, cfg.width], name=f'mlp_{layer}')(
                hk.LayerNorm(-1, True, True, name=f'ln_mlp_{layer}')(h))
            h = FiLM(name=f'film_{layer}')(h, cond)

        # Invariant ξ by mean pooling, then ρ_k(ξ, Λ) = exp(J(ξ, Λ)) · c_k(ξ, Λ).
        pooled = MLP([cfg.hidden, cfg.hidden], name='pool')(h)
        if mask is None:
            xi = jnp.mean(pooled, axis=0)  # [hidden]
        else:
            xi = jnp.sum(pooled * mask[:, None], axis=0) / jnp.sum(mask)
        rho_in = jnp.concatenate([jnp.tanh(xi), cond])
        coeffs = MLP([cfg.hidden, cfg.num_determinants], final_w_init=hk.initializers.VarianceScaling(0.01),
                     final_b_init=hk.initializers.Constant(1.0 / cfg.num_determinants), name='rho')(rho_in)
        log_jastrow = MLP([cfg.hidden, 1], final_w_init=jnp.zeros, name='log_rho_scale')(rho_in)[0]

        # K determinants of generated orbitals. Orbital j's weights come from its
        # oscillator quantum numbers, the spin channel and the context, never from a table.
        k = cfg.num_determinants
        generator = MLP([cfg.hidden, k * (2 * cfg.width + 1)], final_w_init=hk.initializers.VarianceScaling(0.01),
                        name='orbital_generator')  # shared by both spin channels (σ is an input)
        mixer = MLP([cfg.hidden, k], final_w_init=hk.initializers.VarianceScaling(0.01),
                    name='open_shell_mixer') if cfg.open_shell_mixing else None
        mixer_used = False
        blocks = []  # per spin: [K, n_σ, n_σ]
        for start, count, sigma in ((0, n_up, 1.0), (n_up, n_down, -1.0)):
            if count == 0:
                continue
            xs, hs = x[start:start + count], h[start:start + count]  # [n_σ, 2], [n_σ, F]
            if mask is None:
                labels = harmonic_basis.orbital_labels(count, cfg.open_shell_order)
                q = jnp.asarray(harmonic_basis.label_features(labels), x.dtype)  # [M, 4]
                poly = jnp.repeat(harmonic_basis.polynomial_part(xs, labels)[:, :, None], k, axis=-1)  # [n_σ, M, K]
                if mixer is not None:
                    poly, mixed = _mix_open_shell(mixer, poly, xs, labels, cond, sigma)
                    mixer_used = mixer_used or mixed
            else:
                q, poly = _padded_priors(mixer, xs, mask[start:start + count], cond, sigma, k, cfg.open_shell_order)
                mixer_used = mixer is not None
            gen_in = jnp.concatenate([q, jnp.broadcast_to(cond, (count, cond.shape[0])),
                                      jnp.full((count, 1), sigma, x.dtype)], axis=-1)
            gen = generator(gen_in).reshape(count, k, 2 * cfg.width + 1)
            w_mult, w_add, log_alpha = gen[..., :cfg.width], gen[..., cfg.width:-1], gen[..., -1]  # [M, K, ...]
            r2 = jnp.sum(xs**2, axis=-1)  # [n_σ]
            envelope = jnp.exp(-0.5 * jnp.exp(log_alpha)[None] * r2[:, None, None])  # [n_σ, M, K]
            mult = jnp.einsum('if,mkf->imk', hs, w_mult)
            add = jnp.einsum('if,mkf->imk', hs, w_add)
            phi = envelope * (poly * (1.0 + mult) + add)  # [n_σ, M, K]
            if mask is not None:  # padding rows and slots: an identity block, det unchanged
                live = mask[start:start + count] > 0.5
                eye = jnp.eye(count, dtype=phi.dtype)[:, :, None]
                phi = jnp.where(live[:, None, None] & live[None, :, None], phi, eye)
            blocks.append(jnp.moveaxis(phi, -1, 0))  # [K, n_σ(electron), M(orbital)]
        if mixer is not None and not mixer_used:
            mixer(jnp.zeros((0, _mixer_inputs(cond)), x.dtype))  # same parameters for every (n_up, n_down)
        signs, logdets = slogdet_blocks(blocks)  # [K]
        sign, logabs = log_sum_determinants(coeffs, signs * jnp.ones(cfg.num_determinants, logdets.dtype), logdets)

        logabs = logabs + log_jastrow
        if cfg.cusp:
            log_range = hk.get_parameter('cusp_log_range', (2,), x.dtype, init=jnp.zeros)
            logabs = logabs + cusp_jastrow(x, spins, coupling, log_range, mask=mask)  # open boundaries
        if mask is not None:  # padding rows: independent oscillator ground states exp(-|x|²/2)
            logabs = logabs - 0.5 * jnp.sum((1.0 - mask) * jnp.sum(x**2, axis=-1))
        return sign, logabs


def make_fermi_sets(config: FermiSetsConfig = FermiSetsConfig()) -> Wavefunction:
    """The conditional Fermi Sets wavefunction as a pure ``Wavefunction``.

    At initialization the orbitals are the oscillator eigenfunctions (so λ = 0 starts
    exact); one parameter set evaluates any ``(n_up, n_down)``. Maskable: with ``mask=[N]``
    the rows marked 0 are padding (``hamiltonians.padding``): left out of attention, pooling,
    determinants and cusp, and given the factor ``exp(-|x|²/2)`` (a non-interacting oscillator
    ground state of energy ω that ``QuantumDot`` removes), so one program serves every content
    up to ``spins``.
    """
    def forward(x, cond, spins, coupling, mask=None):
        return FermiSets(config, name='fermi_sets')(x, cond, spins, coupling, mask)
    return from_haiku(forward, maskable=True)
