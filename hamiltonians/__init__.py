"""Hamiltonian families (the ``System`` protocol, contexts), local energies, the quantum dot and moiré systems."""

from hamiltonians.context import Context, group_by_spins
from hamiltonians.system import (System, check_geometry, check_system, describe_parameters, make_log_psi, make_psi,
                                 parameter_label)
from hamiltonians.local_energy import KINETIC_METHODS, make_kinetic_energy, make_local_energy
from hamiltonians.quantum_dot import QuantumDot, noninteracting_energy, pairwise_distances

__all__ = ['Context', 'group_by_spins', 'System', 'check_geometry', 'check_system', 'describe_parameters',
           'parameter_label', 'make_log_psi', 'make_psi', 'KINETIC_METHODS', 'make_kinetic_energy', 'make_local_energy',
           'QuantumDot', 'noninteracting_energy', 'pairwise_distances']

# The moiré heterobilayer and 2D Ewald summation.
from hamiltonians.ewald import EwaldSum  # noqa: E402
from hamiltonians.moire import (COULOMB_CONSTANT, HBAR2_OVER_2ME, MoireSpectrum, MoireSystem,  # noqa: E402
                                orbital_values, per_electron)

__all__ += ['EwaldSum', 'COULOMB_CONSTANT', 'HBAR2_OVER_2ME', 'MoireSpectrum', 'MoireSystem',
            'orbital_values', 'per_electron']
