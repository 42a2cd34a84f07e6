"""MCMC over walker ensembles: random-walk Metropolis (BlackJAX) and drift-limited MALA."""

from samplers.kernels import (SAMPLERS, KernelSpec, WalkerInfo, WalkerState, adapt_step_size, init,
                              kernel_spec, make_kernel)
from samplers.mcmc import MCMC

__all__ = ['MCMC', 'SAMPLERS', 'KernelSpec', 'WalkerInfo', 'WalkerState', 'adapt_step_size', 'init', 'kernel_spec',
           'make_kernel']
