"""Atomic file writes: a file appears under its final name complete or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(temp_path)`` to a temporary file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(Path(temp_name))
        os.chmod(temp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
