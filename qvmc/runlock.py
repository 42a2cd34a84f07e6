"""One writer per run directory: an exclusive OS lock (``fcntl.flock``) on ``<run_dir>/.qvmc-lock``.

A training run (``qvmc.train.train`` and the drivers) holds the lock for as long as it writes the
directory; a second process that tries to write the same directory (a requeued job while the
first still runs, the same command typed twice) is refused with ``RunDirectoryLocked`` before it
compiles anything, and the message names the owner (host, PID, start time) that the lock file
records. The lock belongs to the open file, so the kernel drops it when the owner exits in any way,
SIGKILL included: a killed run never blocks its own resume. Readers (predictions, sweeps of a
finished run, ``qvmc.pretrained export``) take no lock.

Within one process the lock is re-entrant: ``acquire`` of a directory this process already holds
counts up, and the lock is released when every holder has released it (a driver holds it for the
whole run; ``train`` inside takes it again).

Network filesystems: on Linux, ``flock`` on NFS (v3 with lockd, v4) is emulated with byte-range
locks that the server honours across hosts. Some cluster filesystems do not honour locks between
hosts unless mounted for it (e.g. Lustre without the ``flock`` mount option, where ``flock`` fails
with ``ENOSYS``/``EOPNOTSUPP``, or where ``localflock`` makes it local to one host). Where the
filesystem refuses the call, ``acquire`` warns once and runs unlocked (set ``QVMC_RUN_LOCK=strict``
to refuse to run instead); where it silently accepts a host-local lock, two hosts are not
protected from each other, so submit one job per run directory there.
"""

import datetime
import errno
import json
import os
import socket
import warnings
from typing import Dict, Optional

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking
    fcntl = None

LOCK_NAME = '.qvmc-lock'
_HELD: Dict[str, list] = {}  # real path of a run directory -> [file object, count]
_UNSUPPORTED = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, getattr(errno, 'ENOTSUP', errno.EOPNOTSUPP)}


class RunDirectoryLocked(ValueError):
    """Another process writes this run directory (its owner record in ``owner``)."""

    def __init__(self, run_dir: str, owner: Dict[str, object]):
        self.run_dir, self.owner = run_dir, owner
        who = (f'process {owner.get("pid", "?")} on host {owner.get("host", "?")}, '
               f'started {owner.get("started", "?")}') if owner else 'another process (no owner record yet)'
        super().__init__(f'Run directory {run_dir!r} is in use by {who}: only one run may write a directory. '
                         'Wait for that run to end (or stop it: SIGTERM writes a checkpoint), or choose another '
                         '--run-dir / run_dir.')


def owner(run_dir: str) -> Dict[str, object]:
    """The owner record in ``run_dir``'s lock file (``{}`` if none or unreadable)."""
    try:
        with open(os.path.join(run_dir, LOCK_NAME), encoding='utf-8') as f:
            record = json.loads(f.read() or '{}')
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def is_held(run_dir: str) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return os.path.realpath(run_dir) in _HELD


def acquire(run_dir: str) -> None:
    """Takes the lock of ``run_dir`` (created if missing) for this process; re-entrant.

    Raises:
      RunDirectoryLocked: another process holds it.
      OSError: the directory or its lock file cannot be created (e.g. permissions).
    """
    real = os.path.realpath(run_dir)
    if real in _HELD:
        _HELD[real][1] += 1
        return
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_NAME)
    f = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with  (held until release)
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunDirectoryLocked(run_dir, owner(run_dir)) from None
    except OSError as err:
        if err.errno not in _UNSUPPORTED or os.environ.get('QVMC_RUN_LOCK') == 'strict':
            f.close()
            raise
        warnings.warn(f'The filesystem of {run_dir!r} does not support file locks ({err.strerror}); running '
                      'without the one-writer check. Do not start a second run on this directory.', stacklevel=2)
    record = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record) + '\n')
    f.flush()
    _HELD[real] = [f, 1]


def release(run_dir: str) -> None:
    """Gives back one hold of ``run_dir``; the last one unlocks (the lock file stays, harmlessly)."""
    real = os.path.realpath(run_dir)
    held = _HELD.get(real)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[real]
        held[0].close()  # closing the file drops the flock


class RunLock:
    """``with RunLock(run_dir):`` holds the lock of ``run_dir`` (None: no directory, no lock)."""

    def __init__(self, run_dir: Optional[str]):
        self.run_dir = run_dir

    def __enter__(self):
        if self.run_dir is not None:
            acquire(self.run_dir)
        return self

    def __exit__(self, *exc):
        if self.run_dir is not None:
            release(self.run_dir)
        return False
