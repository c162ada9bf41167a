"""BPR-MF: ID tables scored by dot product; loss = BPR + reg_weight x MMRec's EmbLoss."""

import dataclasses

import pytest
import torch

from lgmrec.config import field_names
from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    training_batch,
    untrained_and_trained_recall,
)

REG_WEIGHT = 0.5


def fixed_model(data, seed: int = 4):
    """BPR with fixed (seeded, not Xavier-small) weights, so every term of the loss is sizeable."""
    model = make_model("bpr", data, reg_weight=REG_WEIGHT)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model


def mmrec_loss(model, users, pos, neg, squared: bool = False):
    """MMRec's BPR.calculate_loss by hand (float64): ``BPRLoss + reg_weight * EmbLoss`` with
    ``EmbLoss = (|u|_F + |p|_F + |n|_F) / batch``; ``squared=True`` gives the WRONG squared norms."""
    users_table = model.user_embedding.detach().double().requires_grad_()
    items_table = model.item_embedding.detach().double().requires_grad_()
    u, p, n = users_table[users], items_table[pos], items_table[neg]
    bpr = -torch.log(1e-10 + torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    norms = [t.norm(p=2) ** (2 if squared else 1) for t in (u, p, n)]
    return bpr + REG_WEIGHT * sum(norms) / n.shape[0], (users_table, items_table)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("bpr", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding"} and not missed
    with torch.no_grad():
        emb = model()
        torch.testing.assert_close(model.score(torch.tensor([1, 2]), emb), emb.users[[1, 2]] @ emb.items.T)


def test_loss_equals_mmrec_formula_and_a_squared_regulariser_would_fail(tiny_data):
    model = fixed_model(tiny_data)
    users, pos, neg = training_batch(tiny_data, size=32, seed=1)
    expected, _ = mmrec_loss(model, users, pos, neg)
    squared, _ = mmrec_loss(model, users, pos, neg, squared=True)
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    # the test tells the two regularisers apart: their values differ by far more than its tolerance
    assert abs(squared.item() - expected.item()) > 100 * 1e-5 * abs(expected.item())


def test_gradients_equal_autograd_of_the_rederivation(tiny_data):
    model = fixed_model(tiny_data, seed=8)
    users, pos, neg = training_batch(tiny_data, size=32, seed=2)
    expected, (users_table, items_table) = mmrec_loss(model, users, pos, neg)
    expected.backward()
    model.loss(users, pos, neg).backward()
    torch.testing.assert_close(model.user_embedding.grad.double(), users_table.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(model.item_embedding.grad.double(), items_table.grad, rtol=1e-4, atol=1e-7)


def test_initialisation_is_xavier_normal(tiny_data):
    model = make_model("bpr", tiny_data, embedding_dim=64)
    table = model.user_embedding.detach()
    expected_std = (2.0 / (tiny_data.n_users + 64)) ** 0.5
    assert abs(table.std().item() / expected_std - 1) < 0.05
    # MMRec's BPR is Xavier-NORMAL: values beyond the Xavier-uniform bound sqrt(3) std occur
    assert table.abs().max().item() > 3 ** 0.5 * expected_std


def test_spec_grids_and_validation():
    spec = get_model_spec("bpr")
    assert spec.label == "BPR" and not spec.multimodal
    assert spec.reference == "MMRec src/models/bpr.py + src/configs/model/BPR.yaml"
    assert spec.tuning_grid == {"reg_weight": [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]}
    assert set(spec.reduced_grid["reg_weight"]) <= set(spec.tuning_grid["reg_weight"])
    assert len(spec.reduced_grid["reg_weight"]) == 3
    assert dataclasses.asdict(spec.config_class())["reg_weight"] in spec.tuning_grid["reg_weight"]
    assert set(spec.deviations) <= field_names(spec.config_class)
    for bad in ({"reg_weight": -1.0}, {"embedding_dim": 0}):
        with pytest.raises(ConfigError, match="BPR"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("bpr", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall("bpr", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256)
    assert trained > untrained + 0.1, (untrained, trained)
