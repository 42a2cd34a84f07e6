"""Real eigenfunctions of the 2D isotropic harmonic oscillator, ordered by shell.

Orbital ``j`` of a spin channel is labelled by quantum numbers generated from ``j``
alone (no fixed table): shell ``n = 2 n_r + |m|`` with energy ``(n + 1) ω``, and inside
a shell ``|m|`` ascending, the ``cos mθ`` partner before the ``sin mθ`` partner. The
Fermi Sets orbitals use these quantum numbers both as a polynomial prior and as the
input of the network that generates each orbital's weights, so any N is covered.
"""

import math
from typing import List, NamedTuple, Tuple

import jax.numpy as jnp
import numpy as np


class OrbitalLabel(NamedTuple):
    """Quantum numbers of one real 2D oscillator orbital."""
    shell: int  # n = 2 n_r + |m|; energy (n + 1) in units of ω
    n_r: int  # radial quantum number
    abs_m: int  # |m|
    is_sin: int  # 0: cos(mθ) partner (or m = 0), 1: sin(mθ) partner


OPEN_SHELL_ORDERS = ('filling', 'high_m')


def orbital_labels(num_orbitals: int, open_shell_order: str = 'filling') -> List[OrbitalLabel]:
    """The first ``num_orbitals`` orbitals: complete shells, then members of the partly filled shell.

    ``open_shell_order`` picks which members of a partly filled shell come first: ``'filling'``
    (``|m|`` ascending, the filling order) or ``'high_m'`` (``|m|`` descending, ``cos`` before ``sin``),
    the sector of rotating Wigner molecules (e.g. polarized N = 7 wants ``|m| = 3``). Complete shells
    are the same in both; inside a shell the choices are degenerate at zero coupling.
    """
    if num_orbitals < 0:
        raise ValueError(f'num_orbitals must be >= 0, got {num_orbitals}.')
    if open_shell_order not in OPEN_SHELL_ORDERS:
        raise ValueError(f'open_shell_order must be one of {OPEN_SHELL_ORDERS}, got {open_shell_order!r}.')
    labels: List[OrbitalLabel] = []
    shell = 0
    while len(labels) < num_orbitals:
        members = []
        for abs_m in range(shell % 2, shell + 1, 2):
            n_r = (shell - abs_m) // 2
            members.append(OrbitalLabel(shell, n_r, abs_m, 0))
            if abs_m > 0:
                members.append(OrbitalLabel(shell, n_r, abs_m, 1))
        if open_shell_order == 'high_m' and len(labels) + len(members) > num_orbitals:
            members.sort(key=lambda lab: (-lab.abs_m, lab.is_sin))
        labels.extend(members)
        shell += 1
    return labels[:num_orbitals]


def open_shell(num_orbitals: int) -> Tuple[int, List[OrbitalLabel]]:
    """The partially filled shell of the first ``num_orbitals`` orbitals.

    Returns ``(num_closed, shell)``: the number of orbitals in completely filled shells and all
    labels of the next shell when it is only partly filled (``0 < num_orbitals - num_closed <
    len(shell)``); ``shell`` is empty when ``num_orbitals`` fills shells exactly. Inside an open
    shell every choice of occupied orbitals is degenerate at zero coupling, so which ones the
    interacting ground state needs (its angular momentum) is not fixed by the filling order.
    """
    if num_orbitals < 0:
        raise ValueError(f'num_orbitals must be >= 0, got {num_orbitals}.')
    num_closed, shell = 0, 0
    while num_closed + shell + 1 <= num_orbitals:
        num_closed += shell + 1
        shell += 1
    if num_closed == num_orbitals:
        return num_closed, []
    return num_closed, [lab for lab in orbital_labels(num_closed + shell + 1) if lab.shell == shell]


class PaddedOrbitals(NamedTuple):
    """Static tables that let one program pick the first ``c`` orbitals for a traced count ``c ≤ pad``.

    Attributes:
      labels: the candidate orbitals ``A``: every member of every shell that some ``c ≤ pad`` touches.
      slot: ``[pad + 1, pad]`` int, the column of ``A`` that orbital slot ``j`` uses at count ``c``
        (``orbital_labels(c, order)[j]``; 0 for the unused slots ``j ≥ c``).
      mixable: ``[pad + 1, pad, len(A)]`` 0/1, candidate ``a`` may enter slot ``j`` at count ``c``
        (``j`` is an occupied slot of the open shell of ``c`` and ``a`` a member of that shell;
        ``_mix_open_shell`` of ``ansatz.fermi_sets``).
    """
    labels: List[OrbitalLabel]
    slot: np.ndarray
    mixable: np.ndarray


def padded_orbitals(pad: int, open_shell_order: str = 'filling') -> PaddedOrbitals:
    """The ``PaddedOrbitals`` tables for counts ``0 … pad`` in ``open_shell_order``."""
    if pad < 0:
        raise ValueError(f'pad must be >= 0, got {pad}.')
    num_closed, shell = open_shell(pad)
    candidates = orbital_labels(num_closed + len(shell))  # whole shells only
    index = {lab: a for a, lab in enumerate(candidates)}
    slot = np.zeros((pad + 1, pad), np.int32)
    mixable = np.zeros((pad + 1, pad, len(candidates)), np.float64)
    for count in range(pad + 1):
        slot[count, :count] = [index[lab] for lab in orbital_labels(count, open_shell_order)]
        closed, members = open_shell(count)
        for j in range(closed, count):
            mixable[count, j, [index[lab] for lab in members]] = 1.0
    return PaddedOrbitals(candidates, slot, mixable)


def label_features(labels: List[OrbitalLabel]) -> np.ndarray:
    """Smooth numeric features of orbital labels, ``[num_orbitals, 4]`` (inputs to the orbital generator)."""
    return np.array([[lab.shell / 4.0, lab.abs_m / 4.0, lab.n_r / 2.0, 2.0 * lab.is_sin - 1.0]
                     for lab in labels], dtype=np.float64).reshape(len(labels), 4)


def _normalization(lab: OrbitalLabel) -> float:
    # ∫ |ψ|² d²r = 1 for ψ = c r^|m| L_{n_r}^{|m|}(r²) e^{-r²/2} trig(mθ), at ω = 1.
    norm2 = math.factorial(lab.n_r) / (math.pi * math.factorial(lab.n_r + lab.abs_m))
    if lab.abs_m > 0:
        norm2 *= 2.0
    return math.sqrt(norm2)


def polynomial_part(x: jnp.ndarray, labels: List[OrbitalLabel]) -> jnp.ndarray:
    """Normalized polynomial prefactors ``c r^|m| L_{n_r}^{|m|}(r²) trig(mθ)``.

    Args:
      x: positions in oscillator length units (``√ω · r``), shape ``[N, 2]``.
      labels: orbitals to evaluate (length ``M``).

    Returns:
      ``[N, M]`` array; multiply by ``exp(-|x|²/2)`` to obtain the eigenfunctions.
    """
    if not labels:
        return jnp.zeros((x.shape[0], 0), x.dtype)
    max_m = max(lab.abs_m for lab in labels)
    r2 = jnp.sum(x**2, axis=-1)  # [N]
    re, im = jnp.ones_like(r2), jnp.zeros_like(r2)
    trig = [(re, im)]  # Re/Im of (x + i y)^k = r^k (cos kθ, sin kθ)
    for _ in range(max_m):
        re, im = re * x[:, 0] - im * x[:, 1], re * x[:, 1] + im * x[:, 0]
        trig.append((re, im))
    columns = []
    for lab in labels:
        alpha = lab.abs_m
        lag_prev, lag = jnp.zeros_like(r2), jnp.ones_like(r2)
        for k in range(lab.n_r):  # generalized Laguerre recurrence
            lag_prev, lag = lag, ((2 * k + 1 + alpha - r2) * lag - (k + alpha) * lag_prev) / (k + 1)
        angular = trig[alpha][lab.is_sin]
        columns.append(_normalization(lab) * lag * angular)
    return jnp.stack(columns, axis=-1)


def eigenfunctions(x: jnp.ndarray, labels: List[OrbitalLabel]) -> jnp.ndarray:
    """Oscillator eigenfunctions at ω = 1, ``[N, M]`` (scale ``x`` by ``√ω`` for other ω)."""
    return polynomial_part(x, labels) * jnp.exp(-0.5 * jnp.sum(x**2, axis=-1))[:, None]
