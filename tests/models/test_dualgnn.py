"""DualGNN: the user co-occurrence graph, its per-epoch slot filling, and the model itself."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lgmrec import cache
from lgmrec.errors import ConfigError
from lgmrec.models import dualgnn, get_model_spec, resolve_model_config
from lgmrec.resolve import resolve_run
from lgmrec.models.dualgnn import (
    cached_user_graph,
    fill_slots,
    padded_neighbours,
    user_cooccurrence_topk,
)

from .mm_baseline_checks import (
    after_one_step,
    check_shapes,
    gradient_report,
    make_model,
    same_seed_same_run,
    training_batch,
    untrained_and_trained_recall,
)

# users x items; shared-item counts: u0-u1 2, u0-u2 1, u0-u4 3, u1-u4 2, u2-u4 2, u3 shares nothing
HAND_MADE = sp.csr_matrix(np.array([
    [1, 1, 1, 0, 0],
    [1, 1, 0, 0, 0],
    [0, 0, 1, 1, 0],
    [0, 0, 0, 0, 1],
    [1, 1, 1, 1, 0],
], dtype=np.float32))


def test_user_graph_keeps_the_top_k_co_occurring_users():
    graph = user_cooccurrence_topk(HAND_MADE, k=2).toarray()
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[0, [4, 1]] = [3, 2]  # u2 (1 shared item) is dropped
    expected[1, [0, 4]] = [2, 2]
    expected[2, [4, 0]] = [2, 1]
    expected[4, [0, 1]] = [3, 2]  # u1 and u2 tie at 2: the lower id is kept
    np.testing.assert_array_equal(graph, expected)
    full = user_cooccurrence_topk(HAND_MADE, k=10, chunk_rows=2).toarray()  # chunking changes nothing
    co = (HAND_MADE @ HAND_MADE.T).toarray()
    np.fill_diagonal(co, 0)
    np.testing.assert_array_equal(full, co)


@pytest.mark.parametrize("n_cols", [50, 2**62])  # packed int64 keys, and the lexsort fallback
def test_entry_order_is_row_then_count_descending_then_id(n_cols):
    rng = np.random.default_rng(0)
    rows, counts, cols = rng.integers(0, 6, 300), rng.integers(1, 5, 300), rng.integers(0, 50, 300)
    order = dualgnn._row_count_id_order(rows, counts.astype(np.float32), cols, n_cols)
    np.testing.assert_array_equal(order, np.lexsort((cols, -counts, rows)))


def test_user_graph_cache_hits_and_keys_follow_the_input(monkeypatch):
    first = cached_user_graph(HAND_MADE, 2)
    monkeypatch.setattr(dualgnn, "user_cooccurrence_topk", lambda *a, **k: pytest.fail("cache missed"))
    second = cached_user_graph(HAND_MADE, 2)
    assert (first != second).nnz == 0
    assert len(list(cache.cache_dir().glob("user-cooccurrence-*.npz"))) == 1
    changed = HAND_MADE.tolil()
    changed[3, 0] = 1.0
    changed = changed.tocsr()
    assert cache.fingerprint(changed, 2, dualgnn.USER_GRAPH_VERSION) != cache.fingerprint(
        HAND_MADE, 2, dualgnn.USER_GRAPH_VERSION
    )
    assert cache.fingerprint(HAND_MADE, 3, dualgnn.USER_GRAPH_VERSION) != cache.fingerprint(
        HAND_MADE, 2, dualgnn.USER_GRAPH_VERSION
    )


def test_slot_filling_copies_existing_neighbours():
    index, count, sizes = padded_neighbours(user_cooccurrence_topk(HAND_MADE, k=4), k=4)
    assert sizes.tolist() == [3, 2, 2, 0, 3]
    assert index[0, :3].tolist() == [4, 1, 2] and count[0, :3].tolist() == [3, 2, 1]
    torch.manual_seed(0)
    filled_index, filled_count = fill_slots(index, count, sizes)
    for user, n in enumerate(sizes.tolist()):
        if n == 0:
            assert filled_count[user].abs().sum() == 0  # no neighbour: nothing to copy
            continue
        assert filled_index[user, :n].tolist() == index[user, :n].tolist()
        neighbours = dict(zip(index[user, :n].tolist(), count[user, :n].tolist()))
        for slot in range(n, 4):
            neighbour = int(filled_index[user, slot])
            assert neighbour in neighbours and filled_count[user, slot] == neighbours[neighbour]


def test_sampled_user_graph_weights(tiny_data):
    model = make_model("dualgnn", tiny_data)  # k = 40: most users have 40 co-users, some fewer
    torch.manual_seed(1)
    model.on_epoch_start(1)
    weights = model.user_user.to_dense()
    sizes = model.neighbour_total
    row_sums = weights.sum(1)
    torch.testing.assert_close(row_sums[sizes > 0], torch.ones(int((sizes > 0).sum())))
    assert torch.all(row_sums[sizes == 0] == 0)
    full = model.neighbour_total == 40  # no slot to fill: exactly softmax of the top-40 counts
    user = int(torch.nonzero(full)[0])
    expected = torch.softmax(model.neighbour_count[user], 0)
    torch.testing.assert_close(weights[user, model.neighbour_index[user]], expected)
    graph = torch.tensor(cached_user_graph(tiny_data.train_matrix, 40).toarray())
    assert torch.all(graph[weights > 0] > 0)  # only co-occurring users get weight
    short = torch.nonzero((sizes > 0) & (sizes < 40)).squeeze(1)
    assert len(short) > 0
    model.on_epoch_start(2)
    assert not torch.allclose(model.user_user.to_dense()[short], weights[short])  # resampled


def dense_embeddings(model, data):
    """The forward pass re-derived with dense matrices (given the model's sampled user graph)."""
    R = torch.tensor(data.train_matrix.toarray())
    n_u = data.n_users
    n_i = R.shape[1]
    A = torch.cat([torch.cat([torch.zeros(n_u, n_u), R], 1), torch.cat([R.T, torch.zeros(n_i, n_i)], 1)])
    degree = A.sum(1)
    d = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))  # PyG: no epsilon
    A = d[:, None] * A * d[None, :]
    reps = []
    for m in model.modalities:
        gcn = model.gcn[m]
        content = gcn.output(F.leaky_relu(gcn.hidden(torch.from_numpy(data.features[m]))))
        x = F.normalize(torch.cat([gcn.preference, content]))
        reps.append(x + A @ x + A @ A @ x)
    total = sum(reps)
    w = model.user_modality_weight[:, :, 0]
    first = total if model.config.upstream_inplace_sum else reps[0]
    users = w[:, :1] * first[:n_u] + w[:, 1:2] * reps[1][:n_u]
    users = users + model.user_user.to_dense() @ users
    return users, total[n_u:]


@pytest.mark.parametrize("inplace", [True, False])
def test_forward_equals_dense_rederivation(tiny_data, inplace):
    model = make_model("dualgnn", tiny_data, upstream_inplace_sum=inplace)
    with torch.no_grad():
        emb = model()
        users, items = dense_embeddings(model, tiny_data)
    torch.testing.assert_close(emb.users, users, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.items, items, rtol=1e-4, atol=1e-5)


def test_shapes_and_every_parameter_trains(tiny_data):
    model = make_model("dualgnn", tiny_data)
    check_shapes(model, tiny_data)
    reached, missed = gradient_report(model, tiny_data)
    # item_modality_weight is only regularised (as upstream): its gradient comes from that term
    assert reached == {
        "user_modality_weight", "item_modality_weight",
        *(f"gcn.{m}.{p}" for m in ("image", "text")
          for p in ("preference", "hidden.weight", "hidden.bias", "output.weight", "output.bias")),
    } and not missed


def test_loss_matches_upstream_formula(tiny_data):
    """MMRec's calculate_loss from the math, on the dense forward pass: base-2 BPR, means of
    squares of the batch users' preferences, of the whole user and item weight tables."""
    model = make_model("dualgnn", tiny_data, reg_weight=0.5)
    users, pos, neg = training_batch(tiny_data)
    users, pos, neg = torch.cat([users, users[:8]]), torch.cat([pos, pos[:8]]), torch.cat([neg, neg[:8]])
    with torch.no_grad():
        model.on_epoch_start(1)
        emb_users, emb_items = dense_embeddings(model, tiny_data)
        u, p, n = emb_users[users], emb_items[pos], emb_items[neg]
        bpr = -torch.mean(torch.log2(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))))
        reg = (model.gcn["image"].preference[users] ** 2).mean() + (model.gcn["text"].preference[users] ** 2).mean()
        reg = reg + (model.user_modality_weight ** 2).mean() + (model.item_modality_weight ** 2).mean()
        expected = bpr + 0.5 * reg
        torch.testing.assert_close(model.loss(users, pos, neg), expected, rtol=1e-5, atol=1e-6)
        assert 0.5 * reg > 1e-3 * expected


def test_scores_use_the_last_training_batch_as_upstream(tiny_data):
    for cached in (True, False):
        model, before_step = after_one_step("dualgnn", tiny_data, lambda m: torch.cat(m.embeddings()),
                                            score_from_last_batch=cached)
        with torch.no_grad():
            expected = before_step if cached else torch.cat(model.embeddings())
            torch.testing.assert_close(torch.cat(model()), expected)
            assert not torch.allclose(before_step, torch.cat(model.embeddings()), atol=1e-4)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_works(tiny_data, modality):
    model = make_model("dualgnn", tiny_data, modalities=(modality,))
    check_shapes(model, tiny_data)
    assert model.user_modality_weight.shape == (tiny_data.n_users, 1, 1)


def test_mean_aggregation_uses_the_row_normalised_graph(tiny_data):
    model = make_model("dualgnn", tiny_data, aggr_mode="mean")
    rows = model.adjacency.to_dense().sum(1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_spec_and_validation():
    spec = get_model_spec("dualgnn")
    assert spec.label == "DualGNN" and spec.multimodal
    config = resolve_model_config(spec, "baby")
    assert dataclasses.astuple(config)[:6] == (64, 2, "add", 40, "softmax", 0.1)
    assert config.upstream_inplace_sum and config.score_from_last_batch
    assert spec.tuning_grid == {
        "aggr_mode": ["add"],
        "learning_rate": [0.1, 0.01, 0.001, 0.0001, 0.00001],
        "reg_weight": [0.1, 0.01, 0.001, 0.0001, 0.00001],
    }
    assert spec.reduced_grid == {"learning_rate": [0.1, 0.01, 0.001], "reg_weight": [0.1, 0.001, 0.00001]}
    assert spec.train_defaults == {} and spec.reference.startswith("MMRec src/models/dualgnn.py")
    assert set(spec.deviations) <= {f.name for f in dataclasses.fields(config)}
    train = resolve_run("dualgnn", "baby").train_config
    for grid in (spec.tuning_grid, spec.reduced_grid):  # the defaults are a point of both grids
        assert config.reg_weight in grid["reg_weight"] and train.learning_rate in grid["learning_rate"]
    assert config.aggr_mode in spec.tuning_grid["aggr_mode"]
    for bad in ({"aggr_mode": "max"}, {"user_graph_k": 0}, {"user_aggr_mode": "sum"}, {"reg_weight": -1.0}):
        with pytest.raises(ConfigError, match="DualGNN"):
            resolve_model_config(spec, "baby", overrides=bad)


def test_same_seed_same_run(tiny_data):
    # the per-epoch sampling draws from torch's RNG only, which the trainer seeds
    assert same_seed_same_run("dualgnn", tiny_data)


def test_training_improves_validation_recall(tiny_data):
    untrained, trained = untrained_and_trained_recall(
        "dualgnn", tiny_data, epochs=2, learning_rate=1e-2, batch_size=256
    )
    assert trained > untrained + 0.1, (untrained, trained)
