"""LGMRec's training loss and gradients against an independent re-derivation of the spec.

``shared/spec/lgmrec-model.md`` restated with dense float64 tensors (nothing of the model is
called but its parameters), with the model's random draws fixed: its ``gumbel_noise`` and
``dropout`` are replaced by versions that draw from a seeded generator and record (input, draw). The re-derivation looks each draw up by the VALUE of its own input (the
logits it computed, the assignment it is about to drop out), so it depends neither on the order in
which the model draws nor on its internal names; a draw it cannot find means the model fed
something else into the noise than the spec says.

The loss weights are raised well above the paper's (1e-4, 1e-6) so that every term moves the loss
and the gradients far beyond the tolerance: halving HCL, squaring the regulariser or miswiring
the hyperedge-bug branch each fails these tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgmrec.models import lgmrec as lgmrec_module
from lgmrec.models.lgmrec import LGMRecConfig, build

TAU = 0.2
CONFIG = dict(
    n_ui_layers=2, n_mm_layers=2, n_hyper_layer=2, hyper_num=4, keep_rate=0.6, alpha=0.7,
    cl_weight=0.01, reg_weight=0.1, tau=TAU,
)
BATCH = 300  # > n_users of tiny_data: the batch repeats users and items, as real batches do


class FixedDraws:
    """Seeded stand-ins for Gumbel noise and dropout masks that remember what they drew on what."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.gumbel: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits, noise)
        self.dropout: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, scaled keep mask)

    def gumbel_noise(self, likes):
        return [self._gumbel_noise(logits) for logits in likes]

    def _gumbel_noise(self, logits):
        uniform = torch.rand(logits.shape, generator=self.generator, dtype=torch.float64).clamp_min(1e-12)
        noise = -torch.log(-torch.log(uniform))  # standard Gumbel
        self.gumbel.append((logits.detach().double().clone(), noise))
        return noise.to(logits.dtype)

    def patch(self, monkeypatch):
        monkeypatch.setattr(lgmrec_module, "gumbel_noise", self.gumbel_noise)
        monkeypatch.setattr(lgmrec_module, "dropout", self.dropout_fn)

    def dropout_fn(self, tensors, keep_rate, training):
        return [self._dropout(x, keep_rate, training) for x in tensors]

    def _dropout(self, input, keep_rate, training):
        p = 1.0 - keep_rate
        if not training or p == 0:
            return input
        keep = (torch.rand(input.shape, generator=self.generator, dtype=torch.float64) >= p).double() / (1 - p)
        self.dropout.append((input.detach().double().clone(), keep))
        return input * keep.to(input.dtype)

    @staticmethod
    def _lookup(records, value: torch.Tensor, what: str) -> torch.Tensor:
        value = value.detach()
        close = [draw for seen, draw in records
                 if seen.shape == value.shape and torch.allclose(seen, value, rtol=1e-4, atol=1e-5)]
        assert len(close) == 1, f"the model drew {len(close)} {what} on this input (expected exactly 1)"
        return close[0]

    def noise_for(self, logits):
        return self._lookup(self.gumbel, logits, "Gumbel noise")

    def mask_for(self, assignment):
        return self._lookup(self.dropout, assignment, "dropout masks")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def spec_loss(params: dict[str, torch.Tensor], data, cfg: LGMRecConfig, draws: FixedDraws, users, pos, neg):
    """Sections 1-5 of the spec, dense, float64. ``params`` are leaves named as the model's."""
    R = torch.tensor(data.train_matrix.toarray(), dtype=torch.float64)
    n_u, n_i = R.shape
    adj = torch.zeros(n_u + n_i, n_u + n_i, dtype=torch.float64)
    adj[:n_u, n_u:], adj[n_u:, :n_u] = R, R.T
    deg = adj.sum(1) + 1e-7
    ahat = adj / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    modalities = list(data.modalities)

    # 1. CGE: mean of L + 1 LightGCN layers
    layer = torch.cat([params["user_embedding"], params["item_embedding"]])
    layers = [layer]
    for _ in range(cfg.n_ui_layers):
        layer = ahat @ layer
        layers.append(layer)
    e_cge = sum(layers) / len(layers)

    # 2. MGE per modality: last of K layers from [mean of the user's items; item features]
    e_lge = e_cge
    for m in modalities:
        f_i = torch.tensor(data.features[m], dtype=torch.float64) @ params[f"projection.{m}"]
        g = torch.cat([(R @ f_i) / (R.sum(1, keepdim=True) + 1e-7), f_i])
        for _ in range(cfg.n_mm_layers):
            g = ahat @ g
        e_lge = e_lge + normalize(g)

    # 3. GHE: Gumbel-softmax assignments (user logits summed BEFORE the softmax), dropout
    z_items, z_users, h_items, h_users = {}, {}, {}, {}
    for m in modalities:
        z_items[m] = torch.tensor(data.features[m], dtype=torch.float64) @ params[f"hyperedges.{m}"]
        z_users[m] = R @ z_items[m]
        h_items[m] = torch.softmax((z_items[m] + draws.noise_for(z_items[m])) / cfg.tau, dim=1)
        h_users[m] = torch.softmax((z_users[m] + draws.noise_for(z_users[m])) / cfg.tau, dim=1)
    if cfg.hyperedge_bug:  # the first branch gets the second's user assignment, the second raw logits
        first, second = modalities
        h_users[first], h_users[second] = h_users[second], z_users[second]
    hyper = {}
    for m in modalities:
        hi = h_items[m] * draws.mask_for(h_items[m])
        hu = h_users[m] * draws.mask_for(h_users[m])
        y = e_cge[n_u:]
        for _ in range(cfg.n_hyper_layer):
            lat = hi.T @ y
            y, u = hi @ lat, hu @ lat
        hyper[m] = (u, y)
    e_ghe = sum(torch.cat([u, y]) for u, y in hyper.values())

    # 4. fusion
    e = e_lge + cfg.alpha * normalize(e_ghe)
    e_u, e_i = e[:n_u], e[n_u:]

    # 5. loss, row by row as the spec writes it
    u, p, n = e_u[users], e_i[pos], e_i[neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = (torch.sqrt((u ** 2).sum()) + torch.sqrt((p ** 2).sum()) + torch.sqrt((n ** 2).sum())) / len(users)

    def nce(a, b, all_):
        cos = lambda x, y: normalize(x) @ normalize(y).T  # noqa: E731
        positive = torch.exp((normalize(a) * normalize(b)).sum(1) / cfg.tau)
        total = torch.exp(cos(a, all_) / cfg.tau).sum(1)
        return -torch.log(positive / total).sum()

    (uv, iv), (ut, it) = hyper[modalities[0]], hyper[modalities[1]]
    hcl = nce(uv[users], ut[users], ut) + nce(iv[pos], it[pos], it)
    return bpr + cfg.reg_weight * reg + cfg.cl_weight * hcl, {"bpr": bpr, "reg": reg, "hcl": hcl}


def batch(data, seed: int):
    g = torch.Generator().manual_seed(seed)
    train = torch.from_numpy(data.splits["train"])
    rows = train[torch.randint(len(train), (BATCH,), generator=g)]
    return rows[:, 0], rows[:, 1], torch.randint(data.n_items, (BATCH,), generator=g)


@pytest.mark.parametrize("hyperedge_bug", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n_mm_layers", [2, 1, 0])  # the loss cuts the last MGE layer to its rows
def test_loss_and_gradients_match_the_spec(tiny_data, monkeypatch, hyperedge_bug, seed, n_mm_layers):
    cfg = dataclasses.replace(LGMRecConfig(), **{**CONFIG, "n_mm_layers": n_mm_layers}, hyperedge_bug=hyperedge_bug)
    torch.manual_seed(seed)
    model = build(tiny_data, cfg)
    model.train()
    users, pos, neg = batch(tiny_data, seed)
    assert len(torch.unique(users)) < BATCH and len(torch.unique(pos)) < BATCH  # repeated ids

    draws = FixedDraws(seed=100 + seed)
    draws.patch(monkeypatch)
    loss = model.loss(users, pos, neg)
    loss.backward()
    monkeypatch.undo()
    assert len(draws.gumbel) == 4 and len(draws.dropout) == 4  # 2 modalities x (items, users)

    leaves = {name: p.detach().double().requires_grad_() for name, p in model.named_parameters()}
    expected, terms = spec_loss(leaves, tiny_data, cfg, draws, users, pos, neg)
    grads = torch.autograd.grad(expected, list(leaves.values()))

    # every term counts far beyond the tolerance (so a wrong term cannot hide in it)
    assert cfg.cl_weight * terms["hcl"] > 1e3 * 1e-5 * expected and cfg.reg_weight * terms["reg"] > 1e-2
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    for (name, param), grad in zip(model.named_parameters(), grads):
        scale = grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(param.grad.double(), grad, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_reference_uses_the_draws_the_model_made(tiny_data, monkeypatch):
    """Shifting a recorded Gumbel draw by a constant leaves the reference as it was (softmax is
    shift-invariant); changing it otherwise changes the assignment, whose dropout mask the model
    then never drew: the look-up fails loudly instead of matching by accident."""
    cfg = dataclasses.replace(LGMRecConfig(), **CONFIG)
    torch.manual_seed(0)
    model = build(tiny_data, cfg)
    model.train()
    users, pos, neg = batch(tiny_data, 0)
    draws = FixedDraws(seed=7)
    draws.patch(monkeypatch)
    loss = model.loss(users, pos, neg).item()
    monkeypatch.undo()
    leaves = {name: p.detach().double() for name, p in model.named_parameters()}
    assert np.isclose(spec_loss(leaves, tiny_data, cfg, draws, users, pos, neg)[0].item(), loss, rtol=1e-5)
    draws.gumbel[0][1].add_(1.0)  # shifts one matrix of logits uniformly: softmax-invariant
    assert np.isclose(spec_loss(leaves, tiny_data, cfg, draws, users, pos, neg)[0].item(), loss, rtol=1e-5)
    draws.gumbel[0][1][:, 0] += 3.0
    with pytest.raises(AssertionError, match="drew 0 dropout masks"):
        spec_loss(leaves, tiny_data, cfg, draws, users, pos, neg)
