"""MGCN: purifier gates, item-item views, behaviour-aware fuser, against a dense re-derivation."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.mgcn import in_batch_info_nce

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    small_dataset,
    training_batch,
    untrained_and_trained_recall,
)


def dense_upstream(model, data):
    """MMRec's MGCN.forward(train=True) for image + text, with dense matrices."""
    cfg = model.config
    R = torch.tensor(data.train_matrix.toarray())
    n_u = R.shape[0]
    adjacency = torch.zeros(n_u + R.shape[1], n_u + R.shape[1])
    adjacency[:n_u, n_u:], adjacency[n_u:, :n_u] = R, R.T
    d = adjacency.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    ahat = d[:, None] * adjacency * d[None, :]
    layers = [torch.cat([model.user_embedding, model.item_embedding])]
    for _ in range(cfg.n_ui_layers):
        layers.append(ahat @ layers[-1])
    content = torch.stack(layers).mean(0)
    views = {}
    for m in ("image", "text"):
        x = torch.tensor(data.features[m])
        sim = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
        top = sim.topk(cfg.knn_k, dim=1)
        knn = torch.zeros_like(sim).scatter(1, top.indices, top.values)
        dk = knn.sum(1).pow(-0.5)
        graph = dk[:, None] * knn * dk[None, :]
        projected = model.projection[m](model.features[m])
        items = model.item_embedding * torch.sigmoid(model.purifier_gate[m][0](projected))
        for _ in range(cfg.n_layers):
            items = graph @ items
        views[m] = torch.cat([ahat[:n_u, n_u:] @ items, items])
    q = model.query_common
    weight = torch.softmax(torch.cat([q(views["image"]), q(views["text"])], -1), -1)
    common = weight[:, :1] * views["image"] + weight[:, 1:] * views["text"]
    sep_image = torch.sigmoid(model.preference_gate["image"][0](content)) * (views["image"] - common)
    sep_text = torch.sigmoid(model.preference_gate["text"][0](content)) * (views["text"] - common)
    side = (sep_image + sep_text + common) / 3
    return content, side


def upstream_info_nce(view1, view2, temperature):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos = torch.exp((view1 * view2).sum(-1) / temperature)
    total = torch.exp(view1 @ view2.T / temperature).sum(1)
    return -torch.log(pos / total).mean()


@pytest.mark.parametrize("layers", [(2, 1), (1, 2)])
def test_embeddings_equal_the_dense_upstream(tiny_data, layers):
    model = make_model("mgcn", tiny_data, n_ui_layers=layers[0], n_layers=layers[1], knn_k=6)
    content, side = model.embed()
    expected_content, expected_side = dense_upstream(model, tiny_data)
    torch.testing.assert_close(content, expected_content, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(side, expected_side, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reg_batch_size", [2048, 0])
def test_loss_equals_the_upstream_formula(tiny_data, reg_batch_size):
    """MMRec's calculate_loss: BPR + reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch_size (the
    configured one) + cl_loss * (InfoNCE(items) + InfoNCE(users)), with weights large enough
    that a wrong scale of any term shows at 1e-5."""
    model = make_model("mgcn", tiny_data, reg_weight=0.5, cl_loss=0.5, reg_batch_size=reg_batch_size)
    users, pos, neg = training_batch(tiny_data, size=64)
    users = torch.cat([users, users[:16]])  # a batch repeats users and items
    pos, neg = torch.cat([pos, pos[:16]]), torch.cat([neg, neg[:16]])
    content, side = dense_upstream(model, tiny_data)
    n_u, cfg = tiny_data.n_users, model.config
    final = content + side
    u, p, n = final[users], final[n_u + pos], final[n_u + neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    divisor = reg_batch_size or len(users)
    reg = (0.5 * (u ** 2).sum() + 0.5 * (p ** 2).sum() + 0.5 * (n ** 2).sum()) / divisor
    cl = upstream_info_nce(side[n_u + pos], content[n_u + pos], 0.2) \
        + upstream_info_nce(side[users], content[users], 0.2)
    expected = bpr + 0.5 * reg + 0.5 * cl
    torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
    assert 0.5 * reg.item() > 1e-3 and 0.5 * cl.item() > 1.0  # both terms weigh


def test_distinct_id_info_nce_equals_the_batch_formula():
    gen = torch.Generator().manual_seed(0)
    table1 = torch.randn(30, 8, generator=gen, requires_grad=True)
    table2 = torch.randn(30, 8, generator=gen, requires_grad=True)
    rows = torch.randint(30, (100,), generator=gen)  # many repeated ids
    ours = in_batch_info_nce(table1, table2, rows, 0.2)
    expected = upstream_info_nce(table1[rows], table2[rows], 0.2)
    torch.testing.assert_close(ours, expected)
    for a, b in zip(torch.autograd.grad(ours, (table1, table2)),
                    torch.autograd.grad(expected, (table1, table2))):
        torch.testing.assert_close(a, b)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("mgcn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert not missed
    expected = {"user_embedding", "item_embedding", "query_common.0.weight", "query_common.0.bias",
                "query_common.2.weight"}
    for m in ("image", "text"):
        expected |= {f"features.{m}", f"projection.{m}.weight", f"projection.{m}.bias"}
        gates = ("purifier_gate", "preference_gate")
        expected |= {f"{g}.{m}.0.{p}" for g in gates for p in ("weight", "bias")}
    assert reached == expected


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_halves_its_view(tiny_data, modality):
    model = make_model("mgcn", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data)
    _, side = model.embed()
    torch.testing.assert_close(side, model.modality_view(modality) / 2)
    reached, missed = gradient_report(model, tiny_data)
    assert not missed and not any(n.startswith(("query_common", "preference_gate")) for n in reached)


def test_spec_and_validation():
    spec = get_model_spec("mgcn")
    assert spec.label == "MGCN" and spec.multimodal
    config = resolve_model_config(spec, "clothing")
    values = (config.cl_loss, config.reg_weight, config.knn_k, config.n_ui_layers, config.n_layers)
    assert values == (0.01, 1e-4, 10, 2, 1)
    assert spec.tuning_grid == spec.reduced_grid == {"cl_loss": [0.001, 0.01, 0.1]}
    assert spec.train_defaults == {"learning_rate": 0.001, "lr_decay": 0.96, "lr_decay_epochs": 50}
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(spec.config_class)}
    assert config.reg_batch_size == 2048 and spec.reference.startswith("MMRec src/models/mgcn.py")
    with pytest.raises(ConfigError, match="MGCN"):
        resolve_model_config(spec, "baby", overrides={"cl_temperature": 0})


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("mgcn", tiny_data)


def test_training_improves_validation_recall():
    untrained, trained = untrained_and_trained_recall("mgcn", small_dataset(), epochs=3, batch_size=1024)
    assert trained > untrained + 0.05, (untrained, trained)
