"""MGCN (Yu et al., ACM MM 2023): multi-view graph convolution with purified modality features.

Behaviour of MMRec's ``src/models/mgcn.py`` (the authors' code, also demonph10/MGCN) with its
``MGCN.yaml``:

- user-item view: LightGCN over the symmetric normalised graph (``n_ui_layers`` layers, mean);
- item-item views, one per modality: the item ID embeddings gated by
  ``sigmoid(W_m f_m + b)`` of the linearly projected raw features (behaviour-guided purifier),
  propagated ``n_layers`` times over the frozen top-``knn_k`` cosine graph of the raw features
  (similarity weights, ``D^-1/2 S D^-1/2``); users aggregate them through the normalised
  interaction block ``D_u^-1/2 R D_i^-1/2``;
- behaviour-aware fuser: attention ``softmax_m(q(view_m))`` gives the common part; each modality's
  specific part ``view_m - common`` is gated by ``sigmoid(W'_m content)``;
  ``side = (sum_m specific_m + common) / (M + 1)`` and the final embeddings ``content + side``;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch`` + ``cl_loss`` times the
  in-batch InfoNCE (temperature 0.2, hard-coded upstream; ``cl_temperature`` here) between the
  side and content embeddings of the positive items and of the users.

The raw feature tables are trainable as upstream (``train_features=False`` freezes them).

Modalities: the design has two (image, text), where ``M + 1 = 3`` matches upstream exactly. Any
number works: with one modality the common part is the view itself, the specific part is zero,
so neither the attention query nor the preference gate exists (``side = view / 2``).

Deviations: the kNN graphs are computed in row chunks and cached under a fingerprint of the
features; the user-item normalisation adds 1e-7 to degrees (upstream maps zero degree to 0; no
difference for nodes that have edges); the regulariser divides by the actual batch size (upstream
by the configured one); InfoNCE uses ``logsumexp`` instead of ``log(exp / sum exp)`` (same value,
no overflow).

Not a model option: the yaml trains MGCN with ``learning_rate 0.001`` and
``learning_rate_scheduler [0.96, 50]`` (see ``SPEC.train_defaults``).

Hyperparameters: ``embedding_size 64, n_ui_layers 2, n_layers 1, reg_weight 1e-4, knn_k 10`` from
MMRec's yaml, which searches ``cl_loss in {0.001, 0.01, 0.1}``; the default 0.01 is the value in
the authors' own yaml (``lambda_coeff`` in the yaml is never used by the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, xavier_embedding
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
        }
        require("MGCN", checks)


def in_batch_info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of row i of ``view1`` against all rows of ``view2`` (positive: row i)."""
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = view1 @ view2.T / temperature
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def sigmoid_gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class MGCN(Recommender):
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
            final[users], final[n_u + pos_items], final[n_u + neg_items], cfg.reg_weight
        )
        contrastive = in_batch_info_nce(side[n_u + pos_items], content[n_u + pos_items], cfg.cl_temperature) \
            + in_batch_info_nce(side[users], content[users], cfg.cl_temperature)
        return total + cfg.cl_loss * contrastive


def build(data: InteractionData, config: MGCNConfig) -> MGCN:
    features = select_features(data, config.modalities)
    adjacency = graph.normalized_adjacency(data.train_matrix)
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
#: MMRec's ``learning_rate_scheduler`` for MGCN: lr * factor ** (epoch / step).

SPEC = ModelSpec(
    train_defaults={"lr_decay": 0.96, "lr_decay_epochs": 50},  # MMRec learning_rate_scheduler
    name="mgcn",
    label="MGCN",
    config_class=MGCNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"cl_loss": [0.001, 0.01, 0.1]},
)
