"""SLMRec: LightGCN per modality, concatenation fusion, InfoNCE + FAC, Adam's weight decay."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.base import Distinct
from lgmrec.models.slmrec import fac_levels, info_nce
from lgmrec.resolve import resolve_run

from .mm_baseline_checks import (
    after_one_step,
    check_shapes,
    gradient_report,
    make_model,
    training_batch,
    untrained_and_trained_recall,
)


def linear_names(*prefixes: str) -> set[str]:
    return {f"{p}.{w}" for p in prefixes for w in ("weight", "bias")}


ALL_PARAMETERS = {"user_embedding", "item_embedding"} | linear_names(
    "dense.image", "dense.text", "user_fusion", "item_fusion",
    "fac_chain.0", "fac_chain.1", "fac_chain.2", "fac_heads.image", "fac_heads.text",
)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("slmrec", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == ALL_PARAMETERS and not missed


def test_only_the_head_biases_get_no_gradient(tiny_data):
    # a head's bias adds the same amount to every logit of an anchor's row, which the softmax
    # cancels: its gradient is zero up to rounding; only Adam's weight decay moves it (as upstream)
    model = make_model("slmrec", tiny_data)
    users, pos, neg = training_batch(tiny_data)
    model.loss(users, pos, neg).backward()
    sizes = {name: float(p.grad.abs().max()) for name, p in model.named_parameters()}
    cancelled = {name for name, size in sizes.items() if size < 1e-6}
    assert cancelled == {"fac_heads.image.bias", "fac_heads.text.bias"}, sizes
    assert min(size for name, size in sizes.items() if name not in cancelled) > 1e-5, sizes


def dense_outputs(model, data):
    R = torch.tensor(data.train_matrix.toarray())
    n_u, n_i = R.shape
    A = torch.cat([torch.cat([torch.zeros(n_u, n_u), R], 1), torch.cat([R.T, torch.zeros(n_i, n_i)], 1)])
    d = (A.sum(1) + 1e-8).pow(-0.5)
    A = d[:, None] * A * d[None, :]
    items = {"id": model.item_embedding}
    for m in model.modalities:
        items[m] = model.dense[m](F.normalize(torch.from_numpy(data.features[m]), dim=1))
    outputs = {}
    for name, table in items.items():
        layers = [torch.cat([model.user_embedding, table])]
        for _ in range(model.config.n_layers):
            layers.append(A @ layers[-1])
        mean = torch.stack(layers).mean(0)
        outputs[name] = (mean[:n_u], mean[n_u:])
    return outputs


def test_forward_equals_dense_rederivation(tiny_data):
    model = make_model("slmrec", tiny_data)
    with torch.no_grad():
        outputs = dense_outputs(model, tiny_data)
        users = model.user_fusion(torch.cat([outputs[k][0] for k in ("id", "image", "text")], 1))
        items = model.item_fusion(torch.cat([outputs[k][1] for k in ("id", "image", "text")], 1))
        emb = model()
    torch.testing.assert_close(emb.users, users, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.items, items, rtol=1e-4, atol=1e-5)


def test_loss_matches_upstream_formula(tiny_data):
    """MMRec's calculate_loss from the math: B x B in-batch cross-entropies over the batch's rows
    (repeated users and items included), on the dense re-derivation of the graph outputs."""
    model = make_model("slmrec", tiny_data, ssl_alpha=0.7, ssl_temp=0.5)
    users, pos, neg = training_batch(tiny_data)
    users, pos, neg = torch.cat([users, users[:16]]), torch.cat([pos, pos[:16]]), torch.cat([neg, neg[:16]])
    assert len(torch.unique(users)) < len(users) and len(torch.unique(pos)) < len(pos)
    with torch.no_grad():
        outputs = dense_outputs(model, tiny_data)
        fused_users = model.user_fusion(torch.cat([outputs[k][0] for k in ("id", "image", "text")], 1))
        fused_items = model.item_fusion(torch.cat([outputs[k][1] for k in ("id", "image", "text")], 1))
        labels = torch.arange(len(users))
        u, p = F.normalize(fused_users[users], dim=1), F.normalize(fused_items[pos], dim=1)
        main = F.cross_entropy(u @ p.T / 0.2, labels)
        chain, heads = model.fac_chain, model.fac_heads
        z1 = chain[0](outputs["id"][1][pos])
        z3 = chain[2](chain[1](z1))  # level 2 (audio upstream) only passes through
        fac = F.cross_entropy(z1 @ heads["image"](outputs["image"][1][pos]).T / 0.5, labels)
        fac = fac + F.cross_entropy(z3 @ heads["text"](outputs["text"][1][pos]).T / 0.5, labels)
        expected = main + 0.7 * fac
        torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
    assert z3.shape[1] == 32  # the coarsest level is d / 2 wide


def test_info_nce_on_distinct_rows_equals_the_batch_cross_entropy():
    torch.manual_seed(0)
    users = torch.tensor([3, 1, 3, 0, 1, 3, 2])
    items = torch.tensor([5, 5, 2, 7, 2, 5, 0])
    user_table = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    item_table = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    a, p = Distinct(users), Distinct(items)
    fast = info_nce(user_table[a.values], a, item_table[p.values], p, 0.3)
    plain = F.cross_entropy(user_table[users] @ item_table[items].T / 0.3, torch.arange(len(users)))
    torch.testing.assert_close(fast, plain)
    fast_grads = torch.autograd.grad(fast, (user_table, item_table))
    plain_grads = torch.autograd.grad(plain, (user_table, item_table))
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want)


def test_training_uses_the_yaml_weight_decay_in_adam():
    spec = get_model_spec("slmrec")
    assert spec.train_defaults == {"weight_decay": 1e-4}
    assert resolve_run("slmrec", "baby").train_config.weight_decay == 1e-4
    assert resolve_run("slmrec", "baby", {"weight_decay": 0.0}).train_config.weight_decay == 0.0


def test_scores_are_sigmoids_of_the_last_training_batch(tiny_data):
    for cached in (True, False):
        model, before_step = after_one_step("slmrec", tiny_data, lambda m: m(), score_from_last_batch=cached)
        with torch.no_grad():
            expected = before_step if cached else model._embeddings(model.graph_outputs())
            scores = model.score(torch.arange(5), model())
            torch.testing.assert_close(scores, torch.sigmoid(expected.users[:5] @ expected.items.T))


def test_fac_levels():
    assert fac_levels(["image"]) == {0: "image"}
    assert fac_levels(["image", "text"]) == {0: "image", 2: "text"}
    assert fac_levels(["image", "audio", "text"]) == {0: "image", 1: "audio", 2: "text"}
    with pytest.raises(ConfigError, match="one to 3 modalities"):
        fac_levels(["a", "b", "c", "d"])


def test_three_modalities_contrast_every_level(tiny_data):
    rng = np.random.default_rng(0)
    features = {**tiny_data.features, "audio": rng.normal(size=(tiny_data.n_items, 8)).astype(np.float32)}
    three = dataclasses.replace(tiny_data, features=features)
    model = make_model("slmrec", three)
    assert model.levels == {0: "image", 1: "text", 2: "audio"}
    assert [layer.out_features for layer in model.fac_chain] == [64, 64, 32]
    check_shapes(model, three)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("slmrec", tiny_data, modalities=(modality,))
    assert len(model.fac_chain) == 1 and model.user_fusion.in_features == 128
    check_shapes(model, tiny_data)


def test_mean_fusion_works(tiny_data):
    model = make_model("slmrec", tiny_data, fusion="mean")
    assert model.user_fusion.in_features == 64
    check_shapes(model, tiny_data)


def test_spec_and_validation():
    spec = get_model_spec("slmrec")
    assert spec.label == "SLMRec" and spec.multimodal
    config = resolve_model_config(spec, "baby")
    assert (config.embedding_dim, config.n_layers, config.temperature) == (64, 3, 0.2)
    assert (config.ssl_temp, config.ssl_alpha, config.reg) == (0.2, 0.1, 1e-4)
    assert config.fusion == "concat" and config.score_from_last_batch
    assert spec.tuning_grid == {
        "learning_rate": [0.0001, 0.001, 0.01, 0.1],
        "ssl_temp": [0.1, 0.2, 0.5, 1.0],
        "ssl_alpha": [0.01, 0.05, 0.1, 0.5, 1.0],
        "reg": [0.0001, 0.001, 0.01, 0.1],
    }
    assert len(list(itertools.product(*spec.tuning_grid.values()))) == 320
    assert spec.reduced_grid == {"learning_rate": [0.001, 0.01, 0.1], "ssl_alpha": [0.01, 0.1, 1.0]}
    assert spec.reference.startswith("MMRec src/models/slmrec.py")
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(config)}
    train = resolve_run("slmrec", "baby").train_config
    for name, values in spec.tuning_grid.items():  # the defaults are a point of both grids
        default = getattr(train if name == "learning_rate" else config, name)
        assert default in values and default in spec.reduced_grid.get(name, [default])
    too_many = ("a", "b", "c", "d")
    for bad in ({"ssl_temp": 0.0}, {"fusion": "sum"}, {"embedding_dim": 63}, {"modalities": too_many}):
        with pytest.raises(ConfigError, match="SLMRec"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "slmrec", tiny_data, epochs=2, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
