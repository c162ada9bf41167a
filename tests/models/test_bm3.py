"""BM3: bootstrapped targets, predictor scores, no negatives, MMRec's EmbLoss."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.bm3 import row_dropout

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    small_dataset,
    training_batch,
    untrained_and_trained_recall,
)


def upstream_loss_without_dropout(model, data, users, items) -> torch.Tensor:
    """calculate_loss of MMRec's BM3 with dropout 0, whole tables projected then indexed."""
    cfg = model.config
    R = torch.tensor(data.train_matrix.toarray())
    n_u = R.shape[0]
    adjacency = torch.zeros(n_u + R.shape[1], n_u + R.shape[1])
    adjacency[:n_u, n_u:], adjacency[n_u:, :n_u] = R, R.T
    d = (adjacency.sum(1) + 1e-7).pow(-0.5)
    ahat = d[:, None] * adjacency * d[None, :]
    layers = [torch.cat([model.user_embedding, model.item_embedding])]
    for _ in range(cfg.n_layers):
        layers.append(ahat @ layers[-1])
    mean = torch.stack(layers).mean(0)
    u_all, i_all = mean[:n_u], mean[n_u:] + model.item_embedding
    cos = lambda a, b: 1 - F.cosine_similarity(a, b.detach(), dim=-1).mean()
    pred = model.predictor
    loss = cos(pred(u_all)[users], i_all[items]) + cos(pred(i_all)[items], u_all[users])
    cl = 0
    for m in model.modalities:
        f = model.projection[m](model.features[m])
        cl = cl + cos(pred(f)[items], i_all[items]) + cos(pred(f)[items], f[items])
    emb_loss = (torch.norm(u_all, p=2) + torch.norm(i_all, p=2)) / i_all.shape[0]
    return loss + cfg.reg_weight * emb_loss + cfg.cl_weight * cl


@pytest.mark.parametrize("n_layers", [1, 2])
def test_loss_equals_upstream_without_dropout(tiny_data, n_layers):
    model = make_model("bm3", tiny_data, dropout=0.0, n_layers=n_layers, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    users, pos = torch.cat([users, users[:8], users[:4]]), torch.cat([pos, pos[40:48], pos[:4]])  # repeats
    neg = torch.zeros_like(users)
    expected = upstream_loss_without_dropout(model, tiny_data, users, pos)
    torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)


def test_a_repeated_row_has_one_dropout_mask(tiny_data):
    # upstream drops out whole tables, then picks the batch's rows: a pair repeated k times
    # contributes k identical rows, so the loss equals that of the pair alone (same draws)
    model = make_model("bm3", tiny_data, dropout=0.5)
    users, pos, neg = training_batch(tiny_data, size=1)
    torch.manual_seed(5)
    once = model.loss(users, pos, neg)
    torch.manual_seed(5)
    repeated = model.loss(users.repeat(50), pos.repeat(50), neg.repeat(50))
    torch.testing.assert_close(repeated, once)
    torch.manual_seed(6)
    assert not torch.allclose(model.loss(users, pos, neg), once)  # the masks are random


def test_row_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    out = row_dropout(torch.ones(400, 500), 0.3)
    values = torch.unique(out)
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / 0.7)
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01
    assert row_dropout(torch.ones(3, 4), 0.0).equal(torch.ones(3, 4))


def test_shapes_gradients_and_negatives_are_ignored(tiny_data):
    model = make_model("bm3", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert not missed and reached == {
        "user_embedding", "item_embedding", "predictor.weight", "predictor.bias", "features.image",
        "features.text", "projection.image.weight", "projection.image.bias", "projection.text.weight",
        "projection.text.bias",
    }
    users, pos, neg = training_batch(tiny_data)
    torch.manual_seed(3)
    first = model.loss(users, pos, neg)
    torch.manual_seed(3)
    assert torch.equal(first, model.loss(users, pos, neg.flip(0)))  # same dropout, other negatives
    assert not torch.equal(first, model.loss(users, pos, neg))  # the target dropout is random


def test_scores_use_the_predictor(tiny_data):
    model = make_model("bm3", tiny_data)
    model.eval()
    with torch.no_grad():
        emb = model()
        users, items = model.online()
        expected = model.predictor(users[:4]) @ model.predictor(items).T
        torch.testing.assert_close(model.score(torch.arange(4), emb), expected)


@pytest.mark.parametrize("modalities", [("image",), ("text",)])
def test_one_modality(tiny_data, modalities):
    model = make_model("bm3", tiny_data, modalities=modalities)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert not missed and f"features.{modalities[0]}" in reached and len(reached) == 7


def test_presets_and_validation():
    spec = get_model_spec("bm3")
    assert spec.label == "BM3" and spec.default_preset == "authors-best"
    assert resolve_model_config(spec, "sports").reg_weight == 0.01
    assert resolve_model_config(spec, "baby").reg_weight == 0.1
    assert resolve_model_config(spec, "clothing").reg_weight == 0.1
    assert spec.tuning_grid == {"n_layers": [1, 2], "reg_weight": [0.1, 0.01], "dropout": [0.3, 0.5]}
    assert spec.reduced_grid == {"reg_weight": [0.1, 0.01], "dropout": [0.3, 0.5]}
    assert spec.train_defaults == {} and spec.reference.startswith("MMRec src/models/bm3.py")
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(spec.config_class)}
    for family in ("baby", "sports", "clothing"):  # presets and defaults are grid points
        config = resolve_model_config(spec, family)
        assert all(getattr(config, name) in values for name, values in spec.tuning_grid.items())
    assert all(getattr(spec.config_class(), name) in values for name, values in spec.tuning_grid.items())
    with pytest.raises(ConfigError, match="BM3"):
        resolve_model_config(spec, "baby", overrides={"dropout": 1.0})


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("bm3", tiny_data)


def test_training_improves_validation_recall():
    untrained, trained = untrained_and_trained_recall("bm3", small_dataset(), epochs=3, batch_size=256)
    assert trained > untrained + 0.05, (untrained, trained)
