"""MICRO (Zhang et al., IEEE TKDE 2022): latent item structures with contrastive modality fusion.

MICRO is not part of MMRec; this follows the authors' code, CRIPAC-DIG/MICRO ``codes/Models.py``
(model) and ``codes/main.py`` (loss, training), with ``codes/utility/parser.py``'s defaults as
its configuration. What it computes:

- Xavier-uniform user and item ID tables; torch's default initialisation for the projections
  and the attention query;
- per modality an item graph ``(1 - lambda_coeff) * learned + lambda_coeff * frozen``: the frozen
  graph from the raw features, the learned one from trainable linear projections of them, both
  top-``knn_k`` cosine graphs with similarity weights and ``D^-1/2 S D^-1/2`` normalisation (each
  modality on its own, unlike LATTICE's single mixed graph);
- the learned graphs are rebuilt (with gradients) on the first batch of every epoch and for every
  evaluation; the other batches of an epoch reuse them detached (as upstream);
- per modality the item ID embeddings are propagated ``n_layers`` times over its graph; an
  attention query ``softmax_m(q(e_m))`` fuses them into ``h``; items get ``+ normalize(h)`` on top
  of LightGCN over ``D^-1 (A + I)`` (``n_ui_layers = len(weight_size) = 2``), or the raw ID
  embeddings with ``cf_model="mf"``; scores are dot products;
- loss: BPR + ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / reg_batch_size`` (``regs[0]``) +
  ``cl_weight`` (upstream ``loss_ratio``) times, per modality, the GRACE-style contrastive loss
  between ``e_m`` and ``h`` over ALL items (temperature ``cl_temperature``, upstream ``tau``;
  negatives from both views).

The raw feature tables are trainable as upstream (``from_pretrained(freeze=False)``).
Modalities: any non-empty subset; with one modality ``h`` is its view (no attention query) and the
contrastive term compares the view with itself (kept: it still acts as a uniformity loss).

Deviations (config fields, also in ``SPEC.deviations``), defaults = the authors' code:

- ``reg_batch_size`` (1024): upstream divides the regulariser by its configured ``batch_size``
  (1024, every batch of its sampler is full); 0 divides by each batch's own size (the suite's
  epochs end with a smaller batch);
- ``train_features`` (True = upstream): False keeps the raw feature tables frozen (buffers);
- ``modalities`` (empty = every modality; upstream needs image and text): a subset;
- ``cf_model``: ``lightgcn`` (upstream's default) or ``mf``; ``ngcf`` is not implemented.

Not results-changing (see :mod:`.knn`): the kNN neighbours and similarity values are those of
upstream's dense product; the learned graphs' gradients come from the ``(n_items, knn_k)`` kept
similarities (the same gradient); frozen graphs are cached under a feature fingerprint.
Implementation (the same arithmetic, faster): within an epoch each modality's detached graph is
one merged sparse matrix; the contrastive loss takes ``e(z1_i, z1_i)`` and ``e(z1_i, z2_i)`` from
row-wise dot products instead of the diagonal of the similarity product (the same values up to
float rounding), computes each block's ``2 n_items``-wide exponentials in place, and where all of
them would take more than 1 GiB (above ~11,600 items: real Sports and Clothing, not Baby) recomputes
each block's in the backward pass (activation checkpointing: the same values and gradients)
instead of storing them.

Training, not model options: upstream trains with learning rate 5e-4, batch size 1024 and the
learning rate times ``0.96 ** (epoch / 50)``: this model's ``SPEC.train_defaults``. Upstream's
own protocol (users sampled per batch, early stopping with patience 10 evaluated every 5 epochs)
is NOT taken: every model shares the suite's.

Grids: neither MMRec (no MICRO) nor the authors' README, ``parser.py`` or code publish a search
space, only the defaults above (``embed_size 64, weight_size [64, 64], topk 10, lambda_coeff 0.9,
layers 1, regs[0] 1e-5, loss_ratio 0.03, tau 0.5``). So that MICRO is tuned like every other
baseline, the suite searches its regularisation weight a decade either side of the authors'
default, ``reg_weight [1e-6, 1e-5, 1e-4]`` (our grid, not a published one; the same in both
profiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, rows_of, xavier_embedding
from .knn import (
    FeatureTables,
    combine_graphs,
    feature_tensors,
    gather_propagate,
    learned_knn,
    select_features,
    symmetric_knn_weights,
)
from .lattice import bpr_with_half_l2, frozen_weighted_graphs, self_loop_mean_adjacency
from .lightgcn import lightgcn_embeddings

CONTRASTIVE_CHUNK_ROWS = 4096  # upstream's batch_size of batched_contrastive_loss


@dataclass
class MICROConfig:
    embedding_dim: int = 64
    n_ui_layers: int = 2  # len(weight_size) upstream
    n_layers: int = 1  # item-graph propagation steps (upstream "layers")
    knn_k: int = 10  # upstream "topk"
    lambda_coeff: float = 0.9  # weight of the frozen graph
    reg_weight: float = 1e-5  # upstream regs[0]
    cl_weight: float = 0.03  # upstream "loss_ratio"
    cl_temperature: float = 0.5  # upstream self.tau
    reg_batch_size: int = 1024  # upstream's divisor: its batch_size; 0 = each batch's own size
    cf_model: Literal["lightgcn", "mf"] = "lightgcn"
    train_features: bool = True
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "n_layers >= 0": self.n_layers >= 0,
            "knn_k >= 1": self.knn_k >= 1,
            "0 <= lambda_coeff <= 1": 0 <= self.lambda_coeff <= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "cl_weight >= 0": self.cl_weight >= 0,
            "cl_temperature > 0": self.cl_temperature > 0,
            "reg_batch_size >= 0": self.reg_batch_size >= 0,
            "cf_model in (lightgcn, mf)": self.cf_model in ("lightgcn", "mf"),
        }
        require("MICRO", checks)


#: above this many bytes of (rows x 2 rows) exponentials, each block's are recomputed in the
#: backward pass instead of stored (full-scale Baby-like: 0.4 GB stored, the step 20 % faster)
CHECKPOINT_MIN_BYTES = 1 << 30


def _grace_block(block: torch.Tensor, block_other: torch.Tensor, both: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Per-row losses of one block of rows of ``z1`` (``block``), given the same rows of ``z2``
    (``block_other``) and ``both = [z1; z2]``, all L2-normalised."""
    # in place: the same kernels and bits as exp(block @ both.T / t), one (rows x 2n) buffer
    total = (block @ both.T).div_(temperature).exp_().sum(dim=1)
    own = torch.exp((block * block).sum(dim=1) / temperature)
    positive = torch.exp((block * block_other).sum(dim=1) / temperature)
    return -torch.log(positive / (total - own))


def grace_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                           chunk_rows: int = CONTRASTIVE_CHUNK_ROWS,
                           checkpoint_min_bytes: int = CHECKPOINT_MIN_BYTES) -> torch.Tensor:
    """MICRO's ``batched_contrastive_loss``: the mean over rows i of
    ``-log(e(z1_i, z2_i) / (sum_j e(z1_i, z1_j) + sum_j e(z1_i, z2_j) - e(z1_i, z1_i)))``
    with ``e(a, b) = exp(cos(a, b) / temperature)``, in blocks of ``chunk_rows`` rows."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    both = torch.cat([z1, z2])
    stored_bytes = z1.shape[0] * both.shape[0] * both.element_size()
    recompute = torch.is_grad_enabled() and stored_bytes > checkpoint_min_bytes
    losses = []
    for start in range(0, z1.shape[0], chunk_rows):
        block, block_other = z1[start: start + chunk_rows], z2[start: start + chunk_rows]
        if recompute:
            # recompute the block's n-wide exponentials in backward instead of storing them
            losses.append(checkpoint(_grace_block, block, block_other, both, temperature, use_reentrant=False))
        else:
            losses.append(_grace_block(block, block_other, both, temperature))
    return torch.cat(losses).mean() if len(losses) > 1 else losses[0].mean()


ItemGraphs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (indices, weights)


class MICRO(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        frozen_graphs: dict[str, torch.Tensor],
        features: dict[str, torch.Tensor],
        config: MICROConfig,
    ):
        """``norm_adjacency``: ``D^-1 (A + I)`` (users then items); ``frozen_graphs``: per modality
        the normalised kNN graph of the raw features; ``features``: the raw tables."""
        super().__init__()
        if not features or list(features) != list(frozen_graphs):
            raise ConfigError("MICRO needs at least one modality, with a frozen graph for each")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        for m, matrix in frozen_graphs.items():
            self.register_buffer(f"frozen_graph_{m}", matrix, persistent=False)
        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        self.features = FeatureTables(features, config.train_features)
        self.projection = nn.ModuleDict({m: nn.Linear(t.shape[1], d) for m, t in features.items()})
        if len(self.modalities) > 1:
            self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self._graphs: ItemGraphs | None = None  # this epoch's graphs, detached
        self._merged: dict[str, torch.Tensor] | None = None  # the same as sparse matrices (lazily)
        self._rebuild = True

    def learn_item_graphs(self) -> ItemGraphs:
        """Per modality the normalised learned kNN graph of the projected features."""
        graphs = {}
        for m in self.modalities:
            indices, values = learned_knn(self.projection[m](self.features[m]), self.config.knn_k)
            graphs[m] = (indices, symmetric_knn_weights(indices, values))
        return graphs

    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True

    def merged_item_graphs(self, graphs: ItemGraphs) -> dict[str, torch.Tensor]:
        """Per modality the detached ``(1 - lambda) learned + lambda frozen`` as one sparse matrix."""
        lam = self.config.lambda_coeff
        return {
            m: combine_graphs(self.n_items, gathered=[(i, (1.0 - lam) * w)],
                              sparse=[(getattr(self, f"frozen_graph_{m}"), lam)])
            for m, (i, w) in graphs.items()
        }

    def current_views(self) -> dict[str, torch.Tensor]:
        """Per modality the propagated item embeddings with this moment's item graphs: rebuilt
        for evaluation and on an epoch's first batch, else this epoch's detached graphs."""
        if not self.training:
            return self.modality_views(self.learn_item_graphs())  # upstream rebuilds for every evaluation
        if self._rebuild or self._graphs is None:
            fresh = self.learn_item_graphs()
            self._graphs = {m: (i, w.detach()) for m, (i, w) in fresh.items()}
            self._merged, self._rebuild = None, False
            return self.modality_views(fresh)
        if self._merged is None:
            self._merged = self.merged_item_graphs(self._graphs)
        views = {}
        for m, matrix in self._merged.items():
            h = self.item_embedding
            for _ in range(self.config.n_layers):
                h = graph.spmm(matrix, h)
            views[m] = h
        return views

    def modality_views(self, graphs: ItemGraphs) -> dict[str, torch.Tensor]:
        lam = self.config.lambda_coeff
        views = {}
        for m, (indices, weights) in graphs.items():
            h = self.item_embedding
            frozen = getattr(self, f"frozen_graph_{m}")
            for _ in range(self.config.n_layers):
                h = (1.0 - lam) * gather_propagate(indices, weights, h) + lam * graph.spmm(frozen, h)
            views[m] = h
        return views

    def fuse(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return next(iter(views.values()))
        stacked = list(views.values())
        attention = torch.softmax(torch.cat([self.query(v) for v in stacked], dim=-1), dim=-1)
        return sum(attention[:, k: k + 1] * v for k, v in enumerate(stacked))

    def _embed(self) -> tuple[Embeddings, dict[str, torch.Tensor], torch.Tensor]:
        views = self.current_views()
        fused = self.fuse(views)
        side = F.normalize(fused, p=2, dim=1)
        if self.config.cf_model == "mf":
            return Embeddings(self.user_embedding, self.item_embedding + side), views, fused
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items + side), views, fused

    def forward(self) -> Embeddings:
        return self._embed()[0]

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        cfg = self.config
        emb, views, fused = self._embed()
        total = bpr_with_half_l2(
            rows_of(emb.users, users), rows_of(emb.items, pos_items), rows_of(emb.items, neg_items), cfg.reg_weight,
            cfg.reg_batch_size
        )
        if cfg.cl_weight > 0:
            contrastive = sum(grace_contrastive_loss(v, fused, cfg.cl_temperature) for v in views.values())
            total = total + cfg.cl_weight * contrastive
        return total


def build(data: InteractionData, config: MICROConfig) -> MICRO:
    features = select_features(data, config.modalities)
    return MICRO(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(self_loop_mean_adjacency(data.train_matrix)),
        frozen_graphs=frozen_weighted_graphs(features, config.knn_k),
        features=feature_tensors(features),
        config=config,
    )


AUTHORS_DEFAULTS = {
    "embedding_dim": 64, "n_ui_layers": 2, "n_layers": 1, "knn_k": 10, "lambda_coeff": 0.9,
    "reg_weight": 1e-5, "cl_weight": 0.03, "cl_temperature": 0.5, "cf_model": "lightgcn",
}
#: The authors' optimiser settings (codes/utility/parser.py, codes/main.py). Their early stopping
#: (patience 10, evaluated every 5 epochs) is NOT taken: all models share the suite's protocol.
AUTHORS_TRAINING = {"learning_rate": 5e-4, "batch_size": 1024, "lr_decay": 0.96, "lr_decay_epochs": 50}

SPEC = ModelSpec(
    name="micro",
    label="MICRO",
    config_class=MICROConfig,
    build=build,
    multimodal=True,
    presets={"authors-default": {"*": AUTHORS_DEFAULTS}},
    default_preset="authors-default",
    # no published search space (see the module docstring): a decade either side of the default
    tuning_grid={"reg_weight": [1e-6, 1e-5, 1e-4]},
    reduced_grid={"reg_weight": [1e-6, 1e-5, 1e-4]},
    train_defaults=AUTHORS_TRAINING,
    reference="CRIPAC-DIG/MICRO codes/Models.py + codes/main.py + codes/utility/parser.py",
    deviations={
        "reg_batch_size": "upstream divides the regulariser by its configured batch_size (1024; its "
                          "sampler's batches are all full); 0 divides by each batch's own size",
        "train_features": "upstream fine-tunes the raw feature tables; False (not the default) freezes them",
        "modalities": "upstream needs image and text; a one-modality subset (not the default) drops "
                      "the attention query and contrasts the view with itself",
        "cf_model": "lightgcn (upstream's default) or mf; upstream's ngcf is not implemented",
    },
)
