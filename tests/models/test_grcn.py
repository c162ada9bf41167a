"""GRCN: per-modality edge attention, confidence-refined ID propagation, against dense algebra."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lgmrec.errors import ConfigError
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models.grcn import EdgePattern, edge_product, edge_scores, interaction_pattern, segment_softmax
from lgmrec.resolve import resolve_run

from .mm_baseline_checks import (
    after_one_step,
    check_shapes,
    gradient_report,
    make_model,
    training_batch,
    untrained_and_trained_recall,
)


def dense_representation(model, data, route_steps: int = 0) -> torch.Tensor:
    """The model's representation re-derived with dense (n_users x n_items) matrices."""
    R = torch.tensor(data.train_matrix.toarray())
    n_u = data.n_users
    parts, to_item, to_user = [], [], []
    for m in model.modalities:
        att = model.attention[m]
        f = F.normalize(F.leaky_relu(att.encoder(torch.from_numpy(data.features[m]))))
        p = F.normalize(att.preference)
        for _ in range(route_steps):
            e = (p @ f.T).exp() * R
            p = F.normalize(p + (e / e.sum(1, keepdim=True)) @ f)
        e = (p @ f.T).exp() * R
        a_item = e / e.sum(0, keepdim=True).clamp(min=1e-30)  # softmax over each item's users
        a_user = e / e.sum(1, keepdim=True).clamp(min=1e-30)  # softmax over each user's items
        parts.append(torch.cat([p + a_user @ f, f + a_item.T @ p]))
        to_item.append(a_item)
        to_user.append(a_user)
    conf = model.confidence
    w_item = torch.stack([a * conf[:n_u, k:k + 1] for k, a in enumerate(to_item)]).amax(0).relu()
    w_user = torch.stack([a * conf[n_u:, k][None, :] for k, a in enumerate(to_user)]).amax(0).relu()
    w_item, w_user = w_item * R, w_user * R

    def propagate(x):
        return torch.cat([w_user @ x[n_u:], w_item.T @ x[:n_u]])

    x = F.normalize(model.id_embedding)
    first = propagate(x)
    return torch.cat([x + first + propagate(first), *parts], 1)


ALL_PARAMETERS = {
    "id_embedding", "confidence",
    "attention.image.preference", "attention.image.encoder.weight", "attention.image.encoder.bias",
    "attention.text.preference", "attention.text.encoder.weight", "attention.text.encoder.bias",
}


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("grcn", tiny_data)
    check_shapes(model, tiny_data, dim=64 + 2 * 64)  # ID part + one part per modality
    reached, missed = gradient_report(model, tiny_data)
    assert reached == ALL_PARAMETERS and not missed


def test_representation_equals_dense_rederivation(tiny_data):
    model = make_model("grcn", tiny_data)
    with torch.no_grad():
        expected = dense_representation(model, tiny_data)
        torch.testing.assert_close(model.representation(), expected, rtol=1e-4, atol=1e-5)


def test_upstream_routing_is_a_no_op_and_the_fix_routes_to_users(tiny_data):
    faithful = make_model("grcn", tiny_data, n_routing=3)
    no_routing = make_model("grcn", tiny_data, n_routing=0)
    routed = make_model("grcn", tiny_data, n_routing=2, route_to_users=True)
    with torch.no_grad():
        torch.testing.assert_close(faithful.representation(), no_routing.representation())
        assert not torch.allclose(routed.representation(), no_routing.representation(), atol=1e-3)
        expected = dense_representation(routed, tiny_data, route_steps=2)
        torch.testing.assert_close(routed.representation(), expected, rtol=1e-4, atol=1e-5)


def test_segment_softmax_sums_to_one_per_group():
    groups = torch.tensor([0, 2, 0, 2, 2, 3])
    logits = torch.tensor([1.0, -2.0, 3.0, 0.5, 0.9, 0.7])
    weights = segment_softmax(logits, groups, 5)
    sums = torch.zeros(5).index_add(0, groups, weights)
    torch.testing.assert_close(sums, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(weights[[0, 2]], torch.softmax(logits[[0, 2]], 0))


def test_loss_matches_upstream_formula(tiny_data):
    """MMRec's calculate_loss re-derived from the math on the dense representation: pairs laid
    out as (u, p), (u, n) rows, means of squares over rows x dimensions, the image term twice."""
    model = make_model("grcn", tiny_data, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    users, pos, neg = torch.cat([users, users[:8]]), torch.cat([pos, pos[:8]]), torch.cat([neg, neg[:8]])
    with torch.no_grad():
        rep = dense_representation(model, tiny_data)
        n_u = tiny_data.n_users
        user_rows = users.repeat_interleave(2)  # u1 u1 u2 u2 ...
        item_rows = torch.stack([pos, neg], dim=1).reshape(-1) + n_u  # p1 n1 p2 n2 ...
        scores = (rep[user_rows] * rep[item_rows]).sum(1).view(-1, 2) @ torch.tensor([[1.0], [-1.0]])
        bpr = -torch.log(torch.sigmoid(scores)).mean()
        ids = model.id_embedding
        image, text = model.attention["image"].preference, model.attention["text"].preference
        reg = (ids[user_rows] ** 2 + ids[item_rows] ** 2).mean() + (image ** 2).mean()
        reg = reg + (image[user_rows] ** 2).mean() + (text[user_rows] ** 2).mean()
        expected = bpr + 0.5 * reg
        torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
        assert 0.5 * reg > 1e-3 * expected  # the regulariser is large enough to be checked


def test_edge_products_have_exact_gradients():
    """The sparse products with gradients through their values, against dense algebra and
    finite differences (float64)."""
    rng = np.random.default_rng(0)
    pattern = sp.random(6, 5, density=0.5, format="csr", random_state=1)
    pattern.data[:] = 1.0
    pattern.sort_indices()
    buffers = interaction_pattern(pattern)
    edges = EdgePattern(buffers["crow"], buffers["col"], (6, 5), buffers["crow_t"], buffers["col_t"],
                        buffers["perm"], buffers["perm_t"])
    dense = lambda values, p: torch.zeros(p.shape, dtype=values.dtype).index_put(
        (torch.from_numpy(p.tocoo().row).long(), torch.from_numpy(p.tocoo().col).long()), values)
    a = torch.tensor(rng.normal(size=(6, 3)), requires_grad=True)
    b = torch.tensor(rng.normal(size=(5, 3)), requires_grad=True)
    values = torch.tensor(rng.normal(size=pattern.nnz), requires_grad=True)
    coo = pattern.tocoo()  # scipy's CSR -> COO keeps the CSR order
    torch.testing.assert_close(edge_scores(a, b, edges), (a[coo.row] * b[coo.col]).sum(1))
    torch.testing.assert_close(edge_product(values, b, edges), dense(values, pattern) @ b)
    transposed_values = values[edges.perm]
    torch.testing.assert_close(edge_product(transposed_values, a, edges.T), dense(values, pattern).T @ a)
    assert torch.autograd.gradcheck(lambda x, y: edge_scores(x, y, edges), (a, b))
    assert torch.autograd.gradcheck(lambda v, y: edge_product(v, y, edges), (values, b))
    assert torch.autograd.gradcheck(lambda v, x: edge_product(v[edges.perm], x, edges.T), (values, a))


def test_scores_use_the_last_training_batch_as_upstream(tiny_data):
    for cached in (True, False):
        model, before_step = after_one_step("grcn", tiny_data, lambda m: m.representation(), score_from_last_batch=cached)
        with torch.no_grad():
            scored = torch.cat(model())
            expected = before_step if cached else model.representation()
            torch.testing.assert_close(scored, expected)
            assert not torch.allclose(before_step, model.representation(), atol=1e-4)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("grcn", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data, dim=128)
    with torch.no_grad():
        torch.testing.assert_close(
            model.representation(), dense_representation(model, tiny_data), rtol=1e-4, atol=1e-5
        )


def test_spec_and_validation():
    spec = get_model_spec("grcn")
    assert spec.label == "GRCN" and spec.multimodal
    config = resolve_model_config(spec, "clothing")
    assert (config.embedding_dim, config.latent_dim, config.n_routing, config.reg_weight) == (64, 64, 3, 1e-5)
    assert not config.route_to_users and config.score_from_last_batch
    assert spec.tuning_grid == {
        "reg_weight": [0.1, 0.01, 0.001, 0.0001, 0.00001],
        "learning_rate": [1.0, 0.1, 0.01, 0.001, 0.0001],
    }
    assert spec.reduced_grid == {"reg_weight": [0.1, 0.001, 0.00001], "learning_rate": [0.1, 0.01, 0.001]}
    assert spec.train_defaults == {} and spec.reference.startswith("MMRec src/models/grcn.py")
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(config)}
    train = resolve_run("grcn", "baby").train_config
    for grid in (spec.tuning_grid, spec.reduced_grid):  # the defaults are a point of both grids
        assert config.reg_weight in grid["reg_weight"] and train.learning_rate in grid["learning_rate"]
    for bad in ({"latent_dim": 0}, {"n_routing": -1}, {"reg_weight": -1.0}):
        with pytest.raises(ConfigError, match="GRCN"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "grcn", tiny_data, epochs=3, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
