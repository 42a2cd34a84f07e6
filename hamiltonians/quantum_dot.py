"""The 2D harmonic quantum dot: N electrons in the trap ½ ω² r² with Coulomb strength λ."""

import dataclasses
import types
from typing import ClassVar, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hamiltonians.context import Context
from hamiltonians.padding import ACTIVE, active_counts
from hamiltonians.system import describe_parameters, parameter_label
from samplers.types import Array, ContextValues, PRNGKey


def pairwise_distances(x: Array) -> Array:
    """Distances ``|r_i - r_j|`` as ``[N, N]`` with zeros on the diagonal, NaN-free gradients."""
    n = x.shape[0]
    diff = x[:, None, :] - x[None, :, :]  # [N, N, D]
    eye = jnp.eye(n, dtype=x.dtype)
    r = jnp.sqrt(jnp.sum(diff**2, axis=-1) + eye)  # +1 on the diagonal keeps sqrt smooth
    return r * (1.0 - eye)


@dataclasses.dataclass(frozen=True)
class QuantumDot:
    """Hamiltonian family ``H = Σ_i [-½∇_i² + ½ ω² r_i²] + λ Σ_{i<j} 1/|r_i - r_j|``.

    Hartree atomic units. The trap convention is ``½ ω² r²`` (ω is the oscillator
    frequency, so non-interacting shell ``n`` has energy ``(n + 1) ω``). With lengths
    in units of ``1/√ω`` one has ``H(N, ω, λ) = ω H(N, 1, λ/√ω)``.

    Context parameters (dynamic, traced; described in ``parameters``): ``lam`` is the
    **Coulomb strength** λ ≥ 0, the prefactor of ``Σ 1/r_ij`` (λ = 1 is the bare Coulomb
    interaction of atomic units; the network sees λ/√ω), and ``omega`` the trap frequency ω > 0.
    The key ``lam`` is shared with ``MoireSystem``, where it is the moiré depth.
    The spin sector ``(n_up, n_down)`` is the static part of each context; the
    published Large-Electron-Model numbers are for the polarized sector ``n_down = 0``.

    Attributes:
      max_electrons: largest N the conditional features are normalized for; contexts
        with more electrons are rejected (raise it if you train larger dots).
      default_omega: ω used when a context does not set it.
    """

    max_electrons: int = 30
    default_omega: float = 1.0
    ndim: int = 2
    periodic: ClassVar[bool] = False
    kinetic_scale: ClassVar[float] = 1.0  # atomic units
    parameters: ClassVar[Mapping[str, str]] = types.MappingProxyType({
        'lam': 'Coulomb strength λ (prefactor of Σ_{i<j} 1/r_ij in Ha·bohr; 1 = bare Coulomb, 0 = '
               'non-interacting; ≥ 0)',
        'omega': 'trap frequency ω (of the trap ½ ω² r², in Ha; > 0)',
    })  # context parameter -> what it means (messages, labels: hamiltonians.system.parameter_label)
    param_names: ClassVar[Tuple[str, ...]] = tuple(parameters)

    def simulation_cell(self, n_electrons: int) -> None:
        """None: the dot is an open system."""
        return None

    def context(self, n_up: int, n_down: int = 0, lam: float = 0.0,
                omega: Optional[float] = None) -> Context:
        """Builds and validates a context of this family."""
        ctx = Context.make(n_up, n_down, lam=lam,
                           omega=self.default_omega if omega is None else omega)
        self.validate(ctx)
        return ctx

    def validate(self, ctx: Context) -> None:
        """Raises ``ValueError`` if a context does not describe a valid quantum dot."""
        names = {k for k, _ in ctx.params}
        if names != set(self.param_names):
            raise ValueError(f'A quantum-dot context needs exactly the parameters {self.param_names} '
                             f'({describe_parameters(self)}), got {sorted(names)}; build it with '
                             'QuantumDot.context(...).')
        if ctx['omega'] <= 0:
            raise ValueError(f'omega must be > 0 ({parameter_label(self, "omega")}), got {ctx["omega"]}.')
        if ctx['lam'] < 0:
            raise ValueError(f'lam must be >= 0 ({parameter_label(self, "lam")}), got {ctx["lam"]}.')
        if ctx.n_electrons > self.max_electrons:
            raise ValueError(f'N = {ctx.n_electrons} exceeds max_electrons = {self.max_electrons}; '
                             f'construct QuantumDot(max_electrons=...) with a larger value.')

    def validate_walkers(self, x, ctx: Context) -> None:
        """Raises ``ValueError`` if walkers ``[..., N, 2]`` do not match the context."""
        shape = np.shape(x)
        if len(shape) < 2 or shape[-2:] != (ctx.n_electrons, self.ndim):
            raise ValueError(f'Walkers must have shape [..., N={ctx.n_electrons}, D={self.ndim}] for '
                             f'{ctx.label()}, got {shape}.')

    # ----- pure functions of one walker x [N, 2] and traced context values -----

    supports_padding: ClassVar[bool] = True  # values may carry the mask of hamiltonians.padding

    def potential_components(self, x: Array, values: ContextValues) -> Dict[str, Array]:
        """Potential energy components of one walker: ``{'trap': [], 'interaction': []}``.

        With a padding mask in ``values`` (``hamiltonians.padding``) the padding rows take part
        in no interaction and ``'kinetic_correction'`` removes their oscillator energy ω."""
        omega, lam = values['omega'], values['lam']
        r = pairwise_distances(x)
        n = x.shape[0]
        iu = jnp.triu_indices(n, k=1)
        mask = values.get(ACTIVE)
        if mask is None:
            trap = 0.5 * omega**2 * jnp.sum(x**2)
            interaction = lam * jnp.sum(1.0 / r[iu]) if n > 1 else jnp.zeros((), x.dtype)
            return {'trap': trap, 'interaction': interaction}
        mask = mask.astype(x.dtype)
        trap_each = 0.5 * omega**2 * jnp.sum(x**2, axis=-1)  # [N]
        interaction = jnp.zeros((), x.dtype)
        if n > 1:
            pair = (mask[:, None] * mask[None, :])[iu]
            interaction = lam * jnp.sum(pair / jnp.where(pair > 0.5, r[iu], 1.0))
        padding = 1.0 - mask
        return {'trap': jnp.sum(mask * trap_each), 'interaction': interaction,
                'kinetic_correction': jnp.sum(padding * trap_each) - omega * jnp.sum(padding)}

    def context_features(self, values: ContextValues, n_up: int, n_down: int) -> Array:
        """Conditioning vector the network sees, ``[6]``.

        λ enters through three smooth maps (covering 0 ≤ λ ≤ 10 and beyond), ω through
        its logarithm, and the particle content through N and the polarization, both
        normalized by ``max_electrons``.
        """
        lam, omega = values['lam'], values['omega']
        n_up, n_down = active_counts(values, n_up, n_down)  # the electrons of a padded content
        n = n_up + n_down
        lam_eff = lam / jnp.sqrt(omega)  # the dimensionless coupling
        return jnp.stack([
            lam_eff / 10.0,
            jnp.log1p(lam_eff) / jnp.log(11.0),
            lam_eff / (1.0 + lam_eff),
            jnp.log(omega),
            jnp.zeros_like(lam_eff) + n / self.max_electrons,
            jnp.zeros_like(lam_eff) + (n_up - n_down) / (max(n, 1) if isinstance(n, int) else jnp.maximum(n, 1)),
        ])

    def length_scale(self, values: ContextValues) -> Array:
        """Oscillator length ``1/√ω``."""
        return 1.0 / jnp.sqrt(values['omega'])

    def coupling(self, values: ContextValues) -> Array:
        """Strength of ``1/r`` in the network's length unit (``λ/√ω``); fixes the exact cusp."""
        return values['lam'] * self.length_scale(values)

    def init_walkers(self, rng_key: PRNGKey, ctx: Context, num_walkers: int) -> Array:
        """Initial walkers ``[W, N, 2]``: Gaussian around the trap centre with a width
        set by the oscillator length and, for strong λ, the classical Wigner-molecule size.
        """
        self.validate(ctx)
        if num_walkers <= 0:
            raise ValueError(f'num_walkers must be > 0, got {num_walkers}.')
        width = 1.0 + 0.25 * np.sqrt(ctx['lam'] * max(ctx.n_electrons - 1, 0) / np.sqrt(ctx['omega']))
        width /= np.sqrt(ctx['omega'])
        return width * jax.random.normal(rng_key, (num_walkers, ctx.n_electrons, self.ndim))

    def reference_noninteracting(self, ctx: Context) -> float:
        """Exact energy at λ = 0 for this context's (n_up, n_down, ω)."""
        return noninteracting_energy(ctx.n_up, ctx.n_down, ctx['omega'])


def noninteracting_energy(n_up: int, n_down: int, omega: float = 1.0) -> float:
    """Exact ground-state energy of non-interacting electrons in the trap ``½ ω² r²``.

    Shell ``n`` holds ``n + 1`` orbitals per spin at energy ``(n + 1) ω``; any filling of
    an open last shell has the same energy, so this is exact for open shells too.
    """
    energy = 0.0
    for count in (n_up, n_down):
        shell = 0
        while count > 0:
            filled = min(count, shell + 1)
            energy += filled * (shell + 1)
            count -= filled
            shell += 1
    return float(energy * omega)
