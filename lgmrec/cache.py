"""On-disk cache of derived inputs (kNN item graphs, user-user graphs), keyed by content hashes.

Models never read files; their ``build`` functions may call :func:`cached_sparse` so that an
expensive derived matrix is computed once per distinct input. The key must include a fingerprint
of every array the matrix is computed from, so a changed feature file can never hit a stale entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

CACHE_ENV = "LGMREC_CACHE_DIR"


def cache_dir() -> Path:
    """``$LGMREC_CACHE_DIR`` if set, else ``~/.cache/lgmrec``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lgmrec")


def fingerprint(*parts: object) -> str:
    """A short sha256 of arrays (shape, dtype and bytes), sparse matrices and plain values."""
    digest = hashlib.sha256()
    for part in parts:
        if sp.issparse(part):
            part = part.tocsr()
            parts_of = (part.shape, part.indptr, part.indices, part.data)
        else:
            parts_of = (part,)
        for piece in parts_of:
            if isinstance(piece, np.ndarray):
                digest.update(f"{piece.shape}{piece.dtype}".encode())
                digest.update(np.ascontiguousarray(piece).tobytes())
            else:
                digest.update(repr(piece).encode())
    return digest.hexdigest()[:20]


#: What :func:`cached_sparse` last loaded, by file: the runs of one grid unit (one process) build the
#: same graphs again and again (a load is ~10 ms on the -mini presets, several per build).
_LOADED: dict[Path, sp.csr_matrix] = {}
_LOADED_MAX = 32


def cached_sparse(kind: str, key: str, compute: Callable[[], sp.spmatrix]) -> sp.csr_matrix:
    """Load ``<cache>/<kind>-<key>.npz`` or compute, store atomically and return it.

    A file loaded before in this process is not read again: a copy of what it gave is returned
    (the same arrays, so callers may change theirs)."""
    path = cache_dir() / f"{kind}-{key}.npz"
    if path in _LOADED and path.is_file():
        return _LOADED[path].copy()
    if path.is_file():
        try:
            matrix = sp.load_npz(path).tocsr()
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
        else:
            while _LOADED and len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            if _LOADED_MAX > 0:
                _LOADED[path] = matrix
            return matrix.copy()
    matrix = sp.csr_matrix(compute())
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        sp.save_npz(tmp, matrix)
    os.replace(tmp.name, path)
    return matrix
