"""Deprecated location of the Monte Carlo statistics: they live in ``samplers.stats`` (diagnostics of chains)."""

import warnings

from samplers.stats import *  # noqa: F401,F403

warnings.warn('qvmc.stats moved to samplers.stats; import it from there (this alias will be removed).',
              DeprecationWarning, stacklevel=2)
