"""MostPop on the real Amazon Baby / Sports / Clothing 5-core data (MMRec versions), under the project's protocol.

What it computes
----------------
For each dataset and split, the popularity baseline "MostPop" is evaluated as the project's
protocol evaluates a model:

* popularity of an item = its number of TRAINING interactions (the training split only);
* users evaluated = every user with at least one TEST interaction;
* the user's own training items are masked, the top 20 of the rest are taken; ties in popularity
  are broken by the lower item id (a fixed global order: popularity descending, then item id);
* Recall@20 = test items in the top 20 / number of the user's test items;
  NDCG@20 = binary-relevance DCG (1/log2(rank+1)) over the ideal DCG of min(n_test, 20) items;
  both averaged over the evaluated users.

It also reports the share of ALL interactions (train + validation + test) held by the 20 most
popular items and by the top 1 % (round(0.01 * n_items)) items, popularity counted on all
interactions (split-independent), and MostPop's Recall@20 divided by the published LightGCN
Recall@20 the project uses (``lgmrec.literature.published_value(d, 'LightGCN')``).

Splits
------
* "shipped": the train / val / test files of the public copies (Baby, Clothing only).
* "simulated": the protocol's per-user random split (``lgmrec.split.protocol_split`` with
  ``numpy.random.default_rng(0)``), the rows ordered by (user, item) before the split; user ids
  are relabelled 0..n_users-1 in ascending order.
  Sports ships no split, so it has only the simulated one.

Sources (public GitHub copies, verified in docs/degree_skew_sources.md, section B)
---------------------------------------------------------------------------------
* Baby: sunflower82/Neighbor-Layer-Hypergraph-CL-for-MMHCL-ready-for-implementation,
  commit a553f39df375bf7406fc9300bb016eefe6342114, data/baby/5-core/{train,val,test}.json
  (LATTICE/MMHCL JSON: {"user": [items]}). Expected 19,445 users, 7,050 items, 160,792
  interactions; splits 119,674 / 20,559 / 20,559.
* Clothing: sunflower82/DAMPS_upgrade_for_MMHCL_randoms_Amazon_Clothing,
  commit 368ef8f83324f2dd2016d0d9ccc1bbd566f47240, data/Clothing/5-core/{train,val,test}.json.
  Expected 39,387 users, 23,033 items, 278,677 interactions.
* Sports: salesforce/ICLRec, commit 2890e6c3ff6a22c6699fc19cb863b66786c1cde4,
  data/Sports_and_Outdoors.txt (one line per user: user id, then item ids in time order).
  Expected 35,598 users, 18,357 items, 296,337 interactions.

How to run
----------
It downloads nothing. Fetch the three repositories' git directories first (e.g. with the tool
library's ``fetch``), then::

    python scripts/real_mostpop.py BABY_GIT_DIR CLOTHING_GIT_DIR SPORTS_GIT_DIR [--csv FILE]

where each argument is a git directory (bare or not) holding the commit above; files are read
with ``git -C DIR show COMMIT:PATH``. Runs in well under a minute. ``--csv`` writes the rows (the
committed ``lgmrec/reference/mostpop_released.csv``, read by the Methods chapter).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from lgmrec import literature  # noqa: E402
from lgmrec.calibration import mostpop_metrics  # noqa: E402
from lgmrec.data import InteractionData  # noqa: E402
from lgmrec.split import protocol_split  # noqa: E402

K = 20
SEED = 0

BABY = ("sunflower82/Neighbor-Layer-Hypergraph-CL-for-MMHCL-ready-for-implementation",
        "a553f39df375bf7406fc9300bb016eefe6342114", "data/baby/5-core/{}.json",
        dict(users=19445, items=7050, inter=160792, train=119674, val=20559, test=20559))
CLOTHING = ("sunflower82/DAMPS_upgrade_for_MMHCL_randoms_Amazon_Clothing",
            "368ef8f83324f2dd2016d0d9ccc1bbd566f47240", "data/Clothing/5-core/{}.json",
            dict(users=39387, items=23033, inter=278677))
SPORTS = ("salesforce/ICLRec", "2890e6c3ff6a22c6699fc19cb863b66786c1cde4", "data/Sports_and_Outdoors.txt",
          dict(users=35598, items=18357, inter=296337))


def git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def pairs_from_json(text: str) -> np.ndarray:
    """(rows, 2) int array of (user, item) from a {"user": [items]} JSON file."""
    data = json.loads(text)
    rows = [(int(u), int(i)) for u, items in data.items() for i in items]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def pairs_from_sequences(text: str) -> np.ndarray:
    rows = []
    for line in text.splitlines():
        ids = line.split()
        if ids:
            rows.extend((int(ids[0]), int(i)) for i in ids[1:])
    return np.array(rows, dtype=np.int64)


def relabel(pairs: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Users and items relabelled 0..n-1 in ascending order of their original ids."""
    _, users = np.unique(pairs[:, 0], return_inverse=True)
    _, items = np.unique(pairs[:, 1], return_inverse=True)
    out = np.stack([users, items], axis=1)
    return out, int(users.max()) + 1, int(items.max()) + 1


def simulated_split(pairs: np.ndarray) -> np.ndarray:
    """Rows sorted by (user, item), then labelled with default_rng(SEED)."""
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return pairs, protocol_split(pairs[:, 0], np.random.default_rng(SEED))


def head_shares(all_pairs: np.ndarray, n_items: int) -> tuple[float, float]:
    degree = np.sort(np.bincount(all_pairs[:, 1], minlength=n_items))[::-1]
    total = degree.sum()
    return degree[:K].sum() / total, degree[:max(1, round(0.01 * n_items))].sum() / total


def mostpop(train: np.ndarray, test: np.ndarray, n_users: int, n_items: int) -> dict:
    """MostPop through the project's evaluator (:func:`lgmrec.calibration.mostpop_metrics`), and the
    test pairs that are also training pairs (none expected)."""
    data = InteractionData("released", n_users, n_items, {"train": train, "valid": train[:0], "test": test})
    metrics = mostpop_metrics(data, (K,))
    overlap = len(set(map(tuple, train.tolist())) & set(map(tuple, test.tolist())))
    return dict(users=len(np.unique(test[:, 0])), recall=metrics[f"recall@{K}"], ndcg=metrics[f"ndcg@{K}"],
                test_in_train=overlap)


def check(name: str, got: dict, expected: dict) -> None:
    for key, value in expected.items():
        flag = "ok" if got[key] == value else f"MISMATCH (expected {value:,})"
        print(f"  {name} {key}: {got[key]:,} {flag}")


def report(dataset: str, split: str, train, test, all_pairs, n_users, n_items) -> dict:
    result = mostpop(train, test, n_users, n_items)
    top20, top1 = head_shares(all_pairs, n_items)
    lightgcn = literature.published_value(dataset, "LightGCN")
    row = dict(dataset=dataset, split=split, **result, top20_share=top20, top1pct_share=top1,
               lightgcn=lightgcn, ratio=result["recall"] / lightgcn)
    print(f"  {split:9s} users {row['users']:,}  R@20 {row['recall']:.4f}  N@20 {row['ndcg']:.4f}  "
          f"top-20 share {top20:.2%}  top-1% share {top1:.2%}  LightGCN {lightgcn}  "
          f"ratio {row['ratio']:.3f}  (test items also in train: {result['test_in_train']})")
    return row


def shipped(dataset: str, git_dir: str, source) -> list[dict]:
    repo, commit, template, expected = source
    print(f"{dataset}: {repo} @ {commit}")
    parts = {s: pairs_from_json(git_show(git_dir, commit, template.format(s))) for s in ("train", "val", "test")}
    raw = np.concatenate(list(parts.values()))
    unique_pairs = np.unique(raw, axis=0)
    got = dict(users=len(np.unique(raw[:, 0])), items=len(np.unique(raw[:, 1])), inter=len(unique_pairs),
               **{s: len(p) for s, p in parts.items()})
    check(dataset, got, expected)
    if len(unique_pairs) != len(raw):
        print(f"  {dataset}: {len(raw) - len(unique_pairs)} duplicate (user, item) rows across files")
    # ids are relabelled jointly so that shipped and simulated splits share them
    ids_u, users = np.unique(raw[:, 0], return_inverse=True)
    ids_i, items = np.unique(raw[:, 1], return_inverse=True)
    if not (np.array_equal(ids_u, np.arange(len(ids_u))) and np.array_equal(ids_i, np.arange(len(ids_i)))):
        print(f"  {dataset}: ids are not contiguous 0..n-1; relabelled (ascending), tie order follows")
    labelled = np.stack([users, items], axis=1)
    sizes = np.cumsum([len(p) for p in parts.values()])
    train, test = labelled[:sizes[0]], labelled[sizes[1]:]
    n_users, n_items = len(ids_u), len(ids_i)
    rows = [report(dataset, "shipped", train, test, labelled, n_users, n_items)]
    pairs, labels = simulated_split(np.unique(labelled, axis=0))
    rows.append(report(dataset, "simulated", pairs[labels == 0], pairs[labels == 2], pairs, n_users, n_items))
    return rows


def sports(git_dir: str) -> list[dict]:
    repo, commit, path, expected = SPORTS
    print(f"sports: {repo} @ {commit}")
    raw = pairs_from_sequences(git_show(git_dir, commit, path))
    pairs, n_users, n_items = relabel(raw)
    unique_pairs = np.unique(pairs, axis=0)
    check("sports", dict(users=n_users, items=n_items, inter=len(unique_pairs)), expected)
    if len(unique_pairs) != len(pairs):
        print(f"  sports: {len(pairs) - len(unique_pairs)} repeated (user, item) rows dropped")
    pairs, labels = simulated_split(unique_pairs)
    return [report("sports", "simulated", pairs[labels == 0], pairs[labels == 2], pairs, n_users, n_items)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("baby", "clothing", "sports"):
        parser.add_argument(f"{name}_git_dir")
    parser.add_argument("--csv", default=None, help="write the rows to this CSV file")
    args = parser.parse_args(argv)
    rows = (shipped("baby", args.baby_git_dir, BABY) + sports(args.sports_git_dir)
            + shipped("clothing", args.clothing_git_dir, CLOTHING))
    print("\ndataset  split      users   R@20    N@20    top20%  top1%   LGCN    ratio")
    for r in rows:
        print(f"{r['dataset']:8s} {r['split']:9s} {r['users']:6d}  {r['recall']:.4f}  {r['ndcg']:.4f}  "
              f"{r['top20_share']:.2%}  {r['top1pct_share']:.2%}  {r['lightgcn']:.4f}  {r['ratio']:.3f}")
    if args.csv:
        sources = {"baby": BABY, "clothing": CLOTHING, "sports": SPORTS}
        with open(args.csv, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["family", "split", "users", "recall@20", "ndcg@20", "top20_share", "top1pct_share",
                             "source"])
            for r in rows:
                repo, commit, path, _ = sources[r["dataset"]]
                writer.writerow([r["dataset"], r["split"], r["users"], f"{r['recall']:.5f}", f"{r['ndcg']:.5f}",
                                 f"{r['top20_share']:.5f}", f"{r['top1pct_share']:.5f}",
                                 f"github:{repo}@{commit}:{path.format('{train,val,test}')}"])
        print(f"written: {args.csv}")


if __name__ == "__main__":
    main(sys.argv[1:])
