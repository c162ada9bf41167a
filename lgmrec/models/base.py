"""The contract every model follows.

A model is a ``torch.nn.Module`` built from explicit, typed constructor arguments (counts, sparse
graph tensors, frozen feature tensors, hyperparameters); it never reads files or global config.
Three methods make the contract:

- ``forward()`` returns :class:`Embeddings`, the final user and item representations;
- ``loss(users, pos_items, neg_items)`` returns the scalar training loss of a BPR batch;
- ``score(users, embeddings)`` returns scores of ``users`` against all items (default: dot product).

The trainer and the evaluator only use these, plus two optional hooks below. A model of one's own
(a plug-in: :mod:`lgmrec.models.plugins`) follows the same contract; the book's page "Your own
model" (``book/plugins.md``) says what the suite calls and when.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Embeddings(NamedTuple):
    users: torch.Tensor  # (n_users, d)
    items: torch.Tensor  # (n_items, d)


class Recommender(nn.Module):
    n_users: int
    n_items: int
    #: When True the evaluator calls ``forward()`` again for every batch of evaluated users
    #: (the official LGMRec evaluation, whose forward pass is stochastic). Otherwise once per pass.
    forward_per_eval_batch: bool = False
    #: True when ``forward()`` in eval mode is a pure function of the model's state: it draws no
    #: random numbers and changes nothing, so a second pass before the next training step would give
    #: the same embeddings. The trainer's test pass at an improving epoch then scores the validation
    #: pass's embeddings instead of running ``forward()`` again (the same bits, one pass less). Every
    #: built-in model but LGMRec's official evaluation says True (tests/models/test_pure_eval.py).
    pure_eval_forward: bool = False

    def forward(self) -> Embeddings:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, users: torch.Tensor, embeddings: Embeddings) -> torch.Tensor:
        """Scores of ``users`` (1-d ids) against every item: ``(len(users), n_items)``."""
        # the users' rows as embeddings.users[users] gathers them (index_select: ~5x faster for 800 rows)
        return embeddings.users.index_select(0, users) @ embeddings.items.T

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for models that refresh derived state once per epoch (default: nothing)."""

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class LastBatchEmbeddings:
    """MMRec's ``full_sort_predict`` scores with the embeddings that the epoch's last training batch
    computed, one optimiser step old; with ``enabled`` they are kept here (detached) for scoring."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.kept: Embeddings | None = None

    def keep(self, emb: Embeddings) -> None:
        if self.enabled:
            self.kept = Embeddings(emb.users.detach(), emb.items.detach())

    def clear(self) -> None:
        self.kept = None


def bpr_loss(user_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor) -> torch.Tensor:
    """``mean(-log sigmoid(s(u, p) - s(u, n)))`` with dot-product scores."""
    pos = (user_emb * pos_emb).sum(dim=1)
    neg = (user_emb * neg_emb).sum(dim=1)
    return -torch.nn.functional.logsigmoid(pos - neg).mean()


def rows_of(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` (the same values and gradient bits), whose backward is one ``index_add_``:
    that of ``table[ids]`` is an ``index_put_`` that sorts the ids under deterministic algorithms,
    ~3x slower for a 2048-row batch (FREEDOM's full-scale step, which gathers from its 4096-d
    feature table this way, went from 114 to 82 ms; MICRO's kNN neighbours, ``(n, k)`` ids: 278 x 10
    rows of 64, forward and backward ~0.86 against ~1.16 ms). ``ids`` of any shape."""
    if ids.dim() == 1:
        return table.index_select(0, ids)
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, *table.shape[1:])


class _NormalizeRows(torch.autograd.Function):
    """``F.normalize(x, dim=1)`` (the same forward bits) with a fused backward: the gradient
    ``(g - y <g, y>) / max(|x|, eps)`` in four passes over the matrix, where autograd's chain
    through the norm, the clamp and the division takes about a dozen."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        denominator = norm.clamp_min(eps)
        y = x / denominator
        ctx.save_for_backward(y, denominator, norm < eps)  # clamped rows: y = x / eps, no norm term
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        y, denominator, clamped = ctx.saved_tensors
        along = (grad * y).sum(dim=1, keepdim=True).masked_fill_(clamped, 0.0)
        return torch.addcmul(grad, y, along, value=-1.0).div_(denominator), None


NORM_EPS = 1e-12  # F.normalize's: a row's norm is clamped to at least this


def normalize_rows(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Rows scaled to unit L2 norm, as ``F.normalize(x, dim=1)``; its gradient to float rounding."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.nn.functional.normalize(x, dim=1, eps=eps)
    return _NormalizeRows.apply(x, eps)


class _FrobeniusNorm(torch.autograd.Function):
    """``x.norm()`` (the same forward bits) whose backward is autograd's ``grad * (x / norm)``, the
    same bits, without its ``masked_fill_(norm == 0, 0)`` of the whole matrix when the norm is not 0
    (a 0-dim mask broadcast over the matrix: ~100 us of a ~160 us forward and backward for a
    2048 x 64 batch, three times per step in most models' regulariser)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x)
        ctx.save_for_backward(x, norm)
        return norm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, norm = ctx.saved_tensors
        if x.device.type != "cpu" or norm == 0:  # autograd's formula (0 / 0 entries become 0)
            return grad * (x / norm).masked_fill_(norm == 0, 0)
        return grad * (x / norm)


def frobenius_norm(x: torch.Tensor) -> torch.Tensor:
    """``x.norm()``, with a faster backward on CPU; the same values and gradients, bit for bit."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.linalg.vector_norm(x)
    return _FrobeniusNorm.apply(x)


def emb_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: the sum of the tensors' Frobenius norms (NOT squared), divided by the
    row count of the last one (the batch size when called with batch rows)."""
    return sum(frobenius_norm(e) for e in embeddings) / embeddings[-1].shape[0]


def xavier_embedding(n_rows: int, dim: int, init: str = "uniform") -> nn.Parameter:
    """A Xavier-initialised trainable table (``uniform``, as most MMRec models, or ``normal``)."""
    initialise = nn.init.xavier_normal_ if init == "normal" else nn.init.xavier_uniform_
    return nn.Parameter(initialise(torch.empty(n_rows, dim)))


def distinct_ids(ids: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.unique(ids, return_inverse=True, return_counts=True)`` for ids in ``[0, size)``:
    the same three tensors (distinct ids sorted, each id's position among them, their counts), by
    counting instead of sorting (6,144 ids of 1,053 nodes: ~50 against ~155 us)."""
    counts = torch.bincount(ids, minlength=size)
    present = counts > 0
    values = present.nonzero().squeeze(1)
    return values, (present.cumsum(0) - 1).index_select(0, ids), counts.index_select(0, values)


class Distinct:
    """A batch's ids as their distinct values, each batch row's position among them, and counts
    (by :func:`distinct_ids` when the ids are known to lie in ``[0, size)``)."""

    def __init__(self, ids: torch.Tensor, size: int | None = None):
        self.values, self.inverse, self.counts = (
            torch.unique(ids, return_inverse=True, return_counts=True) if size is None else distinct_ids(ids, size)
        )


def batch_mean_square(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows].pow(2).mean()`` without gathering: row counts times squared row norms."""
    counts = torch.bincount(rows, minlength=table.shape[0]).to(table.dtype)
    return counts @ table.pow(2).sum(dim=1) / (len(rows) * table.shape[1])
