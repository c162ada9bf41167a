"""MICRO (Zhang et al., IEEE TKDE 2022): latent item structures with contrastive modality fusion.

MICRO is not part of MMRec; this follows the authors' code (CRIPAC-DIG/MICRO, ``codes/Models.py``
and ``codes/main.py``) with its ``parser.py`` defaults:

- per modality an item graph ``(1 - lambda_coeff) * learned + lambda_coeff * frozen``: the frozen
  graph from the raw features, the learned one from trainable linear projections of them, both
  top-``knn_k`` cosine graphs with similarity weights and ``D^-1/2 S D^-1/2`` normalisation (each
  modality on its own, unlike LATTICE's single mixed graph);
- the learned graphs are rebuilt (with gradients) on the first batch of every epoch and for every
  evaluation; the other batches of an epoch reuse them detached (as LATTICE);
- per modality the item ID embeddings are propagated ``n_layers`` times over its graph; an
  attention query ``softmax_m(q(e_m))`` fuses them into ``h``; items get ``+ normalize(h)`` on top
  of LightGCN over ``D^-1 (A + I)`` (``n_ui_layers = len(weight_size) = 2``), or the raw ID
  embeddings with ``cf_model="mf"``;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch`` + ``cl_weight`` (upstream
  ``loss_ratio``) times, per modality, the GRACE-style contrastive loss between ``e_m`` and ``h``
  over ALL items (temperature ``cl_temperature``; negatives from both views, computed in blocks
  of 4096 rows as upstream).

The raw feature tables are trainable as upstream (``train_features=False`` freezes them).

Modalities: any non-empty subset; with one modality ``h`` is its view (no attention query) and the
contrastive term compares the view with itself (kept: it still acts as a uniformity loss).

Deviations: kNN graphs in row chunks (learned similarities recomputed with gradients for the
chosen pairs, giving the dense result's values and gradients) and frozen graphs cached under a
feature fingerprint; each block of the contrastive loss is recomputed in the backward pass
(activation checkpointing) instead of keeping ``n_items^2`` exponentials alive, with the same
value and gradients; the regulariser divides by the actual batch size; ``cf_model="ngcf"`` is not
implemented (not the default).

Not model options: upstream trains with learning rate 5e-4, batch size 1024, learning rate times
``0.96 ** (epoch / 50)``, early stopping with patience 10 evaluated every 5 epochs on Recall@20; the optimiser settings
are this model's training defaults (:data:`AUTHORS_TRAINING`), the early stopping is the suite's. Neither MMRec nor the authors publish a search grid, so
``search_grid`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, xavier_embedding
from .knn import (
    FeatureTables,
    feature_tensors,
    gather_propagate,
    learned_knn,
    select_features,
    symmetric_knn_weights,
)
from .lattice import bpr_with_half_l2, frozen_weighted_graphs, self_loop_mean_adjacency
from .lightgcn import lightgcn_embeddings

CONTRASTIVE_CHUNK_ROWS = 4096  # upstream's batch_size of batched_contrastive_loss


@dataclass
class MICROConfig:
    embedding_dim: int = 64
    n_ui_layers: int = 2  # len(weight_size) upstream
    n_layers: int = 1  # item-graph propagation steps (upstream "layers")
    knn_k: int = 10  # upstream "topk"
    lambda_coeff: float = 0.9  # weight of the frozen graph
    reg_weight: float = 1e-5  # upstream regs[0]
    cl_weight: float = 0.03  # upstream "loss_ratio"
    cl_temperature: float = 0.5  # upstream self.tau
    cf_model: Literal["lightgcn", "mf"] = "lightgcn"
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "n_layers >= 0": self.n_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "0 <= lambda_coeff <= 1": 0 <= self.lambda_coeff <= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "cl_weight >= 0": self.cl_weight >= 0,
            "cl_temperature > 0": self.cl_temperature > 0,
            "cf_model in (lightgcn, mf)": self.cf_model in ("lightgcn", "mf"),
        }
        require("MICRO", checks)


def _grace_block(anchor_block: torch.Tensor, anchor: torch.Tensor, other: torch.Tensor,
                 start: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row losses of one block of rows (inputs already L2-normalised)."""
    rows = torch.arange(anchor_block.shape[0], device=anchor_block.device)
    columns = rows + start
    refl = torch.exp(anchor_block @ anchor.T / temperature)
    between = torch.exp(anchor_block @ other.T / temperature)
    denominator = refl.sum(1) + between.sum(1) - refl[rows, columns]
    return torch.log(denominator) - torch.log(between[rows, columns])


def grace_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                           chunk_rows: int = CONTRASTIVE_CHUNK_ROWS) -> torch.Tensor:
    """MICRO's ``batched_contrastive_loss``: the mean over rows i of
    ``-log(e(z1_i, z2_i) / (sum_j e(z1_i, z1_j) + sum_j e(z1_i, z2_j) - e(z1_i, z1_i)))``
    with ``e(a, b) = exp(cos(a, b) / temperature)``."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    losses = []
    for start in range(0, z1.shape[0], chunk_rows):
        block = z1[start: start + chunk_rows]
        offset = torch.tensor(start, device=z1.device)
        if torch.is_grad_enabled():
            # recompute the block's n-wide exponentials in backward instead of storing them
            losses.append(checkpoint(_grace_block, block, z1, z2, offset, temperature, use_reentrant=False))
        else:
            losses.append(_grace_block(block, z1, z2, offset, temperature))
    return torch.cat(losses).mean()


ItemGraphs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (indices, weights)


class MICRO(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        frozen_graphs: dict[str, torch.Tensor],
        features: dict[str, torch.Tensor],
        config: MICROConfig,
    ):
        """``norm_adjacency``: ``D^-1 (A + I)`` (users then items); ``frozen_graphs``: per modality
        the normalised kNN graph of the raw features; ``features``: the raw tables."""
        super().__init__()
        if not features or list(features) != list(frozen_graphs):
            raise ConfigError("MICRO needs at least one modality, with a frozen graph for each")
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
        self.projection = nn.ModuleDict({m: nn.Linear(t.shape[1], d) for m, t in features.items()})
        if len(self.modalities) > 1:
            self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self._graphs: ItemGraphs | None = None
        self._rebuild = True

    def learn_item_graphs(self) -> ItemGraphs:
        """Per modality the normalised learned kNN graph of the projected features."""
        graphs = {}
        for m in self.modalities:
            indices, values = learned_knn(self.projection[m](self.features[m]), self.config.knn_k)
            graphs[m] = (indices, symmetric_knn_weights(indices, values))
        return graphs

    def current_item_graphs(self) -> ItemGraphs:
        if not self.training:
            return self.learn_item_graphs()
        if self._rebuild or self._graphs is None:
            fresh = self.learn_item_graphs()
            self._graphs = {m: (i, w.detach()) for m, (i, w) in fresh.items()}
            self._rebuild = False
            return fresh
        return self._graphs

    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True

    def modality_views(self, graphs: ItemGraphs) -> dict[str, torch.Tensor]:
        lam = self.config.lambda_coeff
        views = {}
        for m, (indices, weights) in graphs.items():
            h = self.item_embedding
            frozen = getattr(self, f"frozen_graph_{m}")
            for _ in range(self.config.n_layers):
                h = (1.0 - lam) * gather_propagate(indices, weights, h) + lam * graph.spmm(frozen, h)
            views[m] = h
        return views

    def fuse(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return next(iter(views.values()))
        stacked = list(views.values())
        attention = torch.softmax(torch.cat([self.query(v) for v in stacked], dim=-1), dim=-1)
        return sum(attention[:, k: k + 1] * v for k, v in enumerate(stacked))

    def _embed(self) -> tuple[Embeddings, dict[str, torch.Tensor], torch.Tensor]:
        views = self.modality_views(self.current_item_graphs())
        fused = self.fuse(views)
        side = F.normalize(fused, p=2, dim=1)
        if self.config.cf_model == "mf":
            return Embeddings(self.user_embedding, self.item_embedding + side), views, fused
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + side), views, fused

    def forward(self) -> Embeddings:
        return self._embed()[0]

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        cfg = self.config
        emb, views, fused = self._embed()
        total = bpr_with_half_l2(emb.users[users], emb.items[pos_items], emb.items[neg_items], cfg.reg_weight)
        if cfg.cl_weight > 0:
            contrastive = sum(grace_contrastive_loss(v, fused, cfg.cl_temperature) for v in views.values())
            total = total + cfg.cl_weight * contrastive
        return total


def build(data: InteractionData, config: MICROConfig) -> MICRO:
    features = select_features(data, config.modalities)
    return MICRO(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(self_loop_mean_adjacency(data.train_matrix)),
        frozen_graphs=frozen_weighted_graphs(features, config.knn_k),
        features=feature_tensors(features),
        config=config,
    )


AUTHORS_DEFAULTS = {
    "embedding_dim": 64, "n_ui_layers": 2, "n_layers": 1, "knn_k": 10, "lambda_coeff": 0.9,
    "reg_weight": 1e-5, "cl_weight": 0.03, "cl_temperature": 0.5, "cf_model": "lightgcn",
}
#: The authors' optimiser settings (codes/utility/parser.py, codes/main.py). Their early stopping
#: (patience 10, evaluated every 5 epochs) is NOT taken: all models share the suite's protocol.
AUTHORS_TRAINING = {"learning_rate": 5e-4, "batch_size": 1024, "lr_decay": 0.96, "lr_decay_epochs": 50}

SPEC = ModelSpec(
    name="micro",
    label="MICRO",
    config_class=MICROConfig,
    build=build,
    multimodal=True,
    presets={"authors-default": {"*": AUTHORS_DEFAULTS}},
    default_preset="authors-default",
    tuning_grid={},
    train_defaults=AUTHORS_TRAINING,
)
