"""Atomic checkpoints of training state: write to a temporary file, fsync, then rename."""

import os
import pickle
import tempfile
from typing import Any, Dict, Optional

import jax
import numpy as np

FORMAT_VERSION = 1


def _to_host(tree):
    return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, (jax.Array, np.ndarray)) else a, tree)


def save(path: str, state: Any, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``state`` (any pytree of arrays and Python values) atomically.

    The file is written to a temporary name in the same directory, flushed and
    fsync'ed, then renamed over ``path`` (``os.replace`` is atomic on POSIX), so a
    crash at any moment leaves either the previous checkpoint or the new one, never
    a truncated file.

    Args:
      path: destination file.
      state: the pytree to store (converted to numpy on the host).
      metadata: small dict describing the model (checked by ``load``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = {'format_version': FORMAT_VERSION, 'metadata': metadata or {}, 'state': _to_host(state)}
    fd, tmp = tempfile.mkstemp(prefix='.ckpt-', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str, expected_metadata: Optional[Dict[str, Any]] = None) -> Any:
    """Reads a checkpoint written by ``save``.

    Args:
      path: checkpoint file.
      expected_metadata: if given, every key in it must match the stored metadata;
        a mismatch (e.g. a different network size) raises ``ValueError``.

    Raises:
      ValueError: the file is corrupted, from another format version, or from an
        incompatible model.
    """
    try:
        with open(path, 'rb') as f:
            payload = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as err:
        raise ValueError(f'Checkpoint {path!r} is unreadable ({err!r}); delete it or point to another one.') from err
    if not isinstance(payload, dict) or payload.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'Checkpoint {path!r} is not a qvmc checkpoint of format version {FORMAT_VERSION}.')
    stored = payload['metadata']
    for key, value in (expected_metadata or {}).items():
        if stored.get(key) != value:
            raise ValueError(f'Checkpoint {path!r} is incompatible: {key}={stored.get(key)!r}, '
                             f'this run has {key}={value!r}. Use a new run directory or matching settings.')
    return payload['state']
