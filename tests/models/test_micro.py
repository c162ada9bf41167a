"""MICRO: per-modality learned + frozen graphs, attention fusion, GRACE-style contrastive loss."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.micro import grace_contrastive_loss

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
    "user_embedding", "item_embedding", "query.0.weight", "query.0.bias", "query.2.weight",
    "features.image", "features.text", "projection.image.weight", "projection.image.bias",
    "projection.text.weight", "projection.text.bias",
}


def dense_sym_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    normed = x / x.norm(dim=1, keepdim=True)
    sim = normed @ normed.T
    top = sim.topk(k, dim=1)
    adjacency = torch.zeros_like(sim).scatter(1, top.indices, top.values)
    d = adjacency.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * adjacency * d[None, :]


def dense_upstream_loss(model, data, users, pos, neg) -> torch.Tensor:
    """Upstream Trainer.train's batch loss with build_item_graph=True, dense matrices throughout."""
    cfg = model.config
    views = []
    for m in model.modalities:
        adj = (1 - cfg.lambda_coeff) * dense_sym_knn(model.projection[m](model.features[m]), cfg.knn_k) \
            + cfg.lambda_coeff * dense_sym_knn(torch.tensor(data.features[m]), cfg.knn_k)
        h = model.item_embedding
        for _ in range(cfg.n_layers):
            h = adj @ h
        views.append(h)
    att = torch.softmax(torch.cat([model.query(v) for v in views], -1), -1)
    fused = att[:, :1] * views[0] + att[:, 1:] * views[1]
    ego = torch.cat([model.user_embedding, model.item_embedding])
    mean = dense_lightgcn(dense_self_loop_walk(data), ego, cfg.n_ui_layers)
    n_u = data.n_users
    u_all, i_all = mean[:n_u], mean[n_u:] + F.normalize(fused, dim=1)
    bpr_and_reg = upstream_bpr_with_half_l2(u_all[users], i_all[pos], i_all[neg], cfg.reg_weight,
                                            cfg.reg_batch_size or len(users))

    def grace(z1, z2):
        f = lambda x: torch.exp(x / cfg.cl_temperature)
        z1n, z2n = F.normalize(z1), F.normalize(z2)
        refl, between = f(z1n @ z1n.T), f(z1n @ z2n.T)
        return -torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag())).mean()

    return bpr_and_reg + cfg.cl_weight * (grace(views[0], fused) + grace(views[1], fused))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_loss_and_gradients_equal_the_dense_upstream(tiny_data, n_layers):
    model = make_model("micro", tiny_data, n_layers=n_layers, cl_weight=0.5, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    model.on_epoch_start(1)
    ours = model.loss(users, pos, neg)
    ours.backward()
    our_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    expected = dense_upstream_loss(model, tiny_data, users, pos, neg)
    expected.backward()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert set(our_grads) == ALL_PARAMETERS
    for name, p in model.named_parameters():
        torch.testing.assert_close(our_grads[name], p.grad, rtol=1e-3, atol=1e-6)
    # a later batch (same parameters) propagates over the epoch's merged, detached graphs
    torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reg_batch_size", [1024, 0])
def test_every_loss_term_has_upstreams_scale(tiny_data, reg_batch_size):
    """Regulariser over the configured batch size (upstream's batch_size), contrastive terms summed
    over modalities and weighted by loss_ratio: with weights where each term shows at 1e-5."""
    model = make_model("micro", tiny_data, cl_weight=0.7, reg_weight=2.0, reg_batch_size=reg_batch_size)
    users, pos, neg = training_batch(tiny_data)
    model.on_epoch_start(1)
    with torch.no_grad():
        expected = dense_upstream_loss(model, tiny_data, users, pos, neg)
        torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
        for weight in ("reg_weight", "cl_weight"):
            value = getattr(model.config, weight)
            setattr(model.config, weight, 0.0)
            assert (expected - model.loss(users, pos, neg)).item() > 1e-3
            setattr(model.config, weight, value)


@pytest.mark.parametrize("chunk_rows, checkpoint_min_bytes", [(7, 1 << 30), (7, 0), (1000, 0)])
def test_chunked_contrastive_loss_matches_one_block(chunk_rows, checkpoint_min_bytes):
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(50, 8, generator=gen, requires_grad=True)
    z2 = torch.randn(50, 8, generator=gen, requires_grad=True)
    whole = grace_contrastive_loss(z1, z2, 0.5, chunk_rows=1000)
    grads = torch.autograd.grad(whole, (z1, z2))
    chunked = grace_contrastive_loss(z1, z2, 0.5, chunk_rows=chunk_rows, checkpoint_min_bytes=checkpoint_min_bytes)
    torch.testing.assert_close(chunked, whole)
    for ours, reference in zip(torch.autograd.grad(chunked, (z1, z2)), grads):
        torch.testing.assert_close(ours, reference)


def test_shapes_and_gradients_on_the_first_and_later_batches(tiny_data):
    model = make_model("micro", tiny_data)
    check_shapes(model, tiny_data)
    model.on_epoch_start(1)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == ALL_PARAMETERS and not missed
    # later batches of an epoch reuse the learned graphs detached: the projections and feature
    # tables get no gradient from them, the attention query still does
    reached, _ = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding", "query.0.weight", "query.0.bias", "query.2.weight"}


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality(tiny_data, modality):
    model = make_model("micro", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data)
    model.on_epoch_start(1)
    reached, missed = gradient_report(model, tiny_data)
    assert not missed and reached == {"user_embedding", "item_embedding", f"features.{modality}",
                                      f"projection.{modality}.weight", f"projection.{modality}.bias"}


def test_evaluation_rebuilds_and_is_deterministic(tiny_data):
    model = make_model("micro", tiny_data, cf_model="mf")
    model.eval()
    with torch.no_grad():
        first = model()
        assert torch.equal(first.items, model().items)
        torch.testing.assert_close(first.users, model.user_embedding)


def test_spec_and_validation():
    spec = get_model_spec("micro")
    assert spec.label == "MICRO" and spec.multimodal and spec.default_preset == "authors-default"
    config = resolve_model_config(spec, "baby")
    values = (config.cl_weight, config.cl_temperature, config.knn_k, config.lambda_coeff, config.reg_weight)
    assert values == (0.03, 0.5, 10, 0.9, 1e-5)
    assert config.reg_batch_size == spec.train_defaults["batch_size"] == 1024
    # the authors publish no search space: the suite's own, around their default
    assert spec.tuning_grid == spec.reduced_grid == {"reg_weight": [1e-6, 1e-5, 1e-4]}
    assert spec.train_defaults == {"learning_rate": 5e-4, "batch_size": 1024, "lr_decay": 0.96, "lr_decay_epochs": 50}
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(spec.config_class)}
    assert spec.reference.startswith("CRIPAC-DIG/MICRO")
    with pytest.raises(ConfigError, match="MICRO"):
        resolve_model_config(spec, "baby", overrides={"lambda_coeff": -0.1})


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("micro", tiny_data)


def test_training_improves_validation_recall():
    untrained, trained = untrained_and_trained_recall("micro", small_dataset(), epochs=3, batch_size=1024)
    assert trained > untrained + 0.05, (untrained, trained)
