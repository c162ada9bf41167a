"""BM3 (Zhou et al., WWW 2023): bootstrapped latent representations, no negative sampling.

Follows MMRec ``src/models/bm3.py`` with ``src/configs/model/BM3.yaml`` (enoche/MMRec). What it
computes:

- online embeddings: LightGCN over the symmetric normalised user-item graph (degrees + 1e-7;
  mean of ``n_layers + 1`` layers) of Xavier-uniform ID tables, the items' ID embeddings added
  to their output;
- targets: the online embeddings (and the projected modality features) with dropout, without
  gradients. Upstream draws the dropout over whole tables and then picks the batch's rows, so a
  user or item that appears several times in a batch has one mask, as here (one mask per
  distinct row). A shared linear predictor (Xavier-normal weight) maps online representations
  into the target space;
- loss over the batch's (user, positive item) pairs: ``(1 - cos(pred(u), target(i))) +
  (1 - cos(pred(i), target(u)))``, plus ``cl_weight`` times, per modality,
  ``(1 - cos(pred(f_i), target(i))) + (1 - cos(pred(f_i), target(f_i)))`` with ``f`` the linearly
  projected raw features (Xavier-normal weights), plus ``reg_weight * (|U|_F + |I|_F) / n_items``
  over the WHOLE online tables (MMRec's ``EmbLoss``: plain, not squared, Frobenius norms divided
  by the row count of its last argument). Negative items are ignored (``use_neg_sampling:
  False``);
- the raw feature tables are trainable (``from_pretrained(freeze=False)`` upstream);
- scores: ``pred(u) . pred(i)``; ``forward()`` returns the predictor outputs from the current
  parameters, as upstream's ``full_sort_predict`` does.

Implementation: the predictor, the modality projections and the dropout are computed for the
batch's distinct users and items, then expanded to the batch's rows (the same values and
gradients; upstream computes them for every user and item, then indexes). Cosines are dot
products of rows divided by their norms clamped at 1e-8, ``F.cosine_similarity``'s formula; a
modality term pairs an item with itself, so its cosine is computed once per distinct item and
weighted by the item's count. The masks are drawn with ``torch.rand`` (keep where
``u >= dropout``, scale ``1 / (1 - dropout)``), the distribution of ``F.dropout``. Our trainer
still draws negatives for BM3; they are unused.

Deviations (config fields, also in ``SPEC.deviations``):

- ``train_features`` (True = MMRec): False freezes the raw feature tables;
- ``modalities`` (empty = every modality, as MMRec): a subset, each modality adding its two
  alignment terms.

Grids: MMRec searches ``n_layers [1, 2]`` x ``reg_weight [0.1, 0.01]`` x ``dropout [0.3, 0.5]``
(``SPEC.tuning_grid``) with ``cl_weight 2.0`` and the learning rate 1e-3 fixed. The reduced grid
of the embedded default tunes ``reg_weight`` over the yaml's only two values, 0.1 and 0.01, and,
to have more than two points, the other regularisation strength, ``dropout``, over the
yaml's 0.3 and 0.5 (4 points; ``n_layers`` at the preset, 1). The BM3 repository publishes its
best values (README): Baby 1 / 0.5 / 0.1, Sports 1 / 0.5 / 0.01 (``n_layers / dropout / reg_weight``, all
grid points; preset ``authors-best``, the default; Clothing, not published, takes the Baby
values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Distinct, Embeddings, Recommender, emb_loss, xavier_embedding
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


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows over their L2 norms clamped at 1e-8: ``F.cosine_similarity(a, b)`` is
    ``(unit_rows(a) * unit_rows(b)).sum(1)``."""
    return rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-8)


def row_dropout(rows: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(rows, p)`` (training mode), its mask drawn with ``torch.rand``."""
    if p == 0:
        return rows
    keep = torch.rand(rows.shape, dtype=rows.dtype, device=rows.device) >= p
    return rows * keep / (1 - p)


class BM3(Recommender):
    pure_eval_forward = True  # see Recommender

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
        batch_users, batch_items = Distinct(users, self.n_users), Distinct(pos_items, self.n_items)
        to_users, to_items = batch_users.inverse, batch_items.inverse  # batch row -> distinct row
        u = all_users.index_select(0, batch_users.values)
        i = all_items.index_select(0, batch_items.values)
        with torch.no_grad():
            u_target = unit_rows(row_dropout(u, cfg.dropout))
            i_target = unit_rows(row_dropout(i, cfg.dropout))
        # 1 - mean cos over the batch's (user, item) pairs: unit rows, expanded to the pairs
        u_online, i_online = unit_rows(self.predictor(u)), unit_rows(self.predictor(i))
        n_pairs = len(users)
        total = 2.0 - (
            (u_online.index_select(0, to_users) * i_target.index_select(0, to_items)).sum()
            + (i_online.index_select(0, to_items) * u_target.index_select(0, to_users)).sum()
        ) / n_pairs
        # the modality terms pair an item with itself: its cosine once, times its count
        item_share = batch_items.counts.to(u.dtype) / n_pairs
        alignment = 0.0
        for m in self.modalities:
            projected = self.projection[m](self.features[m].index_select(0, batch_items.values))
            with torch.no_grad():
                projected_target = unit_rows(row_dropout(projected, cfg.dropout))
            predicted = unit_rows(self.predictor(projected))
            cosines = (predicted * i_target).sum(dim=1) + (predicted * projected_target).sum(dim=1)
            alignment = alignment + 2.0 - item_share @ cosines
        return total + cfg.reg_weight * emb_loss(all_users, all_items) + cfg.cl_weight * alignment


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
    reduced_grid={"reg_weight": [0.1, 0.01], "dropout": [0.3, 0.5]},  # the yaml's only values
    reference="MMRec src/models/bm3.py + src/configs/model/BM3.yaml",
    deviations={
        "train_features": "MMRec trains the raw feature tables (True); False freezes them",
        "modalities": "MMRec uses every loaded modality (empty = all); a subset keeps only those "
                      "modalities' alignment terms",
    },
)
