"""The ``System`` protocol every Hamiltonian family implements, and the log-ψ glue built on it."""

from typing import Callable, Dict, Optional, Protocol, Tuple, runtime_checkable

import jax.numpy as jnp
import numpy as np

from hamiltonians.context import Context
from hamiltonians.padding import ACTIVE
from samplers.types import Array, ContextValues, Params, PRNGKey


@runtime_checkable
class System(Protocol):
    """A family of Hamiltonians indexed by contexts (``QuantumDot``, ``MoireSystem``).

    Attributes:
      ndim: spatial dimension D of a walker ``[N, D]``.
      periodic: True for systems with periodic boundaries (a simulation cell per N).
      kinetic_scale: the kinetic operator is ``kinetic_scale · (−½∇²)`` (1 in atomic units).
    """
    ndim: int
    periodic: bool
    kinetic_scale: float

    def validate(self, ctx: Context) -> None:
        """Raises ``ValueError`` for a context this family cannot describe."""

    def potential_components(self, x: Array, values: ContextValues) -> Dict[str, Array]:
        """Potential energy terms of one walker ``x [N, D]``, e.g. ``{'trap': [], 'interaction': []}``."""

    def context_features(self, values: ContextValues, n_up: int, n_down: int) -> Array:
        """The conditioning vector the network sees."""

    def length_scale(self, values: ContextValues) -> Array:
        """The unit of length in which the network sees positions."""

    def coupling(self, values: ContextValues) -> Array:
        """The ``1/r`` strength in those length units (for cusp terms)."""

    def init_walkers(self, rng_key: PRNGKey, ctx: Context, num_walkers: int) -> Array:
        """Initial walkers ``[W, N, D]``."""

    def simulation_cell(self, n_electrons: int) -> Optional[np.ndarray]:
        """The periodic cell ``[D, D]`` (rows are lattice vectors) of N electrons, or None (open)."""


def parameter_label(system, name: str) -> str:
    """Short label of the context parameter ``name`` for messages and axes: the system's description
    (``system.parameters[name]``) up to its first parenthesis, e.g. ``'Coulomb strength λ'`` for
    ``QuantumDot``'s ``'lam'``; ``name`` itself when the system does not describe it."""
    description = dict(getattr(system, 'parameters', None) or {}).get(name)
    return description.split(' (')[0] if description else name


def describe_parameters(system) -> str:
    """``"lam: Coulomb strength λ (...); omega: ..."``: every context parameter of ``system`` with
    its description (``system.parameters``), for error messages."""
    parameters = dict(getattr(system, 'parameters', None) or {})
    names = parameters or {name: '' for name in getattr(system, 'param_names', ())}
    return '; '.join(f'{name}: {text}' if text else name for name, text in names.items())


def check_system(system) -> None:
    """Raises ``ValueError`` naming the missing members if ``system`` does not implement ``System``."""
    missing = [name for name in ('ndim', 'periodic', 'kinetic_scale', 'validate', 'potential_components',
                                 'context_features', 'length_scale', 'coupling', 'init_walkers', 'simulation_cell')
               if not hasattr(system, name)]
    if missing:
        raise ValueError(f'{type(system).__name__} is not a hamiltonians.System: it lacks {missing}.')


def make_psi(wavefunction, system, spins: Tuple[int, int]) -> Callable[[Params, Array, ContextValues], Tuple]:
    """``psi(params, x, values) -> (sign or phase, log|ψ|)`` for one walker in physical units.

    Divides positions by ``system.length_scale(values)``, builds the context features the
    network sees, and passes ``system.coupling(values)`` for the cusp. The network runs in
    the dtype of ``x`` (float32 walkers: a float32 network even with float64 context values).
    ``wavefunction`` is anything with ``apply(params, x, cond, spins, coupling)`` (an
    ``ansatz.Wavefunction``; the Hamiltonian layer needs no import of the ansatz layer).
    With a padding mask in ``values`` (``hamiltonians.padding``), ``spins`` is the padded
    content and the mask goes to the (maskable) wavefunction.
    """
    spins = (int(spins[0]), int(spins[1]))

    def psi(params, x, values):
        scale = system.length_scale(values)
        cond = jnp.asarray(system.context_features(values, *spins)).astype(x.dtype)
        coupling = jnp.asarray(system.coupling(values)).astype(x.dtype)
        mask = values.get(ACTIVE) if hasattr(values, 'get') else None
        if mask is None:
            return wavefunction.apply(params, (x / scale).astype(x.dtype), cond, spins, coupling)
        return wavefunction.apply(params, (x / scale).astype(x.dtype), cond, spins, coupling,
                                  mask=jnp.asarray(mask).astype(x.dtype))
    return psi


def make_log_psi(wavefunction, system, spins: Tuple[int, int]) -> Callable[[Params, Array, ContextValues], Array]:
    """``log|ψ|(params, x, values)`` for one walker in physical units (see ``make_psi``)."""
    psi = make_psi(wavefunction, system, spins)
    return lambda params, x, values: psi(params, x, values)[1]


def check_geometry(wavefunction, system, where: str) -> None:
    """Raises ``ValueError`` if ``wavefunction.periodic`` differs from ``system.periodic``.

    An open-geometry ansatz on a periodic system (or a periodic one on an open system) would
    train and sample without error but describe the wrong physics. Objects without a
    ``periodic`` attribute are not checked.

    Args:
      wavefunction: an ``ansatz.base.Wavefunction``.
      system: a ``hamiltonians.System``.
      where: the caller named in the message (``'VMC'``, ``'Predictor'``, ``'Sweep'``).
    """
    wf_periodic = getattr(wavefunction, 'periodic', None)
    if wf_periodic is None:
        return
    name = type(system).__name__
    if bool(getattr(system, 'periodic', False)) and not wf_periodic:
        raise ValueError(f'{where}: {name} is periodic but the wavefunction is built for open geometry '
                         '(Wavefunction.periodic is False). Build it for the cell, e.g. '
                         "ansatz.registry.make_ansatz(name, config, lattice=system.network_lattice) "
                         "(not 'fermi_sets'), or ansatz.make_plane_wave_slater / make_band_slater.")
    if not getattr(system, 'periodic', False) and wf_periodic:
        raise ValueError(f'{where}: {name} has open boundaries but the wavefunction is periodic '
                         '(Wavefunction.periodic is True: built with a lattice or from plane waves). '
                         'Build it without lattice=, e.g. make_ansatz(name, config).')
