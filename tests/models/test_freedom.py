"""FREEDOM: frozen kNN item graph, degree-sensitive edge pruning, modality BPR losses."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.freedom import modality_mixing_weights

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    small_dataset,
    training_batch,
    untrained_and_trained_recall,
)


def dense_item_graph(features: dict, k: int, image_weight: float) -> torch.Tensor:
    """Upstream's construction with dense matrices: top-k cosine, unit weights, D^-1/2 A D^-1/2."""
    weights = modality_mixing_weights(list(features), image_weight)
    total = 0
    for m, table in features.items():
        x = torch.tensor(table)
        sim = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
        adjacency = torch.zeros_like(sim).scatter_(1, sim.topk(k, dim=1).indices, 1.0)
        d = (adjacency.sum(1) + 1e-7).pow(-0.5)
        total = total + weights[m] * d[:, None] * adjacency * d[None, :]
    return total


def dense_upstream_loss(model, data, users, pos, neg, adjacency: torch.Tensor) -> torch.Tensor:
    """MMRec FREEDOM.calculate_loss with dense matrices: BPR of the final embeddings plus
    reg_weight times the sum over modalities of BPR(user, projected positive, projected negative)."""
    cfg = model.config
    h = model.item_embedding
    for _ in range(cfg.n_mm_layers):
        h = dense_item_graph(data.features, cfg.knn_k, cfg.mm_image_weight) @ h
    layers = [torch.cat([model.user_embedding, model.item_embedding])]
    for _ in range(cfg.n_ui_layers):
        layers.append(adjacency @ layers[-1])
    mean = torch.stack(layers, dim=1).mean(dim=1)
    u_all, i_all = mean[: data.n_users], mean[data.n_users:] + h

    def bpr(u, p, n):
        return -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()

    u = u_all[users]
    modality_losses = 0.0
    for m in ("text", "image"):
        feats = model.features[m] @ model.projection[m].weight.T + model.projection[m].bias
        modality_losses = modality_losses + bpr(u, feats[pos], feats[neg])
    return bpr(u, i_all[pos], i_all[neg]) + cfg.reg_weight * modality_losses


@pytest.mark.parametrize("reg_weight", [0.0, 0.5])
def test_loss_equals_the_upstream_formula(tiny_data, reg_weight):
    model = make_model("freedom", tiny_data, reg_weight=reg_weight)
    users, pos, neg = training_batch(tiny_data)
    torch.manual_seed(0)
    model.train()
    model.on_epoch_start(1)
    expected = dense_upstream_loss(model, tiny_data, users, pos, neg, model.masked_adjacency.to_dense())
    torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
    if reg_weight:  # the auxiliary term weighs enough here for a wrong scale to show at 1e-5
        model.config.reg_weight = 0.0
        assert (expected - model.loss(users, pos, neg)).item() > 0.1


def test_whole_table_and_distinct_row_projections_agree(tiny_data):
    model = make_model("freedom", tiny_data)
    few = torch.tensor([3, 5, 5, 9])  # under 3/4 of the items: only the distinct rows are projected
    every = torch.arange(tiny_data.n_items).repeat(2)  # the whole table is projected
    for items in (few, every):
        expected = model.projection["image"](model.features["image"])[items]
        torch.testing.assert_close(model.projected_features("image", items), expected)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("freedom", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached | missed == {"user_embedding", "item_embedding", "features.image", "features.text",
                                "projection.image.weight", "projection.text.weight",
                                "projection.image.bias", "projection.text.bias"}
    assert {"user_embedding", "item_embedding", "features.image", "features.text",
            "projection.image.weight", "projection.text.weight"} <= reached
    # The projection bias adds the same vector to the positive and the negative item, so it cancels
    # in the BPR score difference: its gradient is zero up to float rounding (as upstream's).
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert p.grad is None or p.grad.abs().max() < 1e-6


def test_item_graph_equals_the_dense_upstream_construction(tiny_data):
    model = make_model("freedom", tiny_data, knn_k=5)
    expected = dense_item_graph(tiny_data.features, 5, 0.1)
    torch.testing.assert_close(model.item_graph.to_dense(), expected, rtol=1e-5, atol=1e-6)


def test_pruning_keeps_the_right_share_and_renormalises(tiny_data):
    model = make_model("freedom", tiny_data, dropout=0.8)
    n_edges = model.train_edges.shape[1]
    torch.manual_seed(1)
    pruned = model.sample_pruned_adjacency().to_dense()
    n_u = tiny_data.n_users
    block = pruned[:n_u, n_u:]
    assert int((block > 0).sum()) == int(n_edges * (1 - 0.8)) == model.pruning_keep_count()
    torch.testing.assert_close(pruned, pruned.T)
    kept = (block > 0).float()
    expected = kept / (kept.sum(1, keepdim=True) + 1e-7).sqrt() / (kept.sum(0, keepdim=True) + 1e-7).sqrt()
    torch.testing.assert_close(block, expected)
    # kept edges are a subset of the training edges, and a new draw differs
    assert torch.all(torch.tensor(tiny_data.train_matrix.toarray())[kept.bool()] == 1)
    assert not torch.equal(pruned, model.sample_pruned_adjacency().to_dense())


def test_low_degree_edges_survive_pruning_more_often(tiny_data):
    """The model's own pruning keeps an edge with probability increasing in 1/sqrt(d_u d_i)."""
    model = make_model("freedom", tiny_data, dropout=0.8)
    users, items = model.train_edges
    n_u = tiny_data.n_users
    counts = torch.zeros(users.numel())
    torch.manual_seed(0)
    for _ in range(30):
        kept = model.sample_pruned_adjacency().to_dense()[:n_u, n_u:]
        counts += (kept[users, items] > 0).float()
    assert counts.sum() == 30 * model.pruning_keep_count()
    user_degree = torch.bincount(users, minlength=n_u).float()
    item_degree = torch.bincount(items, minlength=tiny_data.n_items).float()
    weight = (user_degree[users] * item_degree[items]).pow(-0.5)
    high, low = weight > weight.median(), weight < weight.median()
    assert counts[high].mean() > 1.3 * counts[low].mean()
    # the lowest-weight quarter survives least often, the highest quarter most often
    quartiles = weight.quantile(torch.tensor([0.25, 0.75]))
    assert counts[weight <= quartiles[0]].mean() < counts[weight >= quartiles[1]].mean() / 1.5


def test_evaluation_is_deterministic_and_uses_the_full_graph(tiny_data):
    model = make_model("freedom", tiny_data)
    model.eval()
    with torch.no_grad():
        first, second = model(), model()
    assert torch.equal(first.items, second.items)
    model.train()
    model.on_epoch_start(1)
    with torch.no_grad():
        assert not torch.allclose(model().users, first.users)


@pytest.mark.parametrize("modalities", [("image",), ("text",)])
def test_one_modality_works(tiny_data, modalities):
    model = make_model("freedom", tiny_data, modalities=modalities)
    check_shapes(model, tiny_data)
    expected = dense_item_graph({m: tiny_data.features[m] for m in modalities}, 10, 0.1)
    torch.testing.assert_close(model.item_graph.to_dense(), expected, rtol=1e-5, atol=1e-6)


def test_mixing_weights():
    assert modality_mixing_weights(["image", "text"], 0.1) == {"image": 0.1, "text": 0.9}
    assert modality_mixing_weights(["text"], 0.1) == {"text": 1.0}
    three = modality_mixing_weights(["image", "audio", "text"], 0.2)
    assert three == {"image": 0.2, "audio": 0.4, "text": 0.4}


def test_frozen_features_are_buffers(tiny_data):
    model = make_model("freedom", tiny_data, train_features=False)
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("features.") for n in names)
    assert model.features["image"].shape == tiny_data.features["image"].shape


def test_spec_and_validation():
    spec = get_model_spec("freedom")
    assert spec.label == "FREEDOM" and spec.multimodal
    config = resolve_model_config(spec, "baby")
    assert (config.knn_k, config.n_mm_layers, config.n_ui_layers, config.mm_image_weight) == (10, 1, 2, 0.1)
    assert spec.tuning_grid == {"dropout": [0.8, 0.9], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3]}
    assert spec.reduced_grid == {"reg_weight": [1e-5, 1e-4, 1e-3]}
    assert spec.train_defaults == {} and spec.reference.startswith("MMRec src/models/freedom.py")
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(spec.config_class)}
    defaults = spec.config_class()
    assert defaults.dropout in spec.tuning_grid["dropout"] and defaults.reg_weight in spec.reduced_grid["reg_weight"]
    for bad in ({"dropout": 1.0}, {"knn_k": 0}, {"feat_embed_dim": 32}):
        with pytest.raises(ConfigError, match="FREEDOM"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("freedom", tiny_data)


def test_training_improves_validation_recall():
    untrained, trained = untrained_and_trained_recall("freedom", small_dataset(), epochs=4)
    assert trained > untrained + 0.05, (untrained, trained)
