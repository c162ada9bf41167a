"""LATTICE (Zhang et al., ACM MM 2021): latent item-item structure learned from modality features.

Follows MMRec ``src/models/lattice.py`` with ``src/configs/model/LATTICE.yaml`` (enoche/MMRec).
What it computes:

- Xavier-uniform user and item ID tables; torch's default initialisation for the projections;
- per modality, a frozen graph from the raw features (top-``knn_k`` cosine neighbours keeping the
  similarities, ``D^-1/2 S D^-1/2``) and a learned graph of the same kind built from trainable
  linear projections (``feat_embed_dim``) of the features;
- modality weights ``softmax(modal_weight)`` (initialised ``[0.5, 0.5]``) mix the learned kNN
  similarity matrices (then ONE symmetric normalisation of the mix) and the frozen normalised
  graphs; ``item graph = (1 - lambda_coeff) * learned + lambda_coeff * frozen``;
- the learned graph is rebuilt (with gradients to the projections, the feature tables and the
  modality weights) on the first batch of every epoch and for every evaluation; the other
  batches of an epoch reuse it detached, as upstream;
- item ID embeddings propagated ``n_layers`` times over the item graph, L2-normalised, are added
  to the items' collaborative embeddings: LightGCN over ``D^-1 (A + I)`` (random-walk
  normalisation with self-loops, as upstream; ``n_ui_layers`` = ``len(weight_size)`` = 2) or,
  with ``cf_model="mf"``, the raw ID embeddings; scores are dot products;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / reg_batch_size`` over the batch's
  final rows (MMRec's own regulariser in this model, not ``EmbLoss``).

The raw feature tables are trainable as upstream (``from_pretrained(freeze=False)``). Modalities:
any non-empty subset; with one modality its graphs enter with weight 1, as upstream does with a
single feature file (upstream still creates ``modal_weight``, which then gets no gradient; here it
does not exist).

Deviations (config fields, also in ``SPEC.deviations``), defaults = MMRec:

- ``reg_batch_size`` (2048): MMRec divides the regulariser by the configured
  ``train_batch_size`` (2048, the protocol's), also on an epoch's smaller last batch; 0 divides
  by each batch's own size;
- ``train_features`` (True = MMRec): False keeps the raw feature tables frozen (buffers);
- ``modalities`` (empty = every modality, as MMRec): a subset;
- ``cf_model``: ``lightgcn`` (the yaml's) or ``mf``; MMRec's third choice ``ngcf`` is not
  implemented.

Not results-changing (see :mod:`.knn`): the kNN neighbours and similarity values are those of
upstream's dense product (bit for bit on the same device); the learned graph's gradient is
computed from the ``(n_items, knn_k)`` kept similarities instead of through the dense matrix
(top-k passes gradients only to the kept entries: the same gradient); frozen graphs are cached
under a fingerprint of the feature arrays. Rows of zeros in a feature table have similarity 0
(upstream: NaN, which spreads to the whole graph).

Implementation (the same arithmetic, faster): upstream multiplies by the dense
``n_items x n_items`` item graph; here the learned part is a gather over the kept neighbours and
the frozen part a sparse product, and within an epoch (constant, detached graph) both are merged
into one sparse matrix.

Grids: MMRec searches ``reg_weight [0.0, 1e-5, 1e-4, 1e-3]`` x
``learning_rate [0.0001, 0.0005, 0.001, 0.005]`` (``SPEC.tuning_grid``); the reduced grid of the
embedded default tunes ``reg_weight [1e-5, 1e-4, 1e-3]`` (0 and 1e-5 regularise almost
equally) x ``learning_rate [0.0005, 0.001, 0.005]`` (1e-4 needs more epochs than the budget has).
The yaml fixes ``embedding_size 64, feat_embed_dim 64, weight_size [64, 64], lambda_coeff 0.9,
cf_model lightgcn, n_layers 1, knn_k 10`` and ``learning_rate_scheduler [0.96, 50]``
(``SPEC.train_defaults``: lr times ``0.96 ** (epoch / 50)``); ``mess_dropout`` only serves ngcf.
The default ``reg_weight`` 1e-5 is the LATTICE authors' default (``regs[0]``), with the
protocol's learning rate 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

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
from .base import Embeddings, Recommender, rows_of, xavier_embedding
from .knn import (
    FeatureTables,
    cached_knn_graph,
    combine_graphs,
    feature_tensors,
    gather_propagate,
    learned_knn,
    select_features,
    symmetric_normalize_weighted,
)
from .lightgcn import lightgcn_embeddings


@dataclass
class LATTICEConfig:
    embedding_dim: int = 64
    feat_embed_dim: int = 64
    n_ui_layers: int = 2  # len(weight_size) upstream
    n_layers: int = 1  # item-graph propagation steps
    knn_k: int = 10
    lambda_coeff: float = 0.9  # weight of the frozen graph
    reg_weight: float = 1e-5
    reg_batch_size: int = 2048  # MMRec's divisor: the configured batch size; 0 = each batch's own
    cf_model: Literal["lightgcn", "mf"] = "lightgcn"
    train_features: bool = True  # upstream fine-tunes the raw feature tables
    modalities: tuple[str, ...] = ()  # empty: every modality of the dataset

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "feat_embed_dim >= 1": self.feat_embed_dim >= 1,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "n_layers >= 0": self.n_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "0 <= lambda_coeff <= 1": 0 <= self.lambda_coeff <= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "reg_batch_size >= 0": self.reg_batch_size >= 0,
            "cf_model in (lightgcn, mf)": self.cf_model in ("lightgcn", "mf"),
        }
        require("LATTICE", checks)


def self_loop_mean_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1 (A + I)`` of the user-item graph (LATTICE's and MICRO's propagation matrix)."""
    adjacency = graph.bipartite_adjacency(interactions) + sp.eye(sum(interactions.shape), dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return (sp.diags((1.0 / degree).astype(np.float32)) @ adjacency).tocsr().astype(np.float32)


class ItemGraph(NamedTuple):
    """One rebuild of the item graph: per modality learned ``(indices, weights)``, and the
    modality weights that scale the frozen graphs."""

    learned: dict[str, tuple[torch.Tensor, torch.Tensor]]
    modality_weights: torch.Tensor

    def detached(self) -> ItemGraph:
        learned = {m: (i, w.detach()) for m, (i, w) in self.learned.items()}
        return ItemGraph(learned, self.modality_weights.detach())


class LATTICE(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        frozen_graphs: dict[str, torch.Tensor],
        features: dict[str, torch.Tensor],
        config: LATTICEConfig,
    ):
        """``norm_adjacency``: ``D^-1 (A + I)`` (users then items); ``frozen_graphs``: per modality
        the normalised kNN graph of the raw features (sparse ``n_items x n_items``); ``features``:
        the raw ``(n_items, dim)`` tables, same modalities and order."""
        super().__init__()
        if not features or list(features) != list(frozen_graphs):
            raise ConfigError("LATTICE needs at least one modality, with a frozen graph for each")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        for m, matrix in frozen_graphs.items():
            self.register_buffer(f"frozen_graph_{m}", matrix, persistent=False)

        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict(
            {m: nn.Linear(t.shape[1], config.feat_embed_dim) for m, t in features.items()}
        )
        if len(self.modalities) > 1:
            self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 0.5))
        self._graph: ItemGraph | None = None  # this epoch's graph, detached
        self._merged: torch.Tensor | None = None  # the same as one sparse matrix (lazily built)
        self._rebuild = True

    def modality_weights(self) -> torch.Tensor:
        if len(self.modalities) == 1:
            return torch.ones(1, device=self.item_embedding.device)
        return torch.softmax(self.modal_weight, dim=0)

    def learn_item_graph(self) -> ItemGraph:
        """The learned kNN graph of the projected features, normalised after the modality mix."""
        weights = self.modality_weights()
        neighbours = {
            m: learned_knn(self.projection[m](self.features[m]), self.config.knn_k) for m in self.modalities
        }
        degree = sum(weights[i] * neighbours[m][1].sum(dim=1) for i, m in enumerate(self.modalities))
        scale = degree.pow(-0.5)
        scale = torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))
        learned = {
            m: (indices, weights[i] * values * scale.unsqueeze(1) * rows_of(scale, indices))
            for i, (m, (indices, values)) in enumerate(neighbours.items())
        }
        return ItemGraph(learned, weights)

    def merged_item_graph(self, item_graph: ItemGraph) -> torch.Tensor:
        """The detached item graph ``(1 - lambda) learned + lambda sum_m w_m frozen_m`` as one
        sparse CSR matrix."""
        lam = self.config.lambda_coeff
        return combine_graphs(
            self.n_items,
            gathered=[(i, (1.0 - lam) * w) for i, w in item_graph.learned.values()],
            sparse=[(getattr(self, f"frozen_graph_{m}"), lam * item_graph.modality_weights[k].item())
                    for k, m in enumerate(self.modalities)],
        )

    def item_side(self) -> torch.Tensor:
        """The propagated item embeddings (before normalisation) with this moment's item graph:
        rebuilt for evaluation and on an epoch's first batch, else this epoch's detached graph."""
        if not self.training:
            return self.propagate_items(self.learn_item_graph())  # upstream rebuilds for every evaluation
        if self._rebuild or self._graph is None:
            fresh = self.learn_item_graph()
            self._graph, self._merged, self._rebuild = fresh.detached(), None, False
            return self.propagate_items(fresh)
        if self._merged is None:
            self._merged = self.merged_item_graph(self._graph)
        h = self.item_embedding
        for _ in range(self.config.n_layers):
            h = graph.spmm(self._merged, h)
        return h

    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True

    def propagate_items(self, item_graph: ItemGraph) -> torch.Tensor:
        lam = self.config.lambda_coeff
        h = self.item_embedding
        for _ in range(self.config.n_layers):
            learned = sum(gather_propagate(i, w, h) for i, w in item_graph.learned.values())
            frozen = sum(
                item_graph.modality_weights[k] * graph.spmm(getattr(self, f"frozen_graph_{m}"), h)
                for k, m in enumerate(self.modalities)
            )
            h = (1.0 - lam) * learned + lam * frozen
        return h

    def forward(self) -> Embeddings:
        h = F.normalize(self.item_side(), p=2, dim=1)
        if self.config.cf_model == "mf":
            return Embeddings(self.user_embedding, self.item_embedding + h)
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + h)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u, p, n = rows_of(emb.users, users), rows_of(emb.items, pos_items), rows_of(emb.items, neg_items)
        return bpr_with_half_l2(u, p, n, self.config.reg_weight, self.config.reg_batch_size)


def bpr_with_half_l2(
    u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, reg_weight: float, reg_batch_size: int = 0
) -> torch.Tensor:
    """BPR plus ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / reg_batch_size`` (LATTICE, MICRO,
    MGCN upstream: their own ``bpr_loss``, which divides by the configured batch size);
    ``reg_batch_size`` 0 divides by the batch's own size."""
    pos, neg = (u * p).sum(dim=1), (u * n).sum(dim=1)
    regulariser = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (reg_batch_size or len(u))
    return -F.logsigmoid(pos - neg).mean() + reg_weight * regulariser


def frozen_weighted_graphs(features: dict[str, np.ndarray], knn_k: int) -> dict[str, torch.Tensor]:
    """Per modality ``D^-1/2 S D^-1/2`` of the cached top-k cosine graph, as torch sparse CSR."""
    return {
        m: graph.to_torch(symmetric_normalize_weighted(cached_knn_graph(table, knn_k)))
        for m, table in features.items()
    }


def build(data: InteractionData, config: LATTICEConfig) -> LATTICE:
    features = select_features(data, config.modalities)
    return LATTICE(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(self_loop_mean_adjacency(data.train_matrix)),
        frozen_graphs=frozen_weighted_graphs(features, config.knn_k),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "feat_embed_dim": 64, "n_ui_layers": 2, "n_layers": 1, "knn_k": 10,
    "lambda_coeff": 0.9, "reg_weight": 1e-5, "cf_model": "lightgcn",
}

SPEC = ModelSpec(
    name="lattice",
    label="LATTICE",
    config_class=LATTICEConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"reg_weight": [0.0, 1e-5, 1e-4, 1e-3], "learning_rate": [0.0001, 0.0005, 0.001, 0.005]},
    reduced_grid={"reg_weight": [1e-5, 1e-4, 1e-3], "learning_rate": [0.0005, 0.001, 0.005]},
    train_defaults={"lr_decay": 0.96, "lr_decay_epochs": 50},  # learning_rate_scheduler [0.96, 50]
    reference="MMRec src/models/lattice.py + src/configs/model/LATTICE.yaml",
    deviations={
        "reg_batch_size": "MMRec divides the regulariser by the configured train_batch_size (2048), "
                          "also on an epoch's smaller last batch; 0 divides by each batch's own size",
        "train_features": "MMRec fine-tunes the raw feature tables; False (not the default) freezes them",
        "modalities": "MMRec uses every feature file present; a non-empty subset (not the default) "
                      "builds the graphs from those modalities only",
        "cf_model": "lightgcn (the yaml's, default) or mf; MMRec's ngcf is not implemented",
    },
)
