"""PsiFormer baseline: standard multi-head self-attention, tanh MLPs and LayerNorm with residuals,
FiLM-conditioned, with the same orbital head, envelopes, determinants and cusp as QERNEL."""

import dataclasses
from typing import Optional

import haiku as hk
import jax.numpy as jnp

from ansatz import features
from ansatz.base import Wavefunction, from_haiku
from ansatz.jastrow import CuspJastrow
from ansatz.layers import FiLM, MLP
from ansatz.orbitals import OrbitalHead


@dataclasses.dataclass(frozen=True)
class PsiFormerConfig:
    """Sizes and switches of the PsiFormer baseline.

    Attributes:
      width: per-electron stream width F (must be divisible by ``num_heads``).
      num_layers: transformer blocks.
      num_heads: attention heads; key size is ``width // num_heads``.
      mlp_hidden: hidden width of each block's tanh MLP.
      num_determinants: K.
      max_orbitals: largest number of electrons per spin channel one parameter set serves.
      num_kvecs: reciprocal ±G pairs in the periodic features (ignored for open geometry).
      conditioned: FiLM from the context features after every block.
      cusp: include the exact electron–electron cusp factor.
    """
    width: int = 64
    num_layers: int = 3
    num_heads: int = 4
    mlp_hidden: int = 64
    num_determinants: int = 4
    max_orbitals: int = 16
    num_kvecs: int = 3
    conditioned: bool = True
    cusp: bool = True

    def __post_init__(self):
        for name in ('width', 'num_layers', 'num_heads', 'mlp_hidden', 'num_determinants', 'max_orbitals',
                     'num_kvecs'):
            if getattr(self, name) <= 0:
                raise ValueError(f'PsiFormerConfig.{name} must be > 0, got {getattr(self, name)}.')
        if self.width % self.num_heads:
            raise ValueError(f'PsiFormerConfig.width={self.width} must be divisible by '
                             f'num_heads={self.num_heads}.')


class PsiFormer(hk.Module):
    """Haiku module for one walker; see ``make_psiformer`` for the pure-function wrapper.

    As in the original PsiFormer, attention sees one-electron features only (no pair
    bias); electron–electron correlation enters through attention and the cusp factor.
    """

    def __init__(self, config: PsiFormerConfig, lattice: features.LatticeSpec = None,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.config = config
        self.lattice = lattice

    def __call__(self, x, cond, spins, coupling):
        cfg = self.config
        n_up, n_down = spins
        lattice = features.resolve_lattice(self.lattice, n_up + n_down, x.shape[-1])
        spin = jnp.asarray([1.0] * n_up + [-1.0] * n_down, x.dtype)[:, None]  # [N, 1]
        inputs = jnp.concatenate([features.electron_features(x, lattice, cfg.num_kvecs), spin], axis=-1)
        h = hk.Linear(cfg.width, name='embed')(inputs)  # [N, F]

        for layer in range(cfg.num_layers):
            attention = hk.MultiHeadAttention(cfg.num_heads, cfg.width // cfg.num_heads,
                                              w_init=hk.initializers.VarianceScaling(1.0),
                                              model_size=cfg.width, name=f'attention_{layer}')
            z = hk.LayerNorm(-1, True, True, name=f'layer_norm_attention_{layer}')(h)
            h = h + attention(z, z, z)
            z = hk.LayerNorm(-1, True, True, name=f'layer_norm_mlp_{layer}')(h)
            h = h + jnp.tanh(MLP([cfg.mlp_hidden, cfg.width], name=f'mlp_{layer}')(z))
            if cfg.conditioned:
                h = FiLM(name=f'film_{layer}')(h, cond)

        h = hk.LayerNorm(-1, True, True, name='layer_norm_final')(h)
        sign, logabs = OrbitalHead(cfg.num_determinants, cfg.max_orbitals, name='orbitals')(h, x, spins, lattice)
        if cfg.cusp:
            logabs = logabs + CuspJastrow(name='cusp_jastrow')(x, spins, coupling, lattice)
        return sign, logabs


def make_psiformer(config: PsiFormerConfig = PsiFormerConfig(),
                   lattice: features.LatticeSpec = None) -> Wavefunction:
    """The PsiFormer baseline as a pure ``Wavefunction`` (``lattice`` as in ``make_qernel``)."""
    def forward(x, cond, spins, coupling):
        return PsiFormer(config, lattice, name='psiformer')(x, cond, spins, coupling)
    return from_haiku(forward, periodic=lattice is not None)
