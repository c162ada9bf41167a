"""BM3 (Zhou et al., WWW 2023): bootstrapped latent representations, no negative sampling.

Behaviour of MMRec's ``src/models/bm3.py`` with its ``BM3.yaml``:

- online embeddings: LightGCN over the symmetric normalised user-item graph (mean of
  ``n_layers + 1`` layers), the items' ID embeddings added to their output;
- targets: the online embeddings (and the projected modality features) with dropout, without
  gradients; a shared linear predictor maps online representations into the target space;
- loss over the batch's (user, positive item) pairs: ``(1 - cos(pred(u), target(i))) +
  (1 - cos(pred(i), target(u)))``, plus ``cl_weight`` times, per modality,
  ``(1 - cos(pred(f_i), target(i))) + (1 - cos(pred(f_i), target(f_i)))`` with ``f`` the linearly
  projected raw features, plus ``reg_weight * (|U|_F + |I|_F) / n_items`` over the WHOLE online
  tables (MMRec's ``EmbLoss``: plain, not squared, Frobenius norms divided by the row count of
  its last argument). Negative items are ignored (``use_neg_sampling: False``);
- scores: ``pred(u) . pred(i)``; ``forward()`` returns the predictor outputs.

The raw feature tables are trainable as upstream (``train_features=False`` freezes them).
Modalities: any non-empty subset, each adds its two alignment terms.

Deviations: the modality projections and target dropout are computed for the batch's rows only
(the same values and gradients; upstream projects every item then indexes). Our trainer still
draws negatives for BM3; they are unused.

Hyperparameters: ``embedding_size 64, cl_weight 2.0`` from the yaml; MMRec searches
``n_layers {1, 2}, dropout {0.3, 0.5}, reg_weight {0.1, 0.01}``. The BM3 repository publishes the
best values (README): Baby 1 / 0.5 / 0.1, Sports 1 / 0.5 / 0.01 (preset ``authors-best``, the
default; Clothing, not published, falls back to the Baby values).
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
from .lightgcn import lightgcn_embeddings


@dataclass
class BM3Config:
    embedding_dim: int = 64
    n_layers: int = 1
    dropout: float = 0.5  # target-view dropout
    reg_weight: float = 0.1
    cl_weight: float = 2.0  # weight of the modality alignment terms
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_layers >= 0": self.n_layers >= 0,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "cl_weight >= 0": self.cl_weight >= 0,
        }
        require("BM3", checks)


def negative_cosine(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean cos(online, target)``; the target carries no gradient."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: BM3Config,
    ):
        """``norm_adjacency``: Ahat of the training graph; ``features``: raw ``(n_items, dim)`` tables."""
        super().__init__()
        if not features:
            raise ConfigError("BM3 needs at least one modality")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict({m: nn.Linear(t.shape[1], d) for m, t in features.items()})
        for layer in self.projection.values():
            nn.init.xavier_normal_(layer.weight)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Online user and item embeddings (before the predictor)."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_layers).split(
            [self.n_users, self.n_items]
        )
        return users, items + self.item_embedding

    def forward(self) -> Embeddings:
        users, items = self.online()
        return Embeddings(self.predictor(users), self.predictor(items))

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        cfg = self.config
        all_users, all_items = self.online()
        u, i = all_users[users], all_items[pos_items]
        with torch.no_grad():
            u_target = F.dropout(u, cfg.dropout)
            i_target = F.dropout(i, cfg.dropout)
        total = negative_cosine(self.predictor(u), i_target) + negative_cosine(self.predictor(i), u_target)
        alignment = 0.0
        for m in self.modalities:
            projected = self.projection[m](self.features[m][pos_items])
            with torch.no_grad():
                projected_target = F.dropout(projected, cfg.dropout)
            predicted = self.predictor(projected)
            alignment = alignment + negative_cosine(predicted, i_target) \
                + negative_cosine(predicted, projected_target)
        regulariser = (all_users.norm() + all_items.norm()) / self.n_items
        return total + cfg.reg_weight * regulariser + cfg.cl_weight * alignment


def build(data: InteractionData, config: BM3Config) -> BM3:
    features = select_features(data, config.modalities)
    return BM3(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(data.train_matrix)),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {"embedding_dim": 64, "n_layers": 1, "dropout": 0.5, "reg_weight": 0.1, "cl_weight": 2.0}

SPEC = ModelSpec(
    name="bm3",
    label="BM3",
    config_class=BM3Config,
    build=build,
    multimodal=True,
    presets={
        "mmrec-default": {"*": MMREC_DEFAULTS},
        "authors-best": {
            "*": MMREC_DEFAULTS,
            "baby": {"n_layers": 1, "dropout": 0.5, "reg_weight": 0.1},
            "sports": {"n_layers": 1, "dropout": 0.5, "reg_weight": 0.01},
        },
    },
    default_preset="authors-best",
    tuning_grid={"n_layers": [1, 2], "reg_weight": [0.1, 0.01], "dropout": [0.3, 0.5]},
)
