"""MCMC over walker ensembles (BlackJAX kernels) and chain statistics."""

from samplers import metropolis
from samplers.metropolis import WalkerInfo, WalkerState, adapt_step_size

__all__ = ['metropolis', 'WalkerInfo', 'WalkerState', 'adapt_step_size']
