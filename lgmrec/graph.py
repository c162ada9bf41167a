"""User-item graph matrices: built with scipy.sparse, used as torch sparse CSR tensors."""

from __future__ import annotations

import warnings
import weakref

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


def scale_symmetric(matrix: sp.spmatrix, degree: np.ndarray) -> sp.csr_matrix:
    """``D^-1/2 M D^-1/2`` for the given degrees; a zero (or negative) degree scales its row to 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.power(degree, -0.5)
    scale[~np.isfinite(scale)] = 0.0  # upstream zeroes inf; NaN (negative degree) likewise here
    diagonal = sp.diags(scale.astype(np.float32))
    return (diagonal @ matrix @ diagonal).tocsr().astype(np.float32)


def edge_index(matrix: sp.spmatrix) -> torch.Tensor:
    """The ``(2, nnz)`` int64 (row, column) pairs of a sparse matrix's entries."""
    coo = matrix.tocoo()
    return torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))


def normalized_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """The LightGCN propagation matrix ``Ahat`` of the training graph."""
    return symmetric_normalize(bipartite_adjacency(interactions))


def row_mean_operator(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """``R`` with each row divided by its sum plus 1e-7: ``op @ F`` averages a user's items."""
    degree = np.asarray(interactions.sum(axis=1)).ravel() + DEGREE_EPS
    return (sp.diags((1.0 / degree).astype(np.float32)) @ interactions).tocsr().astype(np.float32)


def to_torch(matrix: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy sparse matrix as a float32 torch sparse CSR tensor.

    Indices are int32 where they fit: MKL's (and cuSPARSE's) sparse products take 32-bit indices,
    and torch converts int64 ones at every product (~0.3 of a 2 ms full-scale LightGCN layer)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    index_type = np.int32 if max(matrix.nnz, *matrix.shape) < np.iinfo(np.int32).max else np.int64
    with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index_type)),
            torch.from_numpy(matrix.indices.astype(index_type)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            device=device,
            check_invariants=False,  # scipy already guarantees a valid CSR layout
        )


# id(matrix) -> (weak reference to the matrix, its transpose as CSR)
_TRANSPOSES: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _transpose(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix^T`` as CSR, computed once per matrix and dropped with it."""
    key = id(matrix)
    cached = _TRANSPOSES.get(key)
    if cached is not None and cached[0]() is matrix:
        return cached[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        transposed = matrix.t().to_sparse_csr()
    _TRANSPOSES[key] = (weakref.ref(matrix, lambda _, k=key: _TRANSPOSES.pop(k, None)), transposed)
    return transposed


def sparse_product(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a sparse CSR ``matrix`` and a 2-D dense ``dense``, outside autograd.

    On CPU the product is written straight into a fresh tensor (``addmm_`` with beta 0, which MKL
    honours by overwriting): ``torch.sparse.mm`` first zero-fills its result and then copies those
    zeros into it again, two needless passes over an (n x d) matrix (a full-scale LightGCN layer:
    ~2.0 ms against 1.2 ms, the same bits). On other devices :func:`row_sums_of_gathered`, and for
    gradients or other layouts ``torch.sparse.mm``."""
    if (matrix.layout != torch.sparse_csr or dense.dim() != 2
            or (torch.is_grad_enabled() and (matrix.requires_grad or dense.requires_grad))):
        return torch.sparse.mm(matrix, dense)
    if matrix.device.type != "cpu":
        return row_sums_of_gathered(matrix, dense)
    return dense.new_empty(matrix.shape[0], dense.shape[1]).addmm_(matrix, dense, beta=0)


def row_sums_of_gathered(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a sparse CSR ``matrix``: each row's entries times the rows of ``dense``
    they select, summed in storage order, so every run gives the same bits. cuSPARSE's product,
    which ``torch.sparse.mm`` calls on CUDA, does not: on an H100, two products of one DualGNN user
    graph differed in the last bits, and so did same-seed runs of DualGNN and FREEDOM (torch gives
    no determinism warning for it)."""
    products = dense.index_select(0, matrix.col_indices()) * matrix.values().unsqueeze(1)
    return torch.segment_reduce(products, "sum", offsets=matrix.crow_indices(), axis=0)


class _ConstantSpMM(torch.autograd.Function):
    """``A @ X`` for a constant sparse ``A``; the backward is ``A^T @ G`` with ``transposed`` (a CSR
    ``A^T``: ``A`` itself for a symmetric ``A``, so none is built, which matters for the pruned
    graphs of FREEDOM and LayerGCN, new every epoch), or by default a cached ``A^T``.

    torch's own backward of a CSR product rebuilds the transpose on every call, which made it
    about 6x slower than the forward on the training graphs here.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, dense: torch.Tensor, transposed: torch.Tensor | None) -> torch.Tensor:
        ctx.matrix, ctx.transposed = matrix, transposed
        return sparse_product(matrix, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        transposed = ctx.transposed if ctx.transposed is not None else _transpose(ctx.matrix)
        return None, sparse_product(transposed, grad), None


def spmm(matrix: torch.Tensor, dense: torch.Tensor, transposed: torch.Tensor | None = None) -> torch.Tensor:
    """``matrix @ dense`` for a sparse CSR ``matrix``; fast backward when the matrix is constant,
    through ``transposed`` (its CSR transpose) when given, else a cached one."""
    if matrix.requires_grad or matrix.layout != torch.sparse_csr or not dense.requires_grad:
        return sparse_product(matrix, dense)
    return _ConstantSpMM.apply(matrix, dense, transposed)


def symmetric_spmm(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a constant symmetric sparse ``matrix`` (its own transpose)."""
    return spmm(matrix, dense, transposed=matrix)


#: :class:`SparseRows` cuts its rows out of the matrix only when they are at most this share of its
#: rows: a batch of the -mini presets touches ~95 % of the nodes, where the cut (~0.2 ms) cost more
#: than the full product it saves (~0.08 ms); a full-scale batch touches ~20 %.
CUT_MAX_SHARE = 0.5


class SparseRows:
    """Some rows of a constant sparse CSR ``matrix``: ``product(X) == (matrix @ X)[rows]``, with the
    gradient ``matrix[rows]^T @ G``, for the cost of those rows' entries only.

    A training batch touches a few thousand of the graph's nodes; LGMRec's loss needs only their
    rows of the last modality layer (full-scale Baby-like: 30 % of the entries, ~0.5 against 1.8 ms
    per product and as much in the backward, the same bits). On CPU the rows and their transpose
    are cut with scipy (~0.6 ms, shared by every product of a step); elsewhere, and where the rows
    are more than :data:`CUT_MAX_SHARE` of the matrix's, ``product`` is the full product's rows
    (the same bits: tests/test_graph.py)."""

    def __init__(self, matrix: torch.Tensor, rows: torch.Tensor):
        self.matrix, self.rows = matrix, rows
        self.cut = (matrix.device.type == "cpu" and matrix.layout == torch.sparse_csr
                    and len(rows) <= CUT_MAX_SHARE * matrix.shape[0])
        self.sub = self.sub_t = None  # cut at the first product

    def product(self, dense: torch.Tensor) -> torch.Tensor:
        if not self.cut:
            return spmm(self.matrix, dense).index_select(0, self.rows)
        if self.sub is None:
            full = sp.csr_matrix((self.matrix.values().numpy(), self.matrix.col_indices().numpy(),
                                  self.matrix.crow_indices().numpy()), shape=self.matrix.shape)
            sub = full[self.rows.numpy()]
            self.sub, self.sub_t = to_torch(sub), to_torch(sub.T)
        return spmm(self.sub, dense, transposed=self.sub_t)


def edge_normalization(edges: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """``1 / sqrt(d_u d_i)`` per (user, item) edge, degrees counted over ``edges`` (+1e-7, as upstream)."""
    users, items = edges
    user_degree = torch.bincount(users, minlength=n_users).to(torch.float32) + DEGREE_EPS
    item_degree = torch.bincount(items, minlength=n_items).to(torch.float32) + DEGREE_EPS
    return user_degree[users].pow(-0.5) * item_degree[items].pow(-0.5)


class SymmetricLayout:
    """The CSR layout of ``[[0, R], [R^T, 0]]`` for a fixed list of (user, item) edges, with the
    edge id of every stored entry: the matrix of any subset of the edges is a masked copy of it
    (already sorted, so no sort or coalesce per epoch)."""

    def __init__(self, edges: torch.Tensor, n_users: int, n_items: int):
        self.n_nodes = n_users + n_items
        users, items = edges[0], edges[1] + n_users
        rows, cols = torch.cat([users, items]), torch.cat([items, users])
        order = torch.argsort(rows * self.n_nodes + cols)
        self.rows, self.cols = rows[order], cols[order]
        self.edge_of_entry = torch.arange(edges.shape[1], device=edges.device).repeat(2)[order]

    def matrix(self, kept: torch.Tensor, edge_values: torch.Tensor) -> torch.Tensor:
        """The CSR matrix of the edges where ``kept`` (bool, per edge id) holds, with
        ``edge_values[e]`` at both (u, i) and (i, u)."""
        entries = kept[self.edge_of_entry]
        crow = torch.zeros(self.n_nodes + 1, dtype=torch.int64, device=entries.device)
        torch.cumsum(torch.bincount(self.rows[entries], minlength=self.n_nodes), 0, out=crow[1:])
        with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                crow, self.cols[entries], edge_values[self.edge_of_entry[entries]],
                size=(self.n_nodes, self.n_nodes), check_invariants=False,
            )

    def to(self, device: torch.device) -> SymmetricLayout:
        for name in ("rows", "cols", "edge_of_entry"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def propagate(matrix: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """``[E, A E, A^2 E, ...]`` for ``n_layers`` steps (a pure function)."""
    layers = [embeddings]
    for _ in range(n_layers):
        layers.append(spmm(matrix, layers[-1]))
    return layers
