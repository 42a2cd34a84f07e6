"""One place that maps ansatz names to factories, so a driver swaps wavefunctions in one line."""

from typing import Any, Callable, Dict, NamedTuple, Optional, Type

from ansatz.base import Wavefunction
from ansatz.features import LatticeSpec
from ansatz.fermi_sets import FermiSetsConfig, make_fermi_sets
from ansatz.psiformer import PsiFormerConfig, make_psiformer
from ansatz.qernel import QernelConfig, make_qernel
from ansatz.slater_jastrow import SlaterJastrowConfig, make_backflow, make_single_determinant, make_slater_jastrow


class AnsatzEntry(NamedTuple):
    """A registered ansatz: its config class and ``factory(config, lattice) -> Wavefunction``."""
    config_cls: Type
    factory: Callable[[Any, LatticeSpec], Wavefunction]
    periodic: bool  # whether it accepts a lattice


def _fermi_sets(config: FermiSetsConfig, lattice: LatticeSpec) -> Wavefunction:
    if lattice is not None:
        raise ValueError("'fermi_sets' supports open geometry only (its orbitals are oscillator functions); "
                         "use 'qernel', 'psiformer', 'slater_jastrow', 'backflow' or 'single_determinant' "
                         'for a periodic system.')
    return make_fermi_sets(config)


ANSATZE: Dict[str, AnsatzEntry] = {
    'fermi_sets': AnsatzEntry(FermiSetsConfig, _fermi_sets, False),
    'qernel': AnsatzEntry(QernelConfig, make_qernel, True),
    'psiformer': AnsatzEntry(PsiFormerConfig, make_psiformer, True),
    'slater_jastrow': AnsatzEntry(SlaterJastrowConfig, make_slater_jastrow, True),
    'backflow': AnsatzEntry(SlaterJastrowConfig, make_backflow, True),
    'single_determinant': AnsatzEntry(SlaterJastrowConfig, make_single_determinant, True),
}
ANSATZ_NAMES = tuple(ANSATZE)


def default_config(name: str):
    """The default config object of a registered ansatz."""
    return _entry(name).config_cls()


def _entry(name: str) -> AnsatzEntry:
    if name not in ANSATZE:
        raise ValueError(f'Unknown ansatz {name!r}; choose one of {ANSATZ_NAMES}.')
    return ANSATZE[name]


def make_ansatz(name: str, config: Optional[Any] = None, lattice: LatticeSpec = None) -> Wavefunction:
    """Builds a registered wavefunction.

    Args:
      name: one of ``ANSATZ_NAMES``: ``'fermi_sets'``, ``'qernel'``, ``'psiformer'``,
        ``'slater_jastrow'``, ``'backflow'`` (Slater–Jastrow with backflow switched on) and
        ``'single_determinant'`` (Hartree–Fock-like; Jastrow, backflow and cusp off).
      config: that ansatz's config dataclass (``None``: its defaults); ``'backflow'`` and
        ``'single_determinant'`` take a ``SlaterJastrowConfig`` and override its switches.
      lattice: ``None`` (open geometry) or ``callable(n_electrons) -> [D, D]`` supercell
        lattice for periodic systems (not supported by ``'fermi_sets'``).

    Returns:
      An ``ansatz.base.Wavefunction``.
    """
    entry = _entry(name)
    if config is None:
        config = entry.config_cls()
    if not isinstance(config, entry.config_cls):
        raise ValueError(f'Ansatz {name!r} takes a {entry.config_cls.__name__}, got {type(config).__name__}.')
    return entry.factory(config, lattice)
