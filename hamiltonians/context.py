"""Contexts: the Hamiltonian parameters and static particle content of one task."""

import dataclasses
import math
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Context:
    """One task of a Hamiltonian family.

    A context splits into a *static* part, the particle content (n_up, n_down),
    which fixes array shapes and therefore the jitted computation, and a
    *dynamic* part, a small mapping of float parameters (e.g. ``lam``, ``omega``)
    which is passed into jitted code as traced values, so changing it never
    retraces.

    Electrons are ordered spin-up first: rows ``0 .. n_up-1`` of a walker
    ``x[N, D]`` are spin up, rows ``n_up .. N-1`` are spin down.

    Attributes:
        n_up: number of spin-up electrons (>= 0).
        n_down: number of spin-down electrons (>= 0).
        params: sorted tuple of ``(name, value)`` pairs. Build with ``Context.make``.
    """

    n_up: int
    n_down: int
    params: Tuple[Tuple[str, float], ...]

    @staticmethod
    def make(n_up: int, n_down: int = 0, **params: float) -> 'Context':
        """Builds a validated context, e.g. ``Context.make(3, 3, lam=1.0, omega=1.0)``."""
        for name, n in (('n_up', n_up), ('n_down', n_down)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                raise ValueError(f'{name} must be an integer, got {n!r}.')
            if n < 0:
                raise ValueError(f'{name} must be >= 0, got {n}.')
        if n_up + n_down == 0:
            raise ValueError('A context needs at least one electron (n_up + n_down = 0).')
        clean = {}
        for name, value in params.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f'Context parameter {name!r} must be a float, got {value!r}.') from None
            if not math.isfinite(value):
                raise ValueError(f'Context parameter {name!r} must be finite, got {value}.')
            clean[name] = value
        return Context(int(n_up), int(n_down), tuple(sorted(clean.items())))

    @property
    def n_electrons(self) -> int:
        return self.n_up + self.n_down

    @property
    def spins(self) -> Tuple[int, int]:
        """``(n_up, n_down)``, the static part of the context; tasks with equal spins share a compiled step."""
        return (self.n_up, self.n_down)

    @property
    def values(self) -> Dict[str, np.ndarray]:
        """The dynamic part as a dict of float64 numpy scalars (a pytree for jitted code)."""
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.params}

    def __getitem__(self, name: str) -> float:
        for k, v in self.params:
            if k == name:
                return v
        raise KeyError(f'Context has no parameter {name!r}; it has {[k for k, _ in self.params]}.')

    def replace(self, **params: float) -> 'Context':
        """A copy with some float parameters changed."""
        merged = dict(self.params)
        merged.update(params)
        return Context.make(self.n_up, self.n_down, **merged)

    def label(self) -> str:
        """A short human-readable label, e.g. ``N=6(3,3) lam=1 omega=1``."""
        ps = ' '.join(f'{k}={v:g}' for k, v in self.params)
        return f'N={self.n_electrons}({self.n_up},{self.n_down}) {ps}'

    def as_dict(self) -> Dict[str, float]:
        d = {'n_up': self.n_up, 'n_down': self.n_down, 'N': self.n_electrons}
        d.update(dict(self.params))
        return d


def group_by_spins(contexts: Iterable[Context]) -> Mapping[Tuple[int, int], list]:
    """Groups contexts by their static particle content, keeping order."""
    groups: Dict[Tuple[int, int], list] = {}
    for c in contexts:
        groups.setdefault(c.spins, []).append(c)
    return groups
