"""SLMRec (Tao et al., IEEE TMM 2022): self-supervised multimedia recommendation.

Follows MMRec ``src/models/slmrec.py`` with ``src/configs/model/SLMRec.yaml`` (enoche/MMRec):
``ssl_task FAC``, ``mm_fusion_mode concat``, ``adj_type pre``, ``init xavier``. What it computes:

- graphs: LightGCN (mean of ``n_layers + 1`` layers) over ``D^-1/2 A D^-1/2`` (D + 1e-8) run
  once on ``[user IDs; item IDs]`` and once per modality on ``[user IDs; W_m x_i]``, where
  ``x_i`` are the L2-normalised item features and ``W_m`` a trainable linear map (the user IDs
  are shared by every graph); Xavier-uniform ID tables and linear weights, torch's default
  biases;
- fusion: users ``F_u [id; m_1; ...]`` and items ``F_i [id; m_1; ...]`` (one linear layer each
  over the concatenated graph outputs);
- main loss: in-batch InfoNCE (cross-entropy, row b of the batch must pick column b) between
  the L2-normalised fused user and positive-item embeddings at temperature ``temperature``
  (upstream ``temp``); the sampled negatives are not used;
- self-supervised loss (FAC, "fine and coarse" alignment) on the batch's positive items: the
  item-ID graph output is mapped up a chain of spaces, ``z_1 = g_1(id)``, ``z_2 = g_2(z_1)``,
  ``z_3 = g_3(z_2)`` (``d, d, d/2`` wide), and each level is contrasted (un-normalised dot
  products over ``ssl_temp``, in-batch cross-entropy) with a projection of one modality's graph
  output: level 1 with the first modality, level 3 with the last (upstream: image and text; the
  audio level 2 exists but, without audio, only passes through). Total:
  ``InfoNCE + ssl_alpha * FAC``. No embedding regulariser: the yaml's ``reg`` is never read;
- training: Adam with the yaml's ``weight_decay 1e-4`` (``SPEC.train_defaults``; the trainer's
  Adam applies it to every parameter that has a gradient, as MMRec's does);
- scores: ``sigmoid(F_u . F_i)``, as upstream's ``full_sort_predict``.

Modalities: one (only level 1, as upstream's single-modality ``kwai`` branch), two (upstream's
layout) or three (the paper's visual / acoustic / textual chain on levels 1 / 2 / 3); more than
three raise ConfigError, since the FAC chain has three levels.

Implementation: both contrastive losses are computed on the batch's *distinct* rows. A batch
row b's softmax denominator sums over every batch column, and columns repeating one item are
equal, so ``sum_c exp(l_bc) = sum_j n_j exp(l_bj)`` over the distinct items j with their counts
``n_j``; likewise the rows of one user give one term times its count. That is the same loss and
gradient as upstream's ``B x B`` cross-entropy, on an ``(distinct users) x (distinct items)``
matrix, several times smaller on these datasets.

Deviations (config fields, also in ``SPEC.deviations``):

- ``score_from_last_batch`` (True = MMRec): upstream scores validation and test users with the
  embeddings cached in the epoch's last training batch (computed before that batch's optimiser
  step); False recomputes them from the current parameters;
- ``fusion`` ('concat' = MMRec): 'mean' (average the graph outputs, then a ``d x d`` linear
  layer) fixes upstream's mean mode, which fails with a shape error;
- ``modalities`` (empty = every modality, as MMRec): a subset of one to three.

Upstream's other self-supervised tasks (FD, FM) read config keys MMRec never sets and cannot
run; they are not implemented. Upstream also builds the unused audio head ``g_a_iva`` (no
gradient, so Adam never moves it); it is left out, which changes only the parameter count.

Grids: MMRec searches ``learning_rate [1e-4, 1e-3, 0.01, 0.1]`` x ``ssl_temp [0.1, 0.2, 0.5,
1.0]`` x ``ssl_alpha [0.01, 0.05, 0.1, 0.5, 1.0]`` x ``reg [1e-4, 1e-3, 0.01, 0.1]`` (320
points, ``SPEC.tuning_grid``; ``reg`` is a config field here too, with no effect, as upstream).
The reduced grid of the embedded default keeps ``learning_rate {1e-3, 0.01, 0.1}`` (rates
below 1e-3 need more epochs than the budget has) x ``ssl_alpha {0.01, 0.1, 1.0}``: SLMRec's
only searched weight that acts is ``ssl_alpha`` (the weight of the self-supervised
regulariser); three ``reg`` values would train three identical models. Neither MMRec nor the
LGMRec paper publishes the chosen values; the defaults ``ssl_alpha 0.1, ssl_temp 0.2`` are the
SLMRec authors' own (``conf/SLMRec.properties``), with MMRec's learning rate 1e-3.
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
from .base import Distinct, Embeddings, LastBatchEmbeddings, Recommender
from .knn import feature_tensors, select_features
from .lightgcn import layer_mean, lightgcn_embeddings

DEGREE_EPS = 1e-8  # upstream's 'pre' adjacency adds 1e-8 to the degrees
MAX_MODALITIES = 3  # levels of the FAC chain


@dataclass
class SLMRecConfig:
    embedding_dim: int = 64  # upstream recdim
    n_layers: int = 3  # upstream layer_num
    temperature: float = 0.2  # upstream temp: the main InfoNCE loss
    ssl_temp: float = 0.2
    ssl_alpha: float = 0.1
    reg: float = 1e-4  # searched by MMRec's yaml, never read by its model: no effect, as upstream
    fusion: str = "concat"  # upstream mm_fusion_mode
    score_from_last_batch: bool = True  # MMRec scores with the last training batch's embeddings
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 2 and even": self.embedding_dim >= 2 and self.embedding_dim % 2 == 0,
            "n_layers >= 0": self.n_layers >= 0,
            "temperature > 0": self.temperature > 0,
            "ssl_temp > 0": self.ssl_temp > 0,
            "ssl_alpha >= 0": self.ssl_alpha >= 0,
            "reg >= 0": self.reg >= 0,
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


def info_nce(anchors: torch.Tensor, a: Distinct, positives: torch.Tensor, p: Distinct, temperature: float):
    """MMRec's in-batch InfoNCE, ``cross_entropy(A P^T / t, arange(B))`` with ``A`` and ``P`` the
    batch's anchor and positive rows, computed from their distinct rows: ``anchors[k]`` is the
    row of id ``a.values[k]``, ``positives[k]`` that of ``p.values[k]``."""
    logits = anchors @ positives.T / temperature  # (distinct anchors, distinct positives)
    denominators = torch.logsumexp(logits + p.counts.to(logits.dtype).log(), dim=1)
    matched = logits.reshape(-1).index_select(0, a.inverse * logits.shape[1] + p.inverse)
    return ((a.counts.to(logits.dtype) * denominators).sum() - matched.sum()) / len(a.inverse)


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)  # bias keeps torch's default, as upstream
    return layer


class SLMRec(Recommender):
    pure_eval_forward = True  # see Recommender

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
        self.last_batch = LastBatchEmbeddings(config.score_from_last_batch)

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
        return layer(layer_mean(parts))

    def _embeddings(self, outputs) -> Embeddings:
        return Embeddings(self._fuse(outputs, 0, self.user_fusion), self._fuse(outputs, 1, self.item_fusion))

    def forward(self) -> Embeddings:
        if not self.training and self.last_batch.kept is not None:
            return self.last_batch.kept  # what MMRec's full_sort_predict scores with
        return self._embeddings(self.graph_outputs())

    def on_epoch_start(self, epoch: int) -> None:
        self.last_batch.clear()

    def score(self, users: torch.Tensor, embeddings: Embeddings) -> torch.Tensor:
        return torch.sigmoid(super().score(users, embeddings))  # as upstream's full_sort_predict

    def fac_loss(self, outputs, items: Distinct) -> torch.Tensor:
        z = outputs["id"][1].index_select(0, items.values)
        total = torch.zeros((), device=z.device)
        for level, step in enumerate(self.fac_chain):
            z = step(z)
            if level in self.levels:
                m = self.levels[level]
                target = self.fac_heads[m](outputs[m][1].index_select(0, items.values))
                total = total + info_nce(z, items, target, items, self.config.ssl_temp)
        return total

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        # neg_items is unused: both losses take the other rows of the batch as negatives
        outputs = self.graph_outputs()
        emb = self._embeddings(outputs)
        self.last_batch.keep(emb)
        batch_users, batch_items = Distinct(users), Distinct(pos_items)
        main = info_nce(
            F.normalize(emb.users.index_select(0, batch_users.values), dim=1), batch_users,
            F.normalize(emb.items.index_select(0, batch_items.values), dim=1), batch_items,
            self.config.temperature,
        )
        return main + self.config.ssl_alpha * self.fac_loss(outputs, batch_items)


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
    "fusion": "concat",
}

SPEC = ModelSpec(
    name="slmrec",
    label="SLMRec",
    config_class=SLMRecConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    train_defaults={"weight_decay": 1e-4},  # the yaml's Adam weight decay
    tuning_grid={
        "learning_rate": [0.0001, 0.001, 0.01, 0.1],
        "ssl_temp": [0.1, 0.2, 0.5, 1.0],
        "ssl_alpha": [0.01, 0.05, 0.1, 0.5, 1.0],
        "reg": [0.0001, 0.001, 0.01, 0.1],
    },
    reduced_grid={"learning_rate": [0.001, 0.01, 0.1], "ssl_alpha": [0.01, 0.1, 1.0]},
    reference="MMRec src/models/slmrec.py + src/configs/model/SLMRec.yaml",
    deviations={
        "score_from_last_batch": "MMRec scores validation/test users with the embeddings of the "
                                 "epoch's last training batch, one optimiser step old (True); False "
                                 "recomputes them from the current parameters",
        "fusion": "MMRec concatenates the graph outputs ('concat'); its 'mean' mode fails with a shape "
                  "error, 'mean' here averages them before a d x d layer",
        "modalities": "MMRec uses image and text (empty = every modality); a subset of one to three "
                      "runs the FAC chain on those",
    },
)
