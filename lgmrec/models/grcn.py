"""GRCN (Wei et al., ACM MM 2020): a user-item graph refined by per-modality attention.

Behaviour of MMRec's ``src/models/grcn.py`` with its ``GRCN.yaml`` defaults (aggregation 'add',
weight mode 'confid', fusion 'concat', normalisation on, no activation, no edge dropout):

- per modality m: item content ``f_i = normalize(leaky_relu(W_m x_i + b_m))`` (``latent_dim``) and
  a trainable user preference ``p_u`` (L2-normalised). One attention layer over the training
  edges in both directions: the score of edge (u, i) is ``<p_u, f_i>``, soft-maxed over the
  item's users for the message u -> i and over the user's items for i -> u. The modality's
  representation is ``[p_u + sum_i a_(i->u) f_i ; f_i + sum_u a_(u->i) p_u]``;
- graph refinement: the weight of each directed edge is ``relu(max_m a^m_e * c^m_source)`` with
  ``c`` a trainable per-node, per-modality confidence (the edge's source node);
- ID part: normalised ID embeddings ``x`` propagated twice over the refined, weighted graph
  (sum aggregation): ``x + A_w x + A_w^2 x``;
- final representation: the ID part concatenated with every modality's representation
  (``embedding_dim + n_modalities * latent_dim`` wide), scored by dot product;
- loss: BPR plus ``reg_weight`` times the mean squared ID embeddings of the batch's users and of
  its items, the mean squared preferences of the batch's users for every modality, and the
  mean squared *whole* image preference table (upstream adds that last term for the image
  modality only).

The ``n_routing`` (yaml ``n_layers``) routing iterations are meant to refine ``p_u`` from the
user's items, but upstream feeds them the one-directional user -> item edge list, so every
message lands on an item and the users' preferences are never updated (the routing is a no-op;
the authors' own code does the same). Faithful default: no routing effect.
``route_to_users=True`` runs the routing as the paper describes it: ``n_routing`` times,
``p_u <- normalize(p_u + sum_i softmax_i(<p_u, f_i>) f_i)``.

Modalities: any non-empty subset (upstream breaks with text alone through a variable typo).

Deviations: messages are gathered per edge and summed with ``index_add`` (as PyG's message
passing does); sparse-matrix products with gradients through the values are many times slower
on CPU. Upstream scores the validation and test users with the representation cached in the
last *training* batch (one optimiser step old); here ``forward()`` recomputes it from the
current parameters. ``log(sigmoid)`` is computed as ``logsigmoid`` (upstream adds 1e-10 inside
the log only in its generic BPR loss; GRCN's own loss has no epsilon).

Hyperparameters: ``embedding_size 64, latent_embedding 64, n_layers 3`` from the yaml;
``reg_weight`` is searched in ``{0.1, 0.01, 1e-3, 1e-4, 1e-5}`` (and ``learning_rate`` in
:data:`TRAIN_SEARCH_GRID`); neither MMRec nor the LGMRec paper publishes the chosen values, so
the default ``reg_weight 1e-5`` is the GRCN authors' own default (``--weight_decay`` in their
``main.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

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
class GRCNConfig:
    embedding_dim: int = 64  # ID embeddings (upstream embedding_size)
    latent_dim: int = 64  # per-modality content and preference width (upstream latent_embedding)
    n_routing: int = 3  # upstream n_layers: routing iterations (no effect unless route_to_users)
    reg_weight: float = 1e-5
    route_to_users: bool = False  # True: the routing updates user preferences, as in the paper
    modalities: tuple[str, ...] = ()  # a subset of the dataset's modalities (empty = all)

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "latent_dim >= 1": self.latent_dim >= 1,
            "n_routing >= 0": self.n_routing >= 0,
            "reg_weight >= 0": self.reg_weight >= 0,
        }
        require("GRCN", checks)


def segment_softmax(logits: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of ``logits`` within each group of edges sharing ``groups[e]``."""
    shift = torch.full((n_groups,), -torch.inf, dtype=logits.dtype, device=logits.device)
    shift = shift.scatter_reduce(0, groups, logits.detach(), reduce="amax", include_self=True)
    exp = (logits - shift[groups]).exp()
    total = torch.zeros(n_groups, dtype=logits.dtype, device=logits.device).index_add(0, groups, exp)
    return exp / total[groups]


def weighted_sum(
    targets: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, x: torch.Tensor, n_targets: int
) -> torch.Tensor:
    """``out[t] = sum over edges e with targets[e] = t of weights[e] * x[sources[e]]``."""
    out = torch.zeros(n_targets, x.shape[1], dtype=x.dtype, device=x.device)
    return out.index_add(0, targets, x[sources] * weights.unsqueeze(1))


class ModalityAttention(nn.Module):
    """One modality's content encoder, user preferences and the attention over the edges."""

    def __init__(self, n_users: int, feature_dim: int, latent_dim: int):
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, latent_dim)))
        self.encoder = nn.Linear(feature_dim, latent_dim)
        nn.init.xavier_normal_(self.encoder.weight)  # bias keeps torch's default, as upstream

    def forward(self, features, users, items, n_routing: int, route_to_users: bool):
        """Returns (user part, item part, a(u->i), a(i->u)); edges are (users[e], items[e])."""
        n_users, n_items = self.preference.shape[0], features.shape[0]
        content = F.normalize(F.leaky_relu(self.encoder(features)))
        preference = F.normalize(self.preference)
        if route_to_users:
            for _ in range(n_routing):
                scores = (preference[users] * content[items]).sum(dim=1)
                to_user = segment_softmax(scores, users, n_users)
                preference = F.normalize(preference + weighted_sum(users, items, to_user, content, n_users))
        scores = (preference[users] * content[items]).sum(dim=1)
        to_item = segment_softmax(scores, items, n_items)
        to_user = segment_softmax(scores, users, n_users)
        user_part = preference + weighted_sum(users, items, to_user, content, n_users)
        item_part = content + weighted_sum(items, users, to_item, preference, n_items)
        return user_part, item_part, to_item, to_user


class GRCN(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_edges: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: GRCNConfig,
    ):
        """``train_edges``: ``(2, E)`` int64 (user, item) training pairs without duplicates;
        ``features``: frozen ``(n_items, dim)`` tables by modality."""
        super().__init__()
        if not features:
            raise ConfigError("GRCN needs at least one modality feature table")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.register_buffer("edge_users", train_edges[0].clone(), persistent=False)
        self.register_buffer("edge_items", train_edges[1].clone(), persistent=False)
        for m, table in features.items():
            self.register_buffer(f"features_{m}", table.float(), persistent=False)
        n_nodes = n_users + n_items
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, config.embedding_dim)))
        self.attention = nn.ModuleDict(
            {m: ModalityAttention(n_users, t.shape[1], config.latent_dim) for m, t in features.items()}
        )
        self.confidence = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, len(features))))

    def representation(self) -> torch.Tensor:
        """``[ID part, modality parts...]`` for users then items: ``(n_users + n_items, width)``."""
        users, items = self.edge_users, self.edge_items
        parts, to_item_weights, to_user_weights = [], [], []
        for m in self.modalities:
            user_part, item_part, to_item, to_user = self.attention[m](
                getattr(self, f"features_{m}"), users, items,
                self.config.n_routing, self.config.route_to_users,
            )
            parts.append(torch.cat([user_part, item_part]))
            to_item_weights.append(to_item)
            to_user_weights.append(to_user)
        # each directed edge is weighted by its best modality's attention times the confidence
        # of its source node; negative weights are pruned
        item_nodes = items + self.n_users
        to_item = (torch.stack(to_item_weights, 1) * self.confidence[users]).max(dim=1).values.relu()
        to_user = (torch.stack(to_user_weights, 1) * self.confidence[item_nodes]).max(dim=1).values.relu()

        n_nodes = self.n_users + self.n_items
        targets = torch.cat([item_nodes, users])
        sources = torch.cat([users, item_nodes])
        weights = torch.cat([to_item, to_user])
        x = F.normalize(self.id_embedding)
        first = weighted_sum(targets, sources, weights, x, n_nodes)
        second = weighted_sum(targets, sources, weights, first, n_nodes)
        return torch.cat([x + first + second, *parts], dim=1)

    def forward(self) -> Embeddings:
        users, items = self.representation().split([self.n_users, self.n_items])
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        total = bpr_loss(emb.users[users], emb.items[pos_items], emb.items[neg_items])
        batch_items = torch.cat([pos_items, neg_items]) + self.n_users
        reg = self.id_embedding[users].pow(2).mean() + self.id_embedding[batch_items].pow(2).mean()
        for m in self.modalities:
            reg = reg + self.attention[m].preference[users].pow(2).mean()
        if "image" in self.attention:  # upstream's extra whole-table term (its v_gcn only)
            reg = reg + self.attention["image"].preference.pow(2).mean()
        return total + self.config.reg_weight * reg


def build(data: InteractionData, config: GRCNConfig) -> GRCN:
    features = select_features(data, config.modalities)
    return GRCN(
        data.n_users,
        data.n_items,
        graph.edge_index(data.train_matrix),
        feature_tensors(features),
        config,
    )


MMREC_DEFAULTS = {"embedding_dim": 64, "latent_dim": 64, "n_routing": 3, "reg_weight": 1e-5}
#: Searched by MMRec alongside reg_weight, but a training setting, not a model hyperparameter.
TRAIN_SEARCH_GRID = {"learning_rate": [1.0, 0.1, 0.01, 0.001, 0.0001]}

SPEC = ModelSpec(
    name="grcn",
    label="GRCN",
    config_class=GRCNConfig,
    build=build,
    multimodal=True,
    presets={"mmrec-default": {"*": MMREC_DEFAULTS}},
    default_preset="mmrec-default",
    tuning_grid={"reg_weight": [0.1, 0.01, 0.001, 0.0001, 0.00001]},
)
