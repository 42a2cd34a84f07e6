"""Published and exact reference energies (Hartree, ω = 1 unless stated) for the 2D quantum dot.

Keys are ``(n_up, n_down, lam, omega)``; values ``(energy, error or None, source)``.
"""

from typing import Dict, Optional, Tuple

from hamiltonians.quantum_dot import noninteracting_energy

_TAUT = 'two-electron singlet, numerically exact'
_GHOSAL = 'DMC, Ghosal et al. (2007), as quoted by the Large Electron Model study (polarized)'
_PEDERIVA = 'fixed-node DMC, Pederiva, Umrigar & Lipparini (2000) and later theses'

REFERENCES: Dict[Tuple[int, int, float, float], Tuple[float, Optional[float], str]] = {
    (1, 1, 1.0, 1.0): (3.0, 0.0, 'two-electron singlet, exact analytic (Taut)'),
    (1, 1, 2.0, 1.0): (3.720562319, 0.0, _TAUT),
    (1, 1, 5.0, 1.0): (5.332112118, 0.0, _TAUT),
    (1, 1, 8.0, 1.0): (6.618028756, 0.0, _TAUT),
    (1, 1, 10.0, 1.0): (7.383504078, 0.0, _TAUT),
    (2, 0, 1.0, 1.0): (3.596498882, 0.0, 'lowest two-electron triplet, numerically exact'),
    (3, 3, 1.0, 1.0): (20.1597, 0.0002, _PEDERIVA),
    (3, 3, 1.0, 0.5): (11.7848, 0.0001, _PEDERIVA),
    (3, 3, 1.0, 0.28): (7.6001, 0.0001, _PEDERIVA),
    (6, 6, 1.0, 1.0): (65.700, 0.001, _PEDERIVA),
    (6, 6, 1.0, 0.5): (39.159, 0.001, _PEDERIVA),
    (10, 10, 1.0, 1.0): (155.868, 0.006, _PEDERIVA),
    (10, 10, 1.0, 0.28): (61.922, 0.002, _PEDERIVA),
    (6, 0, 8.0, 1.0): (60.3924, None, _GHOSAL),
    (6, 0, 10.0, 1.0): (68.9458, None, _GHOSAL),
    (7, 0, 8.0, 1.0): (80.5146, None, _GHOSAL),
    (8, 0, 8.0, 1.0): (103.0464, None, _GHOSAL),
}

# The Large Electron Model's single conditional run at the same points (for comparison).
LEM_PUBLISHED = {(6, 0, 8.0, 1.0): 60.3748, (6, 0, 10.0, 1.0): 68.9584,
                 (7, 0, 8.0, 1.0): 80.5328, (8, 0, 8.0, 1.0): 103.065}


def reference(n_up: int, n_down: int, lam: float, omega: float = 1.0):
    """``(energy, error, source)`` for a context, or ``None`` if no reference is known.

    λ = 0 is always known exactly (filled oscillator shells).
    """
    if lam == 0.0:
        return noninteracting_energy(n_up, n_down, omega), 0.0, 'non-interacting, exact'
    return REFERENCES.get((n_up, n_down, float(lam), float(omega)))
