"""QERNEL: a conditional transformer wavefunction with grouped-query attention, a soft mixture of
experts and FiLM conditioning, for open (quantum dot) or periodic (moiré supercell) geometry."""

import dataclasses
from typing import Optional

import haiku as hk
import jax.numpy as jnp

from ansatz import features
from ansatz.base import Wavefunction, from_haiku
from ansatz.jastrow import CuspJastrow, spin_labels
from ansatz.layers import FiLM
from ansatz.orbitals import OrbitalHead
from ansatz.transformer import GroupedQueryAttention, MixtureOfExperts, RMSNorm, powertail


@dataclasses.dataclass(frozen=True)
class QernelConfig:
    """Sizes and switches of QERNEL.

    Attributes:
      width: per-electron stream width F (must be divisible by ``num_heads``).
      num_layers: transformer blocks.
      num_heads: query heads per block; head dimension is ``width // num_heads``.
      num_kv_heads: key/value heads (must divide ``num_heads``; equal counts = MHA).
      num_experts: routed experts per mixture-of-experts layer (≥ 1).
      expert_hidden: hidden width of each expert.
      num_shared_experts: always-on experts per mixture-of-experts layer (≥ 0).
      num_determinants: K.
      max_orbitals: largest number of electrons per spin channel one parameter set serves.
      pair_hidden: width of the pair embedding that biases every attention head.
      num_kvecs: reciprocal ±G pairs in the periodic features (ignored for open geometry).
      activation_exponent: tail exponent ``p`` of ``powertail`` (0 ≤ p ≤ 1).
      conditioned: FiLM from the context features after every block; ``False`` builds the
        same network without FiLM (for parameter-count comparisons).
      cusp: include the exact electron–electron cusp factor.
    """
    width: int = 64
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    num_experts: int = 4
    expert_hidden: int = 32
    num_shared_experts: int = 1
    num_determinants: int = 4
    max_orbitals: int = 16
    pair_hidden: int = 16
    num_kvecs: int = 3
    activation_exponent: float = 0.5
    conditioned: bool = True
    cusp: bool = True

    def __post_init__(self):
        for name in ('width', 'num_layers', 'num_heads', 'num_kv_heads', 'num_experts', 'expert_hidden',
                     'num_determinants', 'max_orbitals', 'pair_hidden', 'num_kvecs'):
            if getattr(self, name) <= 0:
                raise ValueError(f'QernelConfig.{name} must be > 0, got {getattr(self, name)}.')
        if self.num_shared_experts < 0:
            raise ValueError(f'QernelConfig.num_shared_experts must be >= 0, got {self.num_shared_experts}.')
        if self.width % self.num_heads:
            raise ValueError(f'QernelConfig.width={self.width} must be divisible by num_heads={self.num_heads} '
                             '(head dimension = width // num_heads).')
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f'QernelConfig.num_heads={self.num_heads} must be divisible by '
                             f'num_kv_heads={self.num_kv_heads}.')
        if not 0.0 <= self.activation_exponent <= 1.0:
            raise ValueError(f'QernelConfig.activation_exponent must be in [0, 1], got {self.activation_exponent}.')


class Qernel(hk.Module):
    """Haiku module for one walker; see ``make_qernel`` for the pure-function wrapper."""

    def __init__(self, config: QernelConfig, lattice: features.LatticeSpec = None, name: Optional[str] = None):
        super().__init__(name=name)
        self.config = config
        self.lattice = lattice

    def __call__(self, x, cond, spins, coupling):
        cfg = self.config
        lattice = features.resolve_lattice(self.lattice, sum(spins), x.shape[-1])
        act = lambda z: powertail(z, cfg.activation_exponent)

        # Per-electron streams: features plus a learned spin embedding.
        h = hk.Linear(cfg.width, name='embed')(features.electron_features(x, lattice, cfg.num_kvecs))
        h = h + hk.Embed(2, cfg.width, name='spin_embed')(spin_labels(spins))  # [N, F]
        pair = act(hk.Linear(cfg.pair_hidden, name='pair_embed')(
            features.pair_features(x, lattice, cfg.num_kvecs)))  # [N, N, P]

        for layer in range(cfg.num_layers):
            bias = jnp.moveaxis(hk.Linear(cfg.num_heads, name=f'pair_bias_{layer}')(pair), -1, 0)  # [H, N, N]
            attention = GroupedQueryAttention(cfg.num_heads, cfg.num_kv_heads, cfg.width // cfg.num_heads,
                                              name=f'attention_{layer}')
            h = h + attention(RMSNorm(name=f'norm_attention_{layer}')(h), bias)
            moe = MixtureOfExperts(cfg.num_experts, cfg.expert_hidden, cfg.num_shared_experts,
                                   activation=act, name=f'moe_{layer}')
            h = h + moe(RMSNorm(name=f'norm_moe_{layer}')(h))
            if cfg.conditioned:
                h = FiLM(name=f'film_{layer}')(h, cond)

        h = RMSNorm(name='norm_final')(h)
        sign, logabs = OrbitalHead(cfg.num_determinants, cfg.max_orbitals, name='orbitals')(h, x, spins, lattice)
        if cfg.cusp:
            logabs = logabs + CuspJastrow(name='cusp_jastrow')(x, spins, coupling, lattice)
        return sign, logabs


def make_qernel(config: QernelConfig = QernelConfig(), lattice: features.LatticeSpec = None) -> Wavefunction:
    """QERNEL as a pure ``Wavefunction`` (see ``ansatz.base``).

    Args:
      config: ``QernelConfig``.
      lattice: ``None`` for open geometry (Gaussian envelopes, e.g. the quantum dot), or
        ``callable(n_electrons) -> [D, D]`` (rows = supercell lattice vectors in the network's
        length unit) for periodic systems: every feature, envelope and the cusp are then
        exactly periodic in each electron.
    """
    def forward(x, cond, spins, coupling):
        return Qernel(config, lattice, name='qernel')(x, cond, spins, coupling)
    return from_haiku(forward, periodic=lattice is not None)
