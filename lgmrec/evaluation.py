"""Full-ranking evaluation: Recall, NDCG, Precision and MAP @ K, per user and averaged.

Every item is scored for every evaluated user (users with at least one held-out interaction in the
split); the user's TRAINING items are masked; metrics follow ``shared/spec/protocol.md``.

What does not change between evaluations (the users, their training items to mask, their
held-out items) is computed once per dataset and split (:func:`split_batches`), so an evaluation
pass is the model's scoring plus a top-K.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

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
    max_k = min(max(topk), data.n_items)
    was_training = model.training
    model.eval()
    device = next(iter(model.buffers()), next(model.parameters())).device
    embeddings = None if model.forward_per_eval_batch else model()
    per_user: dict[str, list[torch.Tensor]] = {}
    batches = split_batches(data, split, batch_users, device)
    for batch in batches:
        if model.forward_per_eval_batch:
            embeddings = model()  # the official LGMRec evaluation: a fresh stochastic pass per batch
        scores = model.score(batch.users, embeddings)
        scores[batch.mask_rows, batch.mask_items] = -torch.inf
        top = torch.topk(scores, max_k, dim=1).indices
        keys = torch.arange(len(batch.users), device=device)[:, None] * data.n_items + top
        found = torch.searchsorted(batch.heldout_keys, keys).clamp(max=max(len(batch.heldout_keys) - 1, 0))
        hits = batch.heldout_keys[found] == keys if len(batch.heldout_keys) else torch.zeros_like(keys, dtype=torch.bool)
        if max_k < max(topk):  # fewer items than the largest K: the missing ranks hold no hit
            hits = torch.nn.functional.pad(hits, (0, max(topk) - max_k))
        for name, values in ranking_metrics(hits.cpu(), batch.n_relevant.cpu(), topk).items():
            per_user.setdefault(name, []).append(values)
    model.train(was_training)
    users = torch.cat([b.users for b in batches]).cpu().numpy()
    arrays = {name: torch.cat(parts).numpy().astype(np.float64) for name, parts in per_user.items()}
    means = {name: float(values.mean()) for name, values in sorted(arrays.items())}
    return EvalResult(means, {"user": users, **arrays}, time.perf_counter() - start)
