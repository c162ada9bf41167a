"""BPR-MF (Rendle et al., UAI 2009): ID embeddings scored by dot product."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, xavier_embedding


@dataclass
class BPRConfig:
    embedding_dim: int = 64
    reg_weight: float = 1e-4  # MMRec's BPR default (search grid below)

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.reg_weight < 0:
            raise ConfigError(f"reg_weight must be >= 0, got {self.reg_weight}")


class BPR(Recommender):
    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, reg_weight: float = 1e-4):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.reg_weight = reg_weight
        self.user_embedding = xavier_embedding(n_users, embedding_dim)
        self.item_embedding = xavier_embedding(n_items, embedding_dim)

    def forward(self) -> Embeddings:
        return Embeddings(self.user_embedding, self.item_embedding)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        u = self.user_embedding[users]
        p, n = self.item_embedding[pos_items], self.item_embedding[neg_items]
        # MMRec's EmbLoss: sum of squared L2 norms over the batch, divided by the batch size
        reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(users)
        return bpr_loss(u, p, n) + self.reg_weight * reg


def build(data: InteractionData, config: BPRConfig) -> BPR:
    return BPR(data.n_users, data.n_items, config.embedding_dim, config.reg_weight)


SPEC = ModelSpec(
    name="bpr",
    label="BPR",
    config_class=BPRConfig,
    build=build,
    multimodal=False,
    search_grid={"reg_weight": [1e-5, 1e-4, 1e-3, 1e-2]},
)
