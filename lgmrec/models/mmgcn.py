"""MMGCN (Wei et al., ACM MM 2019): one graph convolution network per modality, averaged.

Follows MMRec ``src/models/mmgcn.py`` with ``src/configs/model/MMGCN.yaml`` (enoche/MMRec):

- per modality m, node inputs ``X = normalize([P_m; c_i])`` (row-wise L2): user preferences
  ``P_m`` and item content ``c_i``, which is ``MLP(x_i)`` (``latent_dim`` 256) for the image and
  the raw features for the other modalities (upstream: text enters raw);
- ``n_layers`` layers, each: ``h = leaky_relu(mean_(j in N(v)) x_j W)`` (mean aggregation over the
  user-item graph), ``x_hat = leaky_relu(L x) + e_v`` with ``e_v`` a node ID embedding shared by all
  modalities, and ``x <- leaky_relu(G [h ; x_hat])`` (``concat``) or ``leaky_relu(G h + x_hat)``;
- the final representation is the mean over modalities of the last layer's ``x``; dot-product
  scores;
- loss: BPR (mean over the batch) plus ``reg_weight`` times the mean squared ID embeddings of the
  batch's users and of its items plus the mean squared *whole* image preference table (upstream's
  own regulariser, not ``EmbLoss``).

Upstream behaviours kept by default, each with a named switch (the deviations):

- ``trainable_embeddings=False``: upstream creates the ID embeddings and the user preferences as
  plain tensors, not ``nn.Parameter`` s, so the optimiser never updates them (the authors' code
  does the same): they stay at their random initialisation and the regulariser on them has no
  effect on training (so neither has ``reg_weight``). ``True`` makes them trainable parameters;
- ``concat=True``: upstream passes the *string* ``'False'`` as its concatenation flag, which is
  truthy, so the layers concatenate ``[h ; x_hat]``; ``False`` gives the additive variant;
- ``n_layers=3``: the yaml sets ``n_layers: 2`` but upstream's GCN always runs three layers
  (the value is stored and never read); ``n_layers=2`` gives what the yaml asks for;
- ``eval_last_batch_representation=True``: upstream scores validation and test users with the
  representation its ``forward`` cached in the last training batch (computed before that batch's
  optimiser step, so one step old); ``False`` recomputes it from the current parameters. (Before
  any training batch upstream would score with a random tensor; here the representation is then
  computed.)

Not an option: upstream's BPR term is ``-mean(log(sigmoid(x)))``; we use ``-logsigmoid(x)``,
equal except where upstream's ``log`` underflows (score gaps below about -88, a loss of +inf).

Modalities: any non-empty subset; ``projected_modalities`` names those that go through the
``latent_dim`` MLP (default: image only, as upstream). Initialisation follows upstream:
Xavier-normal ID embeddings, preferences, convolution weights, the ``L`` weights and the first
layer's ``G`` weight; torch's default for the other ``G`` layers, the MLP and all biases.

Implementation (same arithmetic as upstream, reordered or cached): the aggregation
``mean_(j in N(v)) x_j W`` is computed as ``(D^-1 A X) W``; ``G [h ; x_hat]`` as
``G_h h + G_x x_hat`` (no concatenated copy); the normalised frozen preferences, and for a raw
modality with frozen preferences the whole first-layer input and its aggregation, are computed
once rather than every batch.

Grids: MMRec searches ``reg_weight [0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1]`` x
``learning_rate [1e-4, 5e-4, 1e-3, 5e-3, 1e-2]``; the reduced grid (the embedded default) tunes
``learning_rate`` over ``[1e-3, 5e-3, 1e-2]`` (the larger rates: smaller ones need more epochs than
the budget has) and keeps ``reg_weight`` at its default: with the default frozen embeddings
``reg_weight`` does not change training, so more of its values would train identical models.
Neither MMRec nor the LGMRec paper publishes the chosen values; the default ``reg_weight 1e-5``
is the MMGCN authors' own default (``--weight_decay`` in their ``main.py``) and the learning rate
is the protocol's 1e-3. The yaml fixes no training setting.
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
from .base import Embeddings, Recommender, bpr_loss, rows_of
from .knn import feature_tensors, select_features


@dataclass
class MMGCNConfig:
    embedding_dim: int = 64
    n_layers: int = 3  # what upstream runs (its yaml's n_layers: 2 is ignored)
    latent_dim: int = 256  # MLP width of the projected modalities
    projected_modalities: tuple[str, ...] = ("image",)
    concat: bool = True
    trainable_embeddings: bool = False  # upstream never trains ID embeddings and preferences
    eval_last_batch_representation: bool = True  # upstream scores with the last batch's forward
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


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """``F.leaky_relu`` in place on a fresh intermediate (its backward needs only the result)."""
    return F.leaky_relu(x, inplace=True)


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
        self.widths = [in_dim] + [d] * (config.n_layers - 1)
        self.conv = nn.ParameterList([nn.Parameter(_xavier((w, w))) for w in self.widths])
        self.linear = nn.ModuleList([nn.Linear(w, d) for w in self.widths])
        self.gate = nn.ModuleList([nn.Linear(w + d if self.concat else w, d) for w in self.widths])
        for layer in self.linear:
            nn.init.xavier_normal_(layer.weight)
        nn.init.xavier_normal_(self.gate[0].weight)  # upstream re-initialises only the first one
        self._constants: dict[str, torch.Tensor] = {}
        self._constants_key: tuple | None = None

    def _constant(self, name: str, key: tuple, compute) -> torch.Tensor:
        """A value of frozen tensors only, computed once per ``key`` (devices and versions)."""
        if self._constants_key != key:
            self._constants, self._constants_key = {}, key
        if name not in self._constants:
            with torch.no_grad():
                self._constants[name] = compute()
        return self._constants[name]

    def first_layer_input(
        self, features: torch.Tensor, adjacency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``X = normalize([P; c])`` and, when X is constant, its aggregation ``D^-1 A X``."""
        if self.preference.requires_grad:
            content = self.project(features) if self.project is not None else features
            return F.normalize(torch.cat([self.preference, content])), None
        key = (self.preference.device, self.preference._version, features.data_ptr(),
               features._version, id(adjacency))
        if self.project is None:  # frozen preferences and raw features: the whole input is constant
            x = self._constant("x", key, lambda: F.normalize(torch.cat([self.preference, features])))
            return x, self._constant("ax", key, lambda: torch.sparse.mm(adjacency, x))
        # rows are normalised one by one, so the frozen preferences' rows are computed once
        users = self._constant("users", key, lambda: F.normalize(self.preference))
        return torch.cat([users, F.normalize(self.project(features))]), None

    def preference_penalty(self) -> torch.Tensor:
        """``mean(P^2)``, upstream's regulariser on the (image) preferences; a constant when frozen."""
        if self.preference.requires_grad:
            return self.preference.pow(2).mean()
        key = (self.preference.device, self.preference._version)
        if getattr(self, "_penalty_key", None) != key:
            self._penalty, self._penalty_key = self.preference.pow(2).mean(), key
        return self._penalty

    def forward(
        self, features: torch.Tensor, adjacency: torch.Tensor, id_embedding: torch.Tensor
    ) -> torch.Tensor:
        x, aggregated = self.first_layer_input(features, adjacency)
        for conv, linear, gate, width in zip(self.conv, self.linear, self.gate, self.widths):
            if aggregated is None:
                aggregated = graph.spmm(adjacency, x)
            h = _leaky_relu(aggregated @ conv)
            x_hat = _leaky_relu(linear(x)) + id_embedding
            if self.concat:  # G [h ; x_hat] = G_h h + G_x x_hat, without the concatenated copy
                gate_h, gate_x = gate.weight.split([width, gate.weight.shape[1] - width], dim=1)
                x = _leaky_relu(torch.addmm(torch.addmm(gate.bias, h, gate_h.t()), x_hat, gate_x.t()))
            else:
                x = _leaky_relu(gate(h) + x_hat)
            aggregated = None
        return x


class MMGCN(Recommender):
    pure_eval_forward = True  # see Recommender

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
        #: the representation of the last training forward (detached), as upstream's ``self.result``
        self.last_batch_representation: Embeddings | None = None

    def representation(self) -> Embeddings:
        """The mean over modalities of each modality GCN's output, from the current parameters."""
        reps = [
            self.gcn[m](getattr(self, f"features_{m}"), self.adjacency, self.id_embedding)
            for m in self.modalities
        ]
        total = reps[0]
        for rep in reps[1:]:
            total = total + rep
        users, items = (total / len(reps)).split([self.n_users, self.n_items])
        return Embeddings(users, items)

    def forward(self) -> Embeddings:
        cached = self.last_batch_representation
        if not self.training and self.config.eval_last_batch_representation and cached is not None \
                and cached.users.device == self.id_embedding.device:
            return cached
        emb = self.representation()
        if self.training:
            self.last_batch_representation = Embeddings(emb.users.detach(), emb.items.detach())
        return emb

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        u = rows_of(emb.users, users)
        total = bpr_loss(u, rows_of(emb.items, pos_items), rows_of(emb.items, neg_items))
        batch_items = torch.cat([pos_items, neg_items]) + self.n_users
        reg = rows_of(self.id_embedding, users).pow(2).mean() + rows_of(self.id_embedding, batch_items).pow(2).mean()
        if "image" in self.gcn:  # upstream regularises the image (v_gcn) preferences only
            reg = reg + self.gcn["image"].preference_penalty()
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


SPEC = ModelSpec(
    name="mmgcn",
    label="MMGCN",
    config_class=MMGCNConfig,
    build=build,
    multimodal=True,
    tuning_grid={
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
        "learning_rate": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2],
    },
    reduced_grid={"learning_rate": [1e-3, 5e-3, 1e-2]},
    reference="MMRec src/models/mmgcn.py + src/configs/model/MMGCN.yaml",
    deviations={
        "trainable_embeddings": "MMRec keeps the ID embeddings and user preferences as plain tensors the "
                                "optimiser never updates (False, the default); True trains them",
        "concat": "MMRec's flag is the truthy string 'False', so its layers concatenate [h; x_hat] "
                  "(True, the default); False gives the additive layer G h + x_hat",
        "n_layers": "MMRec's GCN always runs 3 layers (the default) whatever its yaml's n_layers: 2; "
                    "2 gives what the yaml asks for",
        "eval_last_batch_representation": "MMRec scores validation/test users with the representation "
                                          "cached by the last training batch's forward, one optimiser "
                                          "step old (True, the default); False recomputes it",
    },
)
