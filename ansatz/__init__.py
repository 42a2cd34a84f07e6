"""Wavefunction ansätze behind a pure ``init``/``apply`` boundary (Haiku inside)."""

from ansatz.base import Wavefunction, log_sum_determinants, slogdet_blocks
from ansatz.fermi_sets import FermiSetsConfig, make_fermi_sets
from ansatz.slater import make_noninteracting_dot

__all__ = ['Wavefunction', 'log_sum_determinants', 'slogdet_blocks', 'FermiSetsConfig',
           'make_fermi_sets', 'make_noninteracting_dot']

# Fixed real periodic orbitals (moiré references).
from ansatz.plane_wave import make_band_slater, make_periodic_slater, make_plane_wave_slater  # noqa: E402

__all__ += ['make_band_slater', 'make_periodic_slater', 'make_plane_wave_slater']
