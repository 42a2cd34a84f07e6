"""Checkpoints without pickle: atomic, checksummed ``.qvmc`` files in a directory, with rotation.

The file format (``encode``, ``decode``, ``restore``, ``load``, ...) lives in
``qvmc.checkpoint_format`` and is re-exported here; this module writes files atomically, keeps
numbered checkpoints and finds the newest readable one.
"""

import glob
import os
import re
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Tuple

from qvmc.checkpoint_format import (FORMAT_VERSION, LEGACY_MAGIC, MAGIC, META_KEY, check_metadata, decode, encode,
                                    load, load_payload, restore)

TEMP_PREFIX = '.ckpt-'
CHECKPOINT_NAME = 'checkpoint.qvmc'  # in a run directory: always the newest checkpoint (a hard link to a numbered one)
LEGACY_LATEST = 'checkpoint.pkl'
_NUMBERED = re.compile(r'^checkpoint-(\d{8})\.(qvmc|pkl)$')


def _write(f, data: bytes) -> None:
    """Writes the whole file content (a seam: tests replace it to stop a process mid-write)."""
    f.write(data)


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The bytes go to a temporary file in the same directory, which is flushed, fsync'ed and
    renamed over ``path`` (``os.replace`` is atomic on POSIX); the directory is fsync'ed too.
    A process killed meanwhile leaves only a ``.ckpt-*`` temporary (see ``remove_temporaries``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _os_error(err: OSError, message: str) -> OSError:
    """An ``OSError`` of the same errno (hence subclass) as ``err`` carrying ``message``."""
    return OSError(err.errno, f'{message} ({err.strerror or err})') if err.errno else OSError(f'{message} ({err})')


def save(path: str, tree: Any, metadata: Optional[Dict[str, Any]] = None, *, allow_nonfinite: bool = False) -> None:
    """Writes ``tree`` atomically as a checksummed checkpoint (see ``encode`` for what it may hold).

    Raises:
      ValueError: see ``encode``.
      OSError: the file could not be written; an existing ``path`` is unchanged.
    """
    data = encode(tree, metadata, allow_nonfinite=allow_nonfinite)
    try:
        write_atomic(path, data)
    except OSError as err:
        raise _os_error(err, f'Could not write checkpoint {path!r}; any existing file there is unchanged') from err


# ----- a directory of rotating checkpoints -----

def numbered_path(directory: str, step: int) -> str:
    """``directory/checkpoint-<step, 8 digits>.qvmc``."""
    return os.path.join(directory, f'checkpoint-{int(step):08d}.qvmc')


def list_checkpoints(directory: str) -> List[Tuple[int, str]]:
    """Numbered checkpoints in ``directory`` as ``(step, path)``, newest first; legacy ``.pkl``
    files come after the ``.qvmc`` file of the same step."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), 'checkpoint-*')):
        match = _NUMBERED.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), match.group(2) == 'qvmc', path))
    return [(step, path) for step, _, path in sorted(found, reverse=True)]


def save_rotating(directory: str, step: int, tree: Any, metadata: Optional[Dict[str, Any]] = None,
                  keep: int = 3, latest_name: Optional[str] = 'checkpoint.qvmc', *,
                  allow_nonfinite: bool = False) -> str:
    """Writes ``checkpoint-<step>.qvmc`` atomically, points ``latest_name`` at it, keeps the newest ``keep``.

    ``latest_name`` becomes a hard link to the new file (a second atomic rename; a copy
    where links are not supported), so it is always a complete checkpoint too. Older
    numbered files beyond ``keep`` are deleted only after both are in place.

    Returns:
      The path of the numbered checkpoint.

    Raises:
      ValueError: see ``encode`` (nothing is written).
      OSError: the directory is not writable, the disk is full, ...: ``latest_name`` still
        names the previous complete checkpoint and no checkpoint was deleted.
    """
    if keep < 1:
        raise ValueError(f'keep must be >= 1 (checkpoints to keep), got {keep}.')
    data = encode(tree, metadata, allow_nonfinite=allow_nonfinite)
    path = numbered_path(directory, step)
    try:
        write_atomic(path, data)
    except OSError as err:
        raise _os_error(err, f'Could not write checkpoint {os.path.basename(path)} in directory {directory!r}; '
                        'the previous checkpoint is still current and none was deleted') from err
    if latest_name:
        latest = os.path.join(directory, latest_name)
        tmp = os.path.join(directory, f'{TEMP_PREFIX}link-{os.getpid()}')
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.link(path, tmp)
            os.replace(tmp, latest)
            _fsync_dir(directory)
        except OSError:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            try:
                write_atomic(latest, data)
            except OSError as err:
                raise _os_error(err, f'Wrote {path!r} but could not update {latest_name} in directory '
                                f'{directory!r}, which still names the previous checkpoint; none was deleted') from err
    for _, old in list_checkpoints(directory)[keep:]:
        if old != path:
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass
            except OSError as err:
                warnings.warn(f'Could not delete old checkpoint {old!r} ({err}).', UserWarning, stacklevel=2)
    return path


def remove_temporaries(directory: str) -> int:
    """Deletes ``.ckpt-*`` files left by killed writers; returns how many. Call only when no
    other process writes checkpoints into ``directory``."""
    paths = glob.glob(os.path.join(glob.escape(directory), TEMP_PREFIX + '*'))
    for path in paths:
        os.unlink(path)
    return len(paths)


def latest_readable(directory: str, latest_name: Optional[str] = 'checkpoint.qvmc', allow_pickle: bool = False
                    ) -> Tuple[Optional[str], Optional[Dict[str, Any]], List[Tuple[str, str]]]:
    """The newest checkpoint in ``directory`` that passes verification.

    Numbered checkpoints are tried newest first; if there are none, ``latest_name`` and then a
    legacy ``checkpoint.pkl`` (a single checkpoint of an older run) are tried.

    Returns:
      ``(path, payload, failures)``: ``(None, None, failures)`` when none is readable;
      ``failures`` lists ``(path, reason)`` for every file that failed, e.g. a legacy pickle
      refused because ``allow_pickle`` is False.
    """
    candidates = [p for _, p in list_checkpoints(directory)]
    if not candidates:
        names = dict.fromkeys(n for n in (latest_name, LEGACY_LATEST) if n)
        candidates = [os.path.join(directory, n) for n in names if os.path.exists(os.path.join(directory, n))]
    failures = []
    for path in candidates:
        try:
            return path, load_payload(path, allow_pickle), failures
        except ValueError as err:
            failures.append((path, str(err)))
    return None, None, failures


__all__ = ['CHECKPOINT_NAME', 'FORMAT_VERSION', 'LEGACY_LATEST', 'LEGACY_MAGIC', 'MAGIC', 'META_KEY', 'TEMP_PREFIX', 'check_metadata',
           'decode', 'encode', 'latest_readable', 'list_checkpoints', 'load', 'load_payload', 'numbered_path',
           'remove_temporaries', 'restore', 'save', 'save_rotating', 'write_atomic']
