"""SLMRec (Tao et al., IEEE TMM 2022): self-supervised multimedia recommendation.

Behaviour of MMRec's ``src/models/slmrec.py`` with its ``SLMRec.yaml`` defaults
(``ssl_task FAC``, ``mm_fusion_mode concat``, ``adj_type pre``, Xavier initialisation):

- graphs: LightGCN (mean of ``n_layers + 1`` layers) over ``D^-1/2 A D^-1/2`` (D + 1e-8) run
  once on ``[user IDs; item IDs]`` and once per modality on ``[user IDs; W_m x_i]``, where
  ``x_i`` are the L2-normalised item features and ``W_m`` a trainable linear map (the user IDs
  are shared by every graph);
- fusion: users ``F_u [id; m_1; ...]`` and items ``F_i [id; m_1; ...]`` (one linear layer each
  over the concatenated graph outputs); dot-product scores;
- main loss: in-batch InfoNCE between the L2-normalised fused user and positive-item embeddings
  at temperature ``temperature`` (upstream ``temp``); the sampled negatives are not used;
- self-supervised loss (FAC, "fine and coarse" alignment) on the batch's positive items: the
  item-ID graph output is mapped up a chain of spaces, ``z_1 = g_1(id)``, ``z_2 = g_2(z_1)``,
  ``z_3 = g_3(z_2)`` (``d, d, d/2`` wide), and each level is contrasted (un-normalised dot
  products over ``ssl_temp``, in-batch cross-entropy) with a projection of one modality's graph
  output: level 1 with the first modality, level 3 with the last (upstream: image and text; the
  audio level 2 exists but, without audio, only passes through). Total:
  ``InfoNCE + ssl_alpha * FAC``;
- ``weight_decay``: the yaml sets Adam's L2 weight decay 1e-4 for SLMRec (the suite's trainer
  has none); adding ``weight_decay / 2 * sum ||theta||^2`` over all parameters to the loss gives
  exactly the gradients of Adam's coupled weight decay.

Modalities: one (only level 1, as upstream's single-modality ``kwai`` branch), two (upstream's
layout) or three (the paper's visual / acoustic / textual chain on levels 1 / 2 / 3); more than
three raise ConfigError, since the FAC chain has three levels.

Deviations: upstream scores validation and test users with the embeddings cached in the last
training batch (one optimiser step old) and passes the scores through a sigmoid; here
``forward()`` recomputes them from the current parameters and scores are raw dot products (the
sigmoid does not change the ranking). ``fusion='mean'`` (average the graph outputs, then a
``d x d`` linear layer) fixes upstream's mean mode, which fails with a shape error. Upstream's
other self-supervised tasks (FD, FM) read config keys MMRec never sets and cannot run; they are
not implemented.

Hyperparameters: ``recdim 64, layer_num 3, temp 0.2`` from the yaml; ``ssl_alpha`` is searched
in ``{0.01, 0.05, 0.1, 0.5, 1.0}``, ``ssl_temp`` in ``{0.1, 0.2, 0.5, 1.0}`` (and
``learning_rate`` in :data:`TRAIN_SEARCH_GRID`; the yaml's ``reg`` grid is searched too, but
the model never reads ``reg``, so it is left out here). Neither MMRec nor the LGMRec paper
publishes the chosen values; the defaults ``ssl_alpha 0.1, ssl_temp 0.2`` are the SLMRec
authors' own (``conf/SLMRec.properties``), both inside the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender
from .knn import feature_tensors, select_features
from .lightgcn import lightgcn_embeddings

DEGREE_EPS = 1e-8  # upstream's 'pre' adjacency adds 1e-8 to the degrees
MAX_MODALITIES = 3  # levels of the FAC chain


@dataclass
class SLMRecConfig:
    embedding_dim: int = 64  # upstream recdim
    n_layers: int = 3  # upstream layer_num
    temperature: float = 0.2  # upstream temp: the main InfoNCE loss
    ssl_temp: float = 0.2
    ssl_alpha: float = 0.1
    weight_decay: float = 1e-4  # Adam's L2 weight decay in the yaml, folded into the loss
    fusion: str = "concat"  # upstream mm_fusion_mode
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 2 and even": self.embedding_dim >= 2 and self.embedding_dim % 2 == 0,
            "n_layers >= 0": self.n_layers >= 0,
            "temperature > 0": self.temperature > 0,
            "ssl_temp > 0": self.ssl_temp > 0,
            "ssl_alpha >= 0": self.ssl_alpha >= 0,
            "weight_decay >= 0": self.weight_decay >= 0,
            "fusion in {'concat', 'mean'}": self.fusion in ("concat", "mean"),
            f"at most {MAX_MODALITIES} modalities": len(self.modalities) <= MAX_MODALITIES,
        }
        require("SLMRec", checks)


def fac_levels(modalities: list[str]) -> dict[int, str]:
    """FAC chain level (0, 1, 2) -> the modality contrasted there (see the module docstring)."""
    if not 1 <= len(modalities) <= MAX_MODALITIES:
        raise ConfigError(
            f"SLMRec's FAC task aligns one to {MAX_MODALITIES} modalities (visual, acoustic, "
            f"textual), got {len(modalities)}: {modalities}; choose a subset with `modalities`"
        )
    if len(modalities) == 1:
        return {0: modalities[0]}
    if len(modalities) == 2:
        return {0: modalities[0], 2: modalities[1]}
    return dict(enumerate(modalities))


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch cross-entropy: row b of ``anchor`` should pick row b of ``positive``."""
    logits = anchor @ positive.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)  # bias keeps torch's default, as upstream
    return layer


class SLMRec(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: SLMRecConfig,
    ):
        """``norm_adjacency``: ``D^-1/2 A D^-1/2`` of the user-item graph (users then items);
        ``features``: frozen ``(n_items, dim)`` tables by modality (L2-normalised here)."""
        super().__init__()
        if not features:
            raise ConfigError("SLMRec needs at least one modality feature table")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.levels = fac_levels(self.modalities)
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        for m, table in features.items():
            self.register_buffer(f"features_{m}", F.normalize(table.float(), dim=1), persistent=False)

        d = config.embedding_dim
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, d)))
        self.dense = nn.ModuleDict({m: _xavier_linear(t.shape[1], d) for m, t in features.items()})
        fused_width = d * (len(features) + 1) if config.fusion == "concat" else d
        self.user_fusion = _xavier_linear(fused_width, d)
        self.item_fusion = _xavier_linear(fused_width, d)
        # FAC: the chain id -> level 1 (d) -> level 2 (d) -> level 3 (d/2), and one projection
        # of each contrasted modality into its level's space
        level_widths = [d, d, d // 2]
        n_levels = max(self.levels) + 1
        self.fac_chain = nn.ModuleList(
            [_xavier_linear(d if level == 0 else level_widths[level - 1], level_widths[level])
             for level in range(n_levels)]
        )
        self.fac_heads = nn.ModuleDict(
            {m: _xavier_linear(d, level_widths[level]) for level, m in self.levels.items()}
        )

    def graph_outputs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """LightGCN outputs split into (users, items): key 'id' and one per modality."""
        outputs = {}
        inputs = {"id": self.item_embedding}
        inputs.update({m: self.dense[m](getattr(self, f"features_{m}")) for m in self.modalities})
        for name, items in inputs.items():
            ego = torch.cat([self.user_embedding, items])
            mean = lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_layers)
            outputs[name] = tuple(mean.split([self.n_users, self.n_items]))
        return outputs

    def _fuse(self, outputs, side: int, layer: nn.Linear) -> torch.Tensor:
        parts = [outputs[name][side] for name in ("id", *self.modalities)]
        if self.config.fusion == "concat":
            return layer(torch.cat(parts, dim=1))
        return layer(torch.stack(parts).mean(dim=0))

    def _embeddings(self, outputs) -> Embeddings:
        return Embeddings(self._fuse(outputs, 0, self.user_fusion), self._fuse(outputs, 1, self.item_fusion))

    def forward(self) -> Embeddings:
        return self._embeddings(self.graph_outputs())

    def fac_loss(self, outputs, items: torch.Tensor) -> torch.Tensor:
        z = outputs["id"][1][items]
        total = torch.zeros((), device=z.device)
        for level, step in enumerate(self.fac_chain):
            z = step(z)
            if level in self.levels:
                m = self.levels[level]
                total = total + info_nce(z, self.fac_heads[m](outputs[m][1][items]), self.config.ssl_temp)
        return total

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        # neg_items is unused: both losses take the other rows of the batch as negatives
        outputs = self.graph_outputs()
        emb = self._embeddings(outputs)
        main = info_nce(
            F.normalize(emb.users[users], dim=1), F.normalize(emb.items[pos_items], dim=1),
            self.config.temperature,
        )
        total = main + self.config.ssl_alpha * self.fac_loss(outputs, pos_items)
        if self.config.weight_decay > 0:
            squares = sum(p.pow(2).sum() for p in self.parameters())
            total = total + 0.5 * self.config.weight_decay * squares
        return total


def pre_normalized_adjacency(interactions: sp.spmatrix) -> sp.csr_matrix:
    """Upstream's 'pre' adjacency: ``D^-1/2 A D^-1/2`` with D + 1e-8."""
    adjacency = graph.bipartite_adjacency(interactions)
    degree = np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel() + DEGREE_EPS
    return graph.scale_symmetric(adjacency, degree)


def build(data: InteractionData, config: SLMRecConfig) -> SLMRec:
    features = select_features(data, config.modalities)
    return SLMRec(
        data.n_users,
        data.n_items,
        graph.to_torch(pre_normalized_adjacency(data.train_matrix)),
        feature_tensors(features),
        config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "n_layers": 3, "temperature": 0.2, "ssl_temp": 0.2, "ssl_alpha": 0.1,
    "weight_decay": 1e-4, "fusion": "concat",
}
#: Searched by MMRec alongside ssl_temp and ssl_alpha, but a training setting.
TRAIN_SEARCH_GRID = {"learning_rate": [0.0001, 0.001, 0.01, 0.1]}

SPEC = ModelSpec(
    name="slmrec",
    label="SLMRec",
    config_class=SLMRecConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"ssl_temp": [0.1, 0.2, 0.5, 1.0], "ssl_alpha": [0.01, 0.05, 0.1, 0.5, 1.0]},
)
