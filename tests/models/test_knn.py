"""Chunked kNN item graphs against dense references, and their on-disk cache."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgmrec.cache import fingerprint
from lgmrec.errors import ConfigError
from lgmrec.graph import to_torch
from lgmrec.models import knn
from lgmrec.models.base import rows_of


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(57, 12)).astype(np.float32)


def dense_topk(x: np.ndarray, k: int):
    t = torch.tensor(x)
    sim = F.normalize(t, dim=1) @ F.normalize(t, dim=1).T
    return sim, sim.topk(k, dim=1)


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 57, 500])
def test_chunked_topk_equals_dense(features, chunk_rows):
    values, indices = knn.cosine_topk(torch.tensor(features), 5, chunk_rows=chunk_rows)
    _, expected = dense_topk(features, 5)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(values, expected.values)
    assert torch.equal(indices[:, 0], torch.arange(57))  # an item is its own nearest neighbour


def test_row_blocks_are_equal_and_dense_when_small(monkeypatch):
    assert knn.row_blocks(57) == [(0, 57)]
    assert knn.row_blocks(10, chunk_rows=4) == [(0, 3), (3, 7), (7, 10)]
    monkeypatch.setattr(knn, "DENSE_SIMILARITY_LIMIT", 1000)
    blocks = knn.row_blocks(57)  # 1000 // 57 = 17 rows at most: 4 blocks of 14-15 rows
    assert [b - a for a, b in blocks] == [14, 14, 15, 14] and blocks[-1][1] == 57


def test_blocked_similarity_is_bitwise_the_dense_product(monkeypatch):
    """The blocked neighbour search sees exactly upstream's similarity rows (build_sim: x / |x|,
    then one product), so neighbours, ties and kept values are upstream's, bit for bit."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.random((1500, 96), dtype=np.float32))
    x[7] = x[3]  # a duplicate item: an exact tie at similarity 1 in two rows
    normed = x.div(torch.norm(x, p=2, dim=-1, keepdim=True))
    dense = torch.topk(normed @ normed.T, 10, dim=-1)
    monkeypatch.setattr(knn, "DENSE_SIMILARITY_LIMIT", 1500 * 600)  # 3 blocks of 500 rows
    assert len(knn.row_blocks(1500)) == 3
    values, indices = knn.cosine_topk(x, 10)
    assert torch.equal(indices, dense.indices) and torch.equal(values, dense.values)


def test_sparse_graph_and_normalisations_equal_dense(features):
    sim, top = dense_topk(features, 4)
    dense = torch.zeros_like(sim).scatter(1, top.indices, top.values)
    graph = knn.knn_graph(features, 4, chunk_rows=10)
    assert graph.nnz == 57 * 4
    np.testing.assert_allclose(graph.toarray(), dense.numpy(), rtol=1e-6, atol=1e-7)

    d = dense.sum(1).pow(-0.5)
    np.testing.assert_allclose(knn.symmetric_normalize_weighted(graph).toarray(),
                               (d[:, None] * dense * d[None, :]).numpy(), rtol=1e-5, atol=1e-7)
    binary = (dense != 0).float()
    db = (binary.sum(1) + 1e-7).pow(-0.5)
    np.testing.assert_allclose(knn.symmetric_normalize_binary(graph).toarray(),
                               (db[:, None] * binary * db[None, :]).numpy(), rtol=1e-5, atol=1e-7)


def test_learned_graph_values_gradients_and_propagation(features):
    x = torch.tensor(features, requires_grad=True)
    indices, values = knn.learned_knn(x, 6)  # one block: upstream's product, bit for bit
    weights = knn.symmetric_knn_weights(indices, values)
    h = torch.randn(57, 3, generator=torch.Generator().manual_seed(1))
    out = knn.gather_propagate(indices, weights, h)
    (grad,) = torch.autograd.grad(out.sum(), x)

    x2 = torch.tensor(features, requires_grad=True)
    normed = x2 / x2.norm(dim=1, keepdim=True)
    sim = normed @ normed.T
    top = sim.topk(6, dim=1)
    assert torch.equal(indices, top.indices) and torch.equal(values.detach(), top.values.detach())
    adjacency = torch.zeros_like(sim).scatter(1, top.indices, top.values)
    d = adjacency.sum(1).pow(-0.5)
    expected = (d[:, None] * adjacency * d[None, :]) @ h
    (expected_grad,) = torch.autograd.grad(expected.sum(), x2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)
    dense_operator = (d[:, None] * adjacency * d[None, :]).detach()
    torch.testing.assert_close(knn.knn_as_dense(indices, weights.detach(), 57), dense_operator)


def test_combined_graph_equals_the_sum_of_its_parts(features):
    gen = torch.Generator().manual_seed(2)
    parts = [(torch.randint(57, (57, 4), generator=gen), torch.rand(57, 4, generator=gen)) for _ in range(2)]
    frozen = knn.knn_graph(features, 5)
    frozen_torch = to_torch(frozen)
    combined = knn.combine_graphs(57, parts, [(frozen_torch, 0.3), (frozen_torch, torch.tensor(0.2))])
    expected = sum(knn.knn_as_dense(i, w, 57) for i, w in parts) + 0.5 * torch.tensor(frozen.toarray())
    torch.testing.assert_close(combined.to_dense(), expected)
    columns = combined.col_indices()
    for row in range(57):  # sorted, distinct columns in every row: a valid CSR layout
        cols = columns[combined.crow_indices()[row]: combined.crow_indices()[row + 1]]
        assert torch.all(cols[1:] > cols[:-1])


def test_cache_reuses_entries_and_keys_on_the_feature_content_and_device(features, tmp_path, monkeypatch):
    monkeypatch.setenv("LGMREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(knn, "_similarity_device", lambda: torch.device("cpu"))
    calls, devices = [], []
    original = knn.knn_graph
    monkeypatch.setattr(knn, "knn_graph", lambda x, k, device: calls.append(k) or devices.append(device.type)
                        or original(x, k, device=torch.device("cpu")))

    first = knn.cached_knn_graph(features, 5)
    second = knn.cached_knn_graph(features, 5)
    assert calls == [5] and (first != second).nnz == 0
    assert len(list(tmp_path.glob("knn-cosine-*.npz"))) == 1

    changed = features.copy()
    changed[3, 2] += 1.0
    assert fingerprint(changed, 5, knn.GRAPH_VERSION) != fingerprint(features, 5, knn.GRAPH_VERSION)
    third = knn.cached_knn_graph(changed, 5)
    assert calls == [5, 5] and len(list(tmp_path.glob("knn-cosine-*.npz"))) == 2
    np.testing.assert_allclose(third.toarray(), original(changed, 5).toarray())
    knn.cached_knn_graph(features, 6)  # another k is another entry
    assert calls == [5, 5, 6]
    # a graph computed on a GPU is not handed to a CPU machine sharing the cache, nor back
    monkeypatch.setattr(knn, "_similarity_device", lambda: torch.device("cuda"))
    knn.cached_knn_graph(features, 5)
    assert calls == [5, 5, 6, 5] and devices[-1] == "cuda" and set(devices[:-1]) == {"cpu"}
    assert len(list(tmp_path.glob("knn-cosine-*.npz"))) == 4


def test_invalid_k_and_missing_modalities(features, tiny_data):
    with pytest.raises(ConfigError, match="knn_k"):
        knn.cosine_topk(torch.tensor(features), 58)
    with pytest.raises(ConfigError, match="audio"):
        knn.select_features(tiny_data, ("audio",))
    assert list(knn.select_features(tiny_data, ("text", "image"))) == ["image", "text"]


def test_gather_propagate_gives_the_bits_of_fancy_indexing_and_its_gradients():
    """index_select's gather and backward against ``x[indices]``'s (deterministic mode, as training)."""
    from lgmrec.training import deterministic_algorithms

    deterministic_algorithms()
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(50, (50, 7), generator=g)
    weights = torch.rand(50, 7, generator=g, requires_grad=True)
    x = torch.randn(50, 16, generator=g, requires_grad=True)
    upstream = torch.randn(50, 16, generator=g)
    results = []
    for propagate in (knn.gather_propagate, lambda i, w, h: (w.unsqueeze(-1) * h[i]).sum(dim=1)):
        x.grad = weights.grad = None
        out = propagate(indices, weights, x)
        out.backward(upstream)
        results.append((out.detach(), x.grad, weights.grad))
    for ours, fancy in zip(*results):
        assert torch.equal(ours, fancy)


def test_gather_of_a_vector_gives_the_bits_of_fancy_indexing_and_its_gradient():
    from lgmrec.training import deterministic_algorithms

    deterministic_algorithms()
    g = torch.Generator().manual_seed(1)
    indices = torch.randint(40, (40, 5), generator=g)
    scale = torch.rand(40, generator=g, requires_grad=True)
    upstream = torch.randn(40, 5, generator=g)
    results = []
    for gathered in (lambda: rows_of(scale, indices), lambda: scale[indices]):
        scale.grad = None
        out = gathered()
        out.backward(upstream)
        results.append((out.detach(), scale.grad))
    for ours, fancy in zip(*results):
        assert torch.equal(ours, fancy)
