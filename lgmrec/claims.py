"""Claims on runs, so that two workers or two grid drivers never train the same run at once.

A claim is an exclusive POSIX record lock (``fcntl.lockf``) on ``<record stem>.claim`` beside the
run's record, held by the process that trains the run for as long as it trains. The operating
system drops the lock when that process ends, however it ends (SIGKILL included), so a dead
owner's claim is reclaimed at once on the same machine; on a shared filesystem (NFSv4, Lustre
mounted with ``flock``, BeeGFS, GPFS) the server drops a lost node's locks when its lease expires.
The file holds the owner (host, pid, time) for people reading the folder; the lock is the truth.

Note the POSIX rule that closing ANY descriptor of the file in the owning process drops the lock:
only :class:`RunClaim` opens claim files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

CLAIM_SUFFIX = ".claim"


class RunClaim:
    """``with RunClaim(path) as claim: if claim.acquired: ...``; never blocks."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.acquired = False
        self._descriptor: int | None = None

    def __enter__(self) -> "RunClaim":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(descriptor)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return self  # held by a live owner
                raise
            if _same_file(self.path, descriptor):
                break
            os.close(descriptor)  # locked a file its owner had just released and removed: retry
        else:
            return self
        self._descriptor, self.acquired = descriptor, True
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, owner.encode(), 0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._descriptor is not None:
            # unlink while still holding the lock: a waiter that opened the old file gets its lock
            # but sees the name gone (``_same_file``) and tries again on a fresh file
            self.path.unlink(missing_ok=True)
            os.close(self._descriptor)
            self._descriptor, self.acquired = None, False


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def held(path: str | os.PathLike) -> bool:
    """Whether a live process holds the claim (probed by taking and dropping it when free)."""
    with RunClaim(path) as claim:
        return not claim.acquired


def owner(path: str | os.PathLike) -> dict | None:
    """Who holds (or last held) a claim, as written in the file; None when there is none."""
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


__all__ = ["CLAIM_SUFFIX", "RunClaim", "held", "owner"]
