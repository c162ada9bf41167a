"""LATTICE: learned + frozen kNN item graphs, rebuilt once per epoch, against a dense re-derivation."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config

from .mm_baseline_checks import (
    check_shapes,
    dense_lightgcn,
    dense_self_loop_walk,
    upstream_bpr_with_half_l2,
    gradient_report,
    make_model,
    same_seed_same_run,
    small_dataset,
    training_batch,
    untrained_and_trained_recall,
)

ALL_PARAMETERS = {
    "user_embedding", "item_embedding", "modal_weight", "features.image", "features.text",
    "projection.image.weight", "projection.image.bias", "projection.text.weight", "projection.text.bias",
}


def dense_knn_laplacian(x: torch.Tensor, k: int) -> torch.Tensor:
    """Upstream's build_sim -> build_knn_neighbourhood (weighted), un-normalised."""
    normed = x / x.norm(dim=1, keepdim=True)
    sim = normed @ normed.T
    top = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter(1, top.indices, top.values)


def sym_normalize(adjacency: torch.Tensor) -> torch.Tensor:
    d = adjacency.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * adjacency * d[None, :]


def dense_item_operator(model, data) -> torch.Tensor:
    """The item graph of upstream's forward(build_item_graph=True), with dense matrices."""
    cfg = model.config
    weights = torch.softmax(model.modal_weight, 0)
    learned, frozen = 0, 0
    for i, m in enumerate(model.modalities):
        raw = torch.tensor(data.features[m])
        projected = model.projection[m](model.features[m])
        learned = learned + weights[i] * dense_knn_laplacian(projected, cfg.knn_k)
        frozen = frozen + weights[i] * sym_normalize(dense_knn_laplacian(raw, cfg.knn_k))
    return (1 - cfg.lambda_coeff) * sym_normalize(learned) + cfg.lambda_coeff * frozen


@pytest.mark.parametrize("n_layers", [1, 2])
def test_item_propagation_and_its_gradients_equal_the_dense_upstream(tiny_data, n_layers):
    model = make_model("lattice", tiny_data, n_layers=n_layers)
    target = torch.randn(tiny_data.n_items, 64, generator=torch.Generator().manual_seed(0))

    ours = model.propagate_items(model.learn_item_graph())
    (ours * target).sum().backward()
    our_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    operator = dense_item_operator(model, tiny_data)
    expected = model.item_embedding
    for _ in range(n_layers):
        expected = operator @ expected
    (expected * target).sum().backward()
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert set(our_grads) == ALL_PARAMETERS - {"user_embedding"}
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, rtol=1e-3, atol=1e-5)


def dense_upstream_loss(model, data, users, pos, neg) -> torch.Tensor:
    """MMRec LATTICE.calculate_loss with build_item_graph=True, dense matrices throughout."""
    cfg = model.config
    h = model.item_embedding
    for _ in range(cfg.n_layers):
        h = dense_item_operator(model, data) @ h
    ego = torch.cat([model.user_embedding, model.item_embedding])
    mean = dense_lightgcn(dense_self_loop_walk(data), ego, cfg.n_ui_layers)
    u_all, i_all = mean[: data.n_users], mean[data.n_users:] + F.normalize(h, p=2, dim=1)
    return upstream_bpr_with_half_l2(u_all[users], i_all[pos], i_all[neg], cfg.reg_weight,
                                     cfg.reg_batch_size or len(users))


@pytest.mark.parametrize("reg_batch_size", [2048, 0])
def test_loss_equals_the_upstream_formula_on_first_and_later_batches(tiny_data, reg_batch_size):
    model = make_model("lattice", tiny_data, reg_weight=0.5, reg_batch_size=reg_batch_size)
    users, pos, neg = training_batch(tiny_data)
    model.train()
    model.on_epoch_start(1)
    expected = dense_upstream_loss(model, tiny_data, users, pos, neg)
    first = model.loss(users, pos, neg)  # rebuilds the learned graph
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
    # a later batch (same parameters) propagates over the epoch's merged, detached graph
    torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
    # the regulariser weighs enough here for a wrong scale to show
    model.config.reg_weight = 0.0
    assert (first - model.loss(users, pos, neg)).item() > 1e-3


def test_shapes_and_gradients_on_the_first_and_later_batches(tiny_data):
    model = make_model("lattice", tiny_data)
    check_shapes(model, tiny_data)
    model.on_epoch_start(1)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == ALL_PARAMETERS and not missed
    # Later batches of the epoch reuse the graph detached (upstream's item_adj.detach()): only the
    # ID embeddings learn from them.
    reached, missed = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding"}


def test_graph_is_rebuilt_each_epoch_and_for_evaluation(tiny_data):
    model = make_model("lattice", tiny_data)
    users, pos, neg = training_batch(tiny_data)
    model.on_epoch_start(1)
    model.loss(users, pos, neg)
    stored = model._graph
    with torch.no_grad():
        model.projection["image"].weight.add_(0.5)
    model.loss(users, pos, neg)
    assert model._graph is stored  # same epoch: reused
    model.on_epoch_start(2)
    model.loss(users, pos, neg)
    assert not torch.equal(model._graph.learned["image"][1], stored.learned["image"][1])
    model.eval()
    with torch.no_grad():
        first, second = model(), model()
    assert torch.equal(first.items, second.items)


def test_user_item_adjacency_is_random_walk_with_self_loops(tiny_data):
    model = make_model("lattice", tiny_data)
    dense = model.norm_adjacency.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(dense.shape[0]))
    n_u = tiny_data.n_users
    degree = torch.tensor(tiny_data.train_matrix.sum(1)).ravel() + 1
    torch.testing.assert_close(dense.diagonal()[:n_u], 1 / degree.float())


@pytest.mark.parametrize("modalities", [("image",), ("text",)])
def test_one_modality_has_no_modal_weight(tiny_data, modalities):
    model = make_model("lattice", tiny_data, modalities=modalities)
    check_shapes(model, tiny_data)
    model.on_epoch_start(1)
    reached, missed = gradient_report(model, tiny_data)
    m = modalities[0]
    assert reached == {"user_embedding", "item_embedding", f"features.{m}",
                       f"projection.{m}.weight", f"projection.{m}.bias"} and not missed


def test_mf_backbone_and_frozen_features(tiny_data):
    model = make_model("lattice", tiny_data, cf_model="mf", train_features=False)
    check_shapes(model, tiny_data)
    assert not any(n.startswith("features.") for n, _ in model.named_parameters())
    model.eval()
    with torch.no_grad():
        emb = model()
    torch.testing.assert_close(emb.users, model.user_embedding)


def test_spec_and_validation():
    spec = get_model_spec("lattice")
    assert spec.label == "LATTICE" and spec.multimodal
    config = resolve_model_config(spec, "sports")
    assert (config.knn_k, config.lambda_coeff, config.n_layers, config.n_ui_layers) == (10, 0.9, 1, 2)
    assert spec.tuning_grid == {"reg_weight": [0.0, 1e-5, 1e-4, 1e-3], "learning_rate": [0.0001, 0.0005, 0.001, 0.005]}
    assert spec.reduced_grid == {"reg_weight": [1e-5, 1e-4, 1e-3], "learning_rate": [0.0005, 0.001, 0.005]}
    assert spec.train_defaults == {"lr_decay": 0.96, "lr_decay_epochs": 50}
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(spec.config_class)}
    assert config.reg_weight in spec.reduced_grid["reg_weight"] and config.reg_batch_size == 2048
    for bad in ({"lambda_coeff": 1.5}, {"cf_model": "ngcf"}):
        with pytest.raises(ConfigError, match="LATTICE|cf_model"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("lattice", tiny_data)


def test_training_improves_validation_recall():
    untrained, trained = untrained_and_trained_recall("lattice", small_dataset(), epochs=4)
    assert trained > untrained + 0.05, (untrained, trained)
