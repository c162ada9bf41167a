"""LayerGCN: layer-refined propagation, alternating edge pruning, summed BPR + L2 loss."""

import pytest
import torch
import torch.nn.functional as F

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


def dense_normalized(block: torch.Tensor) -> torch.Tensor:
    """Dense ``[[0, R], [R^T, 0]]`` with ``1/sqrt(d_u d_i)`` weights (degrees + 1e-7)."""
    du = (block.sum(1) + 1e-7).pow(-0.5)
    di = (block.sum(0) + 1e-7).pow(-0.5)
    weighted = du[:, None] * block * di[None, :]
    n_u, n_i = block.shape
    top = torch.cat([torch.zeros(n_u, n_u), weighted], 1)
    bottom = torch.cat([weighted.T, torch.zeros(n_i, n_i)], 1)
    return torch.cat([top, bottom], 0)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("layergcn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding"} and not missed


def test_evaluation_embeddings_equal_a_dense_rederivation(tiny_data):
    model = make_model("layergcn", tiny_data, n_layers=3)
    adjacency = dense_normalized(torch.tensor(tiny_data.train_matrix.toarray()))
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach()
    current, expected = ego, torch.zeros_like(ego)
    for _ in range(3):
        propagated = adjacency @ current
        weights = (propagated * ego).sum(1) / (propagated.norm(dim=1) * ego.norm(dim=1))
        current = weights[:, None] * propagated
        expected = expected + current
    model.eval()
    with torch.no_grad():
        emb = model()
    torch.testing.assert_close(torch.cat([emb.users, emb.items]), expected, rtol=1e-4, atol=1e-6)


def test_loss_is_summed_bpr_plus_half_squared_ego_norms(tiny_data):
    model = make_model("layergcn", tiny_data, reg_weight=0.3, dropout=0.0)
    users, pos, neg = training_batch(tiny_data)
    emb = model()
    u, p, n = emb.users[users], emb.items[pos], emb.items[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).sum()
    l2 = 0.5 * sum(t.pow(2).sum() for t in (
        model.user_embedding[users], model.item_embedding[pos], model.item_embedding[neg]
    ))
    torch.testing.assert_close(model.loss(users, pos, neg), bpr + 0.3 * l2)


def test_pruning_keeps_the_right_share_renormalises_and_alternates(tiny_data):
    model = make_model("layergcn", tiny_data, dropout=0.2)
    n_edges = model.train_edges.shape[1]
    n_u = tiny_data.n_users
    torch.manual_seed(0)
    for epoch in (1, 2):
        model.on_epoch_start(epoch)
        pruned = model.pruned_adjacency.to_dense()
        torch.testing.assert_close(pruned, pruned.T)
        kept = (pruned[:n_u, n_u:] > 0).float()
        assert int(kept.sum()) == int(n_edges * 0.8)
        assert torch.all(torch.tensor(tiny_data.train_matrix.toarray())[kept.bool()] == 1)
        torch.testing.assert_close(pruned, dense_normalized(kept))

    # odd epochs draw by 1/sqrt(d_u d_i) (low-degree edges survive more often), even ones uniformly
    weights = model.edge_weights
    low_degree = weights > weights.median()
    survival = {}
    for epoch in (1, 2):
        counts = torch.zeros(n_edges)
        for _ in range(40):
            model.on_epoch_start(epoch)
            block = model.pruned_adjacency.to_dense()[:n_u, n_u:]
            counts += (block[model.train_edges[0], model.train_edges[1]] > 0).float()
        survival[epoch] = counts[low_degree].mean() / counts[~low_degree].mean()
    assert survival[1] > 1.1 and abs(survival[2] - 1) < 0.03, survival


def test_evaluation_uses_the_full_graph_and_no_dropout_means_no_pruning(tiny_data):
    model = make_model("layergcn", tiny_data, dropout=0.2)
    model.on_epoch_start(1)
    model.eval()
    with torch.no_grad():
        evaluated = model().users
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model().users, evaluated)
    unpruned = make_model("layergcn", tiny_data, dropout=0.0)
    unpruned.on_epoch_start(1)
    assert unpruned.pruned_adjacency is unpruned.norm_adjacency


def test_spec_and_validation():
    spec = get_model_spec("layergcn")
    assert spec.label == "LayerGCN" and not spec.multimodal
    config = resolve_model_config(spec, "sports")
    assert (config.embedding_dim, config.n_layers, config.dropout, config.reg_weight) == (64, 4, 0.1, 1e-4)
    assert spec.tuning_grid == {
        "n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]
    }
    for bad in ({"dropout": 1.0}, {"n_layers": 0}, {"reg_weight": -1e-3}):
        with pytest.raises(ConfigError, match="LayerGCN"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    # the per-epoch sampling draws from torch's RNG only, which the trainer seeds
    assert same_seed_same_run("layergcn", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "layergcn", tiny_data, epochs=3, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
