"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph and a denoised user-item graph.

Follows MMRec ``src/models/freedom.py`` with ``src/configs/model/FREEDOM.yaml`` (enoche/MMRec).
What it computes:

- Xavier-uniform user and item ID tables (``embedding_size 64``);
- item-item graph, built once before training: per modality the top-``knn_k`` cosine neighbours
  of the raw features (the item itself included) with unit weights, ``D^-1/2 A D^-1/2``
  (D + 1e-7), mixed across modalities (image ``mm_image_weight``, text the rest); the item ID
  embeddings propagated ``n_mm_layers`` times over it are added to the items' LightGCN output;
- user-item graph: LightGCN (mean of ``n_ui_layers + 1`` layers) over ``D^-1/2 A D^-1/2``
  (D + 1e-7). In training, every epoch keeps ``int(E * (1 - dropout))`` of the ``E`` edges,
  drawn without replacement with probability proportional to ``1 / sqrt(d_u d_i)`` of the full
  graph (degree-sensitive pruning), and renormalises the kept edges (degrees + 1e-7); evaluation
  uses the full graph;
- loss: BPR on the final embeddings plus ``reg_weight`` times, per modality, a BPR loss between
  the final user embeddings and the linearly projected raw features of the positive and negative
  items; no norm penalty (upstream imports ``EmbLoss`` but never calls it);
- the raw feature tables are trainable parameters (upstream ``from_pretrained(freeze=False)``);
  they only enter through the auxiliary loss, so scores depend on them only through training.

Modalities: any non-empty subset. With image and text the mixing weights are ``mm_image_weight``
and ``1 - mm_image_weight`` (as upstream); with one modality its graph alone (as upstream); with
more, image keeps ``mm_image_weight`` and the others share the rest equally (equal weights
without image).

Deviations (config fields, also in ``SPEC.deviations``), defaults = MMRec:

- ``train_features`` (True = MMRec): False keeps the raw feature tables frozen (buffers);
- ``modalities`` (empty = every modality, as MMRec): a subset of the dataset's modalities.

Not results-changing (see :mod:`.knn`): the kNN graph is the same top-k of the same similarity
product, cached under a fingerprint of the feature array (upstream caches it under a file name
holding only ``knn_k`` and the image weight, so a changed feature file silently reuses a stale
graph). ``torch.multinomial`` draws the kept edges from the same distribution as upstream, but
in the order of our edge list (sorted by user, then item), so a seed selects other edges than
upstream's with the same seed.

Implementation (the same arithmetic as upstream, faster): the pruned graph's CSR matrix is built
by masking a precomputed layout of the full graph (no sort per epoch), and being symmetric it is
its own transpose in the backward pass; the auxiliary loss projects the whole feature table, as
upstream, when the batch touches most items, else only the distinct items of the batch (the
same values and gradients).

Grids: MMRec searches ``dropout [0.8, 0.9]`` x ``reg_weight [0.0, 1e-5, 1e-4, 1e-3]``
(``SPEC.tuning_grid``); the reduced grid of the embedded default tunes ``reg_weight`` over
``[1e-5, 1e-4, 1e-3]`` (0 and 1e-5 weigh the auxiliary loss almost equally: its gradient at
1e-5 is negligible) with ``dropout`` at 0.8. The yaml fixes ``embedding_size 64,
feat_embed_dim 64, n_mm_layers 1, n_ui_layers 2, knn_k 10, mm_image_weight 0.1`` and no training
setting (``overall.yaml``: learning rate 1e-3, no decay, batch 2048, the protocol's). Neither
MMRec nor the paper publishes the chosen values; the defaults (``dropout 0.8``,
``reg_weight 1e-4``) are our pick inside the grid. (``lambda_coeff``, ``weight_size`` and
``cf_model`` in the yaml are never used by the model.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, bpr_loss, distinct_ids, rows_of, xavier_embedding
from .knn import (
    FeatureTables,
    cached_knn_graph,
    feature_tensors,
    select_features,
    symmetric_normalize_binary,
)
from .lightgcn import layer_mean



@dataclass
class FREEDOMConfig:
    embedding_dim: int = 64
    feat_embed_dim: int = 64  # must equal embedding_dim: projected features meet user embeddings
    n_mm_layers: int = 1
    n_ui_layers: int = 2
    knn_k: int = 10
    mm_image_weight: float = 0.1
    dropout: float = 0.8  # share of user-item edges pruned every epoch
    reg_weight: float = 1e-4  # weight of the per-modality BPR losses
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "feat_embed_dim == embedding_dim": self.feat_embed_dim == self.embedding_dim,
            "n_mm_layers >= 0": self.n_mm_layers >= 0,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "0 <= mm_image_weight <= 1": 0 <= self.mm_image_weight <= 1,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("FREEDOM", checks)


def modality_mixing_weights(modalities: list[str], image_weight: float) -> dict[str, float]:
    """Weights of the per-modality item graphs in the mixed graph (see the module docstring)."""
    if len(modalities) == 1:
        return {modalities[0]: 1.0}
    if "image" not in modalities:
        return {m: 1.0 / len(modalities) for m in modalities}
    others = [m for m in modalities if m != "image"]
    return {m: image_weight if m == "image" else (1.0 - image_weight) / len(others) for m in modalities}


def symmetric_lightgcn(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Mean of ``[E, A E, ..., A^L E]`` for a symmetric constant ``A``."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(graph.symmetric_spmm(adjacency, layers[-1]))
    return layer_mean(layers)


class FREEDOM(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        train_edges: torch.Tensor,
        item_graph: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: FREEDOMConfig,
    ):
        """``norm_adjacency``: Ahat of the training graph (users then items); ``train_edges``:
        ``(2, E)`` int64 (user, item) training pairs without duplicates; ``item_graph``: the mixed,
        normalised ``n_items x n_items`` kNN graph; ``features``: raw ``(n_items, dim)`` tables."""
        super().__init__()
        if not features:
            raise ConfigError("FREEDOM needs at least one modality")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("train_edges", train_edges, persistent=False)
        # Sampling probabilities of the degree-sensitive pruning: 1/sqrt(d_u d_i) of the full graph.
        edge_weights = graph.edge_normalization(train_edges, n_users, n_items)
        self.register_buffer("edge_weights", edge_weights, persistent=False)
        self.layout = graph.SymmetricLayout(train_edges, n_users, n_items)
        self.masked_adjacency: torch.Tensor | None = None

        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict(
            {m: nn.Linear(t.shape[1], config.feat_embed_dim) for m, t in features.items()}
        )

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        self.layout.to(self.train_edges.device)
        return result

    def pruning_keep_count(self) -> int:
        """``int(E * (1 - dropout))``, upstream's expression (so its float rounding too)."""
        return int(self.edge_weights.numel() * (1.0 - self.config.dropout))

    def sample_kept_edges(self) -> torch.Tensor:
        """Ids of the edges kept this epoch: drawn without replacement, with probability
        proportional to ``1 / sqrt(d_u d_i)`` (uses torch's RNG)."""
        n_keep = self.pruning_keep_count()
        if n_keep < 1:
            raise ConfigError(f"FREEDOM dropout {self.config.dropout} keeps no training edge")
        return torch.multinomial(self.edge_weights, n_keep, replacement=False)

    def sample_pruned_adjacency(self) -> torch.Tensor:
        """A degree-sensitively pruned, renormalised user-item adjacency (uses torch's RNG)."""
        if self.config.dropout <= 0:
            return self.norm_adjacency
        keep = self.sample_kept_edges()
        values = torch.zeros_like(self.edge_weights)
        kept_edges = self.train_edges[:, keep]
        values[keep] = graph.edge_normalization(kept_edges, self.n_users, self.n_items).to(values.dtype)
        kept = torch.zeros(self.edge_weights.numel(), dtype=torch.bool, device=keep.device)
        kept[keep] = True
        return self.layout.matrix(kept, values)

    def on_epoch_start(self, epoch: int) -> None:
        self.masked_adjacency = self.sample_pruned_adjacency()

    def forward(self) -> Embeddings:
        if self.training:
            if self.masked_adjacency is None:  # loss() before any on_epoch_start()
                self.masked_adjacency = self.sample_pruned_adjacency()
            adjacency = self.masked_adjacency
        else:
            adjacency = self.norm_adjacency
        item_side = graph.propagate(self.item_graph, self.item_embedding, self.config.n_mm_layers)[-1]
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = symmetric_lightgcn(adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + item_side)

    def projected_features(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        """``projection(features)[items]``. Upstream projects the whole table every batch; when
        the batch's distinct items are fewer than 3/4 of all items, only they are projected
        (the same rows, values and gradients)."""
        table, project = self.features[modality], self.projection[modality]
        distinct, position, _ = distinct_ids(items, self.n_items)
        if 4 * distinct.numel() >= 3 * self.n_items:
            return rows_of(project(table), items)
        return rows_of(project(rows_of(table, distinct)), position)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u = rows_of(emb.users, users)
        total = bpr_loss(u, rows_of(emb.items, pos_items), rows_of(emb.items, neg_items))
        if self.config.reg_weight > 0:
            batch_items = torch.cat([pos_items, neg_items])
            modality_loss = 0.0
            for m in self.modalities:
                pos, neg = self.projected_features(m, batch_items).split([len(pos_items), len(neg_items)])
                modality_loss = modality_loss + bpr_loss(u, pos, neg)
            total = total + self.config.reg_weight * modality_loss
        return total


def mixed_item_graph(features: dict[str, np.ndarray], config: FREEDOMConfig):
    weights = modality_mixing_weights(list(features), config.mm_image_weight)
    return sum(weights[m] * symmetric_normalize_binary(cached_knn_graph(table, config.knn_k))
               for m, table in features.items())


def build(data: InteractionData, config: FREEDOMConfig) -> FREEDOM:
    features = select_features(data, config.modalities)
    return FREEDOM(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(data.train_matrix)),
        train_edges=graph.edge_index(data.train_matrix),
        item_graph=graph.to_torch(mixed_item_graph(features, config)),
        features=feature_tensors(features),
        config=config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "feat_embed_dim": 64, "n_mm_layers": 1, "n_ui_layers": 2, "knn_k": 10,
    "mm_image_weight": 0.1, "dropout": 0.8, "reg_weight": 1e-4,
}

SPEC = ModelSpec(
    name="freedom",
    label="FREEDOM",
    config_class=FREEDOMConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"dropout": [0.8, 0.9], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3]},
    reduced_grid={"reg_weight": [1e-5, 1e-4, 1e-3]},
    train_defaults={},  # the yaml fixes no training setting: overall.yaml's are the protocol's
    reference="MMRec src/models/freedom.py + src/configs/model/FREEDOM.yaml",
    deviations={
        "train_features": "MMRec fine-tunes the raw feature tables (from_pretrained(freeze=False)); "
                          "False (not the default) keeps them frozen",
        "modalities": "MMRec uses every feature file present; a non-empty subset (not the default) "
                      "builds the item graph and the auxiliary losses from those modalities only",
    },
)
