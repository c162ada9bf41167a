"""VBPR (He & McAuley, AAAI 2016): matrix factorisation whose items also carry projected content.

Behaviour of MMRec's ``src/models/vbpr.py`` with its ``VBPR.yaml`` defaults:

- users have one trainable ``2d`` vector; items have a trainable ``d`` ID vector concatenated with
  ``W f_i + b``, a linear projection of the item's frozen content features (all modalities
  concatenated into one vector ``f_i``);
- score: dot product of the two ``2d`` vectors, i.e. ``gamma_u . gamma_i + theta_u . (W f_i + b)``
  (the paper's visual term; its item and user-visual bias terms are not modelled, as upstream);
- loss: BPR plus ``reg_weight`` times MMRec's ``EmbLoss`` of the batch: the plain (not squared)
  Frobenius norms of the user, positive and negative rows, summed and divided by the batch size;
- initialisation: Xavier-uniform tables, Xavier-normal projection weight, zero bias.

Modalities: any non-empty subset, concatenated in the dataset's order (upstream puts text before
image; the order of concatenated columns only permutes the projection's columns, so the model is
the same). The projection is stored as one ``Linear`` over the concatenation and applied one
modality block at a time, so no concatenated copy of the feature tables is made.

Deviation: upstream projects every item's features in each training batch; here only the batch's
items are projected, which gives the same values and gradients.

Hyperparameters: ``embedding_size 64`` from the yaml; ``reg_weight`` is searched in
``{2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5}`` and neither MMRec nor the LGMRec paper publishes the
chosen value, so the default ``1e-4`` is our pick inside that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, xavier_embedding
from .knn import feature_tensors, select_features


@dataclass
class VBPRConfig:
    embedding_dim: int = 64  # d: ID and content parts of an item each have d, users 2d
    reg_weight: float = 1e-4
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"VBPR embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.reg_weight < 0:
            raise ConfigError(f"VBPR reg_weight must be >= 0, got {self.reg_weight}")


class VBPR(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        features: dict[str, torch.Tensor],
        embedding_dim: int = 64,
        reg_weight: float = 1e-4,
    ):
        """``features``: frozen ``(n_items, dim)`` tables by modality, concatenated in this order."""
        super().__init__()
        if not features:
            raise ConfigError("VBPR needs at least one modality feature table")
        self.n_users, self.n_items = n_users, n_items
        self.reg_weight = reg_weight
        self.modalities = list(features)
        for m, table in features.items():
            if table.shape[0] != n_items:
                raise ConfigError(f"VBPR: {m} features have {table.shape[0]} rows for {n_items} items")
            self.register_buffer(f"features_{m}", table.float(), persistent=False)
        self.feature_dims = [int(t.shape[1]) for t in features.values()]

        self.user_embedding = xavier_embedding(n_users, 2 * embedding_dim)
        self.item_embedding = xavier_embedding(n_items, embedding_dim)
        self.projection = nn.Linear(sum(self.feature_dims), embedding_dim)
        nn.init.xavier_normal_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def content_embedding(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``W f_i + b`` for ``items`` (all items when None), one modality block at a time."""
        blocks = self.projection.weight.split(self.feature_dims, dim=1)
        projected = self.projection.bias
        for m, block in zip(self.modalities, blocks):
            table = getattr(self, f"features_{m}")
            projected = projected + F.linear(table if items is None else table[items], block)
        return projected

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.item_embedding if items is None else self.item_embedding[items]
        return torch.cat([ids, self.content_embedding(items)], dim=1)

    def forward(self) -> Embeddings:
        return Embeddings(self.user_embedding, self.item_vectors())

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        u = self.user_embedding[users]
        p, n = self.item_vectors(pos_items), self.item_vectors(neg_items)
        # MMRec's EmbLoss: plain Frobenius norms (not squared), summed, over the batch size
        reg = (u.norm() + p.norm() + n.norm()) / len(users)
        return bpr_loss(u, p, n) + self.reg_weight * reg


def build(data: InteractionData, config: VBPRConfig) -> VBPR:
    features = select_features(data, config.modalities)
    return VBPR(
        data.n_users,
        data.n_items,
        feature_tensors(features),
        config.embedding_dim,
        config.reg_weight,
    )


MMREC_DEFAULTS = {"embedding_dim": 64, "reg_weight": 1e-4}

SPEC = ModelSpec(
    name="vbpr",
    label="VBPR",
    config_class=VBPRConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
)
