import numpy as np
import scipy.sparse as sp

from lgmrec import cache


def test_cached_sparse_reads_a_file_once_per_process_and_hands_out_copies(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    computed = []

    def compute():
        computed.append(1)
        return sp.random(30, 30, density=0.1, format="csr", random_state=0, dtype=np.float32)

    first = cache.cached_sparse("test", "key", compute)  # computed and stored
    loads = []
    real_load = sp.load_npz
    monkeypatch.setattr(sp, "load_npz", lambda path: loads.append(path) or real_load(path))
    second = cache.cached_sparse("test", "key", compute)  # loaded from the file
    second.data[:] = -1  # a caller's change stays its own
    third = cache.cached_sparse("test", "key", compute)  # not read again
    assert len(computed) == 1 and len(loads) == 1
    for matrix in (third,):
        assert matrix.dtype == first.dtype and matrix.indices.dtype == real_load(loads[0]).indices.dtype
        assert np.array_equal(matrix.indptr, first.indptr) and np.array_equal(matrix.indices, first.indices)
        assert np.array_equal(matrix.data, first.data)
    (tmp_path / "test-key.npz").unlink()  # a removed file is computed again, not served from memory
    cache.cached_sparse("test", "key", compute)
    assert len(computed) == 2


def test_cached_sparse_keeps_at_most_its_limit(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cache, "_LOADED", {})
    for limit in (0, 2):
        monkeypatch.setattr(cache, "_LOADED_MAX", limit)
        for key in ("a", "b", "c", "a", "b", "c"):
            matrix = cache.cached_sparse("test", key, lambda: sp.identity(3, format="csr"))
            assert (matrix != sp.identity(3, format="csr")).nnz == 0
            assert len(cache._LOADED) <= limit
