"""GRCN (Wei et al., ACM MM 2020): a user-item graph refined by per-modality attention.

Follows MMRec ``src/models/grcn.py`` with ``src/configs/model/GRCN.yaml`` (enoche/MMRec), whose
model hard-codes aggregation 'add', weight mode 'confid', fusion 'concat', normalisation on, no
activation and no edge dropout. What it computes:

- per modality m: item content ``f_i = normalize(leaky_relu(W_m x_i + b_m))`` (``latent_dim``;
  Xavier-normal ``W_m``, torch's default bias) and a trainable, Xavier-normal user preference
  ``p_u`` (L2-normalised). One attention layer over the training edges in both directions: the
  score of edge (u, i) is ``<p_u, f_i>``, soft-maxed over the item's users for the message
  u -> i and over the user's items for i -> u. The modality's representation is
  ``[p_u + sum_i a_(i->u) f_i ; f_i + sum_u a_(u->i) p_u]``;
- graph refinement: the weight of each directed edge is ``relu(max_m a^m_e * c^m_source)`` with
  ``c`` a trainable (Xavier-normal) per-node, per-modality confidence of the edge's source node;
- ID part: L2-normalised, Xavier-normal ID embeddings ``x`` propagated twice over the refined,
  weighted graph (sum aggregation): ``x + A_w x + A_w^2 x``;
- final representation: the ID part concatenated with every modality's representation
  (``embedding_dim + n_modalities * latent_dim`` wide), scored by dot product;
- loss: ``-mean log sigmoid(s(u, p) - s(u, n))`` plus ``reg_weight`` times the sum of: the mean
  squared ID embeddings (ego rows) of the batch's users and of its items (positives and
  negatives together), the mean squared preferences of the batch's users for every modality,
  and the mean squared *whole* image preference table (upstream adds that term for the image
  modality only). No EmbLoss is involved: these are means of squares, as upstream.

The ``n_routing`` (yaml ``n_layers``) routing iterations are meant to refine ``p_u`` from the
user's items, but upstream feeds them the one-directional user -> item edge list, so every
message lands on an item and the users' preferences are never updated (the routing is a no-op;
the authors' own code does the same). The default reproduces that.

Implementation: every message-passing step is a product of a sparse CSR matrix with the
training graph's pattern and the attention weights as its values (forward ``graph.sparse_product``;
backward a sparse product with the transposed pattern, and the values' gradient by a sampled
dense product); the sums are those of PyG's message passing, in another order. The edge
softmax skips PyG's per-group max shift (the scores are cosines of unit vectors, in [-1, 1])
and its 1e-16 in the denominator (below float32's resolution of sums >= exp(-1)).

Deviations (config fields, also in ``SPEC.deviations``):

- ``route_to_users`` (False = MMRec): True runs the routing as the paper describes it,
  ``n_routing`` times ``p_u <- normalize(p_u + sum_i softmax_i(<p_u, f_i>) f_i)``;
- ``score_from_last_batch`` (True = MMRec): upstream scores validation and test users with the
  representation cached in the epoch's last *training* batch (computed before that batch's
  optimiser step); False recomputes it from the current parameters;
- ``modalities`` (empty = every modality, as MMRec): a subset; upstream breaks with text alone
  through a variable typo, here any non-empty subset runs.

``log(sigmoid)`` is computed as ``logsigmoid`` (the same value, without upstream's -inf where
float32's sigmoid underflows to 0).

Grids: MMRec searches ``reg_weight [0.1, 0.01, 1e-3, 1e-4, 1e-5]`` x ``learning_rate [1, 0.1,
0.01, 1e-3, 1e-4]`` (``SPEC.tuning_grid``). The reduced grid of the embedded default keeps
``reg_weight {0.1, 1e-3, 1e-5}`` x ``learning_rate {0.1, 0.01, 1e-3}`` (rates below 1e-3 need
more epochs than the budget has; of the larger ones, the three nearest 1e-3). Neither MMRec nor the LGMRec paper
publishes the chosen values; the default ``reg_weight 1e-5`` is the GRCN authors' own default
(``--weight_decay`` in their ``main.py``), with MMRec's learning rate 1e-3.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, LastBatchEmbeddings, Recommender, batch_mean_square, bpr_loss
from .knn import feature_tensors, select_features


@dataclass
class GRCNConfig:
    embedding_dim: int = 64  # ID embeddings (upstream embedding_size)
    latent_dim: int = 64  # per-modality content and preference width (upstream latent_embedding)
    n_routing: int = 3  # upstream n_layers: routing iterations (no effect unless route_to_users)
    reg_weight: float = 1e-5
    route_to_users: bool = False  # True: the routing updates user preferences, as in the paper
    score_from_last_batch: bool = True  # MMRec scores with the last training batch's representation
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "latent_dim >= 1": self.latent_dim >= 1,
            "n_routing >= 0": self.n_routing >= 0,
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("GRCN", checks)


# --------------------------------------------------------------------------- sparse edge algebra

class EdgePattern:
    """The nonzero pattern of a sparse matrix, its transpose, and the map between their orders.

    ``perm[k]`` is the position, in this pattern's (CSR) order, of the k-th entry of the
    transpose's order: ``values[perm]`` are the transpose's values.
    """

    def __init__(self, crow, col, shape, crow_t, col_t, perm, perm_t):
        self.crow, self.col, self.shape, self.perm = crow, col, shape, perm
        self.t_crow, self.t_col, self.t_perm = crow_t, col_t, perm_t

    @property
    def T(self) -> "EdgePattern":
        return EdgePattern(self.t_crow, self.t_col, self.shape[::-1], self.crow, self.col,
                           self.t_perm, self.perm)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def sampled_products(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``<left[row_e], right[col_e]>`` for every entry e, in CSR order (``left @ right^T``
        sampled at the pattern)."""
        zeros = torch.zeros(len(self.col), dtype=left.dtype, device=left.device)
        return torch.sparse.sampled_addmm(self.matrix(zeros), left, right.T, beta=0.0).values()


class _EdgeScores(torch.autograd.Function):
    """``s_e = <a[row_e], b[col_e]>`` over a pattern's entries."""

    @staticmethod
    def forward(ctx, a, b, pattern: EdgePattern):
        ctx.save_for_backward(a, b)
        ctx.pattern = pattern
        return pattern.sampled_products(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        pattern = ctx.pattern
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = graph.sparse_product(pattern.matrix(grad), b)
        if ctx.needs_input_grad[1]:
            grad_b = graph.sparse_product(pattern.T.matrix(grad.index_select(0, pattern.perm)), a)
        return grad_a, grad_b, None


class _EdgeProduct(torch.autograd.Function):
    """``out[r] = sum over entries e of row r of values[e] * x[col_e]``: a CSR product whose
    values carry gradients."""

    @staticmethod
    def forward(ctx, values, x, pattern: EdgePattern):
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        return graph.sparse_product(pattern.matrix(values), x)

    @staticmethod
    def backward(ctx, grad):
        values, x = ctx.saved_tensors
        pattern = ctx.pattern
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_values = pattern.sampled_products(grad, x)
        if ctx.needs_input_grad[1]:
            grad_x = graph.sparse_product(pattern.T.matrix(values.index_select(0, pattern.perm)), grad)
        return grad_values, grad_x, None


def edge_scores(a: torch.Tensor, b: torch.Tensor, pattern: EdgePattern) -> torch.Tensor:
    return _EdgeScores.apply(a, b, pattern)


def edge_product(values: torch.Tensor, x: torch.Tensor, pattern: EdgePattern) -> torch.Tensor:
    return _EdgeProduct.apply(values, x, pattern)


def segment_softmax(logits: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of ``logits`` within each group of edges sharing ``groups[e]`` (logits must be
    small enough to exponentiate: here they are cosines)."""
    exp = logits.exp()
    total = torch.zeros(n_groups, dtype=exp.dtype, device=exp.device).index_add(0, groups, exp)
    return exp / total.index_select(0, groups)


# --------------------------------------------------------------------------- model

class ModalityAttention(nn.Module):
    """One modality's content encoder, user preferences and the attention over the edges."""

    def __init__(self, n_users: int, feature_dim: int, latent_dim: int):
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, latent_dim)))
        self.encoder = nn.Linear(feature_dim, latent_dim)
        nn.init.xavier_normal_(self.encoder.weight)  # bias keeps torch's default, as upstream

    def forward(self, features, edges: EdgePattern, users, items, n_routing: int, route_to_users: bool):
        """Returns (user part, item part, a(u->i), a(i->u)); the edges (users[e], items[e]) are in
        the users x items pattern's CSR order, and so are the attention weights."""
        n_users, n_items = self.preference.shape[0], features.shape[0]
        content = F.normalize(F.leaky_relu(self.encoder(features)))
        preference = F.normalize(self.preference)
        if route_to_users:
            for _ in range(n_routing):
                to_user = segment_softmax(edge_scores(preference, content, edges), users, n_users)
                preference = F.normalize(preference + edge_product(to_user, content, edges))
        scores = edge_scores(preference, content, edges)
        to_item = segment_softmax(scores, items, n_items)
        to_user = segment_softmax(scores, users, n_users)
        user_part = preference + edge_product(to_user, content, edges)
        item_part = content + edge_product(to_item.index_select(0, edges.perm), preference, edges.T)
        return user_part, item_part, to_item, to_user


def interaction_pattern(interactions: sp.spmatrix) -> dict[str, torch.Tensor]:
    """The buffers of :class:`EdgePattern` for the binary users x items training matrix."""
    matrix = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    matrix.data = np.arange(matrix.nnz, dtype=np.float64)  # each entry's CSR position
    transposed = matrix.T.tocsr()
    transposed.sort_indices()
    perm = transposed.data.astype(np.int64)
    as_long = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return {
        "crow": as_long(matrix.indptr), "col": as_long(matrix.indices),
        "crow_t": as_long(transposed.indptr), "col_t": as_long(transposed.indices),
        "perm": as_long(perm), "perm_t": as_long(np.argsort(perm)),
        "users": as_long(np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))),
    }


class GRCN(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        interactions: sp.spmatrix,
        features: dict[str, torch.Tensor],
        config: GRCNConfig,
    ):
        """``interactions``: the ``n_users x n_items`` training matrix (its nonzeros are the
        edges); ``features``: frozen ``(n_items, dim)`` tables by modality."""
        super().__init__()
        if not features:
            raise ConfigError("GRCN needs at least one modality feature table")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        for name, tensor in interaction_pattern(interactions).items():
            self.register_buffer(f"edge_{name}", tensor, persistent=False)
        for m, table in features.items():
            self.register_buffer(f"features_{m}", table.float(), persistent=False)
        n_nodes = n_users + n_items
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, config.embedding_dim)))
        self.attention = nn.ModuleDict(
            {m: ModalityAttention(n_users, t.shape[1], config.latent_dim) for m, t in features.items()}
        )
        self.confidence = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, len(features))))
        self.last_batch = LastBatchEmbeddings(config.score_from_last_batch)

    @property
    def edges(self) -> EdgePattern:
        return EdgePattern(self.edge_crow, self.edge_col, (self.n_users, self.n_items),
                           self.edge_crow_t, self.edge_col_t, self.edge_perm, self.edge_perm_t)

    def embeddings(self) -> Embeddings:
        """Users ``[ID part, modality parts...]`` and items likewise, from the current parameters."""
        edges, users, items = self.edges, self.edge_users, self.edge_col
        user_parts, item_parts, to_item_weights, to_user_weights = [], [], [], []
        for m in self.modalities:
            user_part, item_part, to_item, to_user = self.attention[m](
                getattr(self, f"features_{m}"), edges, users, items,
                self.config.n_routing, self.config.route_to_users,
            )
            user_parts.append(user_part)
            item_parts.append(item_part)
            to_item_weights.append(to_item)
            to_user_weights.append(to_user)
        # each directed edge is weighted by its best modality's attention times the confidence
        # of its source node; negative weights are pruned
        user_confidence, item_confidence = self.confidence.split([self.n_users, self.n_items])
        to_item = torch.stack(to_item_weights, 1) * user_confidence.index_select(0, users)
        to_user = torch.stack(to_user_weights, 1) * item_confidence.index_select(0, items)
        to_item, to_user = to_item.max(dim=1).values.relu(), to_user.max(dim=1).values.relu()
        to_item = to_item.index_select(0, edges.perm)  # in the items x users order

        x_users, x_items = F.normalize(self.id_embedding).split([self.n_users, self.n_items])
        first_users = edge_product(to_user, x_items, edges)
        first_items = edge_product(to_item, x_users, edges.T)
        second_users = edge_product(to_user, first_items, edges)
        second_items = edge_product(to_item, first_users, edges.T)
        return Embeddings(
            torch.cat([x_users + first_users + second_users, *user_parts], dim=1),
            torch.cat([x_items + first_items + second_items, *item_parts], dim=1),
        )

    def representation(self) -> torch.Tensor:
        """``[ID part, modality parts...]`` for users then items: ``(n_users + n_items, width)``."""
        return torch.cat(self.embeddings())

    def forward(self) -> Embeddings:
        if not self.training and self.last_batch.kept is not None:
            return self.last_batch.kept  # what MMRec's full_sort_predict scores with
        return self.embeddings()

    def on_epoch_start(self, epoch: int) -> None:
        self.last_batch.clear()

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.embeddings()
        self.last_batch.keep(emb)
        total = bpr_loss(
            emb.users.index_select(0, users), emb.items.index_select(0, pos_items),
            emb.items.index_select(0, neg_items),
        )
        id_users, id_items = self.id_embedding.split([self.n_users, self.n_items])
        reg = batch_mean_square(id_users, users)
        reg = reg + batch_mean_square(id_items, torch.cat([pos_items, neg_items]))
        for m in self.modalities:
            reg = reg + batch_mean_square(self.attention[m].preference, users)
        if "image" in self.attention:  # upstream's extra whole-table term (its v_gcn only)
            reg = reg + self.attention["image"].preference.pow(2).mean()
        return total + self.config.reg_weight * reg


def build(data: InteractionData, config: GRCNConfig) -> GRCN:
    features = select_features(data, config.modalities)
    return GRCN(data.n_users, data.n_items, data.train_matrix, feature_tensors(features), config)


MMREC_DEFAULTS = {"embedding_dim": 64, "latent_dim": 64, "n_routing": 3, "reg_weight": 1e-5}

SPEC = ModelSpec(
    name="grcn",
    label="GRCN",
    config_class=GRCNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={
        "reg_weight": [0.1, 0.01, 0.001, 0.0001, 0.00001],
        "learning_rate": [1.0, 0.1, 0.01, 0.001, 0.0001],
    },
    reduced_grid={"reg_weight": [0.1, 0.001, 0.00001], "learning_rate": [0.1, 0.01, 0.001]},
    reference="MMRec src/models/grcn.py + src/configs/model/GRCN.yaml",
    deviations={
        "route_to_users": "MMRec's routing sends its messages to items only, so it never updates "
                          "the user preferences (False, a no-op); True routes to users as the paper says",
        "score_from_last_batch": "MMRec scores validation/test users with the representation of the "
                                 "epoch's last training batch, one optimiser step old (True); False "
                                 "recomputes it from the current parameters",
        "modalities": "MMRec uses every modality and fails with text alone (empty = all); a subset "
                      "runs the model on those modalities",
    },
)
