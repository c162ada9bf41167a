"""VBPR (He & McAuley, AAAI 2016): matrix factorisation whose items also carry projected content.

Follows MMRec ``src/models/vbpr.py`` with ``src/configs/model/VBPR.yaml`` (enoche/MMRec):

- users have one trainable ``2d`` vector; items have a trainable ``d`` ID vector concatenated with
  ``W f_i + b``, a linear projection of the item's frozen content features (all modalities
  concatenated into one vector ``f_i``); ``embedding_size 64``;
- score: dot product of the two ``2d`` vectors, i.e. ``gamma_u . gamma_i + theta_u . (W f_i + b)``
  (the paper's visual term; its item and user-visual bias terms are not modelled, as upstream);
- loss: BPR on the batch scores plus ``reg_weight`` times MMRec's ``EmbLoss`` of the batch's user,
  positive and negative vectors (the whole ``2d`` vectors, content part included): the plain
  (not squared) Frobenius norms, summed and divided by the batch size;
- initialisation: Xavier-uniform tables, Xavier-normal projection weight, zero bias; upstream's
  ``forward`` applies dropout with ``p = 0`` (the identity), so there is none here.

Modalities: any non-empty subset (``modalities``; default all, as upstream), concatenated in the
dataset's order (upstream puts text before image; the order of concatenated columns only permutes
the projection's columns, so the model is the same). The projection is stored as one ``Linear``
over the concatenation and applied one modality block at a time, so no concatenated copy of the
feature tables is made.

Deviations: none as options. MMRec's ``BPRLoss`` is ``-log(1e-10 + sigmoid(x))``; we use
``-logsigmoid(x)`` (as :mod:`.bpr`), which differs only for score gaps below about -18.

Implementation (same values and gradients as upstream, faster): upstream projects every item's
features in each training batch; here a batch projects each distinct item it holds once (all
items at once when the batch holds most of them).

Grids: MMRec searches ``reg_weight [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]``; the reduced grid
(the embedded default) tunes it over ``[0.1, 1e-3, 1e-5]``, the points :mod:`.bpr` tunes, so
that the two rows differ only by the content term. Neither MMRec nor the LGMRec paper publishes
the chosen value; the default ``1e-3`` is our pick inside the reduced grid. The yaml fixes no
training setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, distinct_ids, emb_loss, xavier_embedding
from .knn import feature_tensors, select_features

#: a batch holding at least this share of the items projects all of them (one product, no gather)
PROJECT_ALL_SHARE = 0.75


@dataclass
class VBPRConfig:
    embedding_dim: int = 64  # d: ID and content parts of an item each have d, users 2d
    reg_weight: float = 1e-3  # inside MMRec's grid; tuned by the ``tuning`` experiment
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        require("VBPR", {"embedding_dim >= 1": self.embedding_dim >= 1, "reg_weight >= 0": self.reg_weight >= 0})


class VBPR(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        features: dict[str, torch.Tensor],
        embedding_dim: int = 64,
        reg_weight: float = 1e-3,
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
            rows = table if items is None else table.index_select(0, items)
            projected = torch.addmm(projected, rows, block.t())
        return projected

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.item_embedding if items is None else self.item_embedding.index_select(0, items)
        return torch.cat([ids, self.content_embedding(items)], dim=1)

    def forward(self) -> Embeddings:
        return Embeddings(self.user_embedding, self.item_vectors())

    def batch_item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """``item_vectors(items)``, projecting each distinct item's features once."""
        distinct, position, _ = distinct_ids(items, self.n_items)
        if distinct.numel() >= PROJECT_ALL_SHARE * self.n_items:
            content = self.content_embedding().index_select(0, items)
        else:
            content = self.content_embedding(distinct).index_select(0, position)
        return torch.cat([self.item_embedding.index_select(0, items), content], dim=1)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        u = self.user_embedding.index_select(0, users)
        p, n = self.batch_item_vectors(torch.cat([pos_items, neg_items])).split(len(users))
        return bpr_loss(u, p, n) + self.reg_weight * emb_loss(u, p, n)


def build(data: InteractionData, config: VBPRConfig) -> VBPR:
    features = select_features(data, config.modalities)
    return VBPR(
        data.n_users,
        data.n_items,
        feature_tensors(features),
        config.embedding_dim,
        config.reg_weight,
    )


SPEC = ModelSpec(
    name="vbpr",
    label="VBPR",
    config_class=VBPRConfig,
    build=build,
    multimodal=True,
    tuning_grid={"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
    reduced_grid={"reg_weight": [1e-1, 1e-3, 1e-5]},
    reference="MMRec src/models/vbpr.py + src/configs/model/VBPR.yaml",
)
