import numpy as np
import scipy.sparse as sp
import torch

from lgmrec import graph


def test_normalized_adjacency_matches_the_dense_formula():
    R = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=np.float32))
    A = np.block([[np.zeros((3, 3)), R.toarray()], [R.toarray().T, np.zeros((3, 3))]])
    d = A.sum(axis=1) + 1e-7
    expected = A / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    np.testing.assert_allclose(graph.normalized_adjacency(R).toarray(), expected, rtol=1e-6)


def test_torch_csr_propagation_and_row_mean():
    R = sp.random(30, 20, density=0.2, format="csr", random_state=0, dtype=np.float32)
    R.data[:] = 1
    Ahat = graph.normalized_adjacency(R)
    E = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    layers = graph.propagate(graph.to_torch(Ahat), torch.from_numpy(E), 2)
    np.testing.assert_allclose(layers[2].numpy(), Ahat @ (Ahat @ E), rtol=1e-5, atol=1e-6)
    mean = graph.row_mean_operator(R) @ np.ones((20, 1), np.float32)
    has_items = np.asarray(R.sum(axis=1)).ravel() > 0
    np.testing.assert_allclose(mean[has_items, 0], 1.0, rtol=1e-5)
    assert (mean[~has_items] == 0).all()


def test_row_sums_of_gathered_rows_are_the_sparse_product():
    """The product used off the CPU (run here on CPU tensors): empty rows, int32 and int64 indices."""
    R = sp.random(40, 30, density=0.15, format="csr", random_state=1, dtype=np.float32)
    R = sp.csr_matrix(R.multiply(np.arange(40)[:, None] % 7 != 0))  # every 7th row empty
    X = torch.from_numpy(np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32))
    narrow = graph.to_torch(R)  # int32 indices
    wide = torch.sparse_csr_tensor(narrow.crow_indices().long(), narrow.col_indices().long(), narrow.values(),
                                   narrow.shape, check_invariants=True)
    for csr in (narrow, wide):
        product = graph.row_sums_of_gathered(csr, X)
        np.testing.assert_allclose(product.numpy(), R @ X.numpy(), rtol=1e-5, atol=1e-6)
        assert (product[::7] == 0).all()
    empty = graph.to_torch(sp.csr_matrix((4, 30), dtype=np.float32))
    assert torch.equal(graph.row_sums_of_gathered(empty, X), torch.zeros(4, 5))


def test_spmm_gradient_matches_the_dense_product_and_reuses_the_transpose():
    import torch

    from lgmrec.graph import _TRANSPOSES, spmm, to_torch

    rng = np.random.default_rng(0)
    dense_matrix = (rng.random((7, 5)) < 0.4) * rng.random((7, 5))
    matrix = to_torch(sp.csr_matrix(dense_matrix.astype(np.float32)))
    x = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(7, 3)
    (spmm(matrix, x) * weight).sum().backward()
    expected = torch.from_numpy(dense_matrix.T.astype(np.float32)) @ weight
    assert torch.allclose(x.grad, expected, atol=1e-6)
    transposed = _TRANSPOSES[id(matrix)][1]
    x.grad = None
    (spmm(matrix, x) * weight).sum().backward()
    assert _TRANSPOSES[id(matrix)][1] is transposed and torch.allclose(x.grad, expected, atol=1e-6)
    key = id(matrix)
    del matrix
    assert key not in _TRANSPOSES  # dropped with its matrix


def test_sparse_rows_are_the_full_products_rows_with_the_same_gradient_bits():
    R = sp.random(300, 200, density=0.05, format="csr", random_state=1, dtype=np.float32)
    R.data[:] = 1
    matrix = graph.to_torch(graph.normalized_adjacency(R))
    rows = torch.tensor([0, 3, 4, 250, 251, 499])
    x = torch.randn(500, 8, requires_grad=True)
    upstream = torch.randn(len(rows), 8)
    cut = graph.SparseRows(matrix, rows)
    ours = cut.product(x)
    ours.backward(upstream)
    ours_grad, x.grad = x.grad, None
    full = graph.spmm(matrix, x)[rows]
    full.backward(upstream)
    assert torch.equal(ours, full) and torch.equal(ours_grad, x.grad)
    assert cut.sub.shape == (len(rows), 500) and cut.sub_t.shape == (500, len(rows))
    assert torch.equal(cut.product(x.detach()), full.detach())  # outside autograd too


def test_sparse_rows_of_most_of_the_matrix_take_the_full_product_with_the_same_bits():
    R = sp.random(300, 200, density=0.05, format="csr", random_state=2, dtype=np.float32)
    R.data[:] = 1
    matrix = graph.to_torch(graph.normalized_adjacency(R))
    generator = torch.Generator().manual_seed(0)
    for n_rows in (10, 240, 260, 490):
        rows = torch.randperm(500, generator=generator)[:n_rows].sort().values
        x = torch.randn(500, 8, generator=generator, requires_grad=True)
        upstream = torch.randn(n_rows, 8, generator=generator)
        products, gradients = [], []
        for share in (1.0, 0.0):  # cut, then the full product's rows
            graph.CUT_MAX_SHARE, saved = share, graph.CUT_MAX_SHARE
            try:
                rows_of = graph.SparseRows(matrix, rows)
                assert rows_of.cut == (share == 1.0)
                product = rows_of.product(x)
            finally:
                graph.CUT_MAX_SHARE = saved
            product.backward(upstream)
            products.append(product.detach())
            gradients.append(x.grad)
            x.grad = None
        assert torch.equal(*products) and torch.equal(*gradients)
    assert not graph.SparseRows(matrix, torch.arange(300)).cut and graph.SparseRows(matrix, torch.arange(200)).cut
