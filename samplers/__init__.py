"""MCMC over walker ensembles: random-walk Metropolis (BlackJAX) and drift-limited MALA."""

from samplers.kernels import (SAMPLERS, KernelSpec, WalkerInfo, WalkerState, adapt_step_size, init,
                              kernel_spec, make_kernel)

__all__ = ['SAMPLERS', 'KernelSpec', 'WalkerInfo', 'WalkerState', 'adapt_step_size', 'init', 'kernel_spec',
           'make_kernel']
