"""qvmc: conditional neural wavefunctions trained by variational Monte Carlo.

Layers (each imports only the ones before it): ``samplers`` (kernels, chains, the measurement
engine, statistics) <- ``hamiltonians`` (systems, contexts, local energies) <- ``ansatz``
(wavefunctions) <- ``qvmc`` (training step, optimizers, training loop, inference, I/O).
"""

from hamiltonians.context import Context, group_by_spins
from hamiltonians.system import make_log_psi
from qvmc import natgrad, scores
from qvmc.config import VMCConfig
from qvmc.state import BlockStats, StepInfo, TrainState
from qvmc.step import make_train_step
from qvmc.vmc import VMC

__version__ = '0.3.0'

__all__ = ['natgrad', 'scores', 'Context', 'group_by_spins', 'StepInfo', 'BlockStats', 'TrainState', 'VMC',
           'VMCConfig', 'make_log_psi', 'make_train_step']
