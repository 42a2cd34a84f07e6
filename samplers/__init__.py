"""MCMC over walker ensembles: random-walk Metropolis and HMC (BlackJAX), drift-limited MALA,
per-context walker blocks, and equilibration checks."""

from samplers.chains import Assignment, ChainState, block_size, reassign, validate_chain
from samplers.equilibration import BurnInReport, EquilibrationCheck, burn_in, check_equilibrium
from samplers.kernels import (SAMPLERS, KernelSpec, WalkerInfo, WalkerState, adapt_step_size, init,
                              kernel_spec, make_kernel)
from samplers.mcmc import MCMC

__all__ = ['MCMC', 'SAMPLERS', 'Assignment', 'BurnInReport', 'ChainState', 'EquilibrationCheck', 'KernelSpec',
           'WalkerInfo', 'WalkerState', 'adapt_step_size', 'block_size', 'burn_in', 'check_equilibrium', 'init',
           'kernel_spec', 'make_kernel', 'reassign', 'validate_chain']
