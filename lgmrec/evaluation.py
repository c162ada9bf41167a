"""Full-ranking evaluation: Recall, NDCG, Precision and MAP @ K, per user and averaged.

Every item is scored for every evaluated user (users with at least one held-out interaction in the
split); the user's TRAINING items are masked; metrics follow ``shared/spec/protocol.md``.

What does not change between evaluations (the users, their training items to mask, their
held-out items) is computed once per dataset and split (:func:`split_batches`), so an evaluation
pass is the model's scoring plus the ranks of the held-out items: counted (:func:`ranked_hits`),
or from a top-K where ties or NaN leave the count ambiguous; the same hits either way.

The trainer's per-epoch validation (:func:`validate`) computes only what early stopping reads, the
validation Recall@20, and that without a top-K; the other metrics (kept in the record for the best
epoch) are completed from the same scores only at epochs that improve. The numbers are
:func:`evaluate`'s, bit for bit.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .data import InteractionData
from .models.base import Recommender


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


def _batch_scores(model: Recommender, data: InteractionData, split: str, batch_users: int):
    """(batch, its masked score matrix) for every batch of the split's users, in order: the model's
    forward pass once, or (LGMRec's official evaluation) afresh before every batch."""
    device = next(iter(model.buffers()), next(model.parameters())).device
    embeddings = None if model.forward_per_eval_batch else model()
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
    included) of every held-out pair of the batch, in the order of its keys (user by user)."""
    rows, items = batch.heldout_keys // n_items, batch.heldout_keys % n_items
    own = scores[rows, items]
    row_scores = scores[rows]
    return rows, (row_scores > own[:, None]).sum(dim=1), (row_scores == own[:, None]).sum(dim=1)


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
    if bool((inside & (tied > 1)).any()) or bool(torch.isnan(scores).any()):
        return None
    hits = torch.zeros(len(batch.users), width, dtype=torch.bool, device=scores.device)
    hits[rows[inside], higher[inside]] = True
    return hits


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


@torch.no_grad()
def evaluate(
    model: Recommender,
    data: InteractionData,
    split: str,
    topk: tuple[int, ...] = (5, 10, 20, 50),
    batch_users: int = 4096,
) -> EvalResult:
    """Rank all items for the split's users, mask training items, return metrics."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    batches, per_batch = [], []
    for batch, scores in _batch_scores(model, data, split, batch_users):
        batches.append(batch)
        per_batch.append(_batch_metrics(batch, scores, data.n_items, topk))
    model.train(was_training)
    return _assemble(batches, per_batch, time.perf_counter() - start)


#: Most score entries (users x items) that :func:`validate` keeps for completing its metrics later;
#: above, every pass computes them all at once (as :func:`evaluate`).
KEEP_SCORES_MAX = 1 << 24


def recall_at_k_if_unambiguous(batch: EvalBatch, scores: torch.Tensor, n_items: int, k: int) -> torch.Tensor | None:
    """Per-user Recall@k of one batch from its masked scores without a top-K: a held-out item is in
    the top k iff fewer than k items score strictly higher. ``None`` where a top-K could rank
    otherwise: a NaN score, or a held-out item tied with others across rank k (a top-K breaks such
    ties its own way). Otherwise the values are those of :func:`_batch_metrics`, bit for bit (a count
    of hits divided by the number of held-out items, in float64)."""
    if k > n_items or not len(batch.heldout_keys):
        return None
    _, higher, tied = _heldout_ranks(batch, scores, n_items)
    if bool(((higher < k) & (higher + tied > k)).any()) or bool(torch.isnan(scores).any()):
        return None
    # hits per user: segment sums over the held-out pairs, which come user by user (sorted keys);
    # integer cumulative sums, not index_add_ (flagged nondeterministic on CUDA)
    counted = torch.cat([torch.zeros(1, dtype=torch.int64, device=scores.device), (higher < k).long().cumsum(0)])
    ends = batch.n_relevant.cumsum(0)
    hits = counted[ends] - counted[ends - batch.n_relevant]
    return hits.cpu().double() / batch.n_relevant.cpu().double()


@dataclass
class Validation:
    """One validation pass as early stopping reads it: the mean of ``metric`` (``score``); the pass's
    other metrics (:meth:`result`, :func:`evaluate`'s bit for bit) are computed when asked for."""

    score: float
    seconds: float
    _complete: "Callable[[], EvalResult]"
    _result: EvalResult | None = None

    def result(self) -> EvalResult:
        if self._result is None:
            self._result = self._complete()
        return self._result


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
    name, _, k = metric.partition("@")
    keep, kept_entries = name == "recall", 0
    batches, kept, values = [], [], []
    for batch, scores in _batch_scores(model, data, split, batch_users):
        batches.append(batch)
        kept_entries += scores.numel()
        if keep and kept_entries > KEEP_SCORES_MAX:  # too large to keep: every metric now
            keep = False
            kept = [part if isinstance(part, dict) else _batch_metrics(b, part, data.n_items, topk)
                    for b, part in zip(batches, kept)]
        recall = recall_at_k_if_unambiguous(batch, scores, data.n_items, int(k)) if keep else None
        if recall is None:
            kept.append(_batch_metrics(batch, scores, data.n_items, topk))
            recall = kept[-1][metric]
        else:
            kept.append(scores)
        values.append(recall)
    model.train(was_training)
    score = float(torch.cat(values).numpy().astype(np.float64).mean())

    def complete() -> EvalResult:
        per_batch = [part if isinstance(part, dict) else _batch_metrics(batch, part, data.n_items, topk)
                     for batch, part in zip(batches, kept)]
        return _assemble(batches, per_batch, seconds)

    seconds = time.perf_counter() - start
    return Validation(score, seconds, complete)

