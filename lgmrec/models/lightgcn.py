"""LightGCN (He et al., SIGIR 2020): ID embeddings averaged over graph-propagation layers.

Follows MMRec ``src/models/lightgcn.py`` with ``src/configs/model/LightGCN.yaml`` (enoche/MMRec):
Xavier-uniform tables, ``Ahat = D^-1/2 A D^-1/2`` of the training graph (degrees + 1e-7), the
mean of ``n_layers + 1`` layers; loss = BPR on the propagated embeddings + ``reg_weight`` x
MMRec's ``EmbLoss`` of the batch's EGO (layer-0) rows (plain Frobenius norms / batch size).
MMRec searches ``n_layers [1, 2, 3, 4]`` x ``reg_weight [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]``.

Deviations: none as options (``BPRLoss``'s 1e-10 is dropped, as in :mod:`.bpr`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import graph
from ..data import InteractionData
from ..config import require
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, emb_loss, rows_of, xavier_embedding


@dataclass
class LightGCNConfig:
    embedding_dim: int = 64
    n_layers: int = 2
    reg_weight: float = 1e-4  # inside MMRec's grid; tuned by the ``tuning`` experiment

    def __post_init__(self) -> None:
        require("LightGCN", {"embedding_dim >= 1": self.embedding_dim >= 1, "n_layers >= 0": self.n_layers >= 0,
                             "reg_weight >= 0": self.reg_weight >= 0})


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(layers).mean(dim=0)`` with the same bits forward and backward
    (tests/models/test_lightgcn.py), without the stacked copy: the layers summed in order into one
    buffer, then divided by their count (3 x 1,053 x 64: ~60 against ~150 us)."""
    if len(layers) == 1:
        return layers[0]
    mean = layers[0] + layers[1]
    for layer in layers[2:]:
        mean += layer
    return mean.div_(len(layers))


def lightgcn_embeddings(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Mean of ``[E, A E, ..., A^L E]`` (a pure function)."""
    return layer_mean(graph.propagate(adjacency, ego, n_layers))


class LightGCN(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        embedding_dim: int = 64,
        n_layers: int = 2,
        reg_weight: float = 1e-4,
    ):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.n_layers, self.reg_weight = n_layers, reg_weight
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.user_embedding = xavier_embedding(n_users, embedding_dim)
        self.item_embedding = xavier_embedding(n_items, embedding_dim)

    def forward(self) -> Embeddings:
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.n_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u, p, n = rows_of(emb.users, users), rows_of(emb.items, pos_items), rows_of(emb.items, neg_items)
        # MMRec regularises the ego (layer-0) rows
        ego = emb_loss(rows_of(self.user_embedding, users), rows_of(self.item_embedding, pos_items),
                       rows_of(self.item_embedding, neg_items))
        return bpr_loss(u, p, n) + self.reg_weight * ego


def build(data: InteractionData, config: LightGCNConfig) -> LightGCN:
    adjacency = graph.to_torch(graph.normalized_adjacency(data.train_matrix))
    return LightGCN(
        data.n_users, data.n_items, adjacency, config.embedding_dim, config.n_layers,
        config.reg_weight,
    )


SPEC = ModelSpec(
    name="lightgcn",
    label="LightGCN",
    config_class=LightGCNConfig,
    build=build,
    multimodal=False,
    tuning_grid={"n_layers": [1, 2, 3, 4], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]},
    reduced_grid={"reg_weight": [1e-2, 1e-4, 1e-6]},
    reference="MMRec src/models/lightgcn.py + src/configs/model/LightGCN.yaml",
)
