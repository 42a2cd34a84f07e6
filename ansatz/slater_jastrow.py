"""Slater–Jastrow wavefunctions (optionally with neural backflow) and a Hartree–Fock-like single
determinant, all conditioned on the context features."""

import dataclasses
from typing import Optional

import haiku as hk
import jax.numpy as jnp

from ansatz import features
from ansatz.base import Wavefunction, from_haiku
from ansatz.jastrow import CuspJastrow, PairJastrow, spin_labels
from ansatz.layers import MLP
from ansatz.orbitals import OrbitalHead


@dataclasses.dataclass(frozen=True)
class SlaterJastrowConfig:
    """Sizes and switches of the Slater–Jastrow family.

    Attributes:
      hidden: width of the single-electron orbital MLP.
      num_layers: tanh layers of the orbital MLP.
      num_determinants: K (1 for a single Slater determinant).
      max_orbitals: largest number of electrons per spin channel one parameter set serves.
      jastrow: include the neural pair Jastrow ``exp(½ Σ_{i≠j} u_ij)``.
      jastrow_hidden: hidden width of the pair Jastrow MLP.
      backflow: shift the orbitals' positions by an equivariant pair-sum network.
      backflow_hidden: hidden width of the backflow MLP.
      num_kvecs: reciprocal ±G pairs in the periodic features (ignored for open geometry).
      conditioned: feed the context features to orbitals, Jastrow and backflow.
      cusp: include the exact electron–electron cusp factor.
    """
    hidden: int = 32
    num_layers: int = 2
    num_determinants: int = 1
    max_orbitals: int = 16
    jastrow: bool = True
    jastrow_hidden: int = 16
    backflow: bool = False
    backflow_hidden: int = 16
    num_kvecs: int = 3
    conditioned: bool = True
    cusp: bool = True

    def __post_init__(self):
        for name in ('hidden', 'num_layers', 'num_determinants', 'max_orbitals', 'jastrow_hidden',
                     'backflow_hidden', 'num_kvecs'):
            if getattr(self, name) <= 0:
                raise ValueError(f'SlaterJastrowConfig.{name} must be > 0, got {getattr(self, name)}.')


class Backflow(hk.Module):
    """Equivariant shifts ``Δx_i = Σ_{j≠i} η(f_ij, [σ_i = σ_j], c) d_ij`` ``[N, D]``, zero at init.

    ``d_ij`` is ``ansatz.features.pair_displacement`` (``x_i - x_j``, or its smooth
    periodic version), so the shifted positions move by a lattice vector exactly when an
    electron does, and every periodic feature of them stays periodic.
    """

    def __init__(self, hidden: int, num_kvecs: int, name: Optional[str] = None):
        super().__init__(name=name)
        self.hidden, self.num_kvecs = hidden, num_kvecs

    def __call__(self, x, cond, spins, lattice):
        n = x.shape[0]
        spin = spin_labels(spins)
        same = jnp.asarray(spin[:, None] == spin[None, :], x.dtype)[..., None]
        inputs = [features.pair_features(x, lattice, self.num_kvecs), same]
        if cond is not None:
            inputs.append(jnp.broadcast_to(cond, (n, n, cond.shape[-1])))
        eta = MLP([self.hidden, 1], final_w_init=jnp.zeros, name='eta')(jnp.concatenate(inputs, -1))[..., 0]
        eta = eta * (1.0 - jnp.eye(n, dtype=x.dtype))  # [N, N]
        return jnp.einsum('ij,ijd->id', eta, features.pair_displacement(x, lattice))


class SlaterJastrow(hk.Module):
    """Haiku module for one walker; see ``make_slater_jastrow`` for the wrapper.

    ``ψ = Σ_k w_k det[φ^k_j(y_i)] · exp(J) · cusp`` with one-electron orbitals
    ``φ(y_i) = (MLP(features(y_i), σ_i, c))·envelope(y_i)`` at positions ``y = x`` (or
    ``x + Δx`` with backflow).
    """

    def __init__(self, config: SlaterJastrowConfig, lattice: features.LatticeSpec = None,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.config = config
        self.lattice = lattice

    def __call__(self, x, cond, spins, coupling):
        cfg = self.config
        n_up, n_down = spins
        n = n_up + n_down
        lattice = features.resolve_lattice(self.lattice, n, x.shape[-1])
        cond = cond if cfg.conditioned else None

        y = x
        if cfg.backflow:
            y = x + Backflow(cfg.backflow_hidden, cfg.num_kvecs, name='backflow')(x, cond, spins, lattice)
        spin = jnp.asarray([1.0] * n_up + [-1.0] * n_down, x.dtype)[:, None]  # [N, 1]
        inputs = [features.electron_features(y, lattice, cfg.num_kvecs), spin]
        if cond is not None:
            inputs.append(jnp.broadcast_to(cond, (n, cond.shape[-1])))
        h = jnp.tanh(MLP([cfg.hidden] * cfg.num_layers, name='orbital_mlp')(jnp.concatenate(inputs, -1)))
        sign, logabs = OrbitalHead(cfg.num_determinants, cfg.max_orbitals, name='orbitals')(h, y, spins, lattice)

        if cfg.jastrow and n > 1:
            pair = features.pair_features(x, lattice, cfg.num_kvecs)
            logabs = logabs + PairJastrow(cfg.jastrow_hidden, name='pair_jastrow')(pair, spins, cond)
        if cfg.cusp:
            logabs = logabs + CuspJastrow(name='cusp_jastrow')(x, spins, coupling, lattice)
        return sign, logabs


def make_slater_jastrow(config: SlaterJastrowConfig = SlaterJastrowConfig(),
                        lattice: features.LatticeSpec = None) -> Wavefunction:
    """Slater–Jastrow (backflow if ``config.backflow``) as a pure ``Wavefunction``.

    ``lattice`` as in ``ansatz.qernel.make_qernel``.
    """
    def forward(x, cond, spins, coupling):
        return SlaterJastrow(config, lattice, name='slater_jastrow')(x, cond, spins, coupling)
    return from_haiku(forward, periodic=lattice is not None)


def make_backflow(config: SlaterJastrowConfig = SlaterJastrowConfig(),
                  lattice: features.LatticeSpec = None) -> Wavefunction:
    """Slater–Jastrow with neural backflow (``config`` with ``backflow=True``)."""
    return make_slater_jastrow(dataclasses.replace(config, backflow=True), lattice)


def make_single_determinant(config: SlaterJastrowConfig = SlaterJastrowConfig(),
                            lattice: features.LatticeSpec = None) -> Wavefunction:
    """Hartree–Fock-like baseline: one determinant of conditioned single-particle orbitals.

    No Jastrow, backflow or cusp: the orbitals (MLP of one electron's features and the
    context, times the envelope) are optimized variationally, so the best energy it can
    reach is the (unrestricted, spin-assigned) Hartree–Fock energy of each context.
    """
    config = dataclasses.replace(config, num_determinants=1, jastrow=False, backflow=False, cusp=False)
    return make_slater_jastrow(config, lattice)
