"""Statistics: Holm, paired tests (planted effects found, null effects not), reported vs reproduced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lgmrec.collect import collect
from lgmrec.reference import read_reference
from lgmrec.results import read_per_user_file
from lgmrec.stats import (
    format_mean_std, holm, mean_std, paired_seed_tests, per_user_tests, reported_vs_reproduced, sparsity_groups,
)


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.3]), [0.6, 0.6])
    np.testing.assert_allclose(holm([0.9, 0.8, 0.001]), [1.0, 1.0, 0.003])  # capped at 1
    adjusted = holm([0.02, np.nan, 0.01])  # NaN is neither counted nor changed
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.02, 0.02])
    assert holm([]).size == 0


def _seed_runs(rng, effect: float, seeds: int = 5, noise: float = 0.004) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        base = 0.10 + rng.normal(0, 0.003)  # what a seed does to both models (shared data order)
        rows.append({"dataset": "d", "model": "lgmrec", "seed": seed, "recall@20": base + effect + rng.normal(0, noise)})
        rows.append({"dataset": "d", "model": "bpr", "seed": seed, "recall@20": base + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_paired_seed_tests_find_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    planted = paired_seed_tests(_seed_runs(rng, effect=0.03), metrics=["recall@20"]).iloc[0]
    assert planted["difference"] == pytest.approx(0.03, abs=0.01)
    assert planted["t-test p"] < 0.01 and planted["Wilcoxon p"] == pytest.approx(0.0625)  # 5 pairs, all positive
    null_p = [paired_seed_tests(_seed_runs(rng, effect=0.0), metrics=["recall@20"]).iloc[0]["t-test p"]
              for _ in range(200)]
    assert 0.02 < np.mean(np.array(null_p) < 0.05) < 0.09  # calibrated: about 5 % false alarms


def _per_user(rng, effect: float, users: int = 800) -> dict[str, pd.DataFrame]:
    truth = rng.beta(0.5, 3.0, size=users)
    frames = {}
    for model, shift in (("lgmrec", effect), ("bpr", 0.0)):
        for seed in (0, 1):
            values = np.clip(truth + shift + rng.normal(0, 0.05, size=users), 0, 1)
            frames[(model, seed)] = pd.DataFrame({"user": np.arange(users), "n_train": 5, "recall@20": values})
    return frames


def _runs_for(frames) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "d", "model": m, "seed": s} for m, s in frames])


def test_per_user_wilcoxon_finds_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    frames = _per_user(rng, effect=0.02)
    planted = per_user_tests(_runs_for(frames), lambda row: frames[(row["model"], row["seed"])],
                             metrics=["recall@20"]).iloc[0]
    assert planted["users"] == 800 and planted["seeds"] == 2
    assert planted["Wilcoxon p"] < 1e-6 and planted["difference"] > 0.01
    alarms = 0
    for _ in range(60):
        frames = _per_user(rng, effect=0.0)
        p = per_user_tests(_runs_for(frames), lambda row: frames[(row["model"], row["seed"])],
                           metrics=["recall@20"]).iloc[0]["Wilcoxon p"]
        alarms += p < 0.05
    assert alarms <= 9  # about 3 of 60 expected under the null


def test_tests_on_real_smoke_runs_are_holm_adjusted_per_family(smoke_results):
    runs = collect("smoke", "overall", store=smoke_results)
    by_seed = paired_seed_tests(runs)
    assert set(by_seed["model"]) == {"bpr", "lightgcn"} and (by_seed["seeds"] == 2).all()
    per_user = per_user_tests(runs, lambda row: read_per_user_file(row["path"], row["per_user_sha256"]))
    assert len(per_user) == 2 * 2 * 2  # datasets x baselines x metrics
    for _, family in per_user.groupby(["dataset", "metric"]):
        np.testing.assert_allclose(family["Wilcoxon p (Holm)"], holm(family["Wilcoxon p"]))
    assert per_user["Wilcoxon p"].between(0, 1).all()
    # LGMRec beats BPR by a wide margin on the tiny data: detected over its ~200 test users
    baby_bpr = per_user.query("dataset == 'smoke-baby' and model == 'bpr' and metric == 'recall@20'").iloc[0]
    assert baby_bpr["difference"] > 0 and baby_bpr["Wilcoxon p (Holm)"] < 0.01


def test_mean_std_and_formatting():
    runs = pd.DataFrame({"dataset": "d", "model": "m", "seed": [1, 2, 3], "recall@20": [0.1, 0.2, 0.3]})
    row = mean_std(runs, ["dataset", "model"], ["recall@20"]).iloc[0]
    assert row["recall@20 mean"] == pytest.approx(0.2) and row["recall@20 std"] == pytest.approx(0.1)
    assert row["seeds"] == 3
    assert format_mean_std(0.2, 0.1) == "0.2000 ± 0.1000" and format_mean_std(0.2, float("nan")) == "0.2000"


def test_reported_vs_reproduced_labels_synthetic_and_computes_delta_for_real():
    reported = read_reference("reported")
    runs = pd.DataFrame([
        {"dataset": "synth-baby-small", "model": "lgmrec", "seed": 1, "data_kind": "synthetic", "recall@20": 0.2},
        {"dataset": "baby", "model": "lgmrec", "seed": 1, "data_kind": "real", "recall@20": 0.0980},
        {"dataset": "baby", "model": "lgmrec", "seed": 2, "data_kind": "real", "recall@20": 0.1000},
        {"dataset": "baby", "model": "bpr", "seed": 1, "data_kind": "real", "recall@20": 0.0600},
    ])
    table = reported_vs_reproduced(runs, reported, {"lgmrec": "LGMRec", "bpr": "BPR"}, metrics=["recall@20"])
    synthetic = table[table["dataset"] == "synth-baby-small"]
    assert len(synthetic) >= 3 and (synthetic["verdict"] == "synthetic data: not comparable").all()
    assert synthetic["delta %"].isna().all() and synthetic["data"].str.contains("not the Amazon data").all()
    paper = table.query("dataset == 'baby' and model == 'LGMRec' and `source id` == 'paper-table2'").iloc[0]
    assert paper["reported"] == 0.1002 and paper["reproduced mean"] == pytest.approx(0.099)
    assert paper["delta %"] == pytest.approx(100 * (0.099 - 0.1002) / 0.1002)
    assert paper["verdict"] == "inside literature band 0.0965-0.1002" and paper["data"].startswith("real: baby")
    bpr = table.query("dataset == 'baby' and model == 'BPR' and `source id` == 'mmrec-evaluation-readme'").iloc[0]
    assert bpr["verdict"] == f"delta {100 * (0.06 - bpr['reported']) / bpr['reported']:+.1f} %"
    assert (table["reported by"] != "").all()


def test_sparsity_groups_average_users_then_seeds():
    per_user = pd.DataFrame({
        "dataset": "d", "model": "m", "seed": [1, 1, 1, 1, 2, 2, 2, 2],
        "user": [0, 1, 2, 3, 0, 1, 2, 3], "n_train": [3, 4, 10, 12] * 2,
        "recall@20": [0.0, 0.2, 0.5, 0.7, 0.2, 0.2, 0.5, 0.9],
    })
    groups = sparsity_groups(per_user, edges=[3, 10], metrics=["recall@20"]).set_index("group")
    assert list(groups.index) == ["3-9", "10-12"]
    assert groups.loc["3-9", "recall@20"] == pytest.approx((0.1 + 0.2) / 2)
    assert groups.loc["10-12", "recall@20"] == pytest.approx((0.6 + 0.7) / 2)
    assert groups.loc["3-9", "users"] == 2 and groups.loc["3-9", "seeds"] == 2
