"""Deprecated location of the shared type aliases: they live in ``samplers.types`` (the lowest layer)."""

import warnings

from samplers.types import Array, ContextValues, LogPsiFn, Params, PRNGKey, WavefunctionFn  # noqa: F401,F403

warnings.warn('qvmc.types moved to samplers.types; import it from there (this alias will be removed).',
              DeprecationWarning, stacklevel=2)
