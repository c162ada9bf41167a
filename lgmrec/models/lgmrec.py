"""LGMRec (Guo et al., AAAI 2024): local and global graph learning for multimodal recommendation.

Implements ``shared/spec/lgmrec-model.md``, i.e. the behaviour of the authors' public code, for any
non-empty set of modalities. Every deviation from that code is a named option:

- ``hyperedge_bug`` (default False = fixed): True reproduces the code that produced the published
  logs, where the textual softmaxed user-hyperedge matrix overwrote the visual one, so the first
  modality's branch used the second's user assignment and the second's branch used raw logits;
- ``eval_mode``: "official" keeps Gumbel noise at evaluation and redoes the forward pass for every
  batch of evaluated users (as the public code does); "deterministic" uses a plain softmax at
  evaluation and one forward pass per evaluation;
- ablation switches ``use_cge``, ``use_mge``, ``use_ghe``, ``use_hcl``, ``cf_model="mf"`` and
  ``modalities`` (a subset of the dataset's, e.g. ``("image",)``). With one modality HCL is skipped.

Speed. A training step is dominated by the projection of the 4096-d image table and by HCL's
(batch x all) similarity matrices. The code computes the same values and gradients (to float
rounding) with less work, and draws the same random numbers in the same order (Gumbel noise per
modality, items then users; then the four dropout masks; on CPU the very numbers of torch's serial
samplers, see :func:`gumbel_noise`), so runs stay reproducible per seed:

- one product ``X [W | V]`` per modality gives the item features and the hyperedge logits, so the
  frozen table is read once forward and once backward (upstream: two products each way; the
  backward of the 4-column ``X V`` alone was slower than the 68-column fused one), and one sparse
  product ``R X [W | V]`` gives the users' side of both (feature sums times 1 / (deg + 1e-7), as
  upstream computes the mean);
- HCL (:func:`.infonce.summed_info_nce`) sums over a batch's DISTINCT ids weighted by their counts
  (sum over rows == count-weighted sum over ids); its candidates ``H Y`` (assignments times
  hyperedge embeddings, :class:`Hypergraph`) have rank hyper_num, so with hyper_num < d its logits
  come from hyper_num-wide operands (a full-scale Baby-like users term: 41 against 130 ms); and it
  takes both gradients block by block while the exponentials are in cache, never storing them;
- the loss fuses only the batch's distinct rows, once each, and gathers the batch from them (fusion
  is row-wise), computes the last MGE layer for those rows only (:class:`.graph.SparseRows`), and
  LightGCN's layer mean is a sum;
- row normalisation has a fused backward (:func:`.base.normalize_rows`) and the hyperedge softmax
  runs over the transpose (:func:`softmax_rows`).

In a full-scale Baby-like step (2 threads, ~185 ms) the dense products take ~115 ms, most of it the
image projection; the rest is arithmetic the math needs that is not a dense product: ~25 ms of
sparse graph products (LightGCN, MGE, the users' feature sums), ~14 ms for one ``exp2`` per HCL
logit and its row sums, ~2 ms of random draws, and element-wise work, gradient bookkeeping on
(nodes x d) matrices and per-op dispatch.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from .. import graph
from ..config import require
from ..data import InteractionData
from ..errors import ConfigError
from . import ModelSpec
from .base import (Embeddings, Recommender, bpr_loss, distinct_ids, frobenius_norm, normalize_rows, rows_of,
                   xavier_embedding)
from .infonce import summed_info_nce
from .lightgcn import lightgcn_embeddings
from .presets import lgmrec_presets


@dataclass
class LGMRecConfig:
    """Hyperparameters; names follow the authors' config keys."""

    embedding_dim: int = 64  # d (embedding_size = feat_embed_dim)
    n_ui_layers: int = 2  # L, collaborative layers
    n_mm_layers: int = 2  # K, modality layers
    n_hyper_layer: int = 1  # H, hypergraph layers
    hyper_num: int = 4  # A, hyperedges per modality
    keep_rate: float = 0.5  # rho, hyperedge dropout keeps this share
    alpha: float = 0.3  # weight of the global (hypergraph) embedding
    cl_weight: float = 1e-4  # lambda_cl
    reg_weight: float = 1e-6  # lambda_reg
    tau: float = 0.2  # Gumbel-softmax and contrastive temperature (hard-coded upstream)
    cf_model: Literal["lightgcn", "mf"] = "lightgcn"
    hyperedge_bug: bool = False
    eval_mode: Literal["official", "deterministic"] = "official"
    modalities: tuple[str, ...] = ()  # empty: every modality of the dataset
    use_cge: bool = True
    use_mge: bool = True
    use_ghe: bool = True
    use_hcl: bool = True

    def __post_init__(self) -> None:
        checks = {
            "embedding_dim >= 1": self.embedding_dim >= 1,
            "n_ui_layers >= 0": self.n_ui_layers >= 0,
            "n_mm_layers >= 0": self.n_mm_layers >= 0,
            "n_hyper_layer >= 1": self.n_hyper_layer >= 1,
            "hyper_num >= 1": self.hyper_num >= 1,
            "0 < keep_rate <= 1": 0 < self.keep_rate <= 1,
            "alpha >= 0": self.alpha >= 0,
            "cl_weight >= 0": self.cl_weight >= 0,
            "reg_weight >= 0": self.reg_weight >= 0,
            "tau > 0": self.tau > 0,
            "use_cge or use_mge or use_ghe": self.use_cge or self.use_mge or self.use_ghe,
        }
        require("LGMRec", checks)


class Hypergraph(NamedTuple):
    """GHE's last layer for one modality: ``users == user_assignment @ hyperedges`` and ``items ==
    item_assignment @ hyperedges`` (assignments after dropout). HCL uses the factors: its logits
    have rank hyper_num."""

    users: torch.Tensor
    items: torch.Tensor
    user_assignment: torch.Tensor
    item_assignment: torch.Tensor
    hyperedges: torch.Tensor


def hypergraph_propagate(
    item_hyper: torch.Tensor, user_hyper: torch.Tensor, item_emb: torch.Tensor, n_layers: int
) -> Hypergraph:
    """H rounds of item -> hyperedge -> (item, user) message passing; the last layer is returned."""
    items, users, hyperedges = item_emb, None, None
    for _ in range(n_layers):
        hyperedges = item_hyper.T @ items
        items = item_hyper @ hyperedges
        users = user_hyper @ hyperedges
    return Hypergraph(users, items, user_hyper, item_hyper, hyperedges)


def _total(tensors) -> torch.Tensor:
    """The sum of tensors; Python's ``sum`` would start with ``0 + first``, a copy of a whole matrix."""
    return functools.reduce(operator.add, tensors)


def _cpu_uniforms(likes: list[torch.Tensor]) -> torch.Tensor:
    """float64 uniforms for ``likes`` (2-D, equal widths) stacked by rows, from ONE draw: torch's CPU
    ``uniform_`` draws one double per value serially in memory order, so its rows are the values
    that a draw per tensor, in order, would give (one call and one transform instead of four of
    each: ~0.1 ms of a -mini step)."""
    return torch.empty(sum(len(t) for t in likes), likes[0].shape[1], dtype=torch.float64).uniform_()


def gumbel_noise(likes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Standard Gumbel noise ``-log(E)`` shaped like each of ``likes``, drawn in order, as
    ``F.gumbel_softmax`` draws it for each.

    On CPU ``E = -log1p(-U)`` from float64 uniforms ``U``: the very numbers that torch's serial CPU
    ``exponential_`` draws (one double per value, the same transform) but vectorised, ~3x faster
    (19,447 x 4: 0.7 against 1.9 ms), for every tensor in one draw (:func:`_cpu_uniforms`)."""
    if likes[0].device.type != "cpu":
        return [-torch.empty_like(t, memory_format=torch.contiguous_format).exponential_().log() for t in likes]
    noise = _cpu_uniforms(likes).neg_().log1p_().neg_().to(likes[0].dtype).log_().neg_()
    return list(noise.split([len(t) for t in likes]))


def dropout(tensors: list[torch.Tensor], keep_rate: float, training: bool) -> list[torch.Tensor]:
    """``F.dropout(x, p=1 - keep_rate, training)`` of each tensor in order, the same masks and
    values; on CPU a mask compares float64 uniforms with the keep rate, as torch's serial CPU
    ``bernoulli_`` does, but vectorised (19,447 x 4: ~0.6 against 1.2 ms), all from one draw."""
    p = 1.0 - keep_rate
    if not training or p == 0 or not tensors:
        return tensors
    if tensors[0].device.type != "cpu":
        return [torch.nn.functional.dropout(x, p) for x in tensors]
    kept = 1 - p  # as torch computes it from p, which may differ from keep_rate in the last bit
    masks = (_cpu_uniforms(tensors) < kept).split([len(x) for x in tensors])
    return [x * keep.to(x.dtype).div_(kept) for x, keep in zip(tensors, masks)]


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, dim=1)`` for a few columns (the hyperedges), computed over the transpose:
    torch's row-wise kernel is slow on narrow rows (19,447 x 4, forward and backward: ~1.8 ms
    against ~1.0), to float rounding. Returned contiguous, as the row-wise one: dropout draws its
    mask in memory order, so a transposed layout would change which entry gets which draw."""
    return torch.softmax(logits.T, dim=0).T.contiguous()


class LGMRec(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        interactions: torch.Tensor,
        norm_adjacency: torch.Tensor,
        features: dict[str, torch.Tensor],
        config: LGMRecConfig,
    ):
        """``interactions``: sparse R (n_users x n_items); ``norm_adjacency``: Ahat over users then
        items; ``features``: frozen ``(n_items, dim_m)`` tables in anchor-first order."""
        super().__init__()
        if not features:
            raise ConfigError("LGMRec needs at least one modality")
        if config.hyperedge_bug and len(features) < 2:
            raise ConfigError("hyperedge_bug reproduces a two-modality defect: give >= 2 modalities")
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.modalities = list(features)
        self.forward_per_eval_batch = config.eval_mode == "official"
        self.pure_eval_forward = config.eval_mode == "deterministic"  # no Gumbel noise at evaluation
        for name, matrix in (("interactions", interactions), ("norm_adjacency", norm_adjacency)):
            self.register_buffer(name, matrix, persistent=False)
        ones = torch.ones(n_items, 1, dtype=interactions.dtype, device=interactions.device)
        degree = torch.sparse.mm(interactions, ones) if n_items else ones.new_zeros(n_users, 1)
        # 1 / (deg_u + 1e-7): a user's feature SUM times this is the mean of their items (upstream's num_inters)
        self.register_buffer("inverse_degree", 1.0 / (degree + graph.DEGREE_EPS), persistent=False)
        for m, table in features.items():
            self.register_buffer(f"feat_{m}", table, persistent=False)

        d = config.embedding_dim
        self.user_embedding = xavier_embedding(n_users, d)
        self.item_embedding = xavier_embedding(n_items, d)
        # Parameters of switched-off modules are not created, so counts and gradients stay exact.
        self.projection = nn.ParameterDict(
            {m: xavier_embedding(t.shape[1], d) for m, t in features.items()} if config.use_mge else {}
        )
        self.hyperedges = nn.ParameterDict(
            {m: xavier_embedding(t.shape[1], config.hyper_num) for m, t in features.items()}
            if config.use_ghe else {}
        )

    def feature(self, modality: str) -> torch.Tensor:
        return getattr(self, f"feat_{modality}")

    # --- the three embedding modules -------------------------------------------------------
    def modality_inputs(self, modality: str) -> tuple[torch.Tensor | None, ...]:
        """``(F_items, F_users, Z_items, Z_users)`` of a modality (None for a switched-off module):
        item features ``X W`` and hyperedge logits ``X V`` from ONE product ``X [W | V]`` (the frozen
        table is read once forward and once backward), and the users' sums of both from ONE
        sparse product ``R X [W | V]``: ``Z_users`` is summed before any softmax, ``F_users`` is the
        mean of the user's items (the sum times 1 / (deg + 1e-7), as upstream)."""
        weights = [table[modality] for table in (self.projection, self.hyperedges) if modality in table]
        items = self.feature(modality) @ (weights[0] if len(weights) == 1 else torch.cat(weights, dim=1))
        users = graph.spmm(self.interactions, items)
        if len(weights) == 2:
            widths = [self.config.embedding_dim, self.config.hyper_num]
            (f_items, z_items), (f_users, z_users) = (t.split(widths, dim=1) for t in (items, users))
        elif modality in self.projection:
            f_items, f_users, z_items, z_users = items, users, None, None
        else:
            f_items, f_users, z_items, z_users = None, None, items, users
        if f_users is not None:
            f_users = f_users * self.inverse_degree
        return f_items, f_users, z_items, z_users

    def collaborative(self) -> torch.Tensor:
        ego = torch.cat([self.user_embedding, self.item_embedding])
        if self.config.cf_model == "mf":
            return ego
        return lightgcn_embeddings(self.norm_adjacency, ego, self.config.n_ui_layers)

    def modality_graph(
        self, item_features: torch.Tensor, user_features: torch.Tensor, rows: graph.SparseRows | None = None
    ) -> torch.Tensor:
        """MGE's last layer (only it, as upstream), of every node or of ``rows`` only: the loss needs
        its batch's rows, whose last product then costs only their entries."""
        features = torch.cat([user_features, item_features])
        n_layers = self.config.n_mm_layers
        if rows is None:
            return graph.propagate(self.norm_adjacency, features, n_layers)[-1]
        if n_layers == 0:
            return rows_of(features, rows.rows)
        return rows.product(graph.propagate(self.norm_adjacency, features, n_layers - 1)[-1])

    def hyperedge_assignments(
        self, logits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality (item -> hyperedge, user -> hyperedge) soft assignments, pre-dropout, from
        the (item, user) logits (computed here when not given). Gumbel noise is drawn per modality,
        items then users, in modality order."""
        stochastic = self.training or self.config.eval_mode == "official"
        if logits is None:
            logits = {}
            for m in self.modalities:
                z_items = self.feature(m) @ self.hyperedges[m]
                logits[m] = (z_items, graph.spmm(self.interactions, z_items))  # users: before the softmax
        ordered = [z for m in self.modalities for z in logits[m]]  # items then users, per modality
        if stochastic:  # F.gumbel_softmax(z, tau, dim=1) of each, the same noise and values
            ordered = [z + noise for z, noise in zip(ordered, gumbel_noise(ordered))]
        soft = [softmax_rows(z / self.config.tau) for z in ordered]
        result = {m: (soft[2 * i], soft[2 * i + 1]) for i, m in enumerate(self.modalities)}
        if self.config.hyperedge_bug:
            first, second = self.modalities[:2]
            result[first] = (result[first][0], result[second][1])
            result[second] = (result[second][0], logits[second][1])
        return result

    def _parts(
        self, mge_rows: graph.SparseRows | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, Hypergraph]]:
        """Everything before the fusion: E_cge, the E_m of MGE (all rows, or ``mge_rows`` only), and
        per modality GHE's (U_m, Y_m) with their factors."""
        cfg = self.config
        inputs = {m: self.modality_inputs(m) for m in self.modalities} if cfg.use_mge or cfg.use_ghe else {}
        assignments = (
            self.hyperedge_assignments({m: (z_i, z_u) for m, (_, _, z_i, z_u) in inputs.items()})
            if cfg.use_ghe else {}
        )
        cge = self.collaborative()
        mge = [self.modality_graph(f_i, f_u, mge_rows) for f_i, f_u, _, _ in inputs.values()] if cfg.use_mge else []
        items0 = cge[self.n_users:]
        kept = dropout([h for pair in assignments.values() for h in pair], cfg.keep_rate, self.training)
        hyper = {m: hypergraph_propagate(kept[2 * i], kept[2 * i + 1], items0, cfg.n_hyper_layer)
                 for i, m in enumerate(assignments)}
        return cge, mge, hyper

    def _fuse(self, cge: torch.Tensor, mge: list[torch.Tensor], ghe: torch.Tensor | None) -> torch.Tensor:
        """``E_cge + sum_m normalize(E_m) + alpha normalize(E_ghe)`` for whichever rows are given
        (every term is row-wise, so fusing a batch's rows equals fusing all and gathering)."""
        fused = cge if self.config.use_cge else torch.zeros_like(cge)
        for e in mge:
            fused = fused + normalize_rows(e)
        if ghe is not None:
            fused = fused + self.config.alpha * normalize_rows(ghe)
        return fused

    def forward(self) -> Embeddings:
        cge, mge, hyper = self._parts()
        ghe = _total(torch.cat([h.users, h.items]) for h in hyper.values()) if hyper else None
        users, items = self._fuse(cge, mge, ghe).split([self.n_users, self.n_items])
        return Embeddings(users, items)

    def loss(self, users, pos_items, neg_items) -> torch.Tensor:
        cfg = self.config
        batch = len(users)
        rows = torch.cat([users, pos_items + self.n_users, neg_items + self.n_users])
        distinct, position, _ = distinct_ids(rows, self.n_users + self.n_items)
        cge, mge, hyper = self._parts(graph.SparseRows(self.norm_adjacency, distinct))
        ghe = None
        if hyper:  # the distinct rows' E_ghe: user rows first (``distinct`` is sorted), then item rows
            n_distinct_users = int(torch.searchsorted(distinct, self.n_users))
            d_users, d_items = distinct[:n_distinct_users], distinct[n_distinct_users:] - self.n_users
            ghe = torch.cat([_total(rows_of(h.users, d_users) for h in hyper.values()),
                             _total(rows_of(h.items, d_items) for h in hyper.values())])
        # the fusion is row-wise: fusing the distinct rows once and gathering the batch from them gives
        # the same values as fusing all 3 x batch rows (a batch repeats ~20 % of its rows, mini presets ~80 %)
        fused = self._fuse(rows_of(cge, distinct), mge, ghe)
        u, p, n = rows_of(fused, position).split(batch)
        total = bpr_loss(u, p, n)
        total = total + cfg.reg_weight * (frobenius_norm(u) + frobenius_norm(p) + frobenius_norm(n)) / batch
        if cfg.use_hcl and len(hyper) >= 2 and cfg.cl_weight > 0:
            total = total + cfg.cl_weight * self.hypergraph_contrastive(hyper, users, pos_items)
        return total

    def hypergraph_contrastive(self, hyper: dict[str, Hypergraph], users, pos_items) -> torch.Tensor:
        """HCL: first modality as anchor, each other one as positive/candidates, users and items.
        A batch repeats ids, so each InfoNCE runs over distinct ids weighted by their counts; the
        candidates are passed with their factors (rank hyper_num)."""
        tau = self.config.tau
        first, others = hyper[self.modalities[0]], [hyper[m] for m in self.modalities[1:]]
        sides = ((users, operator.attrgetter("users", "user_assignment")),
                 (pos_items, operator.attrgetter("items", "item_assignment")))
        hcl = 0
        for (ids, side), size in zip(sides, (self.n_users, self.n_items)):  # side(h) == (embeddings, assignment)
            distinct, _, counts = distinct_ids(ids, size)
            anchor_table = side(first)[0]
            weights = counts.to(anchor_table.dtype)
            anchor_rows = rows_of(anchor_table, distinct)
            for h in others:
                candidates, assignment = side(h)
                factors = (assignment, h.hyperedges)
                hcl = hcl + summed_info_nce(anchor_rows, distinct, weights, candidates, tau, factors)
        return hcl


def build(data: InteractionData, config: LGMRecConfig) -> LGMRec:
    modalities = list(config.modalities) or data.modalities
    missing = [m for m in modalities if m not in data.features]
    if missing:
        raise ConfigError(
            f"modalities {missing} not in dataset {data.name} (has {', '.join(data.modalities)})"
        )
    R = data.train_matrix
    return LGMRec(
        data.n_users,
        data.n_items,
        interactions=graph.to_torch(R),
        norm_adjacency=graph.to_torch(graph.normalized_adjacency(R)),
        features={m: torch.from_numpy(data.features[m]) for m in modalities},
        config=config,
    )


#: the authors' search ranges (comments of their LGMREC.yaml; ``n_mm_layers`` includes 0 as in
#: their dataset yamls): the sensitivity experiment moves one of these at a time
SEARCH_RANGES: dict[str, list] = {
    "n_ui_layers": [1, 2, 3, 4],
    "n_mm_layers": [0, 1, 2, 3, 4],
    "n_hyper_layer": [1, 2, 3, 4],
    "hyper_num": [2, 4, 8, 16, 32, 64, 128, 256],
    "keep_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "alpha": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "cl_weight": [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
    "reg_weight": [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
}

SPEC = ModelSpec(
    name="lgmrec",
    label="LGMRec",
    config_class=LGMRecConfig,
    build=build,
    multimodal=True,
    presets=lgmrec_presets(),
    default_preset="official-log",
    # The authors' dataset yamls list one value per hyperparameter (their tuned point, our
    # official-log preset), so tuning LGMRec is that single point; SEARCH_RANGES is for sensitivity.
    tuning_grid={},
    reference="georgeguo-cn/LGMRec models/lgmrec.py + configs/model/LGMREC.yaml, configs/dataset/*.yaml",
    deviations={
        "hyperedge_bug": "False (fixed, as upstream since July 2024); True reproduces the code behind the published logs",
        "eval_mode": "'official' (Gumbel noise at evaluation, a forward pass per batch of users) as upstream; 'deterministic' is ours",
        "modalities": "upstream needs exactly image and text; any non-empty subset here (HCL skipped with one)",
    },
)
