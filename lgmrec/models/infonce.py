"""InfoNCE summed over a batch's distinct ids, with its gradients taken block by block in the forward.

LGMRec's hypergraph contrastive loss is ``sum over batch rows of -log softmax(<a_r, c_j> / tau)`` at
the row's own target. Three things make it cheap without changing its values (beyond rounding):

- distinct ids: a 2048-row batch repeats ids, and the sum over rows equals the sum over distinct ids
  weighted by their counts, so the (rows x candidates) matrices shrink to (distinct ids x candidates);
- low rank: LGMRec's candidates are ``C = H Y``, hyperedge assignments ``H`` (candidates x k) times
  hyperedge embeddings ``Y`` (k x d), with k = hyper_num (4) below d (64). The logits
  ``<a, c_j / |c_j|> = <a Y^T, h_j / |c_j|>`` then come from k-wide operands: d / k times fewer
  multiplications than from d-wide ones (:func:`summed_info_nce` with ``factors``);
- fused: the exponentials are made block by block of rows, and each block gives its share of both
  gradients while still in cache. The (rows x candidates) matrix is never stored (a full-scale
  Baby-like users term: 148 MB), and the backward only scales the gradients by the incoming one.
"""

from __future__ import annotations

import torch

from .base import NORM_EPS, normalize_rows

#: the fast path exponentiates the logits without subtracting a row maximum: cosines lie in [-1, 1],
#: so the logits lie within +-1 / tau, and exp(20) (times any realistic candidate count) is far from
#: float32's range limits while this bound on the range 2 / tau holds
_FAST_NCE_MAX_RANGE = 40.0
_LOG2_E = 1.4426950408889634
#: on CPU the logits go block by block of rows of about this many bytes, each block exponentiated
#: and differentiated while it is in cache
_NCE_BLOCK_BYTES = 2 << 20
_NARROW = 16


class _FusedSoftmaxNCE(torch.autograd.Function):
    """``sum_r w_r (log sum_j exp <a_r, c_j> - <a_r, c_{t_r}>)``, i.e. ``-sum_r w_r log P[r, t_r]``
    with ``P = softmax(A C^T)``, for rows ``a_r`` already scaled by 1/tau.

    Per block of rows: ``E = exp(A C^T)`` (as ``exp2`` of ``(log2(e) A) C^T``: torch's ``exp2`` is
    ~4x faster than its ``exp``; no max is subtracted, see ``_FAST_NCE_MAX_RANGE``), its row sums
    ``s``, and, with ``d loss / d logits[r, j] = w_r (E[r, j] / s_r - [j == t_r])``, the block's
    gradient rows ``(w / s) E C`` and its share ``E^T (w / s) A`` of the candidates' gradient. The
    one-hot parts go on (rows x k) operands (``targets`` are distinct: a plain ``index_add_``).
    For k < ``_NARROW`` the block's ``E C`` is taken transposed (``C^T E^T``): MKL's kernels for a
    result of 4 or 8 columns were 2-3x slower (a 26 x 19,447 block: 0.37 against 0.13 ms for k = 4);
    from 16 columns the plain product is the faster one.
    """

    @staticmethod
    def forward(ctx, anchor, candidates, targets, weights, with_grads: bool):
        n_rows, n_candidates = len(anchor), len(candidates)
        on_cpu = anchor.device.type == "cpu"  # one block on the GPU, which needs no cache blocking
        block_rows = _NCE_BLOCK_BYTES // (n_candidates * anchor.element_size()) if on_cpu else n_rows
        rows = max(1, block_rows)  # an empty batch still gives a valid range step
        buffer = anchor.new_empty(min(rows, n_rows), n_candidates)
        sums = anchor.new_empty(n_rows)
        anchor_log2 = anchor * _LOG2_E  # exp(a . c) == exp2((log2(e) a) . c)
        candidates_t = candidates.T
        narrow = anchor.shape[1] < _NARROW
        if with_grads:
            grad_anchor = torch.empty_like(anchor)
            # (k x candidates) when narrow, else (candidates x k): see the class docstring
            grad_candidates = anchor.new_zeros(candidates_t.shape if narrow else candidates.shape)
        for start in range(0, n_rows, rows):
            stop = min(start + rows, n_rows)
            exps = buffer[: stop - start]
            torch.mm(anchor_log2[start:stop], candidates_t, out=exps).exp2_()
            torch.sum(exps, dim=1, out=sums[start:stop])
            if with_grads:
                coef = (weights[start:stop] / sums[start:stop])[:, None]
                scaled_anchor = anchor[start:stop] * coef
                if narrow:
                    torch.mul(torch.mm(candidates_t, exps.T).T, coef, out=grad_anchor[start:stop])
                    grad_candidates.addmm_(scaled_anchor.T, exps)
                else:
                    torch.mm(exps, candidates, out=grad_anchor[start:stop]).mul_(coef)
                    grad_candidates.addmm_(exps.T, scaled_anchor)
        target_rows = candidates[targets]
        loss = (weights * (sums.log() - (anchor * target_rows).sum(dim=1))).sum()
        if with_grads:
            grad_anchor.sub_(target_rows * weights[:, None])
            if narrow:
                grad_candidates = grad_candidates.T.contiguous()
            grad_candidates.index_add_(0, targets, anchor * weights[:, None], alpha=-1.0)
            ctx.save_for_backward(grad_anchor, grad_candidates)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad_anchor, grad_candidates = ctx.saved_tensors
        return grad_anchor * grad, grad_candidates * grad, None, None, None


def summed_info_nce(
    anchor_rows: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, candidates: torch.Tensor, tau: float,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``NCE(anchor[t], candidates[t], candidates)`` summed over a batch whose distinct ids ``t``
    occur ``weights`` times: ``sum over rows == sum over distinct ids weighted by counts``, so the
    (rows x candidates) products shrink to (distinct ids x candidates). ``anchor_rows`` are the
    anchor embeddings of the distinct ids, ``targets`` their rows in ``candidates``.

    ``factors``: ``(assignment, basis)`` with ``candidates == assignment @ basis`` (n x k times
    k x d); when k < d the logits are computed from k-wide operands, the same values to rounding."""
    anchor = normalize_rows(anchor_rows) / tau  # 1/tau folded into the (rows x d) side
    if factors is not None and factors[0].shape[1] < candidates.shape[1]:
        assignment, basis = factors
        norms = torch.linalg.vector_norm(candidates, dim=1, keepdim=True).clamp_min(NORM_EPS)
        anchor, candidates = anchor @ basis.T, assignment / norms  # <a, h Y / |c|> == <a Y^T, h / |c|>
    else:
        candidates = normalize_rows(candidates)
    if 2.0 / tau <= _FAST_NCE_MAX_RANGE:
        with_grads = torch.is_grad_enabled() and (anchor.requires_grad or candidates.requires_grad)
        return _FusedSoftmaxNCE.apply(anchor, candidates, targets, weights, with_grads)
    positive_logit = (anchor * candidates[targets]).sum(dim=1)
    return (weights * (torch.logsumexp(anchor @ candidates.T, dim=1) - positive_logit)).sum()
