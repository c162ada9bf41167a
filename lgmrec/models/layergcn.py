"""LayerGCN (Zhou et al., ICDE 2023): layer-refined graph convolution with degree-sensitive pruning.

Behaviour of MMRec's ``src/models/layergcn.py`` with its ``LayerGCN.yaml`` defaults:

- propagation over the normalised user-item graph ``Ahat = D^-1/2 A D^-1/2`` (D + 1e-7); after
  every layer each node's embedding is rescaled by its cosine similarity with its own ego
  (layer-0) embedding, and the rescaled embedding is what the next layer propagates:
  ``E_l = cos(Ahat E_(l-1), E_0) * Ahat E_(l-1)``; the final embedding is ``E_1 + ... + E_L``
  (the ego layer is not included);
- edge pruning in training: every epoch keeps ``int(E * (1 - dropout))`` of the ``E`` training
  edges and renormalises them (``1 / sqrt(d_u d_i)`` over the kept edges, + 1e-7). Epochs
  alternate between drawing the kept edges without replacement with probability proportional to
  ``1 / sqrt(d_u d_i)`` of the full graph (odd epochs, starting with the first, as upstream's
  first call) and drawing them uniformly (even epochs); evaluation uses the full graph;
  ``dropout = 0`` trains on the full graph;
- loss: BPR *summed* over the batch (not averaged) plus ``reg_weight`` times MMRec's ``L2Loss``
  of the batch's ego embeddings: half the sum of their squares (not divided by the batch size).

Deviation: upstream draws the uniform epochs with Python's ``random``; here every draw uses
torch's RNG, so a seed fixes everything.

Hyperparameters: ``embedding_size 64`` and ``n_layers 4`` (its only grid value) from the yaml;
``dropout`` is searched in ``{0.0, 0.1, 0.2}`` and ``reg_weight`` in ``{1e-2, 1e-3, 1e-4, 1e-5}``;
neither MMRec nor the LGMRec paper publishes the chosen values, so the defaults (``dropout 0.1``,
``reg_weight 1e-4``) are our pick inside that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, xavier_embedding

EDGE_DEGREE_EPS = 1e-7


@dataclass
class LayerGCNConfig:
    embedding_dim: int = 64
    n_layers: int = 4
    reg_weight: float = 1e-4
    dropout: float = 0.1  # share of training edges pruned every epoch

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_layers >= 1": self.n_layers >= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
        }
        require("LayerGCN", checks)


def edge_normalization(edges: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """``1 / sqrt(d_u d_i)`` per (user, item) edge, degrees counted over ``edges`` (+1e-7)."""
    users, items = edges
    user_degree = torch.bincount(users, minlength=n_users).to(torch.float32) + EDGE_DEGREE_EPS
    item_degree = torch.bincount(items, minlength=n_items).to(torch.float32) + EDGE_DEGREE_EPS
    return user_degree[users].pow(-0.5) * item_degree[items].pow(-0.5)


def symmetric_adjacency(
    edges: torch.Tensor, values: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """The ``(n_users + n_items)^2`` sparse CSR matrix with ``values`` on both (u, i) and (i, u)."""
    users, items = edges[0], edges[1] + n_users
    indices = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
    n_nodes = n_users + n_items
    matrix = torch.sparse_coo_tensor(
        indices, torch.cat([values, values]), (n_nodes, n_nodes), check_invariants=False
    )
    return matrix.coalesce().to_sparse_csr()


def layer_refined_embeddings(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``sum_l E_l`` with ``E_l = cos(A E_(l-1), E_0) * A E_(l-1)`` (a pure function)."""
    current, total = ego, torch.zeros_like(ego)
    for _ in range(n_layers):
        propagated = graph.spmm(adjacency, current)
        current = F.cosine_similarity(propagated, ego, dim=-1).unsqueeze(1) * propagated
        total = total + current
    return total


class LayerGCN(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        train_edges: torch.Tensor,
        config: LayerGCNConfig,
    ):
        """``norm_adjacency``: Ahat of the training graph (users then items); ``train_edges``:
        ``(2, E)`` int64 (user, item) training pairs without duplicates."""
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.register_buffer("train_edges", train_edges, persistent=False)
        self.register_buffer(
            "edge_weights", edge_normalization(train_edges, n_users, n_items), persistent=False
        )
        self.pruned_adjacency: torch.Tensor | None = None
        self.user_embedding = xavier_embedding(n_users, config.embedding_dim)
        self.item_embedding = xavier_embedding(n_items, config.embedding_dim)

    def sample_pruned_adjacency(self, degree_sensitive: bool = True) -> torch.Tensor:
        """A pruned, renormalised adjacency (torch's RNG): degree-sensitive or uniform draw."""
        if self.config.dropout <= 0:
            return self.norm_adjacency
        n_edges = self.edge_weights.numel()
        n_keep = int(n_edges * (1.0 - self.config.dropout))
        if n_keep < 1:
            raise ConfigError(f"LayerGCN dropout {self.config.dropout} keeps no training edge")
        if degree_sensitive:
            keep = torch.multinomial(self.edge_weights, n_keep, replacement=False)
        else:
            keep = torch.randperm(n_edges, device=self.edge_weights.device)[:n_keep]
        kept = self.train_edges[:, keep]
        values = edge_normalization(kept, self.n_users, self.n_items)
        return symmetric_adjacency(kept, values, self.n_users, self.n_items)

    def on_epoch_start(self, epoch: int) -> None:
        # upstream toggles on every call, starting with the degree-sensitive draw
        self.pruned_adjacency = self.sample_pruned_adjacency(degree_sensitive=epoch % 2 == 1)

    def forward(self) -> Embeddings:
        if self.training:
            stale = self.pruned_adjacency is None or self.pruned_adjacency.device != self.edge_weights.device
            if stale:  # loss() before any on_epoch_start(), or the model was moved since
                self.pruned_adjacency = self.sample_pruned_adjacency()
            adjacency = self.pruned_adjacency
        else:
            adjacency = self.norm_adjacency
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = layer_refined_embeddings(adjacency, ego, self.config.n_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u, p, n = emb.users[users], emb.items[pos_items], emb.items[neg_items]
        # upstream sums (not averages) the BPR terms over the batch
        bpr = -F.logsigmoid((u * p).sum(dim=1) - (u * n).sum(dim=1)).sum()
        # MMRec's L2Loss: half the sum of squares of the batch's ego embeddings, not averaged
        l2 = 0.5 * (
            self.user_embedding[users].pow(2).sum()
            + self.item_embedding[pos_items].pow(2).sum()
            + self.item_embedding[neg_items].pow(2).sum()
        )
        return bpr + self.config.reg_weight * l2


def build(data: InteractionData, config: LayerGCNConfig) -> LayerGCN:
    return LayerGCN(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(data.train_matrix)),
        train_edges=graph.edge_index(data.train_matrix),
        config=config,
    )


MMREC_DEFAULTS = {"embedding_dim": 64, "n_layers": 4, "reg_weight": 1e-4, "dropout": 0.1}

SPEC = ModelSpec(
    name="layergcn",
    label="LayerGCN",
    config_class=LayerGCNConfig,
    build=build,
    multimodal=False,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]},
)
