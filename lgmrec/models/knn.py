"""Item-item k-nearest-neighbour graphs shared by LATTICE, FREEDOM, MICRO and MGCN.

Every one of these models links each item to the ``k`` items whose features are most
cosine-similar to its own (the item itself included, as upstream: its similarity is 1). Upstream
builds the ``n_items x n_items`` similarity matrix ``normed @ normed.T`` and takes ``topk`` of each
row. :func:`cosine_topk` does exactly that in ONE product while the matrix has at most
``DENSE_SIMILARITY_LIMIT`` entries (every synthetic preset and Amazon Baby); above it, the rows
are cut into equal blocks of at most ``limit / n`` rows (Sports and Clothing: 2 blocks). A
block's rows are the same dot products computed by the same kernel, so they are bitwise equal to
the dense product's rows (``tests/models/test_knn.py`` checks this, and that the top-k indices
are then identical, ties included: ``topk`` of identical rows is identical). The k kept values are
the product's own entries. Neighbour sets and kept similarities therefore equal upstream's on the
same device (upstream itself differs in the last bit between CPU and GPU); the normalised weights
agree to float rounding (degrees are summed over the k kept entries, upstream over a dense row).

Two representations are used:

- frozen graphs (computed once from the raw feature tables) are scipy CSR matrices holding the
  cosine similarity of each kept pair, cached on disk with :func:`lgmrec.cache.cached_sparse`
  under a fingerprint of the feature array, ``k`` and the device type; each model then
  normalises them its own way (:func:`symmetric_normalize_weighted` or
  :func:`symmetric_normalize_binary`);
- learned graphs (LATTICE, MICRO rebuild them from trainable projections) are pairs of
  ``(n, k)`` tensors ``indices`` and ``weights``, propagated with :func:`gather_propagate`, so
  gradients reach the weights without any sparse-autograd machinery. Within an epoch the learned
  graph is constant (detached); :func:`combine_graphs` then merges it with the frozen graphs
  into one sparse CSR matrix, so that a layer is one sparse product.

Also here, because every multimodal baseline needs them: :func:`select_features` and
:class:`FeatureTables`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..cache import cached_sparse, fingerprint
from ..data import InteractionData
from ..errors import ConfigError
from .base import rows_of

#: the largest similarity matrix computed in one product (1 GiB of float32)
DENSE_SIMILARITY_LIMIT = 2**28
GRAPH_VERSION = "cosine-topk-v2"  # part of the cache key: bump when the computation changes
FREEDOM_DEGREE_EPS = 1e-7  # FREEDOM adds this to kNN degrees (LATTICE/MGCN/MICRO add nothing)


def select_features(data: InteractionData, requested: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The dataset's feature tables, all of them or the ``requested`` subset, in dataset order."""
    if not data.features:
        raise ConfigError(f"dataset {data.name} has no modality features; this model needs at least one")
    names = list(requested) or data.modalities
    missing = [m for m in names if m not in data.features]
    if missing:
        raise ConfigError(
            f"modalities {missing} not in dataset {data.name} (has {', '.join(data.modalities)})"
        )
    return {m: data.features[m] for m in data.modalities if m in names}


def feature_tensors(features: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The tables of :func:`select_features` as tensors sharing their memory."""
    return {m: torch.from_numpy(t) for m, t in features.items()}


class FeatureTables(nn.Module):
    """Raw ``(n_items, dim)`` feature tables by modality: trainable parameters (the upstream
    models load them with ``from_pretrained(freeze=False)``) or frozen buffers."""

    def __init__(self, features: dict[str, torch.Tensor], trainable: bool):
        super().__init__()
        self.trainable = trainable
        self.names = list(features)
        for m, table in features.items():
            if not m.isidentifier() or hasattr(self, m):
                raise ConfigError(f"modality name {m!r} cannot name a feature table")
            if trainable:
                self.register_parameter(m, nn.Parameter(table.clone()))
            else:
                self.register_buffer(m, table, persistent=False)

    def __getitem__(self, modality: str) -> torch.Tensor:
        return getattr(self, modality)


def _similarity_device() -> torch.device:
    # A one-off preprocessing product: use the GPU when there is one (Clothing takes minutes on CPU).
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ConfigError(f"knn_k must be between 1 and the number of items ({n}), got {k}")


def row_blocks(n: int, chunk_rows: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` of equal row blocks covering ``n`` rows: one block while ``n * n`` fits
    ``DENSE_SIMILARITY_LIMIT`` (or ``n <= chunk_rows``), else the fewest blocks of at most
    ``chunk_rows`` (default ``limit // n``) rows, their sizes differing by at most one row."""
    limit = chunk_rows if chunk_rows is not None else max(1, DENSE_SIMILARITY_LIMIT // max(n, 1))
    n_blocks = max(1, -(-n // max(1, limit)))
    bounds = [round(i * n / n_blocks) for i in range(n_blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def cosine_topk(
    features: torch.Tensor, k: int, chunk_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)``, each ``(n, k)``: every row's k largest cosine similarities.

    ``normed @ normed.T`` then ``topk`` per row, as upstream, in one product or in equal row
    blocks (:func:`row_blocks`); rows of zeros have similarity 0 with everything (upstream
    divides by a zero norm and gets NaN).
    """
    n = features.shape[0]
    _check_k(k, n)
    normed = F.normalize(features.float(), dim=1)
    values, indices = [], []
    for start, stop in row_blocks(n, chunk_rows):
        top = torch.topk(normed[start:stop] @ normed.T, k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    if len(values) == 1:
        return values[0], indices[0]
    return torch.cat(values), torch.cat(indices)


def knn_graph(
    features: np.ndarray, k: int, chunk_rows: int | None = None, device: torch.device | None = None
) -> sp.csr_matrix:
    """Sparse ``n x n`` matrix with the cosine similarity at each row's top-k columns, computed on
    ``device`` (default: a GPU when there is one)."""
    table = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device or _similarity_device())
    values, indices = cosine_topk(table, k, chunk_rows)
    n = table.shape[0]
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    matrix = sp.csr_matrix(
        (values.cpu().numpy().ravel(), indices.cpu().numpy().ravel(), indptr), shape=(n, n)
    )
    matrix.sort_indices()
    return matrix


def cached_knn_graph(features: np.ndarray, k: int) -> sp.csr_matrix:
    """:func:`knn_graph`, computed once per distinct (feature array, k, device type) and cached on
    disk. The device is part of the key because CPU and GPU products differ in the last bit, which
    can swap near-tied neighbours at rank k: a cache shared by CPU and GPU machines (a cluster's
    home directory) must not hand one's graph to the other."""
    _check_k(k, features.shape[0])
    device = _similarity_device()
    key = fingerprint(features, k, GRAPH_VERSION, device.type)
    return cached_sparse("knn-cosine", key, lambda: knn_graph(features, k, device=device))


def symmetric_normalize_weighted(similarity: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 S D^-1/2`` with ``D`` the row sums of the similarities (LATTICE, MGCN, MICRO)."""
    degree = np.asarray(similarity.sum(axis=1), dtype=np.float64).ravel()
    return graph.scale_symmetric(similarity, degree)


def symmetric_normalize_binary(similarity: sp.csr_matrix) -> sp.csr_matrix:
    """FREEDOM's normalisation: the kNN pattern with unit weights, ``D^-1/2 A D^-1/2``, D + 1e-7."""
    pattern = similarity.copy().tocsr()
    pattern.data = np.ones_like(pattern.data)
    degree = np.asarray(pattern.sum(axis=1), dtype=np.float64).ravel() + FREEDOM_DEGREE_EPS
    return graph.scale_symmetric(pattern, degree)


def learned_knn(
    features: torch.Tensor, k: int, chunk_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, similarities)`` of the top-k cosine neighbours, differentiable in the values.

    The neighbour choice (top-k) carries no gradient anyway. The values are the similarity
    product's own entries (upstream's values, bit for bit); their gradient comes from the same
    similarities recomputed as row-wise dot products, so autograd only stores ``(n, k)`` tensors,
    never the ``n x n`` matrix. That gradient is the dense one (top-k passes gradients only to
    the kept entries).
    """
    values, indices = cosine_topk(features.detach(), k, chunk_rows)
    if not features.requires_grad:
        return indices, values
    normed = F.normalize(features, dim=1)
    recomputed = (normed.unsqueeze(1) * rows_of(normed, indices)).sum(dim=-1)
    return indices, values + (recomputed - recomputed.detach())


def symmetric_knn_weights(indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Edge weights of ``D^-1/2 S D^-1/2`` for a graph given as ``(n, k)`` indices and values."""
    scale = values.sum(dim=1).pow(-0.5)
    scale = torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))
    return values * scale.unsqueeze(1) * rows_of(scale, indices)


def gather_propagate(indices: torch.Tensor, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``S @ x`` for ``S`` given as ``(n, k)`` neighbour indices and weights (row i: sum_j w_ij x_j)."""
    return (weights.unsqueeze(-1) * rows_of(x, indices)).sum(dim=1)


def knn_as_dense(indices: torch.Tensor, weights: torch.Tensor, n_columns: int) -> torch.Tensor:
    """The dense matrix of a gathered graph (for tests and small debugging only)."""
    dense = torch.zeros(indices.shape[0], n_columns, dtype=weights.dtype, device=weights.device)
    return dense.scatter_add(1, indices, weights)


def combine_graphs(
    n: int,
    gathered: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    sparse: Sequence[tuple[torch.Tensor, float | torch.Tensor]] = (),
) -> torch.Tensor:
    """One constant ``n x n`` sparse CSR matrix equal to ``sum(gathered) + sum(c * S)``.

    ``gathered``: ``(indices, weights)`` pairs of ``(n, k)`` graphs (as for
    :func:`gather_propagate`), detached; ``sparse``: ``(matrix, coefficient)`` pairs of sparse
    CSR matrices. Entries at the same (row, column) are summed. ``matrix @ x`` then equals the sum
    of the parts' products up to float rounding (the terms are added in another order).
    """
    rows, cols, values = [], [], []
    for indices, weights in gathered:
        k = indices.shape[1]
        rows.append(torch.arange(n, device=indices.device).repeat_interleave(k))
        cols.append(indices.reshape(-1))
        values.append(weights.detach().reshape(-1))
    for matrix, coefficient in sparse:
        crow, col = matrix.crow_indices(), matrix.col_indices()
        rows.append(torch.arange(n, device=col.device).repeat_interleave(crow.diff()))
        cols.append(col)
        values.append(matrix.values() * (coefficient.detach() if torch.is_tensor(coefficient) else coefficient))
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    order = torch.argsort(rows * n + cols)
    rows, cols, values = rows[order], cols[order], values[order]
    first = torch.ones_like(rows, dtype=torch.bool)  # the first entry of each (row, column)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    slot = torch.cumsum(first, 0) - 1
    summed = torch.zeros(int(slot[-1]) + 1, dtype=values.dtype, device=values.device)
    summed.index_add_(0, slot, values)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows[first], minlength=n), 0, out=crow[1:])
    with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols[first], summed, (n, n), check_invariants=False)


__all__ = [
    "FeatureTables",
    "cached_knn_graph",
    "combine_graphs",
    "cosine_topk",
    "gather_propagate",
    "knn_graph",
    "learned_knn",
    "feature_tensors",
    "row_blocks",
    "select_features",
    "symmetric_knn_weights",
    "symmetric_normalize_binary",
    "symmetric_normalize_weighted",
]
