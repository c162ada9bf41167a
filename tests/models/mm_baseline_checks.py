"""Checks shared by the tests of the multimodal baselines (LATTICE, BM3, MICRO, FREEDOM, MGCN).

Plain functions imported by ``test_<model>.py`` (``conftest.py`` points the kNN cache at a
temporary folder, so tests never write to the user's cache).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from lgmrec.config import TrainConfig
from lgmrec.evaluation import evaluate
from lgmrec.models import get_model_spec
from lgmrec.synthetic import generate
from lgmrec.training import train_model

TRAIN_SEED = 7


@functools.lru_cache(maxsize=1)
def small_dataset():
    """The lead's CI-sized synthetic Baby (2,000 users, ~1,000 items), generated once per session."""
    return generate("synth-baby-small", seed=0)


def make_model(name: str, data, seed: int = 0, **overrides):
    spec = get_model_spec(name)
    torch.manual_seed(seed)
    return spec.build(data, dataclasses.replace(spec.config_class(), **overrides))


def training_batch(data, size: int = 64, seed: int = 0):
    """Users, positives from their training items, and random negatives."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data.splits["train"]), size=size, replace=False)
    pairs = torch.from_numpy(data.splits["train"][rows])
    negatives = torch.from_numpy(rng.integers(data.n_items, size=size))
    return pairs[:, 0], pairs[:, 1], negatives


def dense_bipartite(data) -> torch.Tensor:
    """``[[0, R], [R^T, 0]]`` of the training graph as a dense tensor (users, then items)."""
    R = torch.tensor(data.train_matrix.toarray(), dtype=torch.float32)
    n_u, n_i = R.shape
    adjacency = torch.zeros(n_u + n_i, n_u + n_i)
    adjacency[:n_u, n_u:], adjacency[n_u:, :n_u] = R, R.T
    return adjacency


def dense_self_loop_walk(data) -> torch.Tensor:
    """LATTICE's and MICRO's ``D^-1 (A + I)``, dense."""
    adjacency = dense_bipartite(data) + torch.eye(data.n_users + data.n_items)
    return adjacency / adjacency.sum(1, keepdim=True)


def dense_lightgcn(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Upstream's LightGCN: the mean of ``[E, A E, ..., A^L E]``."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(adjacency @ layers[-1])
    return torch.stack(layers, dim=1).mean(dim=1)


def upstream_bpr_with_half_l2(u, p, n, reg_weight: float, divisor: int) -> torch.Tensor:
    """LATTICE/MICRO/MGCN upstream ``bpr_loss``: mean -logsigmoid plus
    ``reg_weight * (|u|^2/2 + |p|^2/2 + |n|^2/2) / batch_size`` (the configured batch size)."""
    mf = -torch.nn.functional.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    regularizer = (0.5 * (u ** 2).sum() + 0.5 * (p ** 2).sum() + 0.5 * (n ** 2).sum()) / divisor
    return mf + reg_weight * regularizer


def after_one_step(name: str, data, representation, **overrides):
    """A model after one Adam step (lr 0.05) on a training batch, in eval mode, and
    ``representation(model)`` as it was after that batch's forward, before the step."""
    model = make_model(name, data, **overrides)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    users, pos, neg = training_batch(data)
    model.train()
    model.on_epoch_start(1)
    loss = model.loss(users, pos, neg)
    with torch.no_grad():
        before_step = representation(model)
    loss.backward()
    optimizer.step()
    model.eval()
    return model, before_step


def check_shapes(model, data, dim: int = 64) -> torch.Tensor:
    """forward / loss / score shapes; returns the (finite, scalar) loss."""
    users, pos, neg = training_batch(data)
    model.train()
    loss = model.loss(users, pos, neg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        emb = model()
        assert emb.users.shape == (data.n_users, dim) and emb.items.shape == (data.n_items, dim)
        scores = model.score(torch.tensor([0, 3, 5]), emb)
    assert scores.shape == (3, data.n_items) and torch.isfinite(scores).all()
    model.train()
    return loss


def gradient_report(model, data) -> tuple[set[str], set[str]]:
    """After one backward: (parameters with a non-zero gradient, parameters without)."""
    users, pos, neg = training_batch(data)
    model.train()
    model.zero_grad(set_to_none=True)
    model.loss(users, pos, neg).backward()
    reached, missed = set(), set()
    for name, p in model.named_parameters():
        (reached if p.grad is not None and p.grad.abs().sum() > 0 else missed).add(name)
    return reached, missed


def untrained_and_trained_recall(
    name: str, data, epochs: int, learning_rate: float = 5e-3, batch_size: int = 2048, **overrides
):
    """Validation Recall@20 of the freshly built model, and the best one after a short training."""
    spec = get_model_spec(name)
    config = dataclasses.replace(spec.config_class(), **overrides)
    torch.manual_seed(TRAIN_SEED)
    untrained = evaluate(spec.build(data, config), data, "valid").means["recall@20"]
    train_config = TrainConfig(
        max_epochs=epochs, patience=epochs, learning_rate=learning_rate, batch_size=batch_size, device="cpu"
    )
    result = train_model(data, name, model_config=config, train_config=train_config, seed=TRAIN_SEED)
    assert result.status == "ok", result.error
    return untrained, result.valid["recall@20"]


def same_seed_same_run(name: str, data, **overrides) -> bool:
    """Two short trainings with one seed give identical histories and test metrics."""
    spec = get_model_spec(name)
    config = dataclasses.replace(spec.config_class(), **overrides)
    train_config = TrainConfig(max_epochs=2, batch_size=512, device="cpu")
    first, second = (train_model(data, name, model_config=config, train_config=train_config, seed=3)
                     for _ in range(2))
    return first.status == second.status == "ok" and first.history == second.history and first.test == second.test
