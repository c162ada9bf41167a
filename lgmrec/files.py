"""Atomic, durable file writes: a file appears under its final name complete or not at all.

The content goes to a temporary file in the same folder, which is flushed and fsync'ed before it
is renamed over the final name; the folder is fsync'ed after the rename, so that after a power
loss the new name cannot point at an empty file (as databases do).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable

TEMP_SUFFIX = ".tmp"
# ".<final name>.<host>~<pid>.<random>.tmp": whose writer it is, so that only dead writers' files are removed
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[^.~]+)~(?P<pid>\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(temp_path)`` to a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = f"{socket.gethostname().split('.')[0]}~{os.getpid()}"
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(Path(temp_name))
        os.chmod(temp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        fsync_path(temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temporary files under ``folder`` left by writers that died on this machine
    (a live writer's, or another machine's, are left alone); returns how many."""
    host, count = socket.gethostname().split(".")[0], 0
    for path in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.match(path.name)
        if match is None or (match["host"] == host and not _alive(int(match["pid"]))):
            path.unlink(missing_ok=True)
            count += 1
    return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
