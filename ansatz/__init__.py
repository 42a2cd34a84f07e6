"""Wavefunction ansätze behind a pure ``init``/``apply`` boundary (Haiku inside)."""

from ansatz.base import Wavefunction, log_sum_determinants, slogdet_blocks
from ansatz.fermi_sets import FermiSetsConfig, make_fermi_sets
from ansatz.slater import make_noninteracting_dot

__all__ = ['Wavefunction', 'log_sum_determinants', 'slogdet_blocks', 'FermiSetsConfig',
           'make_fermi_sets', 'make_noninteracting_dot']
