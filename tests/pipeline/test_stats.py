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
    # LGMRec's published Baby range (lgmrec/reference/literature.csv): 0.0989-0.1002 in 8 sources
    assert paper["verdict"] == "inside the published range 0.0989-0.1002 (8 sources)" and paper["data"].startswith("real: baby")
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


# ---------------------------------------------------------------------------- intervals, exact tests, verdicts

from lgmrec import stats  # noqa: E402


def test_smallest_attainable_exact_wilcoxon_p_is_two_over_two_to_the_n():
    assert stats.min_wilcoxon_p(3) == pytest.approx(0.25)
    assert stats.min_wilcoxon_p(5) == pytest.approx(0.0625)
    assert stats.min_wilcoxon_p(1) == 1.0 and np.isnan(stats.min_wilcoxon_p(0))
    for n in (2, 3, 4, 5, 6):  # all differences of one sign reach exactly the floor
        assert stats.wilcoxon_p(np.arange(1, n + 1) * 0.01) == pytest.approx(stats.min_wilcoxon_p(n))
    assert stats.wilcoxon_p([0.0, 0.0]) == 1.0 and np.isnan(stats.wilcoxon_p([]))


def test_t_interval_matches_scipy_and_needs_two_values():
    from scipy import stats as sps

    values = np.array([0.11, 0.13, 0.12, 0.15, 0.10])
    low, high = stats.t_interval(values, 0.95)
    expected = sps.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=sps.sem(values))
    np.testing.assert_allclose((low, high), expected)
    assert all(np.isnan(stats.t_interval([0.1])))


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    hits = 0
    for trial in range(120):
        sample = rng.exponential(0.1, size=300)  # skewed, like per-user recall
        low, high = stats.percentile_interval(stats.bootstrap_means(sample, n_resamples=1000, seed=trial))
        hits += low <= 0.1 <= high
    assert 0.88 <= hits / 120 <= 0.995


def _users_by_seeds(rng, users: int, seeds: list[int], shift: float, seed_effect: float = 0.0) -> pd.DataFrame:
    base = rng.beta(0.5, 3.0, size=users)
    return pd.DataFrame({s: np.clip(base + shift + rng.normal(0, 0.05, users) + seed_effect * i, 0, 1)
                         for i, s in enumerate(seeds)}, index=pd.Index(range(users), name="user"))


def test_paired_contrast_finds_a_planted_difference_with_both_intervals():
    rng = np.random.default_rng(4)
    b = _users_by_seeds(rng, 600, [999, 1, 2, 3, 4], 0.0)
    a = b + 0.03 + rng.normal(0, 0.02, b.shape)
    contrast = stats.paired_contrast(a, b)
    assert contrast.estimate == pytest.approx(0.03, abs=0.005)
    assert contrast.n_users == 600 and contrast.n_seeds == 5
    low, high = contrast.ci_users()
    assert 0 < low < contrast.estimate < high and high - low < 0.005
    assert contrast.ci_seeds()[0] > 0 and contrast.above_zero() and not contrast.below_zero()
    assert contrast.p_users < 1e-6 and contrast.p_seeds == pytest.approx(0.0625)  # the floor at 5 seeds
    row = contrast.row()
    assert row["min p seeds"] == pytest.approx(0.0625) and row["seeds"] == 5
    # only common seeds and users are paired
    partial = stats.paired_contrast(a[[999, 1]].iloc[:300], b)
    assert partial.n_seeds == 2 and partial.n_users == 300


def test_group_contrast_compares_the_advantage_of_two_groups():
    rng = np.random.default_rng(5)
    users = 800
    few = pd.Series(np.arange(users) < 400, index=range(users))
    differences = pd.DataFrame({s: np.where(few, 0.05, 0.01) + rng.normal(0, 0.05, users) for s in (1, 2, 3)})
    contrast = stats.group_contrast(differences, few)
    assert contrast.estimate == pytest.approx(0.04, abs=0.01)
    assert contrast.ci_users()[0] > 0 and contrast.p_users < 1e-4
    flat = pd.DataFrame({s: rng.normal(0, 0.05, users) for s in (1, 2, 3)})
    assert stats.group_contrast(flat, few).ci_users()[0] < 0 < stats.group_contrast(flat, few).ci_users()[1]


def _contrast(estimate, users=(-1, 1), seeds=None, n_seeds=3):
    seed_values = np.array(seeds if seeds is not None else [estimate] * n_seeds, dtype=float)
    distribution = np.linspace(estimate + users[0], estimate + users[1], 101)
    return stats.Contrast(estimate, 500, len(seed_values), distribution, seed_values)


def test_claim_verdict_rule():
    up = _contrast(0.05, users=(-0.01, 0.01), seeds=[0.04, 0.05, 0.06])
    up_users_only = _contrast(0.05, users=(-0.01, 0.01), seeds=[0.3, -0.2, 0.05])  # seeds interval spans 0
    down = _contrast(-0.05, users=(-0.01, 0.01), seeds=[-0.04, -0.05, -0.06])
    noisy = _contrast(0.0, users=(-0.05, 0.05), seeds=[-0.1, 0.0, 0.1])
    assert stats.claim_verdict([up, up]) == stats.SUPPORTED
    assert stats.claim_verdict([up, up_users_only]) == stats.INCONCLUSIVE  # every interval must agree
    assert stats.claim_verdict([up, down]) == stats.CONTRADICTED
    assert stats.claim_verdict([up, noisy]) == stats.INCONCLUSIVE
    one_seed = _contrast(0.05, users=(-0.01, 0.01), seeds=[0.05])  # the users interval alone
    assert stats.claim_verdict([one_seed]) == stats.SUPPORTED
    empty = stats.Contrast(np.nan, 0, 0, np.full(1, np.nan), np.array([]))
    assert stats.claim_verdict([empty]) == stats.NOT_TESTED


def test_contradiction_needs_the_bonferroni_level():
    # below zero at 95 % but not at 1 - 0.05 / 20: with 20 comparisons, not a contradiction
    distribution = np.random.default_rng(6).normal(-0.02, 0.01, 20000)
    borderline = stats.Contrast(-0.02, 500, 1, distribution, np.array([-0.02]))
    assert borderline.below_zero(0.95) and not borderline.below_zero(1 - 0.05 / 20)
    assert stats.claim_verdict([borderline] + [_contrast(0.05, users=(-0.01, 0.01))] * 19) == stats.INCONCLUSIVE
    assert stats.claim_verdict([borderline]) == stats.CONTRADICTED


def test_equivalence_within_tolerance():
    inside = stats.Equivalence(0.1000, np.array([0.099, 0.1005, 0.1002, 0.0998, 0.1001]), 0.05)
    assert inside.verdict() == stats.SUPPORTED and abs(inside.deviation) < 0.01
    outside = stats.Equivalence(0.1000, np.array([0.080, 0.081, 0.079, 0.0805, 0.0795]), 0.05)
    assert outside.verdict() == stats.CONTRADICTED
    wide = stats.Equivalence(0.1000, np.array([0.09, 0.11, 0.095, 0.105]), 0.05)
    assert wide.verdict() == stats.INCONCLUSIVE
    assert stats.Equivalence(0.1, np.array([0.1]), 0.05).verdict() == stats.INCONCLUSIVE  # one seed: no interval
    assert stats.equivalence_verdict([inside, inside]) == stats.SUPPORTED
    assert stats.equivalence_verdict([inside, outside]) == stats.CONTRADICTED


def test_rank_agreement_reports_n_and_needs_three():
    result = stats.rank_agreement([1.0, 0.8, 1.3, 1.1], [1.0, 0.9, 1.5, 1.2])
    assert result["n"] == 4 and result["spearman"] == pytest.approx(1.0) and result["kendall"] == pytest.approx(1.0)
    reversed_ = stats.rank_agreement([3, 2, 1], [1, 2, 3])
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert np.isnan(stats.rank_agreement([1, 2], [1, 2])["spearman"])
    assert stats.rank_agreement([1, np.nan, 3, 4], [1, 2, 3, 4])["n"] == 3
