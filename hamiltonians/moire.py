"""Electrons in one layer of a moiré heterobilayer: moiré potential, Ewald Coulomb, meV and nm."""

import dataclasses
import functools
import math
import types
from typing import ClassVar, Dict, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hamiltonians import lattice as lat
from hamiltonians.ewald import EwaldSum
from hamiltonians.context import Context
from hamiltonians.system import describe_parameters, parameter_label
from samplers.types import Array, ContextValues, PRNGKey

HBAR2_OVER_2ME = 38.0998212  # ħ²/(2 m_e) in meV·nm² (CODATA 2018: 0.0380998212 eV nm²)
COULOMB_CONSTANT = 1439.964548  # e²/(4π ε0) in meV·nm (CODATA 2018: 1.439964548 eV nm)


class MoireSpectrum(NamedTuple):
    """Single-particle eigenstates at the supercell Γ point in a real plane-wave basis.

    Orbital ``k`` is ``φ_k(r) = Σ_m coefficients[m, k] · basis.norms[m] · cos(G_m · r − δ_m)``
    (orthonormal over the supercell), with ``basis`` a ``lattice.RealPlaneWaves``.

    Attributes:
      energies: ``[S]`` eigenvalues in meV, ascending (S ≤ M states kept).
      coefficients: ``[M, S]`` real orthonormal eigenvectors (columns) in the basis.
      basis: the real plane waves (``gvecs`` in nm⁻¹).
      lattice: ``[2, 2]`` supercell vectors (rows) in nm.
    """
    energies: np.ndarray
    coefficients: np.ndarray
    basis: lat.RealPlaneWaves
    lattice: np.ndarray


@functools.lru_cache(maxsize=64)
def _ewald(lattice: tuple, n_electrons: int, precision: float) -> EwaldSum:
    return EwaldSum(np.array(lattice).reshape(2, 2), n_electrons, precision)


@dataclasses.dataclass(frozen=True)
class MoireSystem:
    """``H = Σ_i [−ħ²/(2m*) ∇_i² + V(r_i)] + (e²/ε) Σ_{i<j} 1/|r_i − r_j|`` in a periodic supercell.

    ``V(r) = −2 λ V0 Σ_{j=1..3} cos(g_j · r + φ)`` with ``|g_j| = 4π/(√3 a_M)``. The moiré
    lattice is ``a1 = a_M (1, 0)``, ``a2 = a_M (1/2, √3/2)`` and the ``g_j`` are its
    reciprocal vectors at 90°, 210° and 330°: DESIGN.md's ``g_j`` (at 0°, 120°, 240°)
    rotated rigidly by 90°, which changes no energy. The Coulomb sum runs over all
    periodic images by Ewald summation with a uniform neutralizing background (see
    ``EwaldSum``). Energies in meV, lengths in nm; the network sees positions in units
    of ``a_M``. Context parameter (described in ``parameters``): ``lam`` is the **moiré depth**
    λ ≥ 0, the dimensionless factor of the moiré potential ``V`` (depth ``λ V0``; λ = 0 is the
    free electron gas with Coulomb repulsion). The key ``lam`` is shared with ``QuantumDot``,
    where it is the Coulomb strength; here the Coulomb strength is fixed by ``epsilon``.

    ε is explicit: the earlier public study of this model used ε = 5 in its run script
    (ε = 10 elsewhere in that code); report which ε a result uses.

    Attributes:
      epsilon: dielectric constant ε (> 0).
      v0: moiré amplitude V0 in meV.
      phi: moiré phase φ.
      a_m: moiré period a_M in nm (> 0).
      m_star: effective mass in units of m_e (> 0).
      filling: ν, electrons per moiré cell; N/ν cells form the supercell.
      coulomb: False switches the electron–electron interaction off (tests and
        non-interacting references); it is an explicit flag, not ε = ∞.
      max_electrons: normalization of N in the context features.
      ewald_precision: relative precision of the Ewald sums.
    """

    epsilon: float = 5.0
    v0: float = 15.0
    phi: float = math.pi / 4
    a_m: float = 8.031
    m_star: float = 0.35
    filling: float = 2.0 / 3.0
    coulomb: bool = True
    max_electrons: int = 200
    ewald_precision: float = 1e-10
    ndim: int = 2
    periodic = True  # a class attribute, not a field
    parameters: ClassVar[Mapping[str, str]] = types.MappingProxyType({
        'lam': 'moiré depth λ (dimensionless factor of the moiré potential −2 λ V0 Σ_j cos(g_j·r + φ); '
               '0 = no moiré potential; ≥ 0)',
    })  # context parameter -> what it means (messages, labels: hamiltonians.system.parameter_label)
    param_names: ClassVar[Tuple[str, ...]] = tuple(parameters)

    def __post_init__(self):
        for name in ('epsilon', 'a_m', 'm_star', 'filling'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'MoireSystem.{name} must be a finite number > 0, got {value!r}.')
        if not math.isfinite(self.v0) or not math.isfinite(self.phi):
            raise ValueError(f'v0 and phi must be finite, got v0={self.v0}, phi={self.phi}.')
        lat.parse_filling(self.filling)

    # ----- units and lattice (numpy, static) -----

    @property
    def kinetic_scale(self) -> float:
        """``ħ²/m*`` in meV·nm²: the kinetic operator is ``kinetic_scale · (−½∇²)``."""
        return 2.0 * HBAR2_OVER_2ME / self.m_star

    @property
    def coulomb_strength(self) -> float:
        """``e²/ε`` in meV·nm (0 when ``coulomb=False``)."""
        return COULOMB_CONSTANT / self.epsilon if self.coulomb else 0.0

    def primitive_lattice(self) -> np.ndarray:
        """Moiré lattice vectors (rows) in nm, ``[2, 2]``."""
        return lat.triangular_lattice(self.a_m)

    def moire_vectors(self) -> np.ndarray:
        """The three ``g_j`` in nm⁻¹, ``[3, 2]``, at 210°, 330°, 90° (DESIGN.md's j = 1, 2, 3 turned
        by 90° to be reciprocal vectors of ``a1``, ``a2``); they sum to zero."""
        b1, b2 = lat.reciprocal_lattice(self.primitive_lattice())
        return np.stack([-b1 - b2, b1, b2])

    def num_cells(self, n_electrons: int) -> int:
        """Moiré cells in the supercell, ``N/ν``; raises ``ValueError`` naming nearby valid N."""
        return lat.cells_for_filling(n_electrons, self.filling)

    def supercell(self, n_electrons: int) -> np.ndarray:
        """The most compact commensurate supercell (rows, nm) holding ``N/ν`` moiré cells."""
        unit = lat.triangular_lattice(1.0)
        matrix = lat.best_supercell_matrix(unit, self.num_cells(n_electrons))
        return matrix @ self.primitive_lattice()

    def simulation_cell(self, n_electrons: int) -> np.ndarray:
        """The periodic cell of N electrons (``supercell``, rows in nm); ``hamiltonians.System``."""
        return np.asarray(self.supercell(n_electrons), np.float64)

    def network_lattice(self, n_electrons: int) -> np.ndarray:
        """Supercell vectors (rows) in units of ``a_M``, the network's length unit."""
        return self.supercell(n_electrons) / self.a_m

    def potential_minimum(self) -> np.ndarray:
        """Position (nm) of the minimum of V per moiré cell for λ > 0, ``[2]``.

        V is extremal at the three C3-symmetric points of the cell; for φ = π/4 the
        minimum sits at the origin.
        """
        a1, a2 = self.primitive_lattice()
        candidates = np.stack([0 * a1, (a1 + a2) / 3, 2 * (a1 + a2) / 3])
        values = [float(self.moire_potential(jnp.asarray(c[None]), 1.0)) for c in candidates]
        return candidates[int(np.argmin(values))]

    def ewald(self, n_electrons: int) -> EwaldSum:
        """The (cached) Ewald sum of N unit charges in this system's supercell (nm)."""
        cell = self.supercell(n_electrons)
        return _ewald(tuple(cell.ravel().tolist()), int(n_electrons), self.ewald_precision)

    # ----- contexts -----

    def context(self, n_up: int, n_down: int = 0, lam: float = 1.0) -> Context:
        """Builds and validates a context (spin-polarized by default, ``n_down = 0``)."""
        ctx = Context.make(n_up, n_down, lam=lam)
        self.validate(ctx)
        return ctx

    def validate(self, ctx: Context) -> None:
        """Raises ``ValueError`` unless the context fits this system (parameters, λ ≥ 0, N vs ν)."""
        names = {k for k, _ in ctx.params}
        if names != set(self.param_names):
            raise ValueError(f'A moiré context needs exactly the parameters {self.param_names} '
                             f'({describe_parameters(self)}), got {sorted(names)}; build it with '
                             'MoireSystem.context(...).')
        if ctx['lam'] < 0:
            raise ValueError(f'lam must be >= 0 ({parameter_label(self, "lam")}), got {ctx["lam"]}.')
        if ctx.n_electrons > self.max_electrons:
            raise ValueError(f'N = {ctx.n_electrons} exceeds max_electrons = {self.max_electrons}; '
                             f'construct MoireSystem(max_electrons=...) with a larger value.')
        self.num_cells(ctx.n_electrons)

    def validate_walkers(self, x, ctx: Context) -> None:
        """Raises ``ValueError`` if walkers ``[..., N, 2]`` do not match the context."""
        shape = np.shape(x)
        if len(shape) < 2 or shape[-2:] != (ctx.n_electrons, self.ndim):
            raise ValueError(f'Walkers must have shape [..., N={ctx.n_electrons}, D={self.ndim}] for '
                             f'{ctx.label()}, got {shape}.')

    # ----- pure functions of one walker x [N, 2] (nm) and traced context values -----

    def moire_potential(self, x: Array, lam: Array) -> Array:
        """``Σ_i V(r_i)`` in meV for positions ``x [N, 2]`` in nm."""
        phase = x @ jnp.asarray(self.moire_vectors(), x.dtype).T + self.phi  # [N, 3]
        return -2.0 * lam * self.v0 * jnp.sum(jnp.cos(phase))

    def potential_components(self, x: Array, values: ContextValues) -> Dict[str, Array]:
        """Potential energy of one walker in meV: ``{'moire': [], 'interaction': []}``.

        ``interaction`` is the Ewald energy per supercell (images and background included).
        """
        moire = self.moire_potential(x, values['lam'])
        if self.coulomb:
            interaction = self.coulomb_strength * self.ewald(x.shape[0]).energy(x)
        else:
            interaction = jnp.zeros_like(moire)
        return {'moire': moire, 'interaction': interaction}

    def context_features(self, values: ContextValues, n_up: int, n_down: int) -> Array:
        """Conditioning vector the network sees, ``[4]``: λ, λ/(1+λ), N/max_electrons, polarization."""
        lam = values['lam']
        n = n_up + n_down
        return jnp.stack([lam, lam / (1.0 + lam),
                          jnp.zeros_like(lam) + n / self.max_electrons,
                          jnp.zeros_like(lam) + (n_up - n_down) / max(n, 1)])

    def length_scale(self, values: ContextValues) -> Array:
        """The network's length unit, ``a_M`` (nm)."""
        return jnp.zeros_like(values['lam']) + self.a_m

    def coupling(self, values: ContextValues) -> Array:
        """``(e²/ε) a_M / (ħ²/m*)``: the 1/r strength next to ``−½∇²`` in units of ``a_M``."""
        return jnp.zeros_like(values['lam']) + self.coulomb_strength * self.a_m / self.kinetic_scale

    def init_walkers(self, rng_key: PRNGKey, ctx: Context, num_walkers: int) -> Array:
        """Walkers ``[W, N, 2]`` (nm): each electron on a distinct random potential minimum
        of the supercell (sites reused when ν > 1) plus Gaussian noise of width ``0.15 a_M``.
        """
        self.validate(ctx)
        if num_walkers <= 0:
            raise ValueError(f'num_walkers must be > 0, got {num_walkers}.')
        n = ctx.n_electrons
        sites = self._minimum_sites(n)
        sites = np.tile(sites, (int(np.ceil(n / len(sites))), 1))
        key_sites, key_noise = jax.random.split(rng_key)
        keys = jax.random.split(key_sites, num_walkers)
        choice = jax.vmap(lambda k: jax.random.permutation(k, len(sites))[:n])(keys)  # [W, N]
        noise = 0.15 * self.a_m * jax.random.normal(key_noise, (num_walkers, n, self.ndim))
        return jnp.asarray(sites)[choice] + noise

    def _minimum_sites(self, n_electrons: int) -> np.ndarray:
        """The ``N/ν`` potential minima inside the supercell, ``[N/ν, 2]`` (nm)."""
        cell = self.supercell(n_electrons)
        radius = float(np.sum(np.linalg.norm(cell, axis=1)))
        points = lat.lattice_points(self.primitive_lattice(), radius) + self.potential_minimum()
        frac = points @ np.linalg.inv(cell)
        inside = np.all((frac >= -1e-9) & (frac < 1 - 1e-9), axis=1)
        return points[inside]

    # ----- non-interacting reference -----

    def noninteracting_spectrum(self, n_electrons: int, lam: float, cutoff: float = 6.0,
                                num_states: int = None) -> MoireSpectrum:
        """One-electron spectrum of ``−ħ²/2m* ∇² + V`` in N's supercell at Γ (see ``band_spectrum``)."""
        return self.band_spectrum(self.supercell(n_electrons), lam, cutoff, num_states)

    def band_spectrum(self, cell: np.ndarray, lam: float, cutoff: float = 6.0,
                      num_states: int = None) -> MoireSpectrum:
        """Plane-wave diagonalization in any commensurate cell ``[2, 2]`` (nm) at its Γ point.

        The basis is real (``cos(G·r)``, ``sin(G·r)``, G in the supercell reciprocal
        lattice), so H is real symmetric and the eigenvectors are real. Its elements come
        from the complex plane-wave matrix
        ``⟨G|H|G'⟩ = ħ²|G|²/2m* δ_GG'
        − λ V0 Σ_j (e^{iφ} δ_{G−G', g_j} + e^{−iφ} δ_{G−G', −g_j})``.
        V only couples G to G ± g_j, so H is block diagonal over the moiré crystal momenta
        k = G mod (moiré reciprocal lattice); each real block holds the pair {k, −k}, and
        the blocks (size ≈ 2 × the plane waves per moiré cell) are diagonalized separately.
        The supercell-Γ spectrum is the moiré band structure on the supercell's k mesh.

        Args:
          cell: supercell vectors (rows) in nm, integer combinations of the moiré vectors.
          lam: moiré depth λ.
          cutoff: keeps plane waves with ``|G| ≤ cutoff · 4π/(√3 a_M)``. Eigenvalues at λ ≈ 1
            converge fast (1e-8 meV at 4); orbitals meant for a zero-variance local energy
            need more (typical local-energy residual ≈ 1e-3 meV at 4, 1e-6 at 6, 1e-9 at 8;
            larger near nodes). Raise it for large λ.
          num_states: keep the lowest this many states (all by default).
        """
        primitive = self.primitive_lattice()
        n_cells = abs(int(round(np.linalg.det(lat.commensurate_matrix(primitive, cell)))))
        basis = lat.real_plane_waves(cell, cutoff * 4 * math.pi / (math.sqrt(3) * self.a_m))
        recip = lat.reciprocal_lattice(cell)
        labels = np.round(basis.gvecs @ np.linalg.inv(recip)).astype(int)  # [M, 2] G in cell units
        width = 2 * int(np.max(np.abs(labels))) + 8
        encode = lambda l: (l[..., 0] + width // 2) * width + (l[..., 1] + width // 2)
        k_plus = np.mod(np.round(basis.gvecs @ np.linalg.inv(lat.reciprocal_lattice(primitive))
                                 * n_cells).astype(int), n_cells)  # k = G mod moiré lattice
        k_code = k_plus[:, 0] * n_cells + k_plus[:, 1]
        k_code = np.minimum(k_code, np.mod(-k_plus[:, 0], n_cells) * n_cells + np.mod(-k_plus[:, 1], n_cells))
        shifts = np.round(self.moire_vectors() @ np.linalg.inv(recip)).astype(int)  # [3, 2]
        coupling = -lam * self.v0 * np.exp(1j * self.phi)
        energies, vectors = [], []
        for block in np.unique(k_code):
            members = np.flatnonzero(k_code == block)
            # The complex plane waves |±G⟩ = e^{±iG·r}/√A spanned by this block's real functions.
            waves = np.unique(np.concatenate([labels[members], -labels[members]]), axis=0)
            codes = encode(waves)
            order = np.argsort(codes)
            codes = codes[order]

            def find(l):  # positions of labels l [K, 2] among the waves, -1 where absent
                pos = np.clip(np.searchsorted(codes, encode(l)), 0, len(codes) - 1)
                return np.where(codes[pos] == encode(l), order[pos], -1)

            gvecs = waves @ recip
            h = np.diag(0.5 * self.kinetic_scale * np.sum(gvecs**2, axis=1)).astype(complex)
            for shift in shifts:
                rows = np.arange(len(waves))
                cols = find(waves - shift)  # ⟨G|V|G − g_j⟩
                rows, cols = rows[cols >= 0], cols[cols >= 0]
                h[rows, cols] += coupling
                h[cols, rows] += np.conj(coupling)
            u = np.zeros((len(members), len(waves)), dtype=complex)  # real functions in |G⟩
            plus, minus = find(labels[members]), find(-labels[members])
            rows = np.arange(len(members))
            zero, cosine = plus == minus, (plus != minus) & (basis.phases[members] == 0.0)
            sine = (plus != minus) & ~cosine
            u[rows[zero], plus[zero]] = 1.0
            u[rows[cosine], plus[cosine]] = u[rows[cosine], minus[cosine]] = 1 / math.sqrt(2)
            u[rows[sine], plus[sine]], u[rows[sine], minus[sine]] = -1j / math.sqrt(2), 1j / math.sqrt(2)
            h_real = np.conj(u) @ h @ u.T
            if np.max(np.abs(h_real.imag)) > 1e-9 * max(1.0, np.max(np.abs(h_real.real))):
                raise RuntimeError('The plane-wave Hamiltonian is not real in the cos/sin basis.')
            e, v = np.linalg.eigh(h_real.real)
            energies.append(e)
            vectors.extend((members, v[:, i]) for i in range(len(e)))
        energies = np.concatenate(energies)
        order = np.argsort(energies, kind='stable')[:num_states]
        coefficients = np.zeros((len(basis.gvecs), len(order)))
        for column, state in enumerate(order):
            members, vector = vectors[state]
            coefficients[members, column] = vector
        return MoireSpectrum(energies[order], coefficients, basis, np.asarray(cell, dtype=np.float64))


def per_electron(components: Mapping[str, Array], n_electrons: int) -> Dict[str, Array]:
    """Energies per electron: every component (and their sum as ``'total'``) divided by N."""
    out = {k: v / n_electrons for k, v in components.items()}
    out['total'] = sum(components.values()) / n_electrons
    return out


def orbital_values(spectrum: MoireSpectrum, x: Array, num_orbitals: int) -> Array:
    """The lowest ``num_orbitals`` orbitals at positions ``x [N, 2]`` (nm), ``[N, num_orbitals]``."""
    basis = spectrum.basis
    raw = jnp.cos(x @ jnp.asarray(basis.gvecs, x.dtype).T - jnp.asarray(basis.phases, x.dtype))  # [N, M]
    coeffs = basis.norms[:, None] * spectrum.coefficients[:, :num_orbitals]
    return raw @ jnp.asarray(coeffs, x.dtype)
