"""Wavefunction ansätze behind a pure ``init``/``apply`` boundary (Haiku inside)."""

from ansatz.base import Wavefunction, log_sum_determinants, slogdet_blocks
from ansatz.fermi_sets import FermiSetsConfig, make_fermi_sets
from ansatz.slater import make_noninteracting_dot

__all__ = ['Wavefunction', 'log_sum_determinants', 'slogdet_blocks', 'FermiSetsConfig',
           'make_fermi_sets', 'make_noninteracting_dot']

# Transformer and Slater–Jastrow families, and the name registry.
from ansatz.param_count import count_parameters, parameter_report  # noqa: E402
from ansatz.psiformer import PsiFormerConfig, make_psiformer  # noqa: E402
from ansatz.qernel import QernelConfig, make_qernel  # noqa: E402
from ansatz.registry import ANSATZ_NAMES, make_ansatz  # noqa: E402
from ansatz.slater_jastrow import (SlaterJastrowConfig, make_backflow, make_single_determinant,  # noqa: E402
                                   make_slater_jastrow)

__all__ += ['count_parameters', 'parameter_report', 'PsiFormerConfig', 'make_psiformer', 'QernelConfig',
            'make_qernel', 'ANSATZ_NAMES', 'make_ansatz', 'SlaterJastrowConfig', 'make_backflow',
            'make_single_determinant', 'make_slater_jastrow']

# Fixed real periodic orbitals (moiré references).
from ansatz.plane_wave import make_band_slater, make_periodic_slater, make_plane_wave_slater  # noqa: E402

__all__ += ['make_band_slater', 'make_periodic_slater', 'make_plane_wave_slater']
