"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph and a denoised user-item graph.

Behaviour of MMRec's ``src/models/freedom.py`` with its ``FREEDOM.yaml`` defaults:

- item-item graph, built once before training: per modality the top-``knn_k`` cosine neighbours
  of the raw features with unit weights, ``D^-1/2 A D^-1/2`` (D + 1e-7), mixed across modalities
  (image ``mm_image_weight``, text the rest); item ID embeddings are propagated over it
  ``n_mm_layers`` times and added to the items' LightGCN output (no normalisation);
- user-item graph: LightGCN (mean of ``n_ui_layers + 1`` layers). In training, every epoch keeps
  ``1 - dropout`` of the edges, drawn without replacement with probability proportional to
  ``1 / sqrt(d_u d_i)`` (degree-sensitive pruning), renormalised over the kept edges; evaluation
  uses the full normalised graph;
- loss: BPR on the final embeddings plus ``reg_weight`` times a BPR loss per modality between the
  final user embeddings and the linearly projected raw features of the positive/negative items;
- the raw feature tables are trainable (upstream ``from_pretrained(freeze=False)``); they only
  enter through the auxiliary loss, so scores depend on them only through training.

Modalities: any non-empty subset. With image and text the mixing weights are ``mm_image_weight``
and ``1 - mm_image_weight`` (as upstream); with one modality its graph alone; with more,
image keeps ``mm_image_weight`` and the others share the rest equally (equal weights without image).

Options beyond upstream (defaults = upstream behaviour):

- ``train_features`` (True): False keeps the raw feature tables frozen (buffers);
- ``modalities``: a subset of the dataset's modalities (empty = all).

Deviation: the kNN graph is computed in row chunks and cached under a fingerprint of the feature
array (upstream caches a dense computation under a file name holding only ``knn_k`` and the
image weight, so a changed feature file silently reuses a stale graph). Ties in the top-k may be
broken differently from a dense ``torch.topk``.

Hyperparameters: MMRec's yaml fixes ``embedding_size 64, feat_embed_dim 64, n_mm_layers 1,
n_ui_layers 2, knn_k 10, mm_image_weight 0.1`` and searches ``dropout in {0.8, 0.9}`` and
``reg_weight in {0, 1e-5, 1e-4, 1e-3}``; neither MMRec nor the paper publishes the chosen values,
so the defaults here (``dropout 0.8``, ``reg_weight 1e-4``) are our pick inside that grid.
(``lambda_coeff`` and ``cf_model`` in the yaml are read but never used by the model.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, xavier_embedding
from .knn import (
    FeatureTables,
    cached_knn_graph,
    feature_tensors,
    select_features,
    symmetric_normalize_binary,
)
from .lightgcn import lightgcn_embeddings

EDGE_DEGREE_EPS = 1e-7


@dataclass
class FREEDOMConfig:
    embedding_dim: int = 64
    feat_embed_dim: int = 64  # must equal embedding_dim: projected features meet user embeddings
    n_mm_layers: int = 1
    n_ui_layers: int = 2
    knn_k: int = 10
    mm_image_weight: float = 0.1
    dropout: float = 0.8  # share of user-item edges pruned every epoch
    reg_weight: float = 1e-4  # weight of the per-modality BPR losses
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "feat_embed_dim == embedding_dim": self.feat_embed_dim == self.embedding_dim,
            "n_mm_layers >= 0": self.n_mm_layers >= 0,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "0 <= mm_image_weight <= 1": 0 <= self.mm_image_weight <= 1,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("FREEDOM", checks)


def modality_mixing_weights(modalities: list[str], image_weight: float) -> dict[str, float]:
    """Weights of the per-modality item graphs in the mixed graph (see the module docstring)."""
    if len(modalities) == 1:
        return {modalities[0]: 1.0}
    if "image" not in modalities:
        return {m: 1.0 / len(modalities) for m in modalities}
    others = [m for m in modalities if m != "image"]
    return {m: image_weight if m == "image" else (1.0 - image_weight) / len(others) for m in modalities}


class FREEDOM(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        train_edges: torch.Tensor,
        item_graph: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: FREEDOMConfig,
    ):
        """``norm_adjacency``: Ahat of the training graph (users then items); ``train_edges``:
        ``(2, E)`` int64 (user, item) training pairs without duplicates; ``item_graph``: the mixed,
        normalised ``n_items x n_items`` kNN graph; ``features``: raw ``(n_items, dim)`` tables."""
        super().__init__()
        if not features:
            raise ConfigError("FREEDOM needs at least one modality")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("train_edges", train_edges, persistent=False)
        # Sampling probabilities of the degree-sensitive pruning: 1/sqrt(d_u d_i) of the full graph.
        self.register_buffer("edge_weights", self._edge_normalization(train_edges), persistent=False)
        self.masked_adjacency: torch.Tensor | None = None

        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict(
            {m: nn.Linear(t.shape[1], config.feat_embed_dim) for m, t in features.items()}
        )

    def _edge_normalization(self, edges: torch.Tensor) -> torch.Tensor:
        """``1 / sqrt(d_u d_i)`` per edge, degrees counted over ``edges`` (+1e-7, as upstream)."""
        users, items = edges
        user_degree = torch.bincount(users, minlength=self.n_users).to(torch.float32) + EDGE_DEGREE_EPS
        item_degree = torch.bincount(items, minlength=self.n_items).to(torch.float32) + EDGE_DEGREE_EPS
        return user_degree[users].pow(-0.5) * item_degree[items].pow(-0.5)

    def sample_pruned_adjacency(self) -> torch.Tensor:
        """A degree-sensitively pruned, renormalised user-item adjacency (uses torch's RNG)."""
        if self.config.dropout <= 0:
            return self.norm_adjacency
        n_keep = int(self.edge_weights.numel() * (1.0 - self.config.dropout))
        if n_keep < 1:
            raise ConfigError(f"FREEDOM dropout {self.config.dropout} keeps no training edge")
        keep = torch.multinomial(self.edge_weights, n_keep, replacement=False)
        kept = self.train_edges[:, keep]
        values = self._edge_normalization(kept)
        users, items = kept[0], kept[1] + self.n_users
        indices = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
        n_nodes = self.n_users + self.n_items
        matrix = torch.sparse_coo_tensor(
            indices, torch.cat([values, values]), (n_nodes, n_nodes), check_invariants=False
        )
        return matrix.coalesce().to_sparse_csr()

    def on_epoch_start(self, epoch: int) -> None:
        self.masked_adjacency = self.sample_pruned_adjacency()

    def forward(self) -> Embeddings:
        if self.training:
            if self.masked_adjacency is None:  # loss() before any on_epoch_start()
                self.masked_adjacency = self.sample_pruned_adjacency()
            adjacency = self.masked_adjacency
        else:
            adjacency = self.norm_adjacency
        item_side = graph.propagate(self.item_graph, self.item_embedding, self.config.n_mm_layers)[-1]
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + item_side)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u = emb.users[users]
        total = bpr_loss(u, emb.items[pos_items], emb.items[neg_items])
        if self.config.reg_weight > 0:
            modality_loss = 0.0
            for m in self.modalities:
                table, project = self.features[m], self.projection[m]
                # only the batch's rows are projected: the same values and gradients as projecting
                # the whole table and indexing it, as upstream does
                modality_loss = modality_loss + bpr_loss(
                    u, project(table[pos_items]), project(table[neg_items])
                )
            total = total + self.config.reg_weight * modality_loss
        return total


def mixed_item_graph(features: dict[str, np.ndarray], config: FREEDOMConfig):
    weights = modality_mixing_weights(list(features), config.mm_image_weight)
    return sum(weights[m] * symmetric_normalize_binary(cached_knn_graph(table, config.knn_k))
               for m, table in features.items())


def build(data: InteractionData, config: FREEDOMConfig) -> FREEDOM:
    features = select_features(data, config.modalities)
    return FREEDOM(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(data.train_matrix)),
        train_edges=graph.edge_index(data.train_matrix),
        item_graph=graph.to_torch(mixed_item_graph(features, config)),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "feat_embed_dim": 64, "n_mm_layers": 1, "n_ui_layers": 2, "knn_k": 10,
    "mm_image_weight": 0.1, "dropout": 0.8, "reg_weight": 1e-4,
}

SPEC = ModelSpec(
    name="freedom",
    label="FREEDOM",
    config_class=FREEDOMConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"dropout": [0.8, 0.9], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3]},
)
