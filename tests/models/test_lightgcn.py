"""LightGCN: the mean of [E, A E, ..., A^L E]; loss = BPR + reg_weight x EmbLoss of the EGO rows."""

import dataclasses

import pytest
import torch

from lgmrec.config import field_names
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

REG_WEIGHT = 0.5


def dense_propagation_matrix(data) -> torch.Tensor:
    """``D^-1/2 Adj D^-1/2`` of ``[[0, R], [R^T, 0]]`` (degrees + 1e-7), dense float64."""
    R = torch.tensor(data.train_matrix.toarray(), dtype=torch.float64)
    n_u, n_i = R.shape
    adjacency = torch.cat([torch.cat([torch.zeros(n_u, n_u, dtype=R.dtype), R], 1),
                           torch.cat([R.T, torch.zeros(n_i, n_i, dtype=R.dtype)], 1)])
    scale = (adjacency.sum(1) + 1e-7).pow(-0.5)
    return scale[:, None] * adjacency * scale[None, :]


def fixed_model(data, n_layers: int = 2, seed: int = 4):
    model = make_model("lightgcn", data, reg_weight=REG_WEIGHT, n_layers=n_layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model


def mmrec_loss(model, data, users, pos, neg, squared: bool = False):
    """MMRec's LightGCN.calculate_loss by hand (float64, dense): BPR on the mean of
    ``[E, A E, A^2 E]`` + reg_weight x EmbLoss of the ego rows; ``squared`` gives the WRONG form."""
    users_table = model.user_embedding.detach().double().requires_grad_()
    items_table = model.item_embedding.detach().double().requires_grad_()
    A = dense_propagation_matrix(data)
    ego = torch.cat([users_table, items_table])
    layers = [ego]
    for _ in range(model.n_layers):
        layers.append(A @ layers[-1])
    final = torch.stack(layers, dim=1).mean(dim=1)
    u, i = final[:data.n_users], final[data.n_users:]
    gap = (u[users] * i[pos]).sum(1) - (u[users] * i[neg]).sum(1)
    bpr = -torch.log(1e-10 + torch.sigmoid(gap)).mean()
    ego_rows = (users_table[users], items_table[pos], items_table[neg])
    norms = [t.norm(p=2) ** (2 if squared else 1) for t in ego_rows]
    return bpr + REG_WEIGHT * sum(norms) / len(users), (users_table, items_table), final


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("lightgcn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    assert reached == {"user_embedding", "item_embedding"} and not missed


def test_propagation_equals_the_dense_mean_of_layers(tiny_data):
    model = fixed_model(tiny_data)
    users, pos, neg = training_batch(tiny_data)
    _, _, expected = mmrec_loss(model, tiny_data, users, pos, neg)
    with torch.no_grad():
        emb = model()
    torch.testing.assert_close(torch.cat([emb.users, emb.items]).double(), expected.detach(),
                               rtol=1e-4, atol=1e-6)


def test_loss_equals_mmrec_formula_and_a_squared_regulariser_would_fail(tiny_data):
    model = fixed_model(tiny_data)
    users, pos, neg = training_batch(tiny_data, size=32, seed=1)
    expected, _, _ = mmrec_loss(model, tiny_data, users, pos, neg)
    squared, _, _ = mmrec_loss(model, tiny_data, users, pos, neg, squared=True)
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    assert abs(squared.item() - expected.item()) > 100 * 1e-5 * abs(expected.item())
    # and the regulariser is on the ego rows: on the propagated rows the value would differ too
    with torch.no_grad():
        emb = model()
        propagated = sum(t.norm() for t in (emb.users[users], emb.items[pos], emb.items[neg])) / len(users)
        ego = sum(t.norm() for t in (model.user_embedding[users], model.item_embedding[pos],
                                     model.item_embedding[neg])) / len(users)
        assert abs(REG_WEIGHT * (propagated - ego).item()) > 100 * 1e-5 * abs(expected.item())


def test_gradients_equal_autograd_of_the_rederivation(tiny_data):
    model = fixed_model(tiny_data, seed=8)
    users, pos, neg = training_batch(tiny_data, size=32, seed=2)
    expected, (users_table, items_table), _ = mmrec_loss(model, tiny_data, users, pos, neg)
    expected.backward()
    model.loss(users, pos, neg).backward()
    torch.testing.assert_close(model.user_embedding.grad.double(), users_table.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(model.item_embedding.grad.double(), items_table.grad, rtol=1e-4, atol=1e-7)


def test_spec_grids_and_validation():
    spec = get_model_spec("lightgcn")
    assert spec.label == "LightGCN" and not spec.multimodal
    assert spec.reference == "MMRec src/models/lightgcn.py + src/configs/model/LightGCN.yaml"
    assert spec.tuning_grid == {"n_layers": [1, 2, 3, 4], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]}
    assert list(spec.tuning_grid) == ["n_layers", "reg_weight"]  # the yaml's order
    for name, values in spec.reduced_grid.items():
        assert set(values) <= set(spec.tuning_grid[name])
    defaults = dataclasses.asdict(spec.config_class())
    assert all(defaults[name] in values for name, values in spec.tuning_grid.items())
    assert set(spec.deviations) <= field_names(spec.config_class)
    for bad in ({"n_layers": -1}, {"reg_weight": -1.0}, {"embedding_dim": 0}):
        with pytest.raises(ConfigError, match="LightGCN"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    assert same_seed_same_run("lightgcn", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "lightgcn", tiny_data, epochs=4, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
def test_layer_mean_gives_the_bits_of_stack_mean_and_its_gradient(n_layers):
    from lgmrec.models.lightgcn import layer_mean

    g = torch.Generator().manual_seed(n_layers)
    base = torch.randn(300, 16, generator=g, requires_grad=True)
    layers = [base] + [base * torch.randn(1, 16, generator=g) + torch.randn(300, 16, generator=g)
                       for _ in range(n_layers - 1)]
    upstream = torch.randn(300, 16, generator=g)
    stacked = torch.stack(layers).mean(dim=0)
    ours = layer_mean(layers)
    assert torch.equal(ours, stacked)
    assert torch.equal(torch.autograd.grad(ours, base, upstream, retain_graph=True)[0],
                       torch.autograd.grad(stacked, base, upstream)[0])
