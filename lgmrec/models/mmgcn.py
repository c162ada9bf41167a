"""MMGCN (Wei et al., ACM MM 2019): one graph convolution network per modality, averaged.

Behaviour of MMRec's ``src/models/mmgcn.py`` with its ``MMGCN.yaml`` defaults:

- per modality m, node inputs ``X = normalize([P_m; c_i])`` (row-wise L2): user preferences
  ``P_m`` and item content ``c_i``, which is ``MLP(x_i)`` (``latent_dim`` 256) for the image and
  the raw features for the other modalities (upstream: text enters raw);
- ``n_layers`` layers, each: ``h = leaky_relu(mean_(j in N(v)) x_j W)`` (mean aggregation over the
  user-item graph), ``x_hat = leaky_relu(L x) + e_v`` with ``e_v`` a node ID embedding shared by all
  modalities, and ``x <- leaky_relu(G [h ; x_hat])`` (``concat``) or ``leaky_relu(G h + x_hat)``;
- the final representation is the mean over modalities of the last layer's ``x``; dot-product
  scores;
- loss: BPR plus ``reg_weight`` times the mean squared ID embeddings of the batch's users and of
  its items plus the mean squared *whole* image preference table.

Upstream defects kept by default, each with a named switch:

- ``trainable_embeddings=False``: upstream creates the ID embeddings and the user preferences as
  plain tensors, not ``nn.Parameter`` s, so the optimiser never updates them (the authors' code
  does the same): they stay at their random initialisation and the regulariser on them has no
  effect. ``True`` makes them trainable parameters;
- ``concat=True``: upstream passes the *string* ``'False'`` as its concatenation flag, which is
  truthy, so the layers concatenate ``[h ; x_hat]``; ``False`` gives the additive variant;
- ``n_layers=3``: the yaml sets ``n_layers: 2`` but upstream's GCN always runs three layers
  (the value is stored and never read); ``n_layers=2`` gives what the yaml asks for.

Modalities: any non-empty subset; ``projected_modalities`` names those that go through the
``latent_dim`` MLP (default: image only, as upstream). Initialisation follows upstream:
Xavier-normal ID embeddings, preferences, convolution weights, the ``L`` weights and the first
layer's ``G`` weight; torch's default for the other ``G`` layers, the MLP and all biases.

Deviations: upstream scores validation and test users with the representation cached in the
last training batch (one optimiser step old); here ``forward()`` recomputes it from the current
parameters. The aggregation ``mean_(j in N(v)) x_j W`` is computed as ``(D^-1 A X) W``.

Hyperparameters: ``embedding_size 64`` from the yaml (``n_layers`` as above); ``reg_weight`` is
searched in ``{0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1}`` (and ``learning_rate`` in
:data:`TRAIN_SEARCH_GRID`); neither MMRec nor the LGMRec paper publishes the chosen value, so
the default ``reg_weight 1e-5`` is the MMGCN authors' own default (``--weight_decay`` in their
``main.py``).
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
from .base import Embeddings, Recommender, bpr_loss
from .knn import feature_tensors, select_features


@dataclass
class MMGCNConfig:
    embedding_dim: int = 64
    n_layers: int = 3  # what upstream runs (its yaml's n_layers: 2 is ignored)
    latent_dim: int = 256  # MLP width of the projected modalities
    projected_modalities: tuple[str, ...] = ("image",)
    concat: bool = True
    trainable_embeddings: bool = False  # upstream never trains ID embeddings and preferences
    reg_weight: float = 1e-5
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_layers >= 1": self.n_layers >= 1,
            "latent_dim >= 1": self.latent_dim >= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("MMGCN", checks)


def bipartite_mean_adjacency(interactions: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1 A`` of the user-item graph: row v averages v's neighbours (isolated rows: 0)."""
    adjacency = graph.bipartite_adjacency(interactions)
    degree = np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return (sp.diags(inverse.astype(np.float32)) @ adjacency).tocsr().astype(np.float32)


def _xavier(shape: tuple[int, ...]) -> torch.Tensor:
    return nn.init.xavier_normal_(torch.empty(*shape))


class ModalityGCN(nn.Module):
    def __init__(
        self, n_users: int, feature_dim: int, config: MMGCNConfig, projected: bool, trainable: bool
    ):
        super().__init__()
        d, self.concat = config.embedding_dim, config.concat
        self.project = nn.Linear(feature_dim, config.latent_dim) if projected else None
        in_dim = config.latent_dim if projected else feature_dim
        preference = _xavier((n_users, in_dim))
        if trainable:
            self.preference = nn.Parameter(preference)
        else:
            self.register_buffer("preference", preference, persistent=False)
        widths = [in_dim] + [d] * (config.n_layers - 1)
        self.conv = nn.ParameterList([nn.Parameter(_xavier((w, w))) for w in widths])
        self.linear = nn.ModuleList([nn.Linear(w, d) for w in widths])
        self.gate = nn.ModuleList([nn.Linear(w + d if self.concat else w, d) for w in widths])
        for layer in self.linear:
            nn.init.xavier_normal_(layer.weight)
        nn.init.xavier_normal_(self.gate[0].weight)  # upstream re-initialises only the first one

    def forward(
        self, features: torch.Tensor, adjacency: torch.Tensor, id_embedding: torch.Tensor
    ) -> torch.Tensor:
        content = self.project(features) if self.project is not None else features
        x = F.normalize(torch.cat([self.preference, content]))
        for conv, linear, gate in zip(self.conv, self.linear, self.gate):
            h = F.leaky_relu(graph.spmm(adjacency, x) @ conv)
            x_hat = F.leaky_relu(linear(x)) + id_embedding
            x = F.leaky_relu(gate(torch.cat([h, x_hat], dim=1)) if self.concat else gate(h) + x_hat)
        return x


class MMGCN(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        mean_adjacency: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: MMGCNConfig,
    ):
        """``mean_adjacency``: ``D^-1 A`` of the user-item graph (users then items);
        ``features``: frozen ``(n_items, dim)`` tables by modality."""
        super().__init__()
        if not features:
            raise ConfigError("MMGCN needs at least one modality feature table")
        unknown = set(config.projected_modalities) - set(features)
        if unknown - {"image"}:  # 'image' is the default and may be absent from the data
            raise ConfigError(f"MMGCN projected_modalities {sorted(unknown)} are not among {list(features)}")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("adjacency", mean_adjacency, persistent=False)
        for m, table in features.items():
            self.register_buffer(f"features_{m}", table.float(), persistent=False)
        id_embedding = _xavier((n_users + n_items, config.embedding_dim))
        if config.trainable_embeddings:
            self.id_embedding = nn.Parameter(id_embedding)
        else:
            self.register_buffer("id_embedding", id_embedding, persistent=False)
        self.gcn = nn.ModuleDict({
            m: ModalityGCN(n_users, t.shape[1], config, m in config.projected_modalities,
                           config.trainable_embeddings)
            for m, t in features.items()
        })

    def forward(self) -> Embeddings:
        reps = [
            self.gcn[m](getattr(self, f"features_{m}"), self.adjacency, self.id_embedding)
            for m in self.modalities
        ]
        users, items = (torch.stack(reps).sum(dim=0) / len(reps)).split([self.n_users, self.n_items])
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        total = bpr_loss(emb.users[users], emb.items[pos_items], emb.items[neg_items])
        batch_items = torch.cat([pos_items, neg_items]) + self.n_users
        reg = self.id_embedding[users].pow(2).mean() + self.id_embedding[batch_items].pow(2).mean()
        if "image" in self.gcn:  # upstream regularises the image (v_gcn) preferences only
            reg = reg + self.gcn["image"].preference.pow(2).mean()
        return total + self.config.reg_weight * reg


def build(data: InteractionData, config: MMGCNConfig) -> MMGCN:
    features = select_features(data, config.modalities)
    return MMGCN(
        data.n_users,
        data.n_items,
        graph.to_torch(bipartite_mean_adjacency(data.train_matrix)),
        feature_tensors(features),
        config,
    )


MMREC_DEFAULTS = {
    "embedding_dim": 64, "n_layers": 3, "latent_dim": 256, "concat": True,
    "trainable_embeddings": False, "reg_weight": 1e-5,
}
#: Searched by MMRec alongside reg_weight, but a training setting, not a model hyperparameter.
TRAIN_SEARCH_GRID = {"learning_rate": [0.0001, 0.0005, 0.001, 0.005, 0.01]}

SPEC = ModelSpec(
    name="mmgcn",
    label="MMGCN",
    config_class=MMGCNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"reg_weight": [0.0, 0.00001, 0.0001, 0.001, 0.01, 0.1]},
)
