"""Checkpoints of training state: atomic writes (temporary file, fsync, rename), a SHA-256
checksum checked on load, and rotation that keeps the last few.

File layout (format version 2): the line ``QVMC-CKPT 2``, the line ``sha256 <hex digest of
the body>``, then the body, a pickle of ``{'format_version', 'metadata', 'state'}``. Files of
format version 1 (a bare pickle of the same dict, no checksum) still load. Pickles can run
code when loaded: load only checkpoints you wrote yourself.
"""

import glob
import hashlib
import os
import pickle
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

FORMAT_VERSION = 2
MAGIC = b'QVMC-CKPT 2\n'
TEMP_PREFIX = '.ckpt-'
_NUMBERED = re.compile(r'^checkpoint-(\d{8})\.pkl$')


def _to_host(tree):
    return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, (jax.Array, np.ndarray)) else a, tree)


def encode(state: Any, metadata: Optional[Dict[str, Any]] = None) -> bytes:
    """The bytes of a checkpoint file: header, checksum line, pickled body."""
    payload = {'format_version': FORMAT_VERSION, 'metadata': metadata or {}, 'state': _to_host(state)}
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + b'sha256 ' + hashlib.sha256(body).hexdigest().encode() + b'\n' + body


def _write(f, data: bytes) -> None:
    """Writes the whole file content (a seam: tests replace it to stop a process mid-write)."""
    f.write(data)


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


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: str, state: Any, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``state`` (any pytree of arrays and picklable values) atomically, with a checksum.

    Args:
      path: destination file.
      state: the pytree to store (arrays are copied to numpy on the host).
      metadata: small dict describing the model and run (checked by ``load``).
    """
    write_atomic(path, encode(state, metadata))


def load_payload(path: str) -> Dict[str, Any]:
    """Reads and verifies a checkpoint: ``{'format_version', 'metadata', 'state'}``.

    Raises:
      ValueError: the file is missing, truncated, fails its checksum, is unreadable or is
        not a qvmc checkpoint.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f'Checkpoint {path!r} cannot be read ({err}).') from err
    if data.startswith(MAGIC):
        header_end = data.find(b'\n', len(MAGIC))
        line = data[len(MAGIC):header_end]
        body = data[header_end + 1:]
        if header_end < 0 or not line.startswith(b'sha256 '):
            raise ValueError(f'Checkpoint {path!r} is unreadable: its checksum line is missing (truncated file?).')
        if hashlib.sha256(body).hexdigest().encode() != line[len(b'sha256 '):]:
            raise ValueError(f'Checkpoint {path!r} is unreadable: the SHA-256 checksum does not match its content '
                             '(corrupted or truncated); use an older checkpoint or delete this one.')
    else:
        body = data  # format version 1: a bare pickle
    try:
        payload = pickle.loads(body)
    except Exception as err:  # noqa: BLE001 — any unpickling failure means an unreadable file
        raise ValueError(f'Checkpoint {path!r} is unreadable ({err!r}); delete it or point to another one.') from err
    if not isinstance(payload, dict) or payload.get('format_version') not in (1, FORMAT_VERSION):
        raise ValueError(f'Checkpoint {path!r} is not a qvmc checkpoint of format version 1 or {FORMAT_VERSION}.')
    return payload


def check_metadata(path: str, stored: Dict[str, Any], expected: Optional[Dict[str, Any]]) -> None:
    """Raises ``ValueError`` naming the first key of ``expected`` whose stored value differs."""
    for key, value in (expected or {}).items():
        if stored.get(key) != value:
            raise ValueError(f'Checkpoint {path!r} is incompatible: {key}={stored.get(key)!r}, '
                             f'this run has {key}={value!r}. Use a new run directory or matching settings.')


def load(path: str, expected_metadata: Optional[Dict[str, Any]] = None) -> Any:
    """Reads a checkpoint written by ``save`` and returns its state.

    Args:
      path: checkpoint file.
      expected_metadata: if given, every key in it must match the stored metadata;
        a mismatch (e.g. a different network size) raises ``ValueError``.

    Raises:
      ValueError: the file is corrupted, from another format version, or from an
        incompatible model.
    """
    payload = load_payload(path)
    check_metadata(path, payload['metadata'], expected_metadata)
    return payload['state']


# ----- a directory of rotating checkpoints -----

def numbered_path(directory: str, step: int) -> str:
    """``directory/checkpoint-<step, 8 digits>.pkl``."""
    return os.path.join(directory, f'checkpoint-{int(step):08d}.pkl')


def list_checkpoints(directory: str) -> List[Tuple[int, str]]:
    """Numbered checkpoints in ``directory`` as ``(step, path)``, newest first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), 'checkpoint-*.pkl')):
        match = _NUMBERED.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def save_rotating(directory: str, step: int, state: Any, metadata: Optional[Dict[str, Any]] = None,
                  keep: int = 3, latest_name: Optional[str] = 'checkpoint.pkl') -> str:
    """Writes ``checkpoint-<step>.pkl`` atomically, points ``latest_name`` at it, keeps the newest ``keep``.

    ``latest_name`` becomes a hard link to the new file (a second atomic rename; a copy
    where links are not supported), so it is always a complete checkpoint too. Older
    numbered files beyond ``keep`` are deleted only after the new one is in place.

    Returns:
      The path of the numbered checkpoint.
    """
    if keep < 1:
        raise ValueError(f'keep must be >= 1 (checkpoints to keep), got {keep}.')
    data = encode(state, metadata)
    path = numbered_path(directory, step)
    write_atomic(path, data)
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
            write_atomic(latest, data)
    for _, old in list_checkpoints(directory)[keep:]:
        os.unlink(old)
    return path


def remove_temporaries(directory: str) -> int:
    """Deletes ``.ckpt-*`` files left by killed writers; returns how many. Call only when no
    other process writes checkpoints into ``directory``."""
    removed = 0
    for path in glob.glob(os.path.join(glob.escape(directory), TEMP_PREFIX + '*')):
        os.unlink(path)
        removed += 1
    return removed


def latest_readable(directory: str, legacy_name: Optional[str] = 'checkpoint.pkl'
                    ) -> Tuple[Optional[str], Optional[Dict[str, Any]], List[Tuple[str, str]]]:
    """The newest checkpoint in ``directory`` that passes its checksum.

    Numbered checkpoints are tried newest first; if there are none, ``legacy_name`` (a
    single checkpoint of an older run) is tried.

    Returns:
      ``(path, payload, failures)``: ``(None, None, failures)`` when none is readable;
      ``failures`` lists ``(path, reason)`` for every file that failed verification.
    """
    candidates = [p for _, p in list_checkpoints(directory)]
    if not candidates and legacy_name and os.path.exists(os.path.join(directory, legacy_name)):
        candidates = [os.path.join(directory, legacy_name)]
    failures = []
    for path in candidates:
        try:
            return path, load_payload(path), failures
        except ValueError as err:
            failures.append((path, str(err)))
    return None, None, failures
