"""MMGCN: per-modality GCNs with mean aggregation, and upstream's frozen embeddings by default."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.config import TrainConfig, field_names
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


def mmrec_loss(model, data, users, pos, neg, representation):
    """MMRec's MMGCN.calculate_loss by hand: interleaved (user, pos), (user, neg) rows, the score
    pair times [1, -1], -mean(log(sigmoid)), and the mean squared ID rows plus image preferences."""
    n_u = data.n_users
    user_tensor = users.repeat_interleave(2)
    item_tensor = torch.stack((pos + n_u, neg + n_u)).t().contiguous().view(-1)
    score = torch.sum(representation[user_tensor] * representation[item_tensor], dim=1).view(-1, 2)
    bpr = -torch.mean(torch.log(torch.sigmoid(score @ torch.tensor([[1.0], [-1.0]], dtype=score.dtype))))
    ids = model.id_embedding
    reg = (ids[user_tensor] ** 2 + ids[item_tensor] ** 2).mean() + (model.gcn["image"].preference ** 2).mean()
    return bpr, reg


@pytest.mark.parametrize("trainable", [False, True])
def test_loss_and_gradients_equal_mmrec_formula(tiny_data, trainable):
    reg_weight = 0.5
    model = make_model("mmgcn", tiny_data, reg_weight=reg_weight, trainable_embeddings=trainable)
    users, pos, neg = training_batch(tiny_data, size=40, seed=5)
    model.train()
    loss = model.loss(users, pos, neg)
    loss.backward()
    actual = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    bpr, reg = mmrec_loss(model, tiny_data, users, pos, neg, dense_forward(model, tiny_data))
    expected = bpr + reg_weight * reg
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    with torch.no_grad():  # the regulariser's scale matters: a summed one would fail this test
        items = torch.cat([pos, neg]) + tiny_data.n_users
        summed = model.id_embedding[users].pow(2).sum() + model.id_embedding[items].pow(2).sum()
        assert abs((bpr + reg_weight * summed).item() - expected.item()) > 1e-4 * expected.item()
    expected.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(actual[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluation_scores_the_last_training_batch_representation(tiny_data):
    users, pos, neg = training_batch(tiny_data)
    for upstream in (True, False):
        model = make_model("mmgcn", tiny_data, eval_last_batch_representation=upstream)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        model.train()
        with torch.no_grad():
            before_step = dense_forward(model, tiny_data)
        model.loss(users, pos, neg).backward()
        optimizer.step()
        with torch.no_grad():
            after_step = dense_forward(model, tiny_data)
        assert not torch.allclose(before_step, after_step, atol=1e-4)
        model.eval()
        with torch.no_grad():
            emb = model()
        evaluated = torch.cat([emb.users, emb.items])
        expected = before_step if upstream else after_step  # upstream: one optimiser step old
        torch.testing.assert_close(evaluated, expected, rtol=1e-4, atol=1e-5)
    fresh = make_model("mmgcn", tiny_data)  # never trained: the representation is computed
    fresh.eval()
    with torch.no_grad():
        emb = fresh()
        torch.testing.assert_close(torch.cat([emb.users, emb.items]), dense_forward(fresh, tiny_data),
                                   rtol=1e-4, atol=1e-5)


def test_frozen_first_layer_inputs_are_recomputed_when_their_tensors_change(tiny_data):
    model = make_model("mmgcn", tiny_data)
    with torch.no_grad():
        model()
        model.gcn["text"].preference.mul_(2.0)  # in place: a new version of the frozen buffer
        model.gcn["image"].preference.mul_(3.0)
        emb = model()
        torch.testing.assert_close(torch.cat([emb.users, emb.items]), dense_forward(model, tiny_data),
                                   rtol=1e-4, atol=1e-5)
    users, pos, neg = training_batch(tiny_data)
    bpr, reg = mmrec_loss(model, tiny_data, users, pos, neg, dense_forward(model, tiny_data))
    torch.testing.assert_close(model.loss(users, pos, neg), bpr + model.config.reg_weight * reg)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("mmgcn", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data)


def test_spec_grids_and_validation(tiny_data):
    spec = get_model_spec("mmgcn")
    assert spec.label == "MMGCN" and spec.multimodal and spec.default_preset is None
    assert spec.reference == "MMRec src/models/mmgcn.py + src/configs/model/MMGCN.yaml"
    config = resolve_model_config(spec, "sports")
    assert (config.embedding_dim, config.n_layers, config.latent_dim, config.reg_weight) == (64, 3, 256, 1e-5)
    assert config.concat and not config.trainable_embeddings and config.eval_last_batch_representation
    assert spec.tuning_grid == {
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
        "learning_rate": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2],
    }
    assert list(spec.tuning_grid) == ["reg_weight", "learning_rate"]  # the yaml's order
    assert spec.reduced_grid == {"learning_rate": [1e-3, 5e-3, 1e-2]}  # reg_weight: no effect when frozen
    for name, values in spec.reduced_grid.items():
        assert set(values) <= set(spec.tuning_grid[name])
    assert config.reg_weight in spec.tuning_grid["reg_weight"]
    assert TrainConfig().learning_rate in spec.reduced_grid["learning_rate"]
    assert set(spec.deviations) == {"trainable_embeddings", "concat", "n_layers", "eval_last_batch_representation"}
    assert set(spec.deviations) <= field_names(spec.config_class) and not spec.train_defaults
    defaults = dataclasses.asdict(spec.config_class())
    assert (defaults["trainable_embeddings"], defaults["concat"], defaults["n_layers"]) == (False, True, 3)
    for bad in ({"n_layers": 0}, {"latent_dim": 0}, {"reg_weight": -1.0}):
        with pytest.raises(ConfigError, match="MMGCN"):
            resolve_model_config(spec, "baby", overrides=bad)
    with pytest.raises(ConfigError, match="audio"):
        make_model("mmgcn", tiny_data, projected_modalities=("audio",))


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("mmgcn", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "mmgcn", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
