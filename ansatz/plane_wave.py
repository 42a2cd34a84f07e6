"""Slater determinants of fixed real periodic orbitals: free-electron plane waves and moiré band orbitals.

These are reference ansätze without trainable parameters for periodic systems (the moiré
heterobilayer): each is an exact eigenstate of the corresponding non-interacting
Hamiltonian when the occupied orbitals fill closed shells, so its local energy is constant.
"""

import functools
from typing import Tuple

import jax.numpy as jnp
import numpy as np

from ansatz.base import Wavefunction, from_haiku, slogdet_blocks
from hamiltonians import lattice as lat


def make_periodic_slater(gvecs: np.ndarray, phases: np.ndarray, coefficients: np.ndarray,
                         prune: float = 1e-13) -> Wavefunction:
    """Determinants (one per spin) of orbitals ``φ_k(r) = Σ_m C[m, k] cos(G_m · r − δ_m)``.

    Spin-up electrons occupy orbitals ``0 .. n_up − 1``, spin-down ones ``0 .. n_down − 1``.

    Args:
      gvecs: ``[M, 2]`` reciprocal vectors in the inverse of the network's length unit
        (the wavefunction sees ``x`` in that unit, e.g. ``x/a_M``).
      phases: ``[M]`` 0 for cosines, π/2 for sines.
      coefficients: ``[M, S]`` real orbital coefficients of the raw functions.
      prune: basis functions whose coefficients in every occupied orbital are below
        ``prune × max|C|`` are dropped (at trace time) to save work.

    Returns:
      A ``Wavefunction`` whose ``init`` returns empty parameters.
    """
    gvecs = np.asarray(gvecs, dtype=np.float64)
    phases = np.asarray(phases, dtype=np.float64)
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if gvecs.ndim != 2 or gvecs.shape[1] != 2 or phases.shape != gvecs.shape[:1]:
        raise ValueError(f'gvecs must be [M, 2] and phases [M], got {gvecs.shape} and {phases.shape}.')
    if coefficients.ndim != 2 or coefficients.shape[0] != gvecs.shape[0]:
        raise ValueError(f'coefficients must be [M={gvecs.shape[0]}, S], got {coefficients.shape}.')
    num_orbitals = coefficients.shape[1]

    def forward(x, cond, spins, coupling):
        del cond, coupling
        n_up, n_down = spins
        if max(spins) > num_orbitals:
            raise ValueError(f'{max(spins)} electrons of one spin need as many orbitals; only '
                             f'{num_orbitals} were given.')
        used = coefficients[:, :max(spins)]
        keep = np.max(np.abs(used), axis=1) >= prune * np.max(np.abs(used))
        used = used[keep]
        basis = jnp.cos(x @ jnp.asarray(gvecs[keep], x.dtype).T - jnp.asarray(phases[keep], x.dtype))  # [N, M]
        orbitals = basis @ jnp.asarray(used, x.dtype)  # [N, max(spins)]
        return slogdet_blocks([orbitals[:n_up, :n_up], orbitals[n_up:, :n_down]])

    return from_haiku(forward, periodic=True)


@functools.lru_cache(maxsize=32)
def _plane_waves(lattice: Tuple[float, ...], count: int) -> lat.RealPlaneWaves:
    cell = np.array(lattice).reshape(2, 2)
    recip = lat.reciprocal_lattice(cell)
    g_max = 1.2 * np.sqrt(count * lat.cell_area(recip) / np.pi) + np.max(np.linalg.norm(recip, axis=1))
    return lat.real_plane_waves(cell, g_max)


def make_plane_wave_slater(lattice: np.ndarray, max_electrons: int = 200,
                           allow_open_shell: bool = False) -> Wavefunction:
    """Free-electron determinant: the lowest real plane waves ``1, cos(G·r), sin(G·r), …``.

    Exact for ``λ = 0`` without interaction when each spin fills closed ``|G|`` shells
    (N = 1, 7, 13, 19, 31, … per spin for a triangular supercell); then the local energy
    is ``Σ ħ²|G|²/2m*``.

    Args:
      lattice: ``[2, 2]`` supercell vectors (rows) in the network's length unit, e.g.
        ``MoireSystem.network_lattice(N)``.
      max_electrons: the most electrons of one spin the wavefunction will be asked for.
      allow_open_shell: if False (default), a spin count that does not close a shell raises
        ``ValueError``; if True, an open shell is filled in the basis order (a valid but
        symmetry-breaking choice).
    """
    lattice = np.asarray(lattice, dtype=np.float64)
    basis = _plane_waves(tuple(lattice.ravel().tolist()), int(max_electrons))
    closed = set(int(s) for s in basis.shells)
    base = make_periodic_slater(basis.gvecs, basis.phases, np.eye(len(basis.gvecs))[:, :max_electrons])

    def check(spins):
        bad = [n for n in spins if n not in closed]
        if bad and not allow_open_shell:
            valid = sorted(c for c in closed if 0 < c <= max(spins) + 12)
            raise ValueError(f'{bad[0]} electrons of one spin leave a plane-wave shell open; closed shells '
                             f'of this cell hold {valid}. Pass allow_open_shell=True to fill it anyway.')

    def init(rng_key, x, cond, spins, coupling=0.0):
        check(spins)
        return base.init(rng_key, x, cond, spins, coupling)

    def apply(params, x, cond, spins, coupling=0.0):
        check(spins)
        return base.apply(params, x, cond, spins, coupling)

    return Wavefunction(init, apply, periodic=True)


def make_band_slater(spectrum, length_unit: float) -> Wavefunction:
    """Determinant of the lowest eigen-orbitals of ``MoireSystem.noninteracting_spectrum``.

    Exact for the non-interacting Hamiltonian at the spectrum's λ when the occupied
    levels per spin are closed (degenerate levels filled completely; e.g. 1, 7, 9 in the
    3 × 3 supercell at λ = 1); its local energy is then the sum of those eigenvalues, up to
    the plane-wave truncation.

    Args:
      spectrum: a ``hamiltonians.moire.MoireSpectrum`` (lengths in nm).
      length_unit: the network's length unit in the spectrum's units (``a_M`` for
        ``MoireSystem``), since the wavefunction sees ``x / length_unit``.
    """
    basis = spectrum.basis
    coefficients = basis.norms[:, None] * spectrum.coefficients
    return make_periodic_slater(basis.gvecs * length_unit, basis.phases, coefficients)
