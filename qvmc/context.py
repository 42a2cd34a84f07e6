"""Deprecated location of ``Context``: it lives in ``hamiltonians.context`` (contexts belong to the systems)."""

import warnings

from hamiltonians.context import Context, group_by_spins  # noqa: F401,F403

warnings.warn('qvmc.context moved to hamiltonians.context; import it from there (this alias will be removed).',
              DeprecationWarning, stacklevel=2)
