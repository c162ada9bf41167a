"""User-item graph matrices: built with scipy.sparse, used as torch sparse CSR tensors."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

DEGREE_EPS = 1e-7  # as in the public code: keeps isolated nodes finite


def bipartite_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """``[[0, R], [R^T, 0]]`` over n_users + n_items nodes."""
    return sp.bmat([[None, interactions], [interactions.T, None]], format="csr", dtype=np.float32)


def symmetric_normalize(adjacency: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` with ``D`` the row sums plus 1e-7."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel() + DEGREE_EPS
    scale = sp.diags(np.power(degree, -0.5).astype(np.float32))
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def normalized_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """The LightGCN propagation matrix ``Ahat`` of the training graph."""
    return symmetric_normalize(bipartite_adjacency(interactions))


def row_mean_operator(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """``R`` with each row divided by its sum plus 1e-7: ``op @ F`` averages a user's items."""
    degree = np.asarray(interactions.sum(axis=1)).ravel() + DEGREE_EPS
    return (sp.diags((1.0 / degree).astype(np.float32)) @ interactions).tocsr().astype(np.float32)


def to_torch(matrix: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy sparse matrix as a float32 torch sparse CSR tensor."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            device=device,
            check_invariants=False,  # scipy already guarantees a valid CSR layout
        )


def propagate(matrix: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """``[E, A E, A^2 E, ...]`` for ``n_layers`` steps (a pure function)."""
    layers = [embeddings]
    for _ in range(n_layers):
        layers.append(torch.sparse.mm(matrix, layers[-1]))
    return layers
