"""LGMRec against the spec: a dense re-derivation, parameter counts, options and ablations."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lgmrec import graph
from lgmrec.models import get_model_spec, resolve_model_config
from lgmrec.models import infonce
from lgmrec.models.infonce import summed_info_nce
from lgmrec.models import lgmrec as lgmrec_module
from lgmrec.models.lgmrec import LGMRec, LGMRecConfig, build

SPEC = get_model_spec("lgmrec")


def make(data, **overrides):
    torch.manual_seed(0)
    return build(data, dataclasses.replace(LGMRecConfig(), **overrides))


def dense_reference(model: LGMRec, data) -> torch.Tensor:
    """The spec's equations with dense matrices and a plain softmax (no Gumbel, no dropout)."""
    cfg = model.config
    R = torch.tensor(data.train_matrix.toarray())
    n_u = R.shape[0]
    adjacency = torch.block_diag(torch.zeros(n_u, n_u), torch.zeros(R.shape[1], R.shape[1]))
    adjacency[:n_u, n_u:], adjacency[n_u:, :n_u] = R, R.T
    d = adjacency.sum(1) + 1e-7
    ahat = adjacency / d.sqrt()[:, None] / d.sqrt()[None, :]
    layers = [torch.cat([model.user_embedding, model.item_embedding])]
    for _ in range(cfg.n_ui_layers):
        layers.append(ahat @ layers[-1])
    cge = torch.stack(layers).mean(0)
    local, ghe = cge.clone(), 0
    for m in model.modalities:
        x = torch.tensor(data.features[m])
        f_items = x @ model.projection[m]
        g = torch.cat([(R @ f_items) / (R.sum(1, keepdim=True) + 1e-7), f_items])
        for _ in range(cfg.n_mm_layers):
            g = ahat @ g
        local = local + F.normalize(g, dim=1)
        z_items = x @ model.hyperedges[m]
        h_items, h_users = torch.softmax(z_items / cfg.tau, 1), torch.softmax(R @ z_items / cfg.tau, 1)
        y = cge[n_u:]
        for _ in range(cfg.n_hyper_layer):
            edges = h_items.T @ y
            y, u = h_items @ edges, h_users @ edges
        ghe = ghe + torch.cat([u, y])
    return local + cfg.alpha * F.normalize(ghe, dim=1)


@pytest.mark.parametrize("layers", [(2, 2, 1), (1, 3, 2)])
def test_deterministic_forward_equals_the_dense_spec(tiny_data, layers):
    L, K, H = layers
    model = make(tiny_data, eval_mode="deterministic", n_ui_layers=L, n_mm_layers=K, n_hyper_layer=H, hyper_num=6)
    model.eval()
    with torch.no_grad():
        users, items = model()
        expected = dense_reference(model, tiny_data)
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "dataset, n_users, n_items, expected",
    [("baby", 19445, 7050, 2_000_320), ("sports", 35598, 18357, 3_757_760), ("clothing", 39387, 23033, 4_568_320)],
)
def test_parameter_counts_of_the_paper_datasets(dataset, n_users, n_items, expected):
    config = resolve_model_config(SPEC, dataset)  # official-log preset: A differs per dataset
    empty = lambda r, c: graph.to_torch(sp.csr_matrix((r, c), dtype=np.float32))  # noqa: E731
    features = {"image": torch.zeros(1, 4096).expand(n_items, -1), "text": torch.zeros(1, 384).expand(n_items, -1)}
    n_nodes = n_users + n_items
    model = LGMRec(n_users, n_items, empty(n_users, n_items), empty(n_nodes, n_nodes), features, config)
    assert model.trainable_parameter_count() == expected


ABLATIONS = {
    "full": {},
    "no_cge": {"use_cge": False},
    "no_mge": {"use_mge": False},
    "no_ghe": {"use_ghe": False},
    "cge_only": {"use_mge": False, "use_ghe": False},
    "no_hcl": {"use_hcl": False},
    "image_only": {"modalities": ("image",)},
    "text_only": {"modalities": ("text",)},
    "alpha_0": {"alpha": 0.0},
    "mf_backbone": {"cf_model": "mf"},
    "hyperedge_bug": {"hyperedge_bug": True},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_variant_trains_every_parameter(tiny_data, name):
    model = make(tiny_data, **ABLATIONS[name])
    users = torch.arange(0, 64)
    pos = torch.from_numpy(tiny_data.train_matrix[users.numpy()].tocsr().indices[:64].copy())
    loss = model.loss(users, pos, torch.arange(64) % tiny_data.n_items)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    names = {n for n, _ in model.named_parameters()}
    expected = {"user_embedding", "item_embedding"}
    modalities = ABLATIONS[name].get("modalities", ("image", "text"))
    if ABLATIONS[name].get("use_mge", True):
        expected |= {f"projection.{m}" for m in modalities}
    if ABLATIONS[name].get("use_ghe", True):
        expected |= {f"hyperedges.{m}" for m in modalities}
    assert names == expected
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    emb = model()
    assert emb.users.shape == (tiny_data.n_users, 64) and emb.items.shape == (tiny_data.n_items, 64)
    scores = model.score(torch.tensor([0, 1, 2]), emb)
    assert scores.shape == (3, tiny_data.n_items)


def test_switching_off_modules_removes_their_contribution(tiny_data):
    full = make(tiny_data, eval_mode="deterministic")
    no_ghe = make(tiny_data, eval_mode="deterministic", use_ghe=False)
    alpha_0 = make(tiny_data, eval_mode="deterministic", alpha=0.0)
    no_ghe.load_state_dict(full.state_dict(), strict=False)
    alpha_0.load_state_dict(full.state_dict())
    for m in (full, no_ghe, alpha_0):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(no_ghe().users, alpha_0().users)
        assert not torch.allclose(full().users, no_ghe().users)


def test_cge_alone_is_the_collaborative_embedding(tiny_data):
    model = make(tiny_data, use_mge=False, use_ghe=False).eval()
    with torch.no_grad():
        emb = model()
        torch.testing.assert_close(torch.cat([emb.users, emb.items]), model.collaborative(), rtol=0, atol=0)


def test_hcl_is_skipped_with_one_modality_and_counts_with_two(tiny_data):
    users, pos, neg = torch.arange(32), torch.arange(32), torch.arange(32).flip(0)

    def loss(**kw):
        model = make(tiny_data, keep_rate=1.0, eval_mode="deterministic", **kw)
        model.eval()  # no Gumbel noise: the loss is a deterministic function of the parameters
        return model.loss(users, pos, neg).item()

    assert loss(modalities=("image",)) == loss(modalities=("image",), use_hcl=False)
    assert loss(cl_weight=1.0) > loss(use_hcl=False) + 1.0


def test_hyperedge_bug_swaps_the_user_assignments(tiny_data):
    model = make(tiny_data, hyperedge_bug=True, eval_mode="deterministic")
    model.eval()
    with torch.no_grad():
        assignments = model.hyperedge_assignments()
        user_logits_text = torch.sparse.mm(model.interactions, model.feature("text") @ model.hyperedges["text"])
    torch.testing.assert_close(assignments["image"][1], torch.softmax(user_logits_text / 0.2, 1))
    torch.testing.assert_close(assignments["text"][1], user_logits_text)
    with pytest.raises(Exception, match="two-modality"):
        make(tiny_data, hyperedge_bug=True, modalities=("image",))


def test_official_evaluation_is_stochastic_and_deterministic_mode_is_not(tiny_data):
    official, deterministic = make(tiny_data), make(tiny_data, eval_mode="deterministic")
    assert official.forward_per_eval_batch and not deterministic.forward_per_eval_batch
    for model in (official, deterministic):
        model.eval()
    with torch.no_grad():
        assert not torch.equal(official().items, official().items)
        assert torch.equal(deterministic().items, deterministic().items)


def test_presets_follow_the_reference_table():
    assert set(SPEC.presets) == {"official-log", "repo-config", "author-rerun"}
    sports = resolve_model_config(SPEC, "synth-sports-small")
    assert (sports.n_hyper_layer, sports.keep_rate, sports.alpha) == (4, 0.4, 0.6)
    clothing = resolve_model_config(SPEC, "clothing", preset="author-rerun", overrides={"alpha": 0.5})
    assert (clothing.n_ui_layers, clothing.hyper_num, clothing.alpha) == (4, 64, 0.5)


@pytest.mark.parametrize("bad", [{"keep_rate": 0.0}, {"n_hyper_layer": 0}, {"cf_model": "gcn"}, {"tau": 0}])
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(Exception, match="LGMRec|cf_model"):
        resolve_model_config(SPEC, "baby", overrides=bad)


@pytest.mark.parametrize("tau", [0.2, 0.02])  # the softmax fast path and the logsumexp fallback
# (d, k): candidates whole, 8 or 24 wide (the narrow and the wide products), or as factors of rank k < d
@pytest.mark.parametrize("dim,rank", [(8, None), (24, None), (24, 3), (24, 20)])
@pytest.mark.parametrize("block_rows", [None, 3])  # one block; blocks of 3 rows, the last one shorter
def test_hcl_over_distinct_ids_equals_the_row_by_row_sum(tau, dim, rank, block_rows, monkeypatch):
    """Summing InfoNCE over a batch's rows == summing over its distinct ids weighted by their
    counts, with the candidates given whole or as low-rank factors: loss and gradients (of the
    factors too), against the per-row formula with plain autograd (float64)."""
    g = torch.Generator().manual_seed(0)
    anchor_table = torch.randn(50, dim, generator=g, dtype=torch.float64, requires_grad=True)
    assignment = torch.randn(50, rank or dim, generator=g, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(rank or dim, dim, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 50, (200,), generator=torch.Generator().manual_seed(1))  # ~4 repeats per id
    leaves = [anchor_table, assignment, basis]

    def per_row():
        a, c = F.normalize(anchor_table[ids], dim=1), F.normalize(assignment @ basis, dim=1)
        logits = a @ c.T / tau
        return -(logits.gather(1, ids[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)).sum()

    distinct, counts = torch.unique(ids, return_counts=True)
    if block_rows:
        monkeypatch.setattr(infonce, "_NCE_BLOCK_BYTES", block_rows * 50 * 8)
        assert len(distinct) % block_rows

    def per_distinct_id():
        factors = (assignment, basis) if rank else None
        return summed_info_nce(anchor_table[distinct], distinct, counts.double(), assignment @ basis, tau, factors)

    results = []
    for loss_fn in (per_row, per_distinct_id):
        loss = loss_fn()
        results.append((loss.detach(), *torch.autograd.grad(3.0 * loss, leaves)))
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # no gradients taken, the same loss
        torch.testing.assert_close(per_distinct_id(), results[0][0], rtol=1e-10, atol=1e-10)


def test_pending_backwards_run_in_any_order(tiny_data):
    """HCL keeps its gradients per loss: losses whose backwards are pending at once, and run out
    of order, give the gradients of sequential steps."""
    n = tiny_data.n_items
    steps = torch.arange(64)
    batches = [(steps + 64 * k, steps * (k + 1) % n, steps.flip(0) * (k + 2) % n) for k in range(3)]

    def gradients(interleaved: bool):
        model = make(tiny_data, cl_weight=1.0)  # seeded: both runs draw the same Gumbel noise in turn
        model.train()
        grads = []

        def backward(loss):
            model.zero_grad()
            loss.backward()
            grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        if interleaved:  # forwards in the same order (same draws), backwards 2, 1, 3
            first, second = model.loss(*batches[0]), model.loss(*batches[1])
            backward(second)
            third = model.loss(*batches[2])
            backward(first)
            backward(third)
            grads = [grads[1], grads[0], grads[2]]
        else:
            for b in batches:
                backward(model.loss(*b))
        return grads

    for got, expected in zip(gradients(True), gradients(False)):
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)


def _intel_cpu() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return "GenuineIntel" in info.read(4096)
    except OSError:
        return False


@pytest.mark.parametrize("shapes", [[(1000, 4)], [(7, 256)], [(30, 4), (50, 4), (30, 4), (1, 4)]])
def test_gumbel_noise_is_the_noise_of_f_gumbel_softmax(shapes):
    """The vectorised sampler draws torch's own numbers (exponential_ is serial on every CPU) for
    several tensors in one draw, as consecutive F.gumbel_softmax calls, and leaves the generator
    where they leave it."""
    logits = [torch.randn(cols, rows).T for rows, cols in shapes]  # non-contiguous, as the split views in the model
    torch.manual_seed(3)
    expected = [F.gumbel_softmax(z, tau=0.2, dim=1) for z in logits] + [torch.rand(3)]
    torch.manual_seed(3)
    noise = lgmrec_module.gumbel_noise(logits)
    actual = [torch.softmax((z + e) / 0.2, dim=1) for z, e in zip(logits, noise)] + [torch.rand(3)]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("keep_rate", [0.1, 0.3, 0.5, 0.9, 1.0])
def test_dropout_is_f_dropout(keep_rate):
    """Entries are 0 or x / keep_rate, about keep_rate of them kept; and where torch's bernoulli_
    is its serial kernel (not on Intel CPUs, where it uses MKL's generator), exactly consecutive
    F.dropout calls, the tensors' masks drawn in order."""
    xs = [torch.rand(4000, 4) + 0.5, torch.rand(10, 4) + 0.5, torch.rand(300, 4) + 0.5]
    torch.manual_seed(4)
    ours = lgmrec_module.dropout(xs, keep_rate, training=True)
    for x, out in zip(xs, ours, strict=True):
        kept = out != 0
        torch.testing.assert_close(out[kept], x[kept] / keep_rate, rtol=1e-6, atol=0)
    kept = ours[0] != 0
    assert abs(kept.double().mean().item() - keep_rate) < 0.03
    assert lgmrec_module.dropout(xs, keep_rate, training=False) is xs
    if _intel_cpu():
        pytest.skip("torch's CPU bernoulli_ draws from MKL on Intel CPUs: the same law, other numbers")
    torch.manual_seed(4)
    for x, out in zip(xs, ours):
        assert torch.equal(out, F.dropout(x, 1.0 - keep_rate))
