"""LayerGCN: layer-refined propagation, alternating edge pruning, summed BPR + L2 loss."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lgmrec.config import field_names
from lgmrec.errors import ConfigError
from lgmrec.graph import edge_normalization
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.layergcn import _CosineRescale

from .mm_baseline_checks import (
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    training_batch,
    untrained_and_trained_recall,
)


def symmetric_adjacency(edges: torch.Tensor, values: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """Reference: the ``(n_users + n_items)^2`` CSR matrix with ``values`` on (u, i) and (i, u),
    built by sorting and coalescing (what the model's masked layout avoids)."""
    users, items = edges[0], edges[1] + n_users
    indices = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
    n_nodes = n_users + n_items
    matrix = torch.sparse_coo_tensor(indices, torch.cat([values, values]), (n_nodes, n_nodes), check_invariants=False)
    return matrix.coalesce().to_sparse_csr()


def dense_normalized(block: torch.Tensor) -> torch.Tensor:
    """Dense ``[[0, R], [R^T, 0]]`` with ``1/sqrt(d_u d_i)`` weights (degrees + 1e-7)."""
    du = (block.sum(1) + 1e-7).pow(-0.5)
    di = (block.sum(0) + 1e-7).pow(-0.5)
    weighted = du[:, None] * block * di[None, :]
    n_u, n_i = block.shape
    top = torch.cat([torch.zeros(n_u, n_u, dtype=block.dtype), weighted], 1)
    bottom = torch.cat([weighted.T, torch.zeros(n_i, n_i, dtype=block.dtype)], 1)
    return torch.cat([top, bottom], 0)


def dense_layer_refined(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """MMRec's LayerGCN forward, by hand: ``sum_l E_l``, ``E_l = cos(A E_(l-1), E_0) A E_(l-1)``."""
    current, layers = ego, []
    for _ in range(n_layers):
        propagated = adjacency @ current
        cosine = (propagated * ego).sum(1) / (
            propagated.norm(dim=1).clamp_min(1e-8) * ego.norm(dim=1).clamp_min(1e-8)
        )
        current = cosine[:, None] * propagated
        layers.append(current)
    return sum(layers)


def fix_weights(model, scale: float = 0.3, seed: int = 5) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (model.user_embedding, model.item_embedding):
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


def mmrec_loss_parts(model, data, users, pos, neg):
    """MMRec's calculate_loss re-derived in float64 on dense tensors: (summed BPR, L2Loss, leaves)."""
    user_table = model.user_embedding.detach().double().requires_grad_()
    item_table = model.item_embedding.detach().double().requires_grad_()
    adjacency = dense_normalized(torch.tensor(data.train_matrix.toarray(), dtype=torch.float64))
    final = dense_layer_refined(adjacency, torch.cat([user_table, item_table]), model.config.n_layers)
    u, i = final[:data.n_users], final[data.n_users:]
    gap = (u[users] * i[pos]).sum(1) - (u[users] * i[neg]).sum(1)
    bpr = torch.sum(-torch.log(torch.sigmoid(gap)))  # upstream: LogSigmoid, summed
    l2 = sum(0.5 * torch.sum(t ** 2) for t in (user_table[users], item_table[pos], item_table[neg]))
    return bpr, l2, (user_table, item_table)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("layergcn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding"} and not missed


def test_evaluation_embeddings_equal_a_dense_rederivation(tiny_data):
    model = make_model("layergcn", tiny_data, n_layers=3)
    adjacency = dense_normalized(torch.tensor(tiny_data.train_matrix.toarray()))
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach()
    expected = dense_layer_refined(adjacency, ego, 3)
    model.eval()
    with torch.no_grad():
        emb = model()
    torch.testing.assert_close(torch.cat([emb.users, emb.items]), expected, rtol=1e-4, atol=1e-6)


def test_loss_and_gradients_equal_mmrec_formula(tiny_data):
    reg_weight = 0.3
    model = make_model("layergcn", tiny_data, reg_weight=reg_weight, dropout=0.0)
    fix_weights(model)
    users, pos, neg = training_batch(tiny_data, size=48, seed=2)
    bpr, l2, (user_table, item_table) = mmrec_loss_parts(model, tiny_data, users, pos, neg)
    expected = bpr + reg_weight * l2
    model.train()
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    # the scale matters: a mean BPR or MMRec's EmbLoss in place of L2Loss would fail this test
    emb_loss = (user_table[users].norm() + item_table[pos].norm() + item_table[neg].norm()) / len(users)
    for wrong in (bpr / len(users) + reg_weight * l2, bpr + reg_weight * emb_loss, bpr + reg_weight * 2 * l2):
        assert abs(wrong.item() - expected.item()) > 1e-4 * abs(expected.item())
    expected.backward()
    loss.backward()
    torch.testing.assert_close(model.user_embedding.grad.double(), user_table.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.item_embedding.grad.double(), item_table.grad, rtol=1e-4, atol=1e-6)


def test_pruned_training_gradients_equal_a_dense_rederivation(tiny_data):
    model = make_model("layergcn", tiny_data, dropout=0.2, n_layers=2)
    fix_weights(model, seed=9)
    model.train()
    model.on_epoch_start(1)
    adjacency = model.pruned_adjacency.to_dense().double()
    users, pos, neg = training_batch(tiny_data, size=32, seed=4)
    user_table = model.user_embedding.detach().double().requires_grad_()
    item_table = model.item_embedding.detach().double().requires_grad_()
    final = dense_layer_refined(adjacency, torch.cat([user_table, item_table]), 2)
    u, i = final[:tiny_data.n_users], final[tiny_data.n_users:]
    expected = -F.logsigmoid((u[users] * (i[pos] - i[neg])).sum(1)).sum() + model.config.reg_weight * 0.5 * (
        user_table[users].pow(2).sum() + item_table[pos].pow(2).sum() + item_table[neg].pow(2).sum()
    )
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    expected.backward()
    loss.backward()
    torch.testing.assert_close(model.user_embedding.grad.double(), user_table.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.item_embedding.grad.double(), item_table.grad, rtol=1e-4, atol=1e-6)


def test_fused_cosine_rescale_matches_torch_including_zero_rows():
    generator = torch.Generator().manual_seed(0)
    propagated = torch.randn(7, 5, dtype=torch.float64, generator=generator)
    propagated[3] = 0.0  # a node whose edges were all pruned
    propagated.requires_grad_()
    ego = torch.randn(7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    grad = torch.randn(7, 5, dtype=torch.float64, generator=generator)
    fused = _CosineRescale.apply(propagated, F.normalize(ego, dim=1, eps=1e-8))
    reference = F.cosine_similarity(propagated, ego, dim=-1)[:, None] * propagated
    torch.testing.assert_close(fused, reference)
    for mine, theirs in zip(torch.autograd.grad(fused, (propagated, ego), grad),
                            torch.autograd.grad(reference, (propagated, ego), grad)):
        torch.testing.assert_close(mine, theirs)
    leaves = (torch.randn(6, 4, dtype=torch.float64, generator=generator, requires_grad=True),
              torch.randn(6, 4, dtype=torch.float64, generator=generator, requires_grad=True))
    assert torch.autograd.gradcheck(lambda p, e: _CosineRescale.apply(p, F.normalize(e, dim=1, eps=1e-8)), leaves)


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


def test_pruned_matrix_is_the_sorted_coo_matrix_of_the_kept_edges(tiny_data):
    model = make_model("layergcn", tiny_data, dropout=0.3)
    torch.manual_seed(1)
    model.on_epoch_start(1)
    torch.manual_seed(1)
    n_edges = model.edge_weights.numel()
    keep = torch.multinomial(model.edge_weights, int(n_edges * 0.7), replacement=False)
    kept_edges = model.train_edges[:, keep]
    expected = symmetric_adjacency(
        kept_edges, edge_normalization(kept_edges, tiny_data.n_users, tiny_data.n_items),
        tiny_data.n_users, tiny_data.n_items,
    )
    actual = model.pruned_adjacency
    assert torch.equal(actual.crow_indices(), expected.crow_indices())
    assert torch.equal(actual.col_indices(), expected.col_indices())
    assert torch.equal(actual.values(), expected.values())


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


def test_spec_grids_and_validation():
    spec = get_model_spec("layergcn")
    assert spec.label == "LayerGCN" and not spec.multimodal and spec.default_preset is None
    assert spec.reference == "MMRec src/models/layergcn.py + src/configs/model/LayerGCN.yaml"
    config = resolve_model_config(spec, "sports")
    assert (config.embedding_dim, config.n_layers, config.dropout, config.reg_weight) == (64, 4, 0.1, 1e-4)
    assert spec.tuning_grid == {
        "n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]
    }
    assert list(spec.tuning_grid) == ["n_layers", "dropout", "reg_weight"]  # the yaml's order
    assert spec.reduced_grid == {"reg_weight": [1e-2, 1e-4, 1e-5]}
    for name, values in spec.reduced_grid.items():
        assert set(values) <= set(spec.tuning_grid[name])
    defaults = dataclasses.asdict(spec.config_class())
    for name, values in spec.tuning_grid.items():
        assert defaults[name] in values
    assert defaults["reg_weight"] in spec.reduced_grid["reg_weight"]
    assert set(spec.deviations) <= field_names(spec.config_class) and not spec.train_defaults
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
