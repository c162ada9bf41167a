"""Shared model pieces that replace a torch call for speed: the same bits as the call they replace."""

from __future__ import annotations

import pytest
import torch

from lgmrec.models.base import Distinct, distinct_ids, frobenius_norm


@pytest.mark.parametrize("shape", [(2048, 64), (327, 64), (5, 3), (1,)])
def test_frobenius_norm_gives_the_bits_of_tensor_norm_and_its_gradient(shape):
    generator = torch.Generator().manual_seed(len(shape) * shape[0])
    for scale in (1e-30, 1e-3, 1.0, 1e3, 1e30, 0.0):
        x = (torch.randn(*shape, generator=generator) * scale).requires_grad_()
        weight = torch.randn((), generator=generator)
        (weight * x.norm()).backward()
        expected, x.grad = x.grad, None
        (weight * frobenius_norm(x)).backward()
        assert torch.equal(frobenius_norm(x), x.norm())
        assert torch.equal(x.grad, expected) or (scale == 0.0 and torch.equal(x.grad.isnan(), expected.isnan()))
    with torch.no_grad():
        assert torch.equal(frobenius_norm(x), x.norm())


@pytest.mark.parametrize("n_ids, size", [(0, 5), (1, 1), (6144, 1053), (50, 10_000)])
def test_distinct_ids_are_torch_unique(n_ids, size):
    """Counting gives torch.unique's sorted values, inverse and counts, the same tensors."""
    ids = torch.randint(size, (n_ids,), generator=torch.Generator().manual_seed(n_ids))
    expected = torch.unique(ids, return_inverse=True, return_counts=True)
    for ours in (distinct_ids(ids, size), (lambda d: (d.values, d.inverse, d.counts))(Distinct(ids, size))):
        for a, e in zip(ours, expected, strict=True):
            assert a.dtype == e.dtype and torch.equal(a, e)
