"""Padded particle content: one compiled program for every (n_up, n_down) up to a padded size.

Arrays have static shapes, so each particle content normally compiles its own sampling and
measurement program (tens of seconds on a CPU). Padding runs every context whose content fits
``pad = (P_up, P_down)`` with walkers ``[P_up + P_down, D]``: rows ``0 … n_up-1`` and
``P_up … P_up+n_down-1`` are the electrons, the others are *padding rows*. The context values
carry the mask ``values['active']`` ``[P]`` (1 = electron), a traced array, so a new content in
the same padded size reuses the compiled program.

A padding row is a non-interacting particle in the exact oscillator ground state of the trap:
the maskable ansatz leaves it out of every electron's orbitals, attention, pooling and cusp and
multiplies ψ by ``exp(-|x̃|²/2)`` in the network's length unit (``x̃ = x / length_scale``), and
the quantum dot leaves it out of the interaction. Its local energy is then exactly ω (kinetic
``ω - ½ω²r²`` plus trap ``½ω²r²``, zero variance), and the system returns
``kinetic_correction = Σ_pad (½ω²r² - ω)``, which ``make_local_energy`` adds to the kinetic
term. The local energy and every component are therefore those of the electrons alone, for
every configuration of the padding rows; the padding rows only cost compute and lower the
acceptance of all-electron moves a little.

Callers do not decide pad-or-not themselves: ``make_layout(pad, ...)`` is built once (checked
against the wavefunction and the system) and answers every layout question: the compiled
program's key (``spins``), the traced values, the initial walkers, the electron rows and mask.
``Layout()`` is the unpadded layout, ``PaddedLayout(pad)`` the padded one.
"""

from typing import Dict, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hamiltonians.context import Context

ACTIVE = 'active'  # key of the padding mask in the context values


def check_pad(pad) -> Tuple[int, int]:
    """``pad`` as ``(P_up, P_down)``; ``ValueError`` unless two integers ≥ 0 with a positive sum."""
    try:
        p_up, p_down = pad
    except (TypeError, ValueError):
        raise ValueError(f'pad must be (n_up, n_down), the padded particle content, got {pad!r}.') from None
    for name, n in (('n_up', p_up), ('n_down', p_down)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f'pad {name} must be an integer >= 0, got {n!r}.')
    if p_up + p_down == 0:
        raise ValueError('pad must hold at least one electron, got (0, 0).')
    return int(p_up), int(p_down)


def check_support(pad, wavefunction, system, where: str) -> Tuple[int, int]:
    """``check_pad(pad)``, plus a ``ValueError`` unless ``wavefunction`` is maskable (Fermi Sets) and
    ``system`` supports padding rows (``QuantumDot``); ``where`` names the caller in the message."""
    pad = check_pad(pad)
    missing = [what for what, ok in (('a maskable wavefunction (Fermi Sets); this one takes no padding mask',
                                      getattr(wavefunction, 'maskable', False)),
                                     (f'a system that supports padding rows (QuantumDot), not {type(system).__name__}',
                                      getattr(system, 'supports_padding', False))) if not ok]
    if missing:
        raise ValueError(f'{where}: pad needs ' + ' and '.join(missing) + '. Use pad=None.')
    return pad


def check_fits(ctx: Context, pad: Tuple[int, int]) -> None:
    """``ValueError`` if ``ctx``'s content does not fit the padded content ``pad``."""
    if ctx.n_up > pad[0] or ctx.n_down > pad[1]:
        raise ValueError(f'{ctx.label()} does not fit the padded content (n_up, n_down) = {pad}: '
                         f'pad to at least ({max(ctx.n_up, pad[0])}, {max(ctx.n_down, pad[1])}).')


def active_mask(ctx: Context, pad: Tuple[int, int]) -> np.ndarray:
    """``[P_up + P_down]`` float64 mask, 1 on the rows that hold ``ctx``'s electrons."""
    check_fits(ctx, pad)
    mask = np.zeros(pad[0] + pad[1], np.float64)
    mask[:ctx.n_up] = 1.0
    mask[pad[0]:pad[0] + ctx.n_down] = 1.0
    return mask


def padded_values(ctx: Context, pad: Tuple[int, int]) -> Dict[str, np.ndarray]:
    """``ctx.values`` plus the mask under ``ACTIVE``: the traced values of a padded program."""
    return {**ctx.values, ACTIVE: active_mask(ctx, pad)}


def pad_walkers(rng_key, walkers, ctx: Context, pad: Tuple[int, int], length_scale) -> jax.Array:
    """Walkers ``[W, n, D]`` of ``ctx`` -> ``[W, P, D]``: electrons in their rows, padding rows
    drawn from their exact distribution ``exp(-|x|²/length_scale²)`` (normal, std ``length_scale/√2``)."""
    walkers = jnp.asarray(walkers)
    check_fits(ctx, pad)
    num, _, dim = walkers.shape
    out = jax.random.normal(rng_key, (num, pad[0] + pad[1], dim), walkers.dtype)
    out = out * jnp.asarray(length_scale / np.sqrt(2.0), walkers.dtype)
    out = out.at[:, :ctx.n_up].set(walkers[:, :ctx.n_up])
    return out.at[:, pad[0]:pad[0] + ctx.n_down].set(walkers[:, ctx.n_up:])


def electron_rows(walkers, ctx: Context, pad: Tuple[int, int]) -> np.ndarray:
    """The electrons of padded walkers ``[..., P, D]`` -> ``[..., n, D]`` (host side)."""
    walkers = np.asarray(walkers)
    return np.concatenate([walkers[..., :ctx.n_up, :], walkers[..., pad[0]:pad[0] + ctx.n_down, :]], axis=-2)


def electron_mask(values):
    """The padding mask ``[P]`` of traced values (1 = electron), or None for unpadded values."""
    return values.get(ACTIVE) if hasattr(values, 'get') else None


def electron_pairs(pairs, values):
    """Pair masks ``[..., P, P]`` restricted to electron pairs under the padding mask (unchanged if unpadded)."""
    mask = electron_mask(values)
    if mask is None:
        return pairs
    return pairs & ((mask[:, None] * mask[None, :]) > 0.5)


def active_counts(values, n_up: int, n_down: int):
    """``(n_up, n_down)`` of the electrons: the static content, or the mask's sums when padded."""
    mask = values.get(ACTIVE) if hasattr(values, 'get') else None
    if mask is None:
        return n_up, n_down
    return jnp.sum(mask[:n_up]), jnp.sum(mask[n_up:])


class Layout:
    """The unpadded walker layout: a context's walkers are ``[W, n_up + n_down, D]``, its values
    ``ctx.values``, its program the one of its own particle content.

    ``PaddedLayout`` answers the same questions for a padded content; build either with
    ``make_layout``. Layouts are immutable, hashable and compare by their padded content.
    """
    __slots__ = ()
    pad: Optional[Tuple[int, int]] = None

    def __setattr__(self, name, value):
        raise AttributeError('a layout is immutable')

    def __eq__(self, other) -> bool:
        return isinstance(other, Layout) and self.pad == other.pad

    def __hash__(self) -> int:
        return hash((Layout, self.pad))

    def __repr__(self) -> str:
        return 'Layout()'

    def check(self, ctx: Context) -> None:
        """``ValueError`` if ``ctx`` cannot run in this layout (never, unpadded)."""

    def spins(self, ctx: Context) -> Tuple[int, int]:
        """The particle content of ``ctx``'s walker rows: the key of its compiled program."""
        return ctx.spins

    def values(self, ctx: Context) -> Dict[str, np.ndarray]:
        """The traced context values of ``ctx`` in this layout."""
        return dict(ctx.values)

    def walker_sizes(self, ctx: Context) -> Set[int]:
        """Rows per walker accepted as ``ctx``'s walkers (electrons only, or already laid out)."""
        return {ctx.n_electrons}

    def init_walkers(self, system):
        """``init(rng_key, ctx, num_walkers) -> [W, rows, D]``: fresh walkers in this layout."""
        return system.init_walkers

    def place(self, rng_key, walkers, ctx: Context, system) -> jax.Array:
        """Given walkers of ``ctx`` (electrons only, or already in this layout) in this layout."""
        return jnp.asarray(walkers)

    def electrons(self, walkers, ctx: Context) -> np.ndarray:
        """The electron rows ``[..., n, D]`` of walkers ``[..., rows, D]`` in this layout (host side)."""
        return np.asarray(walkers)

    def electron_row(self, electron: int, ctx: Context) -> int:
        """The walker row that holds electron ``electron`` (0 … n-1) of ``ctx``."""
        return electron

    def context(self, spins: Sequence[int], values) -> Context:
        """The ``Context`` of a block with walker rows ``spins`` and values ``values`` (host side)."""
        return Context.make(spins[0], spins[1], **{k: float(np.asarray(v)) for k, v in values.items()})


class PaddedLayout(Layout):
    """Every context that fits ``pad = (P_up, P_down)`` runs with walkers ``[W, P_up + P_down, D]``
    (padding rows after each spin's electrons) and the mask ``values['active']``: one compiled program
    for all of them.
    """

    __slots__ = ('pad',)

    def __init__(self, pad):
        object.__setattr__(self, 'pad', check_pad(pad))

    def __repr__(self) -> str:
        return f'PaddedLayout({self.pad})'

    def check(self, ctx: Context) -> None:
        check_fits(ctx, self.pad)

    def spins(self, ctx: Context) -> Tuple[int, int]:
        self.check(ctx)
        return self.pad

    def values(self, ctx: Context) -> Dict[str, np.ndarray]:
        return padded_values(ctx, self.pad)

    def walker_sizes(self, ctx: Context) -> Set[int]:
        return {ctx.n_electrons, sum(self.pad)}

    def init_walkers(self, system):
        def init(rng_key, ctx: Context, num_walkers: int):
            walkers = system.init_walkers(rng_key, ctx, num_walkers)
            return self.place(jax.random.fold_in(rng_key, 1), walkers, ctx, system)
        return init

    def place(self, rng_key, walkers, ctx: Context, system) -> jax.Array:
        walkers = jnp.asarray(walkers)
        if walkers.shape[1] == sum(self.pad):
            self.check(ctx)
            return walkers
        return pad_walkers(rng_key, walkers, ctx, self.pad, system.length_scale(self.values(ctx)))

    def electrons(self, walkers, ctx: Context) -> np.ndarray:
        return electron_rows(walkers, ctx, self.pad)

    def electron_row(self, electron: int, ctx: Context) -> int:
        return electron if electron < ctx.n_up else self.pad[0] + electron - ctx.n_up

    def context(self, spins: Sequence[int], values) -> Context:
        mask = np.asarray(values[ACTIVE])
        n_up, n_down = int(round(mask[:spins[0]].sum())), int(round(mask[spins[0]:].sum()))
        return Context.make(n_up, n_down, **{k: float(np.asarray(v)) for k, v in values.items() if k != ACTIVE})


UNPADDED = Layout()


def make_layout(pad=None, wavefunction=None, system=None, where: str = 'padding') -> Layout:
    """The walker layout of ``pad`` (None: ``UNPADDED``; ``(n_up, n_down)``: a ``PaddedLayout``; a
    ``Layout`` stands for itself), built once by a caller. With ``wavefunction`` and ``system``, a
    padded layout is checked to be supported by both (``check_support``; ``where`` names the caller)."""
    if isinstance(pad, Layout):
        pad = pad.pad
    if pad is None:
        return UNPADDED
    if wavefunction is not None or system is not None:
        return PaddedLayout(check_support(pad, wavefunction, system, where))
    return PaddedLayout(pad)


def layout_of_values(spins: Sequence[int], values) -> Layout:
    """The layout of a block whose walker rows are ``spins`` and whose values are ``values``: padded
    exactly when the values carry the padding mask."""
    return make_layout(tuple(spins)) if ACTIVE in values else UNPADDED
