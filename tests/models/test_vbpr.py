"""VBPR: ID factors plus a linear projection of the concatenated content features."""

import dataclasses

import pytest
import torch

from lgmrec.config import field_names
from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.vbpr import PROJECT_ALL_SHARE

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    training_batch,
    untrained_and_trained_recall,
)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("vbpr", tiny_data)
    check_shapes(model, tiny_data, dim=128)  # users 2d; items d ID + d content
    reached, missed = gradient_report(model, tiny_data)
    # the projection bias cancels in the BPR difference but is reached through the EmbLoss term
    assert reached == {"user_embedding", "item_embedding", "projection.weight", "projection.bias"}
    assert not missed


def test_scores_are_id_term_plus_content_term(tiny_data):
    model = make_model("vbpr", tiny_data)
    with torch.no_grad():
        torch.nn.init.normal_(model.projection.bias)  # a non-zero bias must enter the content term
        concatenated = torch.cat([torch.from_numpy(tiny_data.features[m]) for m in tiny_data.modalities], 1)
        content = concatenated @ model.projection.weight.T + model.projection.bias
        gamma_u, theta_u = model.user_embedding.split(64, dim=1)
        expected = gamma_u @ model.item_embedding.T + theta_u @ content.T
        users = torch.arange(tiny_data.n_users)
        torch.testing.assert_close(model.score(users, model()), expected, rtol=1e-4, atol=1e-5)


def mmrec_loss(model, data, users, pos, neg, reg_weight):
    """MMRec's VBPR.calculate_loss by hand, float64, on dense tensors; returns (loss, its parts, leaves)."""
    leaves = {name: p.detach().double().requires_grad_() for name, p in model.named_parameters()}
    raw = torch.cat([torch.from_numpy(data.features[m]).double() for m in data.modalities], 1)
    items = torch.cat([leaves["item_embedding"], raw @ leaves["projection.weight"].T + leaves["projection.bias"]], 1)
    u, p, n = leaves["user_embedding"][users], items[pos], items[neg]
    gap = (u * p).sum(1) - (u * n).sum(1)
    bpr = -torch.log(1e-10 + torch.sigmoid(gap)).mean()  # BPRLoss
    norms = (u.norm(p=2), p.norm(p=2), n.norm(p=2))  # EmbLoss: plain Frobenius norms / batch size
    return bpr + reg_weight * sum(norms) / n.shape[0], (bpr, norms), leaves


@pytest.mark.parametrize("size", [24, 400])  # few distinct items: projected one by one; most: all at once
def test_loss_and_gradients_equal_mmrec_formula(tiny_data, size):
    reg_weight = 0.5
    model = make_model("vbpr", tiny_data, reg_weight=reg_weight)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    users, pos, neg = training_batch(tiny_data, size=size, seed=3)
    distinct = torch.unique(torch.cat([pos, neg])).numel()
    assert (distinct >= PROJECT_ALL_SHARE * tiny_data.n_items) == (size == 400)
    expected, (bpr, norms), leaves = mmrec_loss(model, tiny_data, users, pos, neg, reg_weight)
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    # squared norms, or norms not divided by the batch size, would fail this test
    with torch.no_grad():
        for wrong in (bpr + reg_weight * sum(x ** 2 for x in norms) / size, bpr + reg_weight * sum(norms)):
            assert abs(wrong.item() - expected.item()) > 1e-4 * abs(expected.item())
    expected.backward()
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad.double(), leaves[name].grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("vbpr", tiny_data, modalities=(modality,))
    assert model.projection.in_features == tiny_data.features[modality].shape[1]
    check_shapes(model, tiny_data, dim=128)


def test_features_are_frozen_buffers(tiny_data):
    model = make_model("vbpr", tiny_data)
    assert not any(n.startswith("features") for n, _ in model.named_parameters())
    assert model.trainable_parameter_count() == (
        tiny_data.n_users * 128 + tiny_data.n_items * 64 + (48 + 24) * 64 + 64
    )


def test_spec_grids_and_validation():
    spec = get_model_spec("vbpr")
    assert spec.label == "VBPR" and spec.multimodal and spec.default_preset is None
    assert spec.reference == "MMRec src/models/vbpr.py + src/configs/model/VBPR.yaml"
    config = resolve_model_config(spec, "baby")
    assert (config.embedding_dim, config.reg_weight) == (64, 1e-3)
    assert spec.tuning_grid == {"reg_weight": [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]}
    assert spec.reduced_grid == {"reg_weight": [0.1, 1e-3, 1e-5]}
    assert set(spec.reduced_grid["reg_weight"]) <= set(spec.tuning_grid["reg_weight"])
    assert dataclasses.asdict(spec.config_class())["reg_weight"] in spec.reduced_grid["reg_weight"]
    assert set(spec.deviations) <= field_names(spec.config_class) and not spec.train_defaults
    for bad in ({"reg_weight": -1.0}, {"embedding_dim": 0}):
        with pytest.raises(ConfigError, match="VBPR"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_unknown_modality_is_a_config_error(tiny_data):
    with pytest.raises(ConfigError, match="audio"):
        make_model("vbpr", tiny_data, modalities=("audio",))


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("vbpr", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "vbpr", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
