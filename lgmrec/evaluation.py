"""Full-ranking evaluation: Recall, NDCG, Precision and MAP @ K, per user and averaged.

Every item is scored for every evaluated user (users with at least one held-out interaction in the
split); the user's TRAINING items are masked; metrics follow ``shared/spec/protocol.md``.

What does not change between evaluations (the users, their training items to mask, their
held-out items) is computed once per dataset and split (:func:`split_batches`), so an evaluation
pass is the model's scoring plus the ranks of the held-out items: counted (:func:`ranked_hits`),
or from a top-K where ties or NaN leave the count ambiguous; the same hits either way.

The trainer's per-epoch validation (:func:`validate`) computes only what early stopping reads, the
validation Recall@20, and that without a top-K; the other metrics (kept in the record for the best
epoch) are completed from the same scores only for the epoch that the run reports. Likewise the
test pass at an improving epoch (:func:`score_split`) only scores the users and keeps the masked
scores: the metrics are computed once, for the best epoch, when the run ends; and a model whose
evaluation forward pass is a pure function of its state (``Recommender.pure_eval_forward``) is not
run again for it: the validation pass's embeddings are scored. The numbers are :func:`evaluate`'s,
bit for bit.
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from .data import InteractionData
from .models.base import Embeddings, Recommender


@dataclass
class EvalResult:
    means: dict[str, float]  # "recall@20" -> mean over evaluated users
    per_user: dict[str, np.ndarray]  # "user" -> ids, "recall@20" -> one value per user
    seconds: float


@dataclass(frozen=True)
class EvalBatch:
    users: torch.Tensor  # (b,) user ids
    mask_rows: torch.Tensor  # positions in the batch of every training (user, item) pair
    mask_items: torch.Tensor  # ... and its item
    heldout_keys: torch.Tensor  # sorted position * n_items + item of the batch's held-out pairs
    n_relevant: torch.Tensor  # (b,) held-out items per user


def ranking_metrics(hits: torch.Tensor, n_relevant: torch.Tensor, topk: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ``(users, max K)`` 0/1 hit matrix over ranked lists.

    ``n_relevant[u]`` is the number of held-out items of user u.
    """
    hits = hits.double()  # float64: per-user values feed significance tests
    max_k = hits.shape[1]
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64, device=hits.device)
    cumulative_hits = hits.cumsum(dim=1)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    dcg = (hits * discounts).cumsum(dim=1)
    ideal = discounts.cumsum(dim=0)
    precision_at_rank = cumulative_hits / ranks * hits  # counted only at ranks holding a hit
    average_precision = precision_at_rank.cumsum(dim=1)
    n_relevant = n_relevant.double()
    result = {}
    for k in topk:
        capped = torch.clamp(n_relevant, max=k)
        result[f"recall@{k}"] = cumulative_hits[:, k - 1] / n_relevant
        result[f"precision@{k}"] = cumulative_hits[:, k - 1] / k
        result[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[capped.long() - 1]
        result[f"map@{k}"] = average_precision[:, k - 1] / capped
    return result


# (split, batch size, device) -> batches, per dataset object; dropped with the dataset
_BATCHES: "weakref.WeakKeyDictionary[InteractionData, dict]" = weakref.WeakKeyDictionary()


def split_batches(data: InteractionData, split: str, batch_users: int, device: torch.device) -> list[EvalBatch]:
    """The evaluated users of ``split`` in batches, with what scoring them needs (computed once)."""
    cache = _BATCHES.setdefault(data, {})
    key = (split, batch_users, str(device))
    if key not in cache:
        heldout, train = data.interaction_matrix(split), data.train_matrix
        users = np.flatnonzero(np.diff(heldout.indptr) > 0)
        batches = []
        for begin in range(0, len(users), batch_users):
            batch = users[begin: begin + batch_users]
            seen, held = train[batch], heldout[batch]
            held_rows = np.repeat(np.arange(len(batch)), np.diff(held.indptr))
            as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)
            batches.append(EvalBatch(
                users=as_tensor(batch),
                mask_rows=as_tensor(np.repeat(np.arange(len(batch)), np.diff(seen.indptr))),
                mask_items=as_tensor(seen.indices),
                heldout_keys=torch.sort(as_tensor(held_rows * data.n_items + held.indices)).values,
                n_relevant=as_tensor(np.diff(held.indptr)),
            ))
        cache[key] = batches
    return cache[key]


def _batch_scores(model: Recommender, data: InteractionData, split: str, batch_users: int,
                  embeddings: Embeddings | None = None):
    """(batch, its masked score matrix) for every batch of the split's users, in order: the model's
    forward pass once (or the given ``embeddings``), or (LGMRec's official evaluation) afresh
    before every batch."""
    device = next(itertools.chain(model.buffers(), model.parameters())).device  # a model may have only one kind
    if model.forward_per_eval_batch:
        embeddings = None
    elif embeddings is None:
        embeddings = model()
    for batch in split_batches(data, split, batch_users, device):
        if model.forward_per_eval_batch:
            embeddings = model()  # the official LGMRec evaluation: a fresh stochastic pass per batch
        scores = model.score(batch.users, embeddings)
        scores[batch.mask_rows, batch.mask_items] = -torch.inf
        yield batch, scores


def topk_hits(batch: EvalBatch, scores: torch.Tensor, n_items: int, width: int) -> torch.Tensor:
    """``(users, width)`` 0/1 matrix: does the item at each rank of the top-``width`` hold a
    held-out item? From a top-K of the masked scores (ranks beyond the item count hold none)."""
    max_k = min(width, n_items)
    top = torch.topk(scores, max_k, dim=1).indices
    keys = torch.arange(len(batch.users), device=scores.device)[:, None] * n_items + top
    found = torch.searchsorted(batch.heldout_keys, keys).clamp(max=max(len(batch.heldout_keys) - 1, 0))
    hits = batch.heldout_keys[found] == keys if len(batch.heldout_keys) else torch.zeros_like(keys, dtype=torch.bool)
    if max_k < width:  # fewer items than the largest K: the missing ranks hold no hit
        hits = torch.nn.functional.pad(hits, (0, width - max_k))
    return hits


def _heldout_ranks(batch: EvalBatch, scores: torch.Tensor, n_items: int):
    """(row in the batch, number of items scoring strictly higher, number scoring the same, itself
    included) of every held-out pair of the batch, in the order of its keys (user by user).

    Counted from the signs of the differences ``score - own score`` where the own scores are finite
    (one subtraction, one sign and two sums: ~140 against ~490 us for two comparisons and their
    sums over 810 x 398 scores): an IEEE subtraction of a finite number is 0 exactly when the two
    are equal and keeps the sign of their difference otherwise, infinite scores included. With
    denormals flushed to zero (never set here) a tiny difference would count as a tie, never as the
    other sign; callers decline on ties that matter. NaN scores give meaningless counts: callers
    check for NaN and decline."""
    rows, items = batch.heldout_keys // n_items, batch.heldout_keys % n_items
    own = scores[rows, items]
    row_scores = scores.index_select(0, rows)  # the rows gathered, as scores[rows] (~5x faster)
    if not bool(torch.isfinite(own).all()):
        return rows, (row_scores > own[:, None]).sum(dim=1), (row_scores == own[:, None]).sum(dim=1)
    signs = row_scores.sub_(own[:, None]).sign_()  # +1 higher, 0 the same, -1 lower
    total, nonzero = signs.sum(dim=1), signs.abs_().sum(dim=1)  # exact integers in float32 (< 2^24 items)
    return rows, ((total + nonzero) / 2).long(), (n_items - nonzero).long()


def ranked_hits(batch: EvalBatch, scores: torch.Tensor, n_items: int, width: int) -> torch.Tensor | None:
    """:func:`topk_hits` without a top-K: a held-out item that no other item ties sits at the rank
    given by the number of items scoring strictly higher, whatever order a top-K gives the others.
    ``None`` where that does not fix the matrix (a held-out item tied with another within the top
    ``width``, a NaN score, fewer items than ``width``, no held-out item): then the top-K decides.
    Otherwise the matrix is :func:`topk_hits`'s, element for element."""
    if width > n_items or not len(batch.heldout_keys):
        return None
    rows, higher, tied = _heldout_ranks(batch, scores, n_items)
    inside = higher < width
    if bool((inside & (tied > 1)).any()) or may_hold_nan(scores):
        return None
    hits = torch.zeros(len(batch.users), width, dtype=torch.bool, device=scores.device)
    hits[rows[inside], higher[inside]] = True
    return hits


def may_hold_nan(scores: torch.Tensor) -> bool:
    """False only if no score is NaN: their sum is NaN whenever one is (and also when +inf and -inf
    both occur, or the sum overflows: then the caller takes its slower, always exact path). One
    reduction instead of ``isnan(scores).any()`` (800 x 400 scores: ~25 against ~340 us)."""
    return bool(torch.isnan(scores.sum()))


def _batch_metrics(batch: EvalBatch, scores: torch.Tensor, n_items: int, topk: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user metrics of one batch from its masked scores: hits at each rank (:func:`ranked_hits`,
    or a top-K where it declines), :func:`ranking_metrics`."""
    hits = ranked_hits(batch, scores, n_items, max(topk))
    if hits is None:
        hits = topk_hits(batch, scores, n_items, max(topk))
    return ranking_metrics(hits.cpu(), batch.n_relevant.cpu(), topk)


def _assemble(batches: list[EvalBatch], per_batch: list[dict[str, torch.Tensor]], seconds: float) -> EvalResult:
    per_user: dict[str, list[torch.Tensor]] = {}
    for metrics in per_batch:
        for name, values in metrics.items():
            per_user.setdefault(name, []).append(values)
    users = torch.cat([b.users for b in batches]).cpu().numpy()
    arrays = {name: torch.cat(parts).numpy().astype(np.float64) for name, parts in per_user.items()}
    means = {name: float(values.mean()) for name, values in sorted(arrays.items())}
    return EvalResult(means, {"user": users, **arrays}, seconds)


#: Most score entries (users x items) that a pass keeps for computing its metrics later (the
#: validation's other metrics, a test pass's); above, every pass computes them at once.
KEEP_SCORES_MAX = 1 << 24


class _Kept:
    """An evaluation pass's batches and, per batch, its masked scores (metrics not yet computed) or,
    once the kept entries would pass :data:`KEEP_SCORES_MAX`, its metrics."""

    def __init__(self, data: InteractionData, topk: tuple[int, ...], keep: bool = True):
        self.data, self.topk, self.keep = data, topk, keep
        self.batches: list[EvalBatch] = []
        self.parts: list[torch.Tensor | dict[str, torch.Tensor]] = []
        self.entries = 0

    def add(self, batch: EvalBatch, scores: torch.Tensor) -> None:
        self.batches.append(batch)
        self.entries += scores.numel()
        if self.keep and self.entries > KEEP_SCORES_MAX:  # too large to keep: every metric now
            self.keep = False
            self.parts = [self._metrics(b, part) for b, part in zip(self.batches, self.parts)]
        self.parts.append(scores if self.keep else _batch_metrics(batch, scores, self.data.n_items, self.topk))

    def _metrics(self, batch: EvalBatch, part) -> dict[str, torch.Tensor]:
        return part if isinstance(part, dict) else _batch_metrics(batch, part, self.data.n_items, self.topk)

    def result(self, seconds: float) -> EvalResult:
        return _assemble(self.batches, [self._metrics(b, part) for b, part in zip(self.batches, self.parts)], seconds)


@dataclass
class ScoredSplit:
    """An evaluation pass that has scored its users; :meth:`result` computes the metrics (once):
    :func:`evaluate`'s, bit for bit. ``embeddings``: the pass's embeddings where another pass
    at the same state may score with them (``Recommender.pure_eval_forward``), else None."""

    seconds: float
    embeddings: Embeddings | None
    _kept: _Kept
    _result: EvalResult | None = None

    def result(self) -> EvalResult:
        if self._result is None:
            start = time.perf_counter()
            self._result = self._kept.result(self.seconds)
            self._result.seconds += time.perf_counter() - start
            self._kept = None  # the scores are no longer needed
        return self._result


def _pass_embeddings(model: Recommender, embeddings: Embeddings | None) -> Embeddings | None:
    """The embeddings an evaluation pass scores with (None: the forward pass runs per batch), from
    ``embeddings`` where given and the model's evaluation forward pass is pure."""
    if model.forward_per_eval_batch:
        return None
    if embeddings is not None and model.pure_eval_forward:
        return embeddings
    return model()


@torch.no_grad()
def score_split(
    model: Recommender,
    data: InteractionData,
    split: str,
    topk: tuple[int, ...] = (5, 10, 20, 50),
    batch_users: int = 4096,
    embeddings: Embeddings | None = None,
) -> ScoredSplit:
    """:func:`evaluate` up to the metrics: the split's users are scored now and the masked scores
    kept (up to :data:`KEEP_SCORES_MAX` entries; beyond, the metrics are computed now); the metrics
    when :meth:`ScoredSplit.result` asks for them. ``embeddings`` (of another pass at this very
    state) are scored instead of running the forward pass again where the model's evaluation
    forward pass is pure (``Recommender.pure_eval_forward``)."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    embeddings = _pass_embeddings(model, embeddings)
    kept = _Kept(data, topk)
    for batch, scores in _batch_scores(model, data, split, batch_users, embeddings):
        kept.add(batch, scores)
    model.train(was_training)
    return ScoredSplit(time.perf_counter() - start, embeddings if model.pure_eval_forward else None, kept)


def evaluate(
    model: Recommender,
    data: InteractionData,
    split: str,
    topk: tuple[int, ...] = (5, 10, 20, 50),
    batch_users: int = 4096,
) -> EvalResult:
    """Rank all items for the split's users, mask training items, return metrics."""
    return score_split(model, data, split, topk, batch_users).result()


def recall_at_k_if_unambiguous(batch: EvalBatch, scores: torch.Tensor, n_items: int, k: int) -> torch.Tensor | None:
    """Per-user Recall@k of one batch from its masked scores without a top-K: a held-out item is in
    the top k iff fewer than k items score strictly higher. ``None`` where a top-K could rank
    otherwise: a NaN score, or a held-out item tied with others across rank k (a top-K breaks such
    ties its own way). Otherwise the values are those of :func:`_batch_metrics`, bit for bit (a count
    of hits divided by the number of held-out items, in float64)."""
    if k > n_items or not len(batch.heldout_keys):
        return None
    _, higher, tied = _heldout_ranks(batch, scores, n_items)
    if bool(((higher < k) & (higher + tied > k)).any()) or may_hold_nan(scores):
        return None
    # hits per user: segment sums over the held-out pairs, which come user by user (sorted keys);
    # integer cumulative sums, not index_add_ (flagged nondeterministic on CUDA)
    counted = torch.cat([torch.zeros(1, dtype=torch.int64, device=scores.device), (higher < k).long().cumsum(0)])
    ends = batch.n_relevant.cumsum(0)
    hits = counted[ends] - counted[ends - batch.n_relevant]
    return hits.cpu().double() / batch.n_relevant.cpu().double()


@dataclass
class Validation(ScoredSplit):
    """One validation pass as early stopping reads it: the mean of ``metric`` (``score``); the pass's
    other metrics (:meth:`result`, :func:`evaluate`'s bit for bit) are computed when asked for."""

    score: float = math.nan


@torch.no_grad()
def validate(
    model: Recommender,
    data: InteractionData,
    metric: str = "recall@20",
    topk: tuple[int, ...] = (5, 10, 20, 50),
    batch_users: int = 4096,
    split: str = "valid",
) -> Validation:
    """:func:`evaluate` on ``split`` for early stopping: only ``metric``'s mean is computed now.

    Recall@k needs no top-K: :func:`recall_at_k_if_unambiguous` counts each held-out item's higher-
    scoring items. The masked score matrices are kept (up to :data:`KEEP_SCORES_MAX` entries), so
    that :meth:`Validation.result` completes the other metrics from the same scores later, without
    another forward pass (LGMRec's official evaluation draws random numbers in each). A batch with
    ties across rank k or NaN scores, another metric, or larger data: every metric now, as
    :func:`evaluate`. Either way the numbers are :func:`evaluate`'s, bit for bit."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    embeddings = _pass_embeddings(model, None)
    name, _, k = metric.partition("@")
    kept, values = _Kept(data, topk, keep=name == "recall"), []
    for batch, scores in _batch_scores(model, data, split, batch_users, embeddings):
        kept.add(batch, scores)
        recall = recall_at_k_if_unambiguous(batch, scores, data.n_items, int(k)) if kept.keep else None
        if recall is None:
            kept.parts[-1] = kept._metrics(batch, kept.parts[-1])
            recall = kept.parts[-1][metric]
        values.append(recall)
    model.train(was_training)
    score = float(torch.cat(values).numpy().astype(np.float64).mean())
    return Validation(time.perf_counter() - start, embeddings if model.pure_eval_forward else None, kept, score=score)
