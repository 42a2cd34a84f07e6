"""qvmc: conditional neural wavefunctions trained by variational Monte Carlo."""

from qvmc import natgrad, scores
from qvmc.context import Context, group_by_spins
from qvmc.vmc import TrainState, VMC, VMCConfig, make_log_psi, make_task_functions

__version__ = '0.1.0'

__all__ = ['natgrad', 'scores', 'Context', 'group_by_spins', 'TrainState', 'VMC', 'VMCConfig', 'make_log_psi',
           'make_task_functions']
