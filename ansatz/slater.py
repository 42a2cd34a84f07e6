"""The exact non-interacting Slater determinant of the 2D harmonic dot (a reference ansatz).

It has no parameters to speak of and is exact at λ = 0: its local energy is constant and
equals ``Σ (n + 1) ω`` over occupied shells (the test of the kinetic and trap terms).
"""

import jax.numpy as jnp

from ansatz import harmonic_basis
from ansatz.base import Wavefunction, from_haiku, slogdet_blocks


def make_noninteracting_dot() -> Wavefunction:
    """Determinants of the lowest oscillator orbitals per spin (``x`` in units of ``1/√ω``)."""

    def forward(x, cond, spins, coupling):
        del cond, coupling
        n_up, n_down = spins
        blocks = []
        for start, count in ((0, n_up), (n_up, n_down)):
            labels = harmonic_basis.orbital_labels(count)
            blocks.append(harmonic_basis.eigenfunctions(x[start:start + count], labels))
        return slogdet_blocks(blocks)

    return from_haiku(forward)
