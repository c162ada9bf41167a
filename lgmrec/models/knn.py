"""Item-item k-nearest-neighbour graphs shared by LATTICE, FREEDOM, MICRO and MGCN.

Every one of these models links each item to the ``k`` items whose features are most
cosine-similar to its own (the item itself included, as upstream: its similarity is 1). The public
code builds the full ``n_items x n_items`` similarity matrix; here similarities are computed one
block of rows at a time (``chunk @ all``, then top-k per row), so memory stays at
``chunk_size x n_items`` and the result is kept sparse.

Two representations are used:

- frozen graphs (computed once from the raw feature tables) are scipy CSR matrices holding the
  cosine similarity of each kept pair, cached on disk with :func:`lgmrec.cache.cached_sparse`
  under a fingerprint of the feature array and ``k``; each model then normalises them its own way
  (:func:`symmetric_normalize_weighted` or :func:`symmetric_normalize_binary`);
- learned graphs (LATTICE, MICRO rebuild them from trainable projections) are pairs of
  ``(n, k)`` tensors ``indices`` and ``weights``, propagated with :func:`gather_propagate`, so
  gradients reach the weights without any sparse-autograd machinery.

Also here, because every multimodal baseline needs them: :func:`select_features` and
:class:`FeatureTables`.
"""

from __future__ import annotations

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

DEFAULT_CHUNK_ROWS = 2048
GRAPH_VERSION = "cosine-topk-v1"  # part of the cache key: bump when the computation changes
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


@torch.no_grad()
def cosine_topk(
    features: torch.Tensor, k: int, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)``, each ``(n, k)``: every row's k largest cosine similarities.

    Computed block by block (``features[chunk] @ features.T``); rows of zeros have similarity 0
    with everything (upstream divides by a zero norm and gets NaN).
    """
    n = features.shape[0]
    _check_k(k, n)
    normed = F.normalize(features.float(), dim=1)
    values, indices = [], []
    for start in range(0, n, chunk_rows):
        block = normed[start: start + chunk_rows] @ normed.T
        top = torch.topk(block, k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def knn_graph(features: np.ndarray, k: int, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> sp.csr_matrix:
    """Sparse ``n x n`` matrix with the cosine similarity at each row's top-k columns."""
    table = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(_similarity_device())
    values, indices = cosine_topk(table, k, chunk_rows)
    n = table.shape[0]
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    matrix = sp.csr_matrix(
        (values.cpu().numpy().ravel(), indices.cpu().numpy().ravel(), indptr), shape=(n, n)
    )
    matrix.sort_indices()
    return matrix


def cached_knn_graph(features: np.ndarray, k: int) -> sp.csr_matrix:
    """:func:`knn_graph`, computed once per distinct (feature array, k) and cached on disk."""
    _check_k(k, features.shape[0])
    key = fingerprint(features, k, GRAPH_VERSION)
    return cached_sparse("knn-cosine", key, lambda: knn_graph(features, k))


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
    features: torch.Tensor, k: int, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, similarities)`` of the top-k cosine neighbours, differentiable in the values.

    The neighbour choice (top-k) carries no gradient anyway; the similarities are recomputed as
    row-wise dot products so that autograd only stores ``(n, k)`` tensors, never a chunk of the
    ``n x n`` matrix. The values equal those of the dense computation.
    """
    _, indices = cosine_topk(features.detach(), k, chunk_rows)
    normed = F.normalize(features, dim=1)
    similarities = (normed.unsqueeze(1) * normed[indices]).sum(dim=-1)
    return indices, similarities


def symmetric_knn_weights(indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Edge weights of ``D^-1/2 S D^-1/2`` for a graph given as ``(n, k)`` indices and values."""
    scale = values.sum(dim=1).pow(-0.5)
    scale = torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))
    return values * scale.unsqueeze(1) * scale[indices]


def gather_propagate(indices: torch.Tensor, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``S @ x`` for ``S`` given as ``(n, k)`` neighbour indices and weights (row i: sum_j w_ij x_j)."""
    return (weights.unsqueeze(-1) * x[indices]).sum(dim=1)


def knn_as_dense(indices: torch.Tensor, weights: torch.Tensor, n_columns: int) -> torch.Tensor:
    """The dense matrix of a gathered graph (for tests and small debugging only)."""
    dense = torch.zeros(indices.shape[0], n_columns, dtype=weights.dtype, device=weights.device)
    return dense.scatter_add(1, indices, weights)


__all__ = [
    "FeatureTables",
    "cached_knn_graph",
    "cosine_topk",
    "gather_propagate",
    "knn_graph",
    "learned_knn",
    "feature_tensors",
    "select_features",
    "symmetric_knn_weights",
    "symmetric_normalize_binary",
    "symmetric_normalize_weighted",
]
