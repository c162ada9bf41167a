"""MGCN (Yu et al., ACM MM 2023): multi-view graph convolution with purified modality features.

Follows MMRec ``src/models/mgcn.py`` with ``src/configs/model/MGCN.yaml`` (enoche/MMRec; the
authors' code, demonph10/MGCN). What it computes:

- Xavier-uniform user and item ID tables; torch's default initialisation for every linear layer;
- user-item view: LightGCN (mean of ``n_ui_layers + 1`` layers) over ``D^-1/2 A D^-1/2`` of the
  training graph (a zero degree scales to 0, as upstream: no epsilon);
- item-item views, one per modality: the item ID embeddings gated by
  ``sigmoid(W_m (P_m f_m) + b)`` of the linearly projected raw features (behaviour-guided
  purifier), propagated ``n_layers`` times over the frozen top-``knn_k`` cosine graph of the raw
  features (similarity weights, ``D^-1/2 S D^-1/2``); users aggregate them through the
  normalised interaction block ``D_u^-1/2 R D_i^-1/2``;
- behaviour-aware fuser: attention ``softmax_m(q(view_m))`` gives the common part; each modality's
  specific part ``view_m - common`` is gated by ``sigmoid(W'_m content)``;
  ``side = (sum_m specific_m + common) / (M + 1)``; final embeddings ``content + side``; scores
  are dot products;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / reg_batch_size`` (the batch's final
  rows; MMRec's own regulariser, not ``EmbLoss``) + ``cl_loss`` times the sum of two in-batch
  InfoNCE losses (temperature 0.2, hard-coded upstream; ``cl_temperature`` here) between the side
  and content embeddings: of the batch's positive items, and of its users.

The raw feature tables are trainable as upstream (``from_pretrained(freeze=False)``).

Modalities: the design has two (image, text), where ``M + 1 = 3`` matches upstream exactly. Any
number works: with one modality the common part is the view itself, the specific part is zero,
so neither the attention query nor the preference gate exists (``side = view / 2``).

Deviations (config fields, also in ``SPEC.deviations``), defaults = MMRec:

- ``reg_batch_size`` (2048): MMRec divides the regulariser by the configured
  ``train_batch_size`` (2048, the protocol's), also on an epoch's smaller last batch; 0 divides
  by each batch's own size;
- ``cl_temperature`` (0.2 = MMRec's hard-coded value);
- ``train_features`` (True = MMRec): False keeps the raw feature tables frozen (buffers);
- ``modalities`` (empty = every modality, as MMRec): a subset, see above.

Not results-changing: the kNN graphs are the same top-k of the same similarity products (see
:mod:`.knn`), cached under a fingerprint of the features. Implementation (the same arithmetic,
faster): a batch repeats users and items; every InfoNCE row of a repeated id is the same, and so
is every column, so the loss is computed over the batch's DISTINCT ids, each row's
``sum_j exp(.)`` weighting a distinct column by its multiplicity and the mean weighting a
distinct row by it: the same sums over the same terms, in another order.

Grids: MMRec searches ``cl_loss [0.001, 0.01, 0.1]`` only (``SPEC.tuning_grid``), which is also
the reduced grid of the embedded default; ``reg_weight`` is fixed at 1e-4 by the yaml. The yaml
fixes ``embedding_size 64, n_ui_layers 2, n_layers 1, knn_k 10, reg_weight 1e-4`` and the
training settings ``learning_rate 0.001`` and ``learning_rate_scheduler [0.96, 50]``
(``SPEC.train_defaults``: lr times ``0.96 ** (epoch / 50)``). The default ``cl_loss 0.01`` is the
value in the authors' own yaml (``lambda_coeff`` in MMRec's yaml is never used by the model).
"""

from __future__ import annotations

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
from .base import Embeddings, Recommender, rows_of, xavier_embedding
from .knn import FeatureTables, feature_tensors, select_features
from .lattice import bpr_with_half_l2, frozen_weighted_graphs
from .lightgcn import lightgcn_embeddings


@dataclass
class MGCNConfig:
    embedding_dim: int = 64
    n_ui_layers: int = 2
    n_layers: int = 1  # item-item propagation steps
    knn_k: int = 10
    reg_weight: float = 1e-4
    cl_loss: float = 0.01  # weight of the contrastive loss (MMRec's key name)
    cl_temperature: float = 0.2
    reg_batch_size: int = 2048  # MMRec's divisor: the configured batch size; 0 = each batch's own
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "n_layers >= 0": self.n_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "cl_loss >= 0": self.cl_loss >= 0,
            "cl_temperature > 0": self.cl_temperature > 0,
            "reg_batch_size >= 0": self.reg_batch_size >= 0,
        }
        require("MGCN", checks)


def in_batch_info_nce(
    table1: torch.Tensor, table2: torch.Tensor, rows: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MGCN's InfoNCE of a batch: the mean over batch positions i of
    ``-log(exp(c(a_i, b_i) / t) / sum_j exp(c(a_i, b_j) / t))``, with ``a = table1[rows]``,
    ``b = table2[rows]`` L2-normalised and ``c`` their dot product.

    Positions holding the same id have the same row and the same column, so the sums run over
    the distinct ids, a column weighted by its count in the denominator and a row by its count
    in the mean (the same terms as upstream's ``B x B`` computation)."""
    distinct, counts = torch.unique(rows, return_counts=True)
    view1 = F.normalize(rows_of(table1, distinct), dim=1)
    view2 = F.normalize(rows_of(table2, distinct), dim=1)
    weights = counts.to(view1.dtype)
    positive = torch.exp((view1 * view2).sum(dim=-1) / temperature)
    total = torch.exp(view1 @ view2.T / temperature) @ weights
    return (-torch.log(positive / total) * weights).sum() / rows.numel()


def sigmoid_gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class MGCN(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        user_item: torch.Tensor,
        item_graphs: dict[str, torch.Tensor],
        features: dict[str, torch.Tensor],
        config: MGCNConfig,
    ):
        """``norm_adjacency``: Ahat (users then items); ``user_item``: its ``n_users x n_items``
        block; ``item_graphs``: per modality the normalised kNN graph; ``features``: raw tables."""
        super().__init__()
        if not features or list(features) != list(item_graphs):
            raise ConfigError("MGCN needs at least one modality, with an item graph for each")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.register_buffer("user_item", user_item, persistent=False)
        for m, matrix in item_graphs.items():
            self.register_buffer(f"item_graph_{m}", matrix, persistent=False)

        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict({m: nn.Linear(t.shape[1], d) for m, t in features.items()})
        self.purifier_gate = nn.ModuleDict({m: sigmoid_gate(d) for m in self.modalities})
        if len(self.modalities) > 1:  # with one view the fuser has nothing to weigh or separate
            self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
            self.preference_gate = nn.ModuleDict({m: sigmoid_gate(d) for m in self.modalities})

    def modality_view(self, modality: str) -> torch.Tensor:
        """``[users; items]`` of one modality's item-item view."""
        gate = self.purifier_gate[modality](self.projection[modality](self.features[modality]))
        items = self.item_embedding * gate
        for _ in range(self.config.n_layers):
            items = graph.spmm(getattr(self, f"item_graph_{modality}"), items)
        return torch.cat([graph.spmm(self.user_item, items), items])

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content, side)`` over users then items."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        content = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers)
        views = [self.modality_view(m) for m in self.modalities]
        if len(views) == 1:
            return content, views[0] / 2
        attention = torch.softmax(torch.cat([self.query_common(v) for v in views], dim=-1), dim=-1)
        common = sum(attention[:, k: k + 1] * v for k, v in enumerate(views))
        specific = sum(
            self.preference_gate[m](content) * (v - common) for m, v in zip(self.modalities, views)
        )
        return content, (specific + common) / (len(views) + 1)

    def forward(self) -> Embeddings:
        content, side = self.embed()
        users, items = (content + side).split([self.n_users, self.n_items])
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        cfg = self.config
        content, side = self.embed()
        final = content + side
        n_u = self.n_users
        total = bpr_with_half_l2(
            rows_of(final, users), rows_of(final, n_u + pos_items), rows_of(final, n_u + neg_items), cfg.reg_weight,
            cfg.reg_batch_size
        )
        contrastive = in_batch_info_nce(side, content, n_u + pos_items, cfg.cl_temperature) \
            + in_batch_info_nce(side, content, users, cfg.cl_temperature)
        return total + cfg.cl_loss * contrastive


def normalized_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """MGCN's ``D^-1/2 A D^-1/2`` of the user-item graph: a zero degree scales to 0 (no epsilon)."""
    adjacency = graph.bipartite_adjacency(interactions)
    return graph.scale_symmetric(adjacency, np.asarray(adjacency.sum(axis=1)).ravel())


def build(data: InteractionData, config: MGCNConfig) -> MGCN:
    features = select_features(data, config.modalities)
    adjacency = normalized_adjacency(data.train_matrix)
    return MGCN(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(adjacency),
        user_item=graph.to_torch(adjacency[: data.n_users, data.n_users:]),
        item_graphs=frozen_weighted_graphs(features, config.knn_k),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "n_ui_layers": 2, "n_layers": 1, "knn_k": 10, "reg_weight": 1e-4, "cl_loss": 0.01,
}

SPEC = ModelSpec(
    name="mgcn",
    label="MGCN",
    config_class=MGCNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"cl_loss": [0.001, 0.01, 0.1]},
    reduced_grid={"cl_loss": [0.001, 0.01, 0.1]},  # reg_weight is fixed (1e-4) by MMRec's yaml
    # MGCN.yaml: learning_rate 0.001, learning_rate_scheduler [0.96, 50]
    train_defaults={"learning_rate": 0.001, "lr_decay": 0.96, "lr_decay_epochs": 50},
    reference="MMRec src/models/mgcn.py + src/configs/model/MGCN.yaml",
    deviations={
        "reg_batch_size": "MMRec divides the regulariser by the configured train_batch_size (2048), "
                          "also on an epoch's smaller last batch; 0 divides by each batch's own size",
        "cl_temperature": "MMRec hard-codes the InfoNCE temperature 0.2 (the default)",
        "train_features": "MMRec fine-tunes the raw feature tables; False (not the default) freezes them",
        "modalities": "MMRec needs image and text; a one-modality subset (not the default) drops the fuser",
    },
)
