"""MMGCN: per-modality GCNs with mean aggregation, and upstream's frozen embeddings by default."""

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


def layer_parameters(modality: str, n_layers: int, projected: bool) -> set[str]:
    names = {f"gcn.{modality}.conv.{layer}" for layer in range(n_layers)}
    for kind in ("linear", "gate"):
        names |= {
            f"gcn.{modality}.{kind}.{layer}.{p}" for layer in range(n_layers) for p in ("weight", "bias")
        }
    if projected:
        names |= {f"gcn.{modality}.project.weight", f"gcn.{modality}.project.bias"}
    return names


def dense_forward(model, data) -> torch.Tensor:
    """The forward pass re-derived with a dense row-normalised adjacency."""
    R = torch.tensor(data.train_matrix.toarray())
    n_u, n_i = R.shape
    A = torch.cat([torch.cat([torch.zeros(n_u, n_u), R], 1), torch.cat([R.T, torch.zeros(n_i, n_i)], 1)])
    A = A / A.sum(1, keepdim=True).clamp(min=1)
    reps = []
    for m in model.modalities:
        gcn = model.gcn[m]
        features = torch.from_numpy(data.features[m])
        x = F.normalize(torch.cat([gcn.preference, gcn.project(features) if gcn.project else features]))
        for conv, linear, gate in zip(gcn.conv, gcn.linear, gcn.gate):
            h = F.leaky_relu(A @ (x @ conv))  # upstream: transform, then average the neighbours
            x_hat = F.leaky_relu(x @ linear.weight.T + linear.bias) + model.id_embedding
            x = F.leaky_relu(gate(torch.cat([h, x_hat], 1)) if model.config.concat else gate(h) + x_hat)
        reps.append(x)
    return sum(reps) / len(reps)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("mmgcn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    # upstream's ID embeddings and preferences are plain tensors: buffers here, not parameters
    assert reached == layer_parameters("image", 3, True) | layer_parameters("text", 3, False)
    assert not missed


def test_trainable_embeddings_fix_makes_them_parameters(tiny_data):
    model = make_model("mmgcn", tiny_data, trainable_embeddings=True)
    reached, missed = gradient_report(model, tiny_data)
    assert {"id_embedding", "gcn.image.preference", "gcn.text.preference"} <= reached and not missed
    frozen = make_model("mmgcn", tiny_data)
    assert "id_embedding" in dict(frozen.named_buffers())


@pytest.mark.parametrize("concat", [True, False])
def test_forward_equals_dense_rederivation(tiny_data, concat):
    model = make_model("mmgcn", tiny_data, concat=concat, n_layers=2)
    with torch.no_grad():
        emb = model()
        expected = dense_forward(model, tiny_data)
    torch.testing.assert_close(torch.cat([emb.users, emb.items]), expected, rtol=1e-4, atol=1e-5)


def test_layer_shapes_follow_upstream(tiny_data):
    model = make_model("mmgcn", tiny_data)
    image, text = model.gcn["image"], model.gcn["text"]
    assert image.preference.shape == (tiny_data.n_users, 256)  # projected to latent_dim
    assert text.preference.shape == (tiny_data.n_users, 24)  # raw text width
    assert [c.shape for c in text.conv] == [(24, 24), (64, 64), (64, 64)]
    assert [g.in_features for g in image.gate] == [256 + 64, 128, 128]  # concatenation
    additive = make_model("mmgcn", tiny_data, concat=False)
    assert [g.in_features for g in additive.gcn["image"].gate] == [256, 64, 64]


def test_loss_is_bpr_plus_upstream_regulariser(tiny_data):
    model = make_model("mmgcn", tiny_data, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    emb = model()
    u, p, n = emb.users[users], emb.items[pos], emb.items[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    ids = model.id_embedding
    items = torch.cat([pos, neg]) + tiny_data.n_users
    reg = ids[users].pow(2).mean() + ids[items].pow(2).mean() + model.gcn["image"].preference.pow(2).mean()
    torch.testing.assert_close(model.loss(users, pos, neg), bpr + 0.5 * reg)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("mmgcn", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data)


def test_spec_and_validation(tiny_data):
    spec = get_model_spec("mmgcn")
    assert spec.label == "MMGCN" and spec.multimodal
    config = resolve_model_config(spec, "sports")
    assert (config.embedding_dim, config.n_layers, config.latent_dim, config.reg_weight) == (64, 3, 256, 1e-5)
    assert config.concat and not config.trainable_embeddings
    assert spec.tuning_grid == {"reg_weight": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1]}
    for bad in ({"n_layers": 0}, {"latent_dim": 0}, {"reg_weight": -1.0}):
        with pytest.raises(ConfigError, match="MMGCN"):
            resolve_model_config(spec, "baby", overrides=bad)
    with pytest.raises(ConfigError, match="audio"):
        make_model("mmgcn", tiny_data, projected_modalities=("audio",))


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "mmgcn", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
