"""BPR-MF (Rendle et al., UAI 2009): ID embeddings scored by dot product.

Follows MMRec ``src/models/bpr.py`` with ``src/configs/model/BPR.yaml`` (enoche/MMRec):
Xavier-normal initialised user and item tables (``embedding_size 64``); loss = BPR on the batch
scores + ``reg_weight`` x MMRec's ``EmbLoss`` of the batch's user, positive and negative rows
(plain Frobenius norms, summed, divided by the batch size). MMRec searches ``reg_weight`` over
``[2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]``.

Deviations: none as options. MMRec's ``BPRLoss`` is ``-log(1e-10 + sigmoid(x))``; we use
``-logsigmoid(x)``, which differs only for score gaps below about -18 (a loss above 18 per pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import require
from ..data import InteractionData
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, emb_loss, rows_of, xavier_embedding


@dataclass
class BPRConfig:
    embedding_dim: int = 64
    reg_weight: float = 1e-4  # inside MMRec's grid; tuned by the ``tuning`` experiment

    def __post_init__(self) -> None:
        require("BPR", {"embedding_dim >= 1": self.embedding_dim >= 1, "reg_weight >= 0": self.reg_weight >= 0})


class BPR(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, reg_weight: float = 1e-4):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.reg_weight = reg_weight
        self.user_embedding = xavier_embedding(n_users, embedding_dim, init="normal")
        self.item_embedding = xavier_embedding(n_items, embedding_dim, init="normal")

    def forward(self) -> Embeddings:
        return Embeddings(self.user_embedding, self.item_embedding)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        u = rows_of(self.user_embedding, users)
        p, n = rows_of(self.item_embedding, pos_items), rows_of(self.item_embedding, neg_items)
        return bpr_loss(u, p, n) + self.reg_weight * emb_loss(u, p, n)


def build(data: InteractionData, config: BPRConfig) -> BPR:
    return BPR(data.n_users, data.n_items, config.embedding_dim, config.reg_weight)


SPEC = ModelSpec(
    name="bpr",
    label="BPR",
    config_class=BPRConfig,
    build=build,
    multimodal=False,
    tuning_grid={"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
    reduced_grid={"reg_weight": [1e-1, 1e-3, 1e-5]},
    reference="MMRec src/models/bpr.py + src/configs/model/BPR.yaml",
)
