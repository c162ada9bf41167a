"""VBPR: ID factors plus a linear projection of the concatenated content features."""

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
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


def test_loss_is_bpr_plus_mmrec_emb_loss(tiny_data):
    model = make_model("vbpr", tiny_data, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    emb = model()
    u, p, n = emb.users[users], emb.items[pos], emb.items[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = (u.norm() + p.norm() + n.norm()) / len(users)
    torch.testing.assert_close(model.loss(users, pos, neg), bpr + 0.5 * reg)


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


def test_spec_and_validation():
    spec = get_model_spec("vbpr")
    assert spec.label == "VBPR" and spec.multimodal and spec.default_preset == "mmrec-default"
    config = resolve_model_config(spec, "baby")
    assert (config.embedding_dim, config.reg_weight) == (64, 1e-4)
    assert spec.tuning_grid == {"reg_weight": [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]}
    for bad in ({"reg_weight": -1.0}, {"embedding_dim": 0}):
        with pytest.raises(ConfigError, match="VBPR"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_unknown_modality_is_a_config_error(tiny_data):
    with pytest.raises(ConfigError, match="audio"):
        make_model("vbpr", tiny_data, modalities=("audio",))


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "vbpr", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
