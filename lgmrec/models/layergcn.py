"""LayerGCN (Zhou et al., ICDE 2023): layer-refined graph convolution with degree-sensitive pruning.

Follows MMRec ``src/models/layergcn.py`` with ``src/configs/model/LayerGCN.yaml`` (enoche/MMRec):

- Xavier-uniform user and item tables (``embedding_size 64``);
- propagation over the normalised user-item graph ``Ahat = D^-1/2 A D^-1/2`` (D + 1e-7); after
  every layer each node's embedding is rescaled by its cosine similarity with its own ego
  (layer-0) embedding, and the rescaled embedding is what the next layer propagates:
  ``E_l = cos(Ahat E_(l-1), E_0) * Ahat E_(l-1)``; the final embedding is ``E_1 + ... + E_L``
  (the ego layer is not included); dot-product scores;
- edge pruning in training (MMRec's ``pre_epoch_processing``): every epoch keeps
  ``int(E * (1 - dropout))`` of the ``E`` training edges and renormalises them
  (``1 / sqrt(d_u d_i)`` over the kept edges, + 1e-7). Epochs alternate between drawing the kept
  edges without replacement with probability proportional to ``1 / sqrt(d_u d_i)`` of the full
  graph (odd epochs, starting with the first, as upstream's first call) and drawing them
  uniformly (even epochs); evaluation uses the full graph; ``dropout = 0`` trains on the full
  graph;
- loss: BPR *summed* over the batch (not averaged) plus ``reg_weight`` times MMRec's ``L2Loss``
  of the batch's ego (layer-0) rows: half the sum of their squares (not divided by the batch
  size). LayerGCN is the one model here whose upstream uses ``L2Loss`` rather than ``EmbLoss``.

Deviations: none as options. Upstream draws the uniform epochs' edges with Python's ``random``;
here every draw uses torch's RNG (the same distribution; a seed fixes everything).

Implementation (same arithmetic as upstream, faster): the cosine rescaling is one autograd
function with a hand-written backward (the ego rows are normalised once per forward, not once per
layer); the graphs are symmetric, so a product's backward reuses the matrix itself (no transpose
is built for each epoch's pruned graph); and the pruned graph's CSR matrix is assembled by masking
a precomputed layout of the full graph instead of sorting a COO tensor every epoch.

Grids: MMRec searches ``n_layers [4]`` x ``dropout [0.0, 0.1, 0.2]`` x
``reg_weight [1e-2, 1e-3, 1e-4, 1e-5]``; the reduced grid (the embedded default) tunes
``reg_weight`` over ``[1e-2, 1e-4, 1e-5]`` (the list's ends and the default) with ``dropout`` at
0.1 and ``n_layers`` at 4. Neither MMRec nor the LGMRec paper publishes the chosen values; the
defaults (``dropout 0.1``, ``reg_weight 1e-4``) are our pick inside the grid. The yaml fixes no
training setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import Embeddings, Recommender, xavier_embedding

COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default, which upstream uses


@dataclass
class LayerGCNConfig:
    embedding_dim: int = 64
    n_layers: int = 4
    reg_weight: float = 1e-4  # inside MMRec's grid; tuned by the ``tuning`` experiment
    dropout: float = 0.1  # share of training edges pruned every epoch

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_layers >= 1": self.n_layers >= 1,
            "reg_weight >= 0": self.reg_weight >= 0,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
        }
        require("LayerGCN", checks)


class _CosineRescale(torch.autograd.Function):
    """``cos(P, E) * P`` row-wise, given ``E_unit = E / max(|E|, eps)``: the forward of
    ``F.cosine_similarity(P, E)[:, None] * P`` with one fused backward."""

    @staticmethod
    def forward(ctx, propagated: torch.Tensor, ego_unit: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(propagated, dim=1).clamp_min_(COSINE_EPS)
        weight = torch.linalg.vecdot(propagated, ego_unit).div_(norm)
        ctx.save_for_backward(propagated, ego_unit, weight, norm)
        return propagated * weight.unsqueeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        propagated, ego_unit, weight, norm = ctx.saved_tensors
        grad_weight = torch.linalg.vecdot(grad, propagated).div_(norm)  # dL/dw / |P|
        # d w / d P = (E_unit - w P / |P|) / |P|;  d w / d E_unit = P / |P|
        grad_propagated = grad * weight.unsqueeze(1)
        grad_propagated.addcmul_(ego_unit, grad_weight.unsqueeze(1))
        grad_propagated.addcmul_(propagated, (grad_weight * weight / norm).neg_().unsqueeze(1))
        grad_ego = propagated * grad_weight.unsqueeze(1) if ctx.needs_input_grad[1] else None
        return grad_propagated, grad_ego


def layer_refined_embeddings(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``sum_l E_l`` with ``E_l = cos(A E_(l-1), E_0) * A E_(l-1)`` for a symmetric sparse ``A``
    (a pure function)."""
    ego_unit = F.normalize(ego, dim=1, eps=COSINE_EPS)
    current, total = ego, None
    for _ in range(n_layers):
        current = _CosineRescale.apply(graph.symmetric_spmm(adjacency, current), ego_unit)
        total = current if total is None else total + current
    return total


class LayerGCN(Recommender):
    pure_eval_forward = True  # see Recommender

    def __init__(
        self,
        n_users: int,
        n_items: int,
        norm_adjacency: torch.Tensor,
        train_edges: torch.Tensor,
        config: LayerGCNConfig,
    ):
        """``norm_adjacency``: Ahat of the training graph (users then items); ``train_edges``:
        ``(2, E)`` int64 (user, item) training pairs without duplicates."""
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.register_buffer("norm_adjacency", norm_adjacency, persistent=False)
        self.register_buffer("train_edges", train_edges, persistent=False)
        self.register_buffer(
            "edge_weights", graph.edge_normalization(train_edges, n_users, n_items), persistent=False
        )
        self.layout = graph.SymmetricLayout(train_edges, n_users, n_items)
        self.pruned_adjacency: torch.Tensor | None = None
        self.user_embedding = xavier_embedding(n_users, config.embedding_dim)
        self.item_embedding = xavier_embedding(n_items, config.embedding_dim)

    def sample_pruned_adjacency(self, degree_sensitive: bool = True) -> torch.Tensor:
        """A pruned, renormalised adjacency (torch's RNG): degree-sensitive or uniform draw."""
        if self.config.dropout <= 0:
            return self.norm_adjacency
        n_edges = self.edge_weights.numel()
        n_keep = int(n_edges * (1.0 - self.config.dropout))
        if n_keep < 1:
            raise ConfigError(f"LayerGCN dropout {self.config.dropout} keeps no training edge")
        device = self.edge_weights.device
        if degree_sensitive:
            keep = torch.multinomial(self.edge_weights, n_keep, replacement=False)
        else:
            keep = torch.randperm(n_edges, device=device)[:n_keep]
        if self.layout.rows.device != device:
            self.layout.to(device)
        kept = torch.zeros(n_edges, dtype=torch.bool, device=device)
        kept[keep] = True
        values = torch.zeros(n_edges, device=device)
        values[kept] = graph.edge_normalization(self.train_edges[:, kept], self.n_users, self.n_items)
        return self.layout.matrix(kept, values)

    def on_epoch_start(self, epoch: int) -> None:
        # upstream toggles on every call, starting with the degree-sensitive draw
        self.pruned_adjacency = self.sample_pruned_adjacency(degree_sensitive=epoch % 2 == 1)

    def forward(self) -> Embeddings:
        if self.training:
            stale = self.pruned_adjacency is None or self.pruned_adjacency.device != self.edge_weights.device
            if stale:  # loss() before any on_epoch_start(), or the model was moved since
                self.pruned_adjacency = self.sample_pruned_adjacency()
            adjacency = self.pruned_adjacency
        else:
            adjacency = self.norm_adjacency
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = layer_refined_embeddings(adjacency, ego, self.config.n_layers).split(
            [self.n_users, self.n_items]
        )
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        emb = self.forward()
        # index_select: the same rows as ``x[ids]``, with a cheaper forward and backward on CPU
        u = emb.users.index_select(0, users)
        p, n = emb.items.index_select(0, pos_items), emb.items.index_select(0, neg_items)
        # upstream sums (not averages) the BPR terms over the batch
        bpr = -F.logsigmoid(torch.linalg.vecdot(u, p - n)).sum()
        # MMRec's L2Loss: half the sum of squares of the batch's ego embeddings, not averaged
        ego = (
            self.user_embedding.index_select(0, users),
            self.item_embedding.index_select(0, pos_items),
            self.item_embedding.index_select(0, neg_items),
        )
        l2 = 0.5 * sum(e.pow(2).sum() for e in ego)
        return bpr + self.config.reg_weight * l2


def build(data: InteractionData, config: LayerGCNConfig) -> LayerGCN:
    return LayerGCN(
        data.n_users,
        data.n_items,
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(data.train_matrix)),
        train_edges=graph.edge_index(data.train_matrix),
        config=config,
    )


SPEC = ModelSpec(
    name="layergcn",
    label="LayerGCN",
    config_class=LayerGCNConfig,
    build=build,
    multimodal=False,
    tuning_grid={"n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]},
    reduced_grid={"reg_weight": [1e-2, 1e-4, 1e-5]},
    reference="MMRec src/models/layergcn.py + src/configs/model/LayerGCN.yaml",
)
