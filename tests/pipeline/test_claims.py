"""The claims chapter's computations on the smoke profile, checked against values computed
independently from the per-user Parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lgmrec import stats
from lgmrec.collect import collect
from lgmrec.report import BookContext, compute_claims, verdict_frame

CLAIMS = ("C1", "C2", "C3", "C4", "C5")


@pytest.fixture(scope="module")
def ctx(smoke_results):
    return BookContext.create("smoke", str(smoke_results.root))


def per_user(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """users x seeds, read straight from the Parquet files beside the records."""
    return pd.DataFrame({row["seed"]: pd.read_parquet(str(row["path"]).replace(".json", ".parquet"))
                         .set_index("user")[metric] for row in runs.to_dict("records")})


def test_one_result_per_claim_and_dataset(ctx):
    results = compute_claims(ctx)
    assert sorted((r.claim, r.dataset) for r in results) == sorted(
        (c, d) for c in CLAIMS for d in ctx.profile.datasets)
    assert all(r.verdict in stats.VERDICTS for r in results)
    frame = verdict_frame(ctx)
    assert len(frame) == len(CLAIMS) * len(ctx.profile.datasets)


def test_c5_is_not_testable_on_synthetic_data_and_c2_needs_ablation_runs(ctx):
    by_key = {(r.claim, r.dataset): r for r in compute_claims(ctx)}
    for dataset in ctx.profile.datasets:
        assert by_key[("C5", dataset)].verdict == stats.NOT_TESTED
        assert "not testable on synthetic data" in by_key[("C5", dataset)].effect
    assert by_key[("C2", "smoke-sports")].verdict == stats.NOT_TESTED  # the smoke profile ablates smoke-baby only
    assert by_key[("C3", "smoke-baby")].verdict != stats.NOT_TESTED
    details = by_key[("C2", "smoke-baby")].details
    assert set(details["variant"]) == {"w/o CGE", "w/o MGE"} and set(details["metric"]) == {"recall@20", "ndcg@20"}


def test_c1_margin_over_the_strongest_baseline_matches_the_per_user_files(smoke_results, ctx):
    runs = collect("smoke", "overall", store=smoke_results)
    result = next(r for r in compute_claims(ctx) if r.claim == "C1" and r.dataset == "smoke-baby")
    details = result.details.dropna(subset=["strongest baseline"]).set_index("metric")
    part = runs[runs["dataset"] == "smoke-baby"]
    means = part.groupby("model")["recall@20"].mean()
    strongest = means.drop("lgmrec").idxmax()
    assert details.loc["recall@20", "strongest baseline"] == {"bpr": "BPR", "lightgcn": "LightGCN"}[strongest]
    a = per_user(part[part["model"] == "lgmrec"], "recall@20")
    b = per_user(part[part["model"] == strongest], "recall@20")
    independent = (a.mean(axis=1) - b.mean(axis=1)).mean()
    assert details.loc["recall@20", "difference"] == pytest.approx(independent)
    seeds = (a.mean(axis=0) - b.mean(axis=0)).to_numpy()
    assert details.loc["recall@20", "CI seeds low"] == pytest.approx(stats.t_interval(seeds)[0])
    assert details.loc["recall@20", "seeds"] == 2 and details.loc["recall@20", "users"] == len(a)
    # every baseline x metric is in the CSV, and the verdict follows the rule over all of them
    every = result.details[result.details["level"] == "every baseline"]
    assert len(every) == 2 * 4  # baselines x metrics


def test_c4_splits_users_at_the_median_and_compares_the_advantages(smoke_results, ctx):
    runs = collect("smoke", "overall", store=smoke_results)
    part = runs[runs["dataset"] == "smoke-sports"]
    result = next(r for r in compute_claims(ctx) if r.claim == "C4" and r.dataset == "smoke-sports")
    row = result.details.set_index("metric").loc["recall@20"]
    strongest = {"BPR": "bpr", "LightGCN": "lightgcn"}[row["strongest baseline"]]
    a = per_user(part[part["model"] == "lgmrec"], "recall@20")
    b = per_user(part[part["model"] == strongest], "recall@20")
    n_train = pd.read_parquet(str(part.iloc[0]["path"]).replace(".json", ".parquet")).set_index("user")["n_train"]
    few = n_train <= n_train.median()
    advantage = (a - b).mean(axis=1)
    assert row["advantage few"] == pytest.approx(advantage[few[advantage.index]].mean())
    assert row["advantage many"] == pytest.approx(advantage[~few[advantage.index]].mean())
    assert row["difference"] == pytest.approx(row["advantage few"] - row["advantage many"])
    assert row["users few"] + row["users many"] == len(advantage)
    low, high = row["CI users low"], row["CI users high"]
    assert low < row["difference"] < high
    assert np.isfinite(row["p users"])
