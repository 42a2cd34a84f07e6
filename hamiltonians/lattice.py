"""2D Bravais lattices: triangular moiré lattice, commensurate supercells, reciprocal vectors, shells."""

import fractions
import math
from typing import List, NamedTuple, Tuple

import numpy as np


def triangular_lattice(a: float = 1.0) -> np.ndarray:
    """Primitive vectors (rows) ``a1 = a (1, 0)``, ``a2 = a (1/2, √3/2)``, shape ``[2, 2]``."""
    if not a > 0:
        raise ValueError(f'Lattice constant must be > 0, got {a}.')
    return a * np.array([[1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]])


def cell_area(lattice: np.ndarray) -> float:
    """Area ``|det L|`` of the cell spanned by the rows of ``lattice [2, 2]``."""
    return float(abs(np.linalg.det(np.asarray(lattice, dtype=np.float64))))


def reciprocal_lattice(lattice: np.ndarray) -> np.ndarray:
    """Reciprocal vectors (rows) ``b_i`` with ``a_i · b_j = 2π δ_ij``, shape ``[2, 2]``."""
    lattice = np.asarray(lattice, dtype=np.float64)
    if lattice.shape != (2, 2) or abs(np.linalg.det(lattice)) < 1e-12 * np.sum(lattice**2):
        raise ValueError(f'lattice must be two linearly independent rows [2, 2], got {lattice!r}.')
    return 2.0 * np.pi * np.linalg.inv(lattice).T


def lattice_points(lattice: np.ndarray, radius: float, include_origin: bool = True) -> np.ndarray:
    """All points ``n1 a1 + n2 a2`` with norm ≤ ``radius``, sorted by norm, shape ``[P, 2]``."""
    lattice = np.asarray(lattice, dtype=np.float64)
    # |n_i| ≤ radius |b_i| / 2π bounds every point of norm ≤ radius.
    bounds = np.ceil(radius * np.linalg.norm(reciprocal_lattice(lattice), axis=1) / (2 * np.pi)).astype(int)
    n1, n2 = np.meshgrid(np.arange(-bounds[0], bounds[0] + 1), np.arange(-bounds[1], bounds[1] + 1),
                         indexing='ij')
    points = np.stack([n1.ravel(), n2.ravel()], axis=1) @ lattice
    norms = np.linalg.norm(points, axis=1)
    keep = norms <= radius * (1 + 1e-12)
    if not include_origin:
        keep &= norms > 1e-12 * max(radius, 1.0)
    points, norms = points[keep], norms[keep]
    order = np.lexsort((points[:, 1], points[:, 0], np.round(norms, 10)))
    return points[order]


def reduce_basis(lattice: np.ndarray) -> np.ndarray:
    """Lagrange–Gauss reduced basis of the same lattice: shortest vectors, ``det > 0``, ``a1 · a2 ≥ 0``."""
    lattice = np.asarray(lattice, dtype=np.float64)
    reciprocal_lattice(lattice)  # validates shape and linear independence
    a, b = lattice
    if a @ a > b @ b:
        a, b = b, a
    while True:
        b = b - np.round((a @ b) / (a @ a)) * a
        if b @ b >= a @ a:
            break
        a, b = b, a
    if a[0] * b[1] - a[1] * b[0] < 0:
        b = -b
    if a @ b < 0 and np.isclose((a + b) @ (a + b), b @ b):
        b = a + b  # a hexagonal basis at 60° rather than 120°
    return np.stack([a, b])


def commensurate_matrix(primitive: np.ndarray, supercell: np.ndarray) -> np.ndarray:
    """Integer matrix ``M`` with ``supercell = M @ primitive``; raises if it is not integer.

    Raises:
      ValueError: if the supercell vectors are not integer combinations of the primitive
        vectors (the supercell would not be commensurate with the lattice) or are degenerate.
    """
    m = np.asarray(supercell, dtype=np.float64) @ np.linalg.inv(np.asarray(primitive, dtype=np.float64))
    rounded = np.round(m)
    if not np.allclose(m, rounded, atol=1e-8) or abs(round(np.linalg.det(rounded))) < 1:
        raise ValueError(f'Supercell {np.asarray(supercell).tolist()} is not commensurate with the lattice '
                         f'{np.asarray(primitive).tolist()}: its vectors must be integer combinations of the '
                         f'primitive vectors (got coefficients {m.tolist()}).')
    return rounded.astype(int)


def _sublattices(n_cells: int) -> List[np.ndarray]:
    """Hermite normal forms ``[[a, b], [0, c]]``, ``ac = n``, ``0 ≤ b < c``: every index-n sublattice once."""
    forms = []
    for a in range(1, n_cells + 1):
        if n_cells % a:
            continue
        c = n_cells // a
        forms.extend(np.array([[a, b], [0, c]]) for b in range(c))
    return forms


def best_supercell_matrix(primitive: np.ndarray, n_cells: int) -> np.ndarray:
    """The most compact commensurate supercell of ``n_cells`` primitive cells.

    Among all sublattices of index ``n_cells`` it maximizes the shortest supercell vector
    (the distance to an electron's nearest periodic image), then minimizes the second
    one; for the triangular lattice this selects the hexagonal supercells whenever
    ``n_cells = p² + pq + q²`` (e.g. 27 → the 3√3 × 3√3 R30° cell).

    Returns:
      Integer ``M [2, 2]`` with ``det M = n_cells`` whose rows ``M @ primitive`` form a
      reduced basis.
    """
    if isinstance(n_cells, bool) or int(n_cells) != n_cells or n_cells < 1:
        raise ValueError(f'n_cells must be a positive integer, got {n_cells!r}.')
    primitive = np.asarray(primitive, dtype=np.float64)
    best, best_key = None, None
    for form in _sublattices(int(n_cells)):
        basis = reduce_basis(form @ primitive)
        lengths = np.linalg.norm(basis, axis=1)
        key = (-round(lengths[0], 9), round(lengths[1], 9))
        if best_key is None or key < best_key:
            best, best_key = basis, key
    return commensurate_matrix(primitive, _canonical_orientation(best))


def _canonical_orientation(basis: np.ndarray) -> np.ndarray:
    """Among the reduced bases of a lattice, the one whose first vector has the smallest polar
    angle in [0, 2π) and whose second vector follows it most closely counter-clockwise."""
    a, b = basis
    combos = [i * a + j * b for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    la, lb = np.linalg.norm(a), np.linalg.norm(b)
    angle = lambda v: np.arctan2(v[1], v[0]) % (2 * np.pi)
    firsts = [v for v in combos if np.isclose(np.linalg.norm(v), la)]
    first = min(firsts, key=lambda v: round(angle(v), 9))
    seconds = [v for v in combos if np.isclose(np.linalg.norm(v), lb)
               and np.isclose(first[0] * v[1] - first[1] * v[0], abs(a[0] * b[1] - a[1] * b[0]))]
    second = min(seconds, key=lambda v: round((angle(v) - angle(first)) % (2 * np.pi), 9))
    return np.stack([first, second])


def parse_filling(filling: float) -> fractions.Fraction:
    """The filling ν as an exact fraction p/q (q ≤ 1000); raises ``ValueError`` otherwise."""
    nu = fractions.Fraction(filling).limit_denominator(1000)
    if not filling > 0 or abs(float(nu) - filling) > 1e-9:
        raise ValueError(f'filling must be a positive rational number p/q (q ≤ 1000), got {filling}.')
    return nu


def cells_for_filling(n_electrons: int, filling: float) -> int:
    """Number of primitive cells ``N/ν``; raises ``ValueError`` naming nearby valid N if not integer."""
    nu = parse_filling(filling)
    cells = fractions.Fraction(int(n_electrons)) / nu
    if cells.denominator != 1 or n_electrons < 1:
        step = nu.numerator
        below = max((n_electrons // step) * step, step)
        valid = sorted({below, below + step} - {n_electrons})
        raise ValueError(f'N = {n_electrons} electrons at filling ν = {nu} needs N/ν = {float(cells):g} '
                         f'moiré cells, not an integer; N must be a multiple of {step} (nearby valid N: '
                         f'{", ".join(map(str, valid))}).')
    return int(cells)


class RealPlaneWaves(NamedTuple):
    """A real plane-wave basis ``f_m(r) = cos(G_m · r − δ_m)`` with ``δ_m ∈ {0, π/2}``.

    Attributes:
      gvecs: ``[M, 2]`` reciprocal-lattice vectors, sorted by ``|G|``; one of each pair ±G.
      phases: ``[M]`` 0 for ``cos(G·r)``, π/2 for ``sin(G·r)``.
      norms: ``[M]`` factors that make the functions orthonormal over the cell
        (``1/√A`` for G = 0, ``√(2/A)`` otherwise).
      shells: ``[S + 1]`` cumulative function counts at the ends of the ``|G|`` shells
        (``shells[k]`` functions fill the lowest ``k`` shells; closed shells).
    """
    gvecs: np.ndarray
    phases: np.ndarray
    norms: np.ndarray
    shells: np.ndarray


def real_plane_waves(lattice: np.ndarray, g_max: float) -> RealPlaneWaves:
    """Real plane waves of the periodic cell ``lattice [2, 2]`` with ``|G| ≤ g_max`` (k = 0)."""
    gpoints = lattice_points(reciprocal_lattice(lattice), g_max)
    half = [g for g in gpoints if g[1] > 1e-12 * g_max or (abs(g[1]) <= 1e-12 * g_max and g[0] >= 0)]
    gvecs, phases = [], []
    for g in half:
        zero = np.linalg.norm(g) <= 1e-12 * max(g_max, 1.0)
        gvecs.extend([g] if zero else [g, g])
        phases.extend([0.0] if zero else [0.0, np.pi / 2])
    gvecs, phases = np.array(gvecs), np.array(phases)
    area = cell_area(lattice)
    norms = np.where(np.linalg.norm(gvecs, axis=1) > 1e-12 * max(g_max, 1.0),
                     np.sqrt(2.0 / area), np.sqrt(1.0 / area))
    lengths = np.round(np.linalg.norm(gvecs, axis=1), 9)
    ends = np.flatnonzero(np.diff(lengths) > 0) + 1
    shells = np.concatenate([[0], ends, [len(gvecs)]])
    return RealPlaneWaves(gvecs, phases, norms, shells)


def closed_shell_counts(lattice: np.ndarray, max_count: int) -> Tuple[int, ...]:
    """Numbers of real plane waves that fill whole ``|G|`` shells, up to ``max_count``.

    For a triangular cell: 1, 7, 13, 19, 31, 37, ...
    """
    recip = reciprocal_lattice(lattice)
    longest = float(np.max(np.linalg.norm(recip, axis=1)))
    g_max = 1.2 * math.sqrt(max_count * cell_area(recip) / math.pi) + longest
    shells = real_plane_waves(lattice, g_max).shells[1:]
    return tuple(int(s) for s in shells if s <= max_count)
