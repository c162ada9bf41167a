"""LATTICE (Zhang et al., ACM MM 2021): latent item-item structure learned from modality features.

Behaviour of MMRec's ``src/models/lattice.py`` with its ``LATTICE.yaml`` defaults:

- per modality, a frozen graph from the raw features (top-``knn_k`` cosine neighbours keeping the
  similarities, ``D^-1/2 S D^-1/2``) and a learned graph of the same kind built from trainable
  linear projections of the features;
- modality weights ``softmax(modal_weight)`` mix the learned kNN similarity matrices (then one
  symmetric normalisation of the mix) and the frozen normalised graphs;
  ``item graph = (1 - lambda_coeff) * learned + lambda_coeff * frozen``;
- the learned graph is rebuilt (with gradients to the projections, the feature tables and the
  modality weights) on the first batch of every epoch and for every evaluation; the other batches
  of an epoch reuse it detached, exactly as upstream;
- item ID embeddings propagated ``n_layers`` times over the item graph, L2-normalised, are added
  to the items' collaborative embeddings: LightGCN over ``D^-1 (A + I)`` (random-walk
  normalisation with self-loops, as upstream; ``n_ui_layers`` = ``len(weight_size)`` = 2) or,
  with ``cf_model="mf"``, the raw ID embeddings;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch``.

Modalities: any non-empty subset; with one modality there is no ``modal_weight`` parameter (its
graphs enter with weight 1, as upstream does with a single feature file).

Deviations from upstream, for scale (the results are the same up to float rounding and top-k
ties): upstream builds the dense ``n_items x n_items`` similarity matrix at every rebuild; here
the neighbour search runs in row chunks without gradients and the ``(n_items, knn_k)``
similarities of the chosen pairs are then recomputed with gradients, which gives the same values
and the same gradients (top-k passes gradients only to the kept entries). The frozen graphs are
cached on disk under a fingerprint of the feature arrays. The regulariser divides by the actual
batch size (upstream by the configured one, which differs only on an epoch's last batch).
``cf_model="ngcf"`` is not implemented (not the default). Rows of zeros in a feature table have
similarity 0 (upstream: NaN).

Not a model option: MMRec trains LATTICE with ``learning_rate_scheduler [0.96, 50]`` (learning
rate times ``0.96 ** (epoch / 50)``) and searches ``learning_rate`` in
:data:`TRAIN_SEARCH_GRID`; both belong to the training configuration.

Hyperparameters: ``embedding_size 64, feat_embed_dim 64, weight_size [64, 64], lambda_coeff 0.9,
cf_model lightgcn, n_layers 1, knn_k 10`` from the yaml; ``reg_weight`` is searched in
``{0, 1e-5, 1e-4, 1e-3}``; its default 1e-5 is the LATTICE authors' default (``regs[0]``).
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
from .base import Embeddings, Recommender, xavier_embedding
from .knn import (
    FeatureTables,
    cached_knn_graph,
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
        self._graph: ItemGraph | None = None
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
            m: (indices, weights[i] * values * scale.unsqueeze(1) * scale[indices])
            for i, (m, (indices, values)) in enumerate(neighbours.items())
        }
        return ItemGraph(learned, weights)

    def current_item_graph(self) -> ItemGraph:
        if not self.training:
            return self.learn_item_graph()  # upstream rebuilds for every evaluation
        if self._rebuild or self._graph is None:
            fresh = self.learn_item_graph()
            self._graph, self._rebuild = fresh.detached(), False
            return fresh
        return self._graph

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
        h = F.normalize(self.propagate_items(self.current_item_graph()), p=2, dim=1)
        if self.config.cf_model == "mf":
            return Embeddings(self.user_embedding, self.item_embedding + h)
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + h)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u, p, n = emb.users[users], emb.items[pos_items], emb.items[neg_items]
        return bpr_with_half_l2(u, p, n, self.config.reg_weight)


def bpr_with_half_l2(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """BPR plus ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch`` (LATTICE, MICRO, MGCN)."""
    pos, neg = (u * p).sum(dim=1), (u * n).sum(dim=1)
    regulariser = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(u)
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
#: Searched by MMRec alongside reg_weight, but a training setting, not a model hyperparameter.
TRAIN_SEARCH_GRID = {"learning_rate": [0.0001, 0.0005, 0.001, 0.005]}

SPEC = ModelSpec(
    train_defaults={"lr_decay": 0.96, "lr_decay_epochs": 50},  # MMRec learning_rate_scheduler
    name="lattice",
    label="LATTICE",
    config_class=LATTICEConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"reg_weight": [0.0, 1e-5, 1e-4, 1e-3]},
)
