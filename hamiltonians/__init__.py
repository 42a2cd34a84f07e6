"""Hamiltonians as pure functions: potentials, local energies, the 2D quantum dot."""

from hamiltonians.local_energy import KINETIC_METHODS, make_kinetic_energy, make_local_energy
from hamiltonians.quantum_dot import QuantumDot, noninteracting_energy, pairwise_distances

__all__ = ['KINETIC_METHODS', 'make_kinetic_energy', 'make_local_energy', 'QuantumDot',
           'noninteracting_energy', 'pairwise_distances']
