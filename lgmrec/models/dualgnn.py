"""DualGNN (Wang et al., IEEE TMM 2021): per-modality bipartite GCNs plus a user co-occurrence graph.

Follows MMRec ``src/models/dualgnn.py`` with ``src/configs/model/DualGNN.yaml`` (enoche/MMRec)
and its ``preprocessing/dualgnn-gen-u-u-matrix.py``. What it computes:

- per modality m: a trainable, Xavier-normal user preference table ``P_m`` and item content
  ``MLP_1(leaky_relu(MLP(x_i)))`` (feature dim -> 4d -> d, torch's default Linear init);
  ``X = normalize([P_m; content])`` (row-wise L2) is propagated over the user-item graph twice
  and summed: ``R_m = X + A X + A^2 X`` with ``A = D^-1/2 A D^-1/2`` (``aggr_mode 'add'``, PyG's
  degree normalisation, no epsilon; ``'mean'`` uses ``D^-1 A``). Item representation:
  ``sum_m R_m``;
- user representation: a per-user weighting of the modalities initialised as the softmax of
  Xavier-normal ``(n_users, M, 1)`` draws, ``sum_m w_(u,m) R_m(u)`` (one modality: ``R_m(u)``
  itself), then one step over the user co-occurrence graph: ``h_u + sum_v s_(u,v) h_v``;
- user co-occurrence graph: every user's ``user_graph_k`` (40) users sharing the most training
  items (self excluded); weights ``softmax`` of the shared-item counts over the k slots
  (``user_aggr_mode 'mean'``: 1/k per slot). A user with fewer than k co-users fills the
  missing slots, anew every epoch (MMRec's ``pre_epoch_processing``), by repeatedly copying a
  uniformly chosen already-filled slot (so repeated users weigh more); a user with none gets
  no message;
- loss: ``-mean(log2 sigmoid(pos - neg))`` (base-2 logarithm, as upstream) plus ``reg_weight``
  times the sum of the mean squared preferences of the batch's users (each modality) and the
  mean squared *whole* user and item modality-weight tables (the item weights are only
  regularised, never used, as upstream). Means of squares, not MMRec's EmbLoss, as upstream.

Upstream quirk kept by default (``upstream_inplace_sum=True``): its ``representation += t_rep``
adds in place to the image representation, so the user weighting actually combines
``w_(u,image) (R_image + R_text) + w_(u,text) R_text``. With more than two modalities the first
modality's representation is the one that is replaced by the sum.

Deviations (config fields, also in ``SPEC.deviations``):

- ``upstream_inplace_sum`` (True = MMRec): False gives the paper's
  ``w_(u,image) R_image + w_(u,text) R_text``;
- ``score_from_last_batch`` (True = MMRec): upstream scores validation and test users with the
  representation cached in the epoch's last training batch (computed before that batch's
  optimiser step); False recomputes it from the current parameters (with the current epoch's
  co-occurrence sample either way);
- ``n_layers`` (2 = MMRec): upstream ignores its yaml's ``n_layers`` and always runs two steps;
  other values change the number of steps;
- ``user_graph_k``, ``user_aggr_mode`` (40, 'softmax' = MMRec, hard-coded there);
- ``modalities`` (empty = every modality, as MMRec; upstream's weighting assumes two): a subset.

Not options: the user-user graph is built here from the training split with scipy (``R R^T``
in row chunks) and cached on disk under a fingerprint of the training matrix and k (upstream
reads a precomputed ``user_graph_dict.npy`` built with a dense ``n_users^2`` matrix); ties in
the shared-item count are broken towards lower user ids (upstream: ``torch.topk`` order); the
slot filling uses torch's RNG (upstream: NumPy's). Upstream also builds node-dropped edge lists
and three linear layers that its forward pass never uses (no gradient, so Adam never moves
them); they are left out, which changes only the parameter count.

Grids: MMRec searches ``aggr_mode ['add']`` x ``learning_rate [0.1, 0.01, 1e-3, 1e-4, 1e-5]``
x ``reg_weight [0.1, 0.01, 1e-3, 1e-4, 1e-5]`` (``SPEC.tuning_grid``). The reduced grid of the
embedded default keeps ``learning_rate {0.1, 0.01, 1e-3}`` (rates below 1e-3 need more epochs
than the budget has) x ``reg_weight {0.1, 1e-3, 1e-5}``. Neither MMRec nor the LGMRec paper
publishes the chosen values; the default ``reg_weight 0.1`` is the DualGNN authors' own default
(``--weight_decay`` in their ``parse.py``), with MMRec's learning rate 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..cache import cached_sparse, fingerprint
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, LastBatchEmbeddings, Recommender, batch_mean_square, bpr_loss
from .knn import feature_tensors, select_features
from .mmgcn import bipartite_mean_adjacency

USER_GRAPH_VERSION = "cooccurrence-topk-v1"  # part of the cache key: bump when the computation changes
USER_GRAPH_CHUNK_ROWS = 2048
LN2 = float(np.log(2.0))


@dataclass
class DualGNNConfig:
    embedding_dim: int = 64
    n_layers: int = 2  # user-item propagation steps of each modality GCN
    aggr_mode: str = "add"  # 'add': D^-1/2 A D^-1/2; 'mean': D^-1 A
    user_graph_k: int = 40  # co-occurring users kept per user
    user_aggr_mode: str = "softmax"  # weights over the k slots: softmax of counts, or 'mean'
    reg_weight: float = 0.1
    upstream_inplace_sum: bool = True  # see the module docstring
    score_from_last_batch: bool = True  # MMRec scores with the last training batch's representation
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_layers >= 0": self.n_layers >= 0,
            "aggr_mode in {'add', 'mean'}": self.aggr_mode in ("add", "mean"),
            "user_graph_k >= 1": self.user_graph_k >= 1,
            "user_aggr_mode in {'softmax', 'mean'}": self.user_aggr_mode in ("softmax", "mean"),
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("DualGNN", checks)


# --------------------------------------------------------------------------- user-user graph

def _row_count_id_order(rows: np.ndarray, counts: np.ndarray, cols: np.ndarray, n_cols: int) -> np.ndarray:
    """Permutation sorting entries by row, then count descending, then column id.

    Packs the three (non-negative integer) keys into one int64 when they fit, which sorts
    several times faster than ``np.lexsort`` on the tens of millions of entries of a chunk.
    """
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    counts = counts.astype(np.int64)
    max_count = int(counts.max())
    col_bits, count_bits = max(int(n_cols).bit_length(), 1), max(max_count.bit_length(), 1)
    row_bits = max(int(rows.max()).bit_length(), 1)
    if row_bits + count_bits + col_bits > 63:
        return np.lexsort((cols, -counts, rows))
    key = (rows.astype(np.int64) << (count_bits + col_bits)) | ((max_count - counts) << col_bits) | cols
    return np.argsort(key, kind="stable")


def user_cooccurrence_topk(
    interactions: sp.spmatrix, k: int, chunk_rows: int = USER_GRAPH_CHUNK_ROWS
) -> sp.csr_matrix:
    """``n_users x n_users``: each user's ``k`` other users sharing the most items, with the count.

    Computed as ``R[chunk] @ R^T`` block by block; within a row, larger counts first, ties to
    the lower user id. Users sharing nothing with anyone have empty rows.
    """
    if k < 1:
        raise ConfigError(f"user_graph_k must be >= 1, got {k}")
    binary = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    binary.sum_duplicates()
    binary.eliminate_zeros()
    binary.data[:] = 1.0  # a user-item pair counts once
    transposed = binary.T.tocsr()
    n_users = binary.shape[0]
    rows_out, cols_out, counts_out = [], [], []
    for start in range(0, n_users, chunk_rows):
        block = (binary[start: start + chunk_rows] @ transposed).tocsr()
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        cols, counts = block.indices, block.data
        other = (cols != rows + start) & (counts > 0)  # a user is not its own neighbour
        rows, cols, counts = rows[other], cols[other], counts[other]
        order = _row_count_id_order(rows, counts, cols, n_users)
        rows, cols, counts = rows[order], cols[order], counts[order]
        row_start = np.searchsorted(rows, np.arange(block.shape[0]))
        rank = np.arange(len(rows)) - row_start[rows]
        keep = rank < k
        rows_out.append(rows[keep] + start)
        cols_out.append(cols[keep])
        counts_out.append(counts[keep])
    matrix = sp.csr_matrix(
        (np.concatenate(counts_out), (np.concatenate(rows_out), np.concatenate(cols_out))),
        shape=(n_users, n_users),
        dtype=np.float32,
    )
    matrix.sort_indices()
    return matrix


def cached_user_graph(interactions: sp.spmatrix, k: int) -> sp.csr_matrix:
    """:func:`user_cooccurrence_topk`, computed once per distinct (training matrix, k)."""
    key = fingerprint(sp.csr_matrix(interactions), k, USER_GRAPH_VERSION)
    return cached_sparse("user-cooccurrence", key, lambda: user_cooccurrence_topk(interactions, k))


def padded_neighbours(user_graph: sp.csr_matrix, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(index, count, n_neighbours)``: each row's (at most k) neighbours left-aligned in
    ``(n_users, k)`` tables, strongest first; unused slots hold index 0 and count 0."""
    graph_csr = sp.csr_matrix(user_graph)
    n_users = graph_csr.shape[0]
    sizes = np.diff(graph_csr.indptr)
    if sizes.max(initial=0) > k:
        raise ConfigError(f"user graph has rows with more than k={k} neighbours")
    rows = np.repeat(np.arange(n_users), sizes)
    order = np.lexsort((graph_csr.indices, -graph_csr.data, rows))
    cols, counts = graph_csr.indices[order], graph_csr.data[order]
    slots = np.arange(len(rows)) - graph_csr.indptr[rows]
    index = np.zeros((n_users, k), dtype=np.int64)
    count = np.zeros((n_users, k), dtype=np.float32)
    index[rows, slots] = cols
    count[rows, slots] = counts
    return torch.from_numpy(index), torch.from_numpy(count), torch.from_numpy(sizes.astype(np.int64))


def fill_slots(
    index: torch.Tensor, count: torch.Tensor, n_neighbours: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's slot filling: while a user has fewer than k slots, copy a uniformly chosen
    already-filled slot (torch's RNG). Users without neighbours are left as they are."""
    index, count = index.clone(), count.clone()
    k = index.shape[1]
    for slot in range(1, k):
        short = torch.nonzero((n_neighbours > 0) & (n_neighbours <= slot)).squeeze(1)
        if len(short) == 0:
            continue
        chosen = (torch.rand(len(short), device=index.device) * slot).long()
        index[short, slot] = index[short, chosen]
        count[short, slot] = count[short, chosen]
    return index, count


def slot_weights(count: torch.Tensor, n_neighbours: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-slot weights: softmax of the counts (or 1/k); zero for users without neighbours."""
    if mode == "softmax":
        weights = torch.softmax(count, dim=1)
    else:
        weights = torch.full_like(count, 1.0 / count.shape[1])
    return weights * (n_neighbours > 0).unsqueeze(1).to(weights.dtype)


# --------------------------------------------------------------------------- model

class ModalityGCN(nn.Module):
    """One modality: user preferences, a two-layer content MLP, and the summed propagation."""

    def __init__(self, n_users: int, feature_dim: int, dim: int):
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim)))
        self.hidden = nn.Linear(feature_dim, 4 * dim)
        self.output = nn.Linear(4 * dim, dim)

    def forward(self, features: torch.Tensor, adjacency: torch.Tensor, n_layers: int) -> torch.Tensor:
        content = self.output(F.leaky_relu(self.hidden(features)))
        x = F.normalize(torch.cat([self.preference, content]))
        total, layer = x, x
        for _ in range(n_layers):
            layer = graph.spmm(adjacency, layer)
            total = total + layer
        return total


class DualGNN(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adjacency: torch.Tensor,
        neighbours: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        features: dict[str, torch.Tensor],
        config: DualGNNConfig,
    ):
        """``adjacency``: the propagation matrix of the user-item graph (users then items);
        ``neighbours``: the co-occurrence graph as :func:`padded_neighbours` gives it
        (``(n_users, user_graph_k)`` indices and counts, and each user's neighbour count);
        ``features``: frozen ``(n_items, dim)`` tables by modality."""
        super().__init__()
        if not features:
            raise ConfigError("DualGNN needs at least one modality feature table")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("adjacency", adjacency, persistent=False)
        for m, table in features.items():
            self.register_buffer(f"features_{m}", table.float(), persistent=False)
        index, count, sizes = neighbours
        if index.shape != (n_users, config.user_graph_k) or count.shape != index.shape:
            raise ConfigError(f"DualGNN neighbour tables must be ({n_users}, {config.user_graph_k})")
        self.register_buffer("neighbour_index", index, persistent=False)
        self.register_buffer("neighbour_count", count, persistent=False)
        self.register_buffer("neighbour_total", sizes, persistent=False)
        self.user_user: torch.Tensor | None = None  # this epoch's sampled co-occurrence matrix

        d, n_modalities = config.embedding_dim, len(features)
        self.gcn = nn.ModuleDict({m: ModalityGCN(n_users, t.shape[1], d) for m, t in features.items()})
        self.user_modality_weight = nn.Parameter(self._softmax_init(n_users, n_modalities))
        self.item_modality_weight = nn.Parameter(self._softmax_init(n_items, n_modalities))
        self.last_batch = LastBatchEmbeddings(config.score_from_last_batch)

    @staticmethod
    def _softmax_init(n_rows: int, n_modalities: int) -> torch.Tensor:
        return torch.softmax(nn.init.xavier_normal_(torch.empty(n_rows, n_modalities, 1)), dim=1)

    def sample_user_graph(self) -> torch.Tensor:
        """This epoch's ``n_users x n_users`` weighted co-occurrence matrix (sparse CSR)."""
        index, count = fill_slots(self.neighbour_index, self.neighbour_count, self.neighbour_total)
        weights = slot_weights(count, self.neighbour_total, self.config.user_aggr_mode)
        rows = torch.arange(self.n_users, device=index.device).repeat_interleave(index.shape[1])
        keep = weights.reshape(-1) > 0
        matrix = torch.sparse_coo_tensor(
            torch.stack([rows[keep], index.reshape(-1)[keep]]),
            weights.reshape(-1)[keep],
            (self.n_users, self.n_users),
            check_invariants=False,
        )
        return matrix.coalesce().to_sparse_csr()  # repeated slots add up

    def on_epoch_start(self, epoch: int) -> None:
        self.user_user = self.sample_user_graph()
        self.last_batch.clear()

    def embeddings(self) -> Embeddings:
        """User and item representations from the current parameters and co-occurrence sample."""
        if self.user_user is None or self.user_user.device != self.neighbour_index.device:
            self.user_user = self.sample_user_graph()  # before any on_epoch_start(), or moved
        reps = [
            self.gcn[m](getattr(self, f"features_{m}"), self.adjacency, self.config.n_layers)
            for m in self.modalities
        ]
        total = reps[0] if len(reps) == 1 else torch.stack(reps).sum(dim=0)
        if self.config.upstream_inplace_sum:
            reps[0] = total  # upstream's `representation += t_rep` also rewrites the first one
        if len(reps) == 1:
            users = reps[0][: self.n_users]
        else:  # upstream: a (d x M) @ (M x 1) product per user
            weights = self.user_modality_weight
            users = sum(weights[:, m] * r[: self.n_users] for m, r in enumerate(reps))
        users = users + graph.spmm(self.user_user, users)
        return Embeddings(users, total[self.n_users:])

    def forward(self) -> Embeddings:
        if not self.training and self.last_batch.kept is not None:
            return self.last_batch.kept  # what MMRec's full_sort_predict scores with
        return self.embeddings()

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.embeddings()
        self.last_batch.keep(emb)
        u = emb.users.index_select(0, users)
        # upstream takes log2 of the sigmoid: the natural-log BPR loss divided by ln 2
        total = bpr_loss(u, emb.items.index_select(0, pos_items), emb.items.index_select(0, neg_items)) / LN2
        reg = sum(batch_mean_square(self.gcn[m].preference, users) for m in self.modalities)
        reg = reg + self.user_modality_weight.pow(2).mean() + self.item_modality_weight.pow(2).mean()
        return total + self.config.reg_weight * reg


def propagation_matrix(interactions: sp.spmatrix, aggr_mode: str) -> sp.csr_matrix:
    """'add': ``D^-1/2 A D^-1/2`` with upstream's plain degrees (no epsilon; isolated nodes have
    no edges); 'mean': ``D^-1 A`` (PyG's sum / mean aggregation upstream)."""
    if aggr_mode == "add":
        adjacency = graph.bipartite_adjacency(interactions)
        return graph.scale_symmetric(adjacency, np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel())
    return bipartite_mean_adjacency(interactions)


def build(data: InteractionData, config: DualGNNConfig) -> DualGNN:
    features = select_features(data, config.modalities)
    return DualGNN(
        data.n_users,
        data.n_items,
        adjacency=graph.to_torch(propagation_matrix(data.train_matrix, config.aggr_mode)),
        neighbours=padded_neighbours(
            cached_user_graph(data.train_matrix, config.user_graph_k), config.user_graph_k
        ),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "n_layers": 2, "aggr_mode": "add", "user_graph_k": 40,
    "user_aggr_mode": "softmax", "reg_weight": 0.1,
}

SPEC = ModelSpec(
    name="dualgnn",
    label="DualGNN",
    config_class=DualGNNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={
        "aggr_mode": ["add"],
        "learning_rate": [0.1, 0.01, 0.001, 0.0001, 0.00001],
        "reg_weight": [0.1, 0.01, 0.001, 0.0001, 0.00001],
    },
    reduced_grid={"learning_rate": [0.1, 0.01, 0.001], "reg_weight": [0.1, 0.001, 0.00001]},
    reference="MMRec src/models/dualgnn.py + src/configs/model/DualGNN.yaml",
    deviations={
        "upstream_inplace_sum": "MMRec's in-place `representation += t_rep` makes the user weighting "
                                "combine w_image (R_image + R_text) + w_text R_text (True); False "
                                "weights R_image and R_text as the paper does",
        "score_from_last_batch": "MMRec scores validation/test users with the representation of the "
                                 "epoch's last training batch, one optimiser step old (True); False "
                                 "recomputes it from the current parameters",
        "n_layers": "MMRec ignores its yaml's n_layers and always propagates twice (2); other values "
                    "change the number of steps",
        "user_graph_k": "hard-coded 40 in MMRec; other values keep that many co-occurring users",
        "user_aggr_mode": "hard-coded 'softmax' in MMRec; 'mean' weighs the k slots 1/k each",
        "modalities": "MMRec uses every modality (its weighting assumes image and text; empty = all); "
                      "a subset runs the model on those modalities",
    },
)
