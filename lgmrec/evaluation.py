"""Full-ranking evaluation: Recall, NDCG, Precision and MAP @ K, per user and averaged.

Every item is scored for every evaluated user (users with at least one held-out interaction in the
split); the user's TRAINING items are masked; metrics follow ``shared/spec/protocol.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .data import InteractionData
from .models.base import Recommender


@dataclass
class EvalResult:
    means: dict[str, float]  # "recall@20" -> mean over evaluated users
    per_user: dict[str, np.ndarray]  # "user" -> ids, "recall@20" -> one value per user
    seconds: float


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
    heldout = data.interaction_matrix(split)
    train = data.train_matrix
    users = np.flatnonzero(np.diff(heldout.indptr) > 0)
    max_k = min(max(topk), data.n_items)
    was_training = model.training
    model.eval()
    device = next(iter(model.buffers()), next(model.parameters())).device
    embeddings = None if model.forward_per_eval_batch else model()
    per_user: dict[str, list[torch.Tensor]] = {}
    for begin in range(0, len(users), batch_users):
        batch = users[begin: begin + batch_users]
        if model.forward_per_eval_batch:
            embeddings = model()  # the official LGMRec evaluation: a fresh stochastic pass per batch
        scores = model.score(torch.from_numpy(batch).to(device), embeddings)
        rows, cols = _batch_nonzero(train, batch)
        scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = -torch.inf
        top = torch.topk(scores, max_k, dim=1).indices.cpu()
        relevant = torch.from_numpy(heldout[batch].toarray() > 0)
        hits = relevant.gather(1, top)
        if max_k < max(topk):  # fewer items than the largest K: the missing ranks hold no hit
            hits = torch.nn.functional.pad(hits, (0, max(topk) - max_k))
        for name, values in ranking_metrics(hits, relevant.sum(dim=1), topk).items():
            per_user.setdefault(name, []).append(values)
    model.train(was_training)
    arrays = {name: torch.cat(parts).numpy().astype(np.float64) for name, parts in per_user.items()}
    means = {name: float(values.mean()) for name, values in sorted(arrays.items())}
    return EvalResult(means, {"user": users, **arrays}, time.perf_counter() - start)


def _batch_nonzero(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position within the batch, column) of every stored entry of ``matrix[rows]``."""
    sub = matrix[rows]
    positions = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    return positions, sub.indices
