"""qvmc: conditional neural wavefunctions trained by variational Monte Carlo."""

from qvmc.context import Context, group_by_spins
from qvmc.vmc import TrainState, VMC, VMCConfig, make_log_psi, make_task_functions

__version__ = '0.1.0'

__all__ = ['Context', 'group_by_spins', 'TrainState', 'VMC', 'VMCConfig', 'make_log_psi',
           'make_task_functions']
