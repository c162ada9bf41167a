"""InfoNCE summed over a batch's distinct ids, computed with one (ids x candidates) matrix.

LGMRec's hypergraph contrastive loss is ``sum over batch rows of -log softmax(<a_r, c_j> / tau)``
at the row's own target; a 2048-row batch repeats ids, and the sum over rows equals the sum over
distinct ids weighted by their counts. :class:`_WeightedSoftmaxNCE` keeps only the softmax matrix
and differentiates with the two products it needs (no ``logsumexp``, ``exp`` or softmax-backward
intermediates of batch x all size); on CPU that matrix is computed and softmaxed block by block
while in cache, in a :class:`ScratchMatrix` reused from step to step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: InfoNCE's fast path (one logit matrix, softmaxed in place) reads the loss off the softmax, which
#: cannot underflow while the logit range 2 / tau stays below this (cosines lie in [-1, 1])
_FAST_NCE_MAX_RANGE = 40.0
#: on CPU the logit product and its softmax go block by block of rows of about this many bytes, so
#: the softmax reads each block while it is still in cache (full-scale Baby-like step, one thread:
#: ~600 ms against ~640 ms in one piece; with two threads the difference was within the noise)
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

    Only ``P`` is kept (on CPU softmaxed in place in the logit matrix, block by block of rows while
    each block is in cache), and the backward is the two products ``P C`` and ``P^T A`` with the
    weights and the one-hot target applied to (rows x d) operands: no other (rows x candidates)
    matrix is made, forward or backward. ``targets`` are distinct, so the one-hot part of the
    candidates' gradient is a plain (deterministic) scatter.
    """

    @staticmethod
    def forward(ctx, anchor, candidates, targets, weights, scratch):
        memory = scratch.take(len(anchor), len(candidates), anchor) if scratch is not None else None
        if anchor.device.type == "cpu":  # the row-wise CPU softmax reads a row before it writes it
            probs = memory if memory is not None else anchor.new_empty(len(anchor), len(candidates))
            rows = max(1, _NCE_BLOCK_BYTES // (len(candidates) * probs.element_size()))
            for begin in range(0, len(anchor), rows):
                block = probs[begin: begin + rows]
                torch.mm(anchor[begin: begin + rows], candidates.T, out=block)
                torch.softmax(block, dim=1, out=block)
        else:
            probs = torch.softmax(anchor @ candidates.T, dim=1)
        loss = -(weights * probs.gather(1, targets[:, None]).squeeze(1).log()).sum()
        ctx.save_for_backward(anchor, candidates, targets, weights, probs)
        ctx.scratch = scratch if memory is not None else None  # only the borrower gives it back
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        anchor, candidates, targets, weights, probs = ctx.saved_tensors
        coef = (grad * weights)[:, None]  # d loss / d logits[r, j] = w_r (P[r, j] - [j == t_r])
        grad_anchor = grad_candidates = None
        if ctx.needs_input_grad[0]:
            grad_anchor = torch.mm(probs, candidates).mul_(coef).sub_(candidates[targets] * coef)
        if ctx.needs_input_grad[1]:
            scaled = anchor * coef
            grad_candidates = torch.mm(probs.T, scaled)
            grad_candidates[targets] -= scaled
        del probs
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
    anchor = F.normalize(anchor_rows, dim=1) / tau  # 1/tau folded into the (rows x d) side
    candidates = F.normalize(candidates, dim=1)
    if 2.0 / tau <= _FAST_NCE_MAX_RANGE:
        if not (torch.is_grad_enabled() and (anchor.requires_grad or candidates.requires_grad)):
            scratch = None  # no backward will give it back
        return _WeightedSoftmaxNCE.apply(anchor, candidates, targets, weights, scratch)
    positive_logit = (anchor * candidates[targets]).sum(dim=1)
    return (weights * (torch.logsumexp(anchor @ candidates.T, dim=1) - positive_logit)).sum()
