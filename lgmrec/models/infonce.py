"""InfoNCE summed over a batch's distinct ids, computed with one (ids x candidates) matrix.

LGMRec's hypergraph contrastive loss is ``sum over batch rows of -log softmax(<a_r, c_j> / tau)``
at the row's own target; a 2048-row batch repeats ids, and the sum over rows equals the sum over
distinct ids weighted by their counts. :class:`_WeightedSoftmaxNCE` keeps only the matrix of
exponentials and differentiates with the two products it needs (no ``logsumexp``, softmax or
softmax-backward intermediates of batch x all size); on CPU that matrix is computed and
exponentiated block by block while in cache, in a :class:`ScratchMatrix` reused from step to step.
"""

from __future__ import annotations

import torch

from .base import normalize_rows

#: InfoNCE's fast path exponentiates the logits without subtracting a row maximum: cosines lie in
#: [-1, 1], so the logits lie within +-1 / tau, and exp(20) (times any realistic candidate count)
#: is far from float32's range limits while this bound on the range 2 / tau holds
_FAST_NCE_MAX_RANGE = 40.0
_LOG2_E = 1.4426950408889634
#: on CPU the logit product and its exponential go block by block of rows of about this many
#: bytes, so each block is exponentiated while it is still in cache (full-scale Baby-like step,
#: one thread: ~600 ms against ~640 ms in one piece; with two threads within the noise)
_NCE_BLOCK_BYTES = 2 << 20


class ScratchMatrix:
    """Memory for one InfoNCE term's (rows x candidates) matrix, kept from step to step (CPU).

    torch's CPU allocator hands every large block back to the operating system when it is freed,
    so a fresh (rows x candidates) matrix is page-faulted in again at every step (full-scale
    Baby-like step: ~380 ms with the buffer against ~430 ms without, two threads). The buffer is
    lent to one pending backward at a time (taken in forward, given back in backward); while it is
    out (a graph that was never differentiated), fresh memory is used, and autograd's version
    counter would reject any overwrite of a saved buffer. :meth:`LGMRec.train` ``(False)`` drops it.
    """

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.lent = False

    def take(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor | None:
        """A (rows x cols) view of the buffer, or None while it is lent (or off the CPU)."""
        size = rows * cols
        if self.lent or like.device.type != "cpu":
            return None
        if self.buffer is None or self.buffer.numel() < size or self.buffer.dtype != like.dtype:
            self.buffer = like.new_empty(size + size // 16)  # head room: batches differ in distinct ids
        self.lent = True
        return self.buffer[:size].view(rows, cols)

    def give_back(self) -> None:
        self.lent = False


class _WeightedSoftmaxNCE(torch.autograd.Function):
    """``sum_r w_r (logsumexp_j <a_r, c_j> - <a_r, c_{t_r}>)``, i.e. ``-sum_r w_r log P[r, t_r]``
    with ``P = softmax(A C^T)``, for rows ``a_r`` already scaled by 1/tau.

    Only ``E = exp(A C^T)`` is kept, with its row sums ``s`` (``P = E / s``; no max is subtracted,
    as the logits lie within +-1/tau, see ``_FAST_NCE_MAX_RANGE``). On CPU ``E`` is computed
    block by block of rows, each exponentiated while in cache, as ``exp2`` of ``(log2(e) A) C^T``:
    torch's ``exp2`` is ~4x faster than its ``exp`` and ~2x faster than its softmax, and ``1 / s``
    goes on the (rows x d) operands. The backward is the two products ``E C`` and ``E^T A`` with
    the weights, ``1 / s`` and the one-hot target applied to (rows x d) operands: no other (rows x
    candidates) matrix is made, forward or backward. ``targets`` are distinct, so the one-hot part
    of the candidates' gradient is a plain (deterministic) ``index_add_``.
    """

    @staticmethod
    def forward(ctx, anchor, candidates, targets, weights, scratch):
        memory = scratch.take(len(anchor), len(candidates), anchor) if scratch is not None else None
        exps = memory if memory is not None else anchor.new_empty(len(anchor), len(candidates))
        anchor_log2 = anchor * _LOG2_E  # exp(a . c) == exp2((log2(e) a) . c)
        # blocks of rows on CPU; one product on the GPU, which needs no cache blocking
        on_cpu = anchor.device.type == "cpu"
        rows = max(1, _NCE_BLOCK_BYTES // (len(candidates) * exps.element_size()) if on_cpu else len(anchor))
        sums = anchor.new_empty(len(anchor))
        candidates_t = candidates.T  # views made once: a full-scale CPU step has ~100 blocks
        for anchor_block, block, block_sums in zip(anchor_log2.split(rows), exps.split(rows), sums.split(rows)):
            torch.sum(torch.mm(anchor_block, candidates_t, out=block).exp2_(), dim=1, out=block_sums)
        target_rows = candidates[targets]
        loss = (weights * (sums.log() - (anchor * target_rows).sum(dim=1))).sum()
        ctx.save_for_backward(anchor, candidates, target_rows, targets, weights, exps, sums)
        ctx.scratch = scratch if memory is not None else None  # only the borrower gives it back
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        anchor, candidates, target_rows, targets, weights, exps, sums = ctx.saved_tensors
        # d loss / d logits[r, j] = w_r (E[r, j] / s_r - [j == t_r])
        coef = (grad * weights)[:, None]
        coef_over_sums = coef / sums[:, None]
        grad_anchor = grad_candidates = None
        if ctx.needs_input_grad[0]:
            grad_anchor = torch.mm(exps, candidates).mul_(coef_over_sums).sub_(target_rows * coef)
        if ctx.needs_input_grad[1]:
            grad_candidates = torch.mm(exps.T, anchor * coef_over_sums)
            grad_candidates.index_add_(0, targets, anchor * coef, alpha=-1.0)
        del exps
        if ctx.scratch is not None:
            ctx.scratch.give_back()
        return grad_anchor, grad_candidates, None, None, None


def summed_info_nce(
    anchor_rows: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, candidates: torch.Tensor, tau: float,
    scratch: ScratchMatrix | None = None,
) -> torch.Tensor:
    """``NCE(anchor[t], candidates[t], candidates)`` summed over a batch whose distinct ids ``t``
    occur ``weights`` times: ``sum over rows == sum over distinct ids weighted by counts``, so the
    (rows x candidates) products shrink to (distinct ids x candidates). ``anchor_rows`` are the
    anchor embeddings of the distinct ids, ``targets`` their rows in ``candidates``."""
    anchor = normalize_rows(anchor_rows) / tau  # 1/tau folded into the (rows x d) side
    candidates = normalize_rows(candidates)
    if 2.0 / tau <= _FAST_NCE_MAX_RANGE:
        if not (torch.is_grad_enabled() and (anchor.requires_grad or candidates.requires_grad)):
            scratch = None  # no backward will give it back
        return _WeightedSoftmaxNCE.apply(anchor, candidates, targets, weights, scratch)
    positive_logit = (anchor * candidates[targets]).sum(dim=1)
    return (weights * (torch.logsumexp(anchor @ candidates.T, dim=1) - positive_logit)).sum()
