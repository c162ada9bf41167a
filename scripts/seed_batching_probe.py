"""Would training a unit's seeds together keep the records? Bits and times of batched products.

    python scripts/seed_batching_probe.py [--dataset synth-baby-mini-cal] [--seeds 3]

A -mini step is hundreds of small kernels, each paying dispatch and Python around it
(``scripts/profile_epoch.py``); training S seeds of one configuration at once, their parameters
stacked, would pay that once per step instead of S times. It keeps the records only if the stacked
products give each seed's bits. This checks the two kinds LGMRec's step is made of, at the grid's
shapes, one torch thread: dense products (``torch.bmm`` of S stacked operands against S ``mm``) and
the graph's CSR product (the S embeddings side by side against S products), printing for each
whether the bits are equal and both times. Then what it would gain: one training step (loss and
backward, a random 2048-pair batch per seed) of LightGCN and of LGMRec without HCL on the dataset,
against one step on S disjoint copies of it stacked into one graph with S batches (the same
arithmetic as S seeds side by side; HCL is left out because over copies its softmax would span
every copy's items, S times the work of S seeds' own), each the mean of 25 steps. On 2026-12-06
the bits were equal and the gain small (docs/performance.md, "What is left to cut").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

#: (rows, inner, columns) of LGMRec's dense products on the -mini presets: the image projection and
#: its weight gradient, HCL's rank-4 logits, scoring, BPR-sized blocks
DENSE_SHAPES = [(398, 512, 68), (512, 398, 68), (656, 4, 799), (800, 64, 322), (2048, 64, 64)]


def microseconds(function, repeats: int = 200) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1e6


def stacked_model(kind: str, data, copies: int):
    """LightGCN or LGMRec (defaults, HCL off) on ``copies`` disjoint copies of ``data``'s training graph."""
    from lgmrec import graph
    from lgmrec.models.lgmrec import LGMRec, LGMRecConfig
    from lgmrec.models.lightgcn import LightGCN

    train = sp.block_diag([data.train_matrix] * copies, format="csr")
    adjacency = graph.to_torch(graph.normalized_adjacency(train))
    n_users, n_items = train.shape
    if kind == "lightgcn":
        return LightGCN(n_users, n_items, adjacency)
    features = {m: torch.from_numpy(np.vstack([data.features[m]] * copies)) for m in data.modalities}
    return LGMRec(n_users, n_items, graph.to_torch(train), adjacency, features, LGMRecConfig(use_hcl=False))


def step_milliseconds(kind: str, data, copies: int, steps: int = 25, warmup: int = 5) -> float:
    model, rng = stacked_model(kind, data, copies), np.random.default_rng(0)
    pairs, n_users, n_items = data.splits["train"], data.n_users, data.n_items
    batches = []
    for _ in range(warmup + steps):
        rows = rng.integers(len(pairs), size=(copies, 2048))
        batches.append([torch.from_numpy(np.concatenate(parts)) for parts in zip(*(
            (pairs[rows[c], 0] + c * n_users, pairs[rows[c], 1] + c * n_items,
             rng.integers(n_items, size=2048) + c * n_items) for c in range(copies)))])
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model.loss(*batch).backward()
    return (time.perf_counter() - start) / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synth-baby-mini-cal")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    from lgmrec import graph
    from lgmrec.datasets.named import load_named_dataset
    from lgmrec.grids import get_profile

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    s = args.seeds
    for rows, inner, columns in DENSE_SHAPES:
        a, b = torch.randn(s, rows, inner, generator=generator), torch.randn(s, inner, columns, generator=generator)
        equal = torch.equal(torch.bmm(a, b), torch.stack([a[i] @ b[i] for i in range(s)]))
        print(f"dense {rows} x {inner} x {columns}: bits equal {equal}, {s} mm "
              f"{microseconds(lambda: [a[i] @ b[i] for i in range(s)]):.0f} us, bmm {microseconds(lambda: torch.bmm(a, b)):.0f} us")
    data = load_named_dataset(args.dataset, get_profile("embedded"))
    adjacency = graph.to_torch(graph.normalized_adjacency(data.train_matrix))
    for width in (4, 64):
        parts = [torch.randn(adjacency.shape[0], width, generator=generator) for _ in range(s)]
        side_by_side = torch.cat(parts, dim=1)
        equal = torch.equal(graph.sparse_product(adjacency, side_by_side),
                            torch.cat([graph.sparse_product(adjacency, p) for p in parts], dim=1))
        print(f"CSR {tuple(adjacency.shape)} ({adjacency._nnz()} entries) x {width}: bits equal {equal}, {s} products "
              f"{microseconds(lambda: [graph.sparse_product(adjacency, p) for p in parts]):.0f} us, side by side "
              f"{microseconds(lambda: graph.sparse_product(adjacency, side_by_side)):.0f} us")
    for kind in ("lightgcn", "lgmrec"):
        one, stacked = step_milliseconds(kind, data, 1), step_milliseconds(kind, data, s)
        print(f"{kind} step{' (no HCL)' if kind == 'lgmrec' else ''}: {one:.2f} ms, {s} copies stacked {stacked:.2f} ms "
              f"= {stacked / (s * one):.2f}x the time of {s} steps")


if __name__ == "__main__":
    main()
