"""Minimum detectable effects, the design calculator and the measured error rates of the verdict rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lgmrec import power, stats
from lgmrec.cli import main
from lgmrec.grids import AA_VARIANT
from lgmrec.report import BookContext
from lgmrec.report.context import MAIN_METRICS
from lgmrec.report.errorrates import rate_frame, split_verdicts


def simulated(n_users: int, n_seeds: int, effect: float, sd_user: float, sd_residual: float, sd_seed: float = 0.0,
              seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two users x seeds frames whose difference is effect + a(user) + b(seed) + e(user, seed)."""
    rng = np.random.default_rng(seed)
    difference = (effect + rng.normal(0, sd_user, (n_users, 1)) + rng.normal(0, sd_seed, (1, n_seeds))
                  + rng.normal(0, sd_residual, (n_users, n_seeds)))
    base = pd.DataFrame(rng.uniform(0.2, 0.4, (n_users, n_seeds)))
    return base + difference, base


def test_t_noncentrality_gives_the_stated_power_and_tends_to_the_normal_multiplier():
    n = 5
    nc = power.t_noncentrality(n)
    rng = np.random.default_rng(1)
    samples = rng.normal(nc / math.sqrt(n), 1.0, (40_000, n))  # sd 1, mean at the MDE
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert abs(rejected - power.POWER) < 0.01
    assert power.t_noncentrality(1000) == pytest.approx(power.z_multiplier(), rel=2e-3)
    assert power.z_multiplier() == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def test_mde_matches_the_closed_form_with_known_sigma_and_n():
    sd_user, sd_residual, n, seeds = 0.10, 0.20, 2000, 50
    a, b = simulated(n, seeds, 0.0, sd_user, sd_residual)
    found = power.mde(stats.paired_contrast(a, b))
    # users: (z + z) x the SE of a user's seed mean; seeds: the exact t MDE of the per-seed means
    users = power.z_multiplier() * math.sqrt((sd_user ** 2 + sd_residual ** 2 / seeds) / n)
    by_seeds = power.t_noncentrality(seeds) * math.sqrt(sd_residual ** 2 / n) / math.sqrt(seeds)
    assert found.users == pytest.approx(users, rel=0.05)
    assert found.seeds == pytest.approx(by_seeds, rel=0.25)  # the seed variance from 50 values
    assert found.rule == max(found.users, found.seeds)


def test_extrapolation_follows_the_variance_components():
    a, b = simulated(800, 5, 0.0, 0.05, 0.15, sd_seed=0.002, seed=2)
    contrast = stats.paired_contrast(a, b)
    model = power.VarianceModel.of(contrast)
    assert model.residual == pytest.approx(0.15 ** 2, rel=0.05)
    assert model.between_users == pytest.approx(0.05 ** 2, rel=0.35)
    # four times the users halve the users interval's MDE (same seeds)
    assert power.mde(contrast, n_users=3200).users == pytest.approx(power.mde(contrast).users / 2, rel=1e-9)
    # more seeds shrink it towards the between-user floor, never below
    floor = power.z_multiplier() * math.sqrt(model.between_users / 800)
    assert floor < power.mde(contrast, n_seeds=400).users < power.mde(contrast).users


def test_designs_needed_are_the_smallest_that_detect_the_effect():
    a, b = simulated(800, 5, 0.0, 0.05, 0.15, sd_seed=0.002, seed=3)
    contrast = stats.paired_contrast(a, b)
    effect = 0.7 * power.mde(contrast).rule  # above the seeds interval's floor at any number of users
    users = power.users_needed(contrast, effect)
    assert users is not None and users > 800
    assert power.mde(contrast, n_users=users).rule <= effect < power.mde(contrast, n_users=users - 1).rule
    seeds = power.seeds_needed(contrast, power.mde(contrast).rule * 0.9)
    assert seeds is not None and seeds > 5
    assert power.mde(contrast, n_seeds=seeds).rule <= power.mde(contrast).rule * 0.9
    assert power.mde(contrast, n_seeds=seeds - 1).rule > power.mde(contrast).rule * 0.9
    # an effect below the seeds' own floor needs more users than any number
    assert power.users_needed(contrast, 1e-7) is None


def test_the_rule_has_about_the_stated_power_at_the_mde_and_few_false_alarms():
    n, seeds, sd_user, sd_residual, sd_seed = 300, 5, 0.05, 0.10, 0.004
    a, b = simulated(n, seeds, 0.0, sd_user, sd_residual, sd_seed, seed=10)
    effect = power.mde(stats.paired_contrast(a, b)).rule
    detected = false_alarms = 0
    repeats = 120
    for repeat in range(repeats):
        x, y = simulated(n, seeds, effect, sd_user, sd_residual, sd_seed, seed=100 + repeat)
        detected += stats.claim_verdict([stats.paired_contrast(x, y)]) == stats.SUPPORTED
        x, y = simulated(n, seeds, 0.0, sd_user, sd_residual, sd_seed, seed=1000 + repeat)
        false_alarms += stats.claim_verdict([stats.paired_contrast(x, y)]) != stats.INCONCLUSIVE
    # both intervals must clear 0: between 60 % and 80 %, give or take the simulation's noise
    assert 0.5 <= detected / repeats <= 0.9
    assert false_alarms / repeats <= 0.1


def test_detectability_says_which_kind_of_inconclusive():
    assert power.detectability(6.5, 1.0) == "this design detects 6.5 % or more; the paper's margin is 1.0 %"
    assert "margin of 3.9 % was detectable" in power.detectability(2.0, 3.9)
    assert "no published margin" in power.detectability(4.0, None)
    assert "3.4 % below this baseline's published value" in power.detectability(6.4, -3.4)


# ---------------------------------------------------------------------------- on the smoke store


@pytest.fixture(scope="module")
def ctx(smoke_results):
    return BookContext.create("smoke", str(smoke_results.root))


def test_aa_verdict_counts_are_computed_from_the_store(ctx):
    splits = split_verdicts(ctx)
    runs = ctx.runs("error_rates")
    seeds = sorted(runs[runs["variant"] == AA_VARIANT]["seed"].unique())
    assert len(seeds) == len(ctx.profile.error_rate_seeds) == 4
    aa = splits[splits["kind"] == "A/A"]
    # every way of taking half the seeds, on every dataset, each split in both orders
    assert len(aa) == math.comb(4, 2) * len(ctx.profile.datasets)
    row = aa.iloc[0]
    part = runs[(runs["dataset"] == row["dataset"]) & (runs["variant"] == AA_VARIANT)]
    first, second = [int(s) for s in row["first seeds"].split()], [int(s) for s in row["second seeds"].split()]
    assert not set(first) & set(second)
    contrasts = []
    for metric in MAIN_METRICS:
        matrix = ctx.user_matrix(part, metric)
        x, y = matrix[first].set_axis(range(2), axis=1), matrix[second].set_axis(range(2), axis=1)
        contrasts.append(stats.paired_contrast(x, y))
    assert row["verdict"] == stats.claim_verdict(contrasts)
    rates = rate_frame(ctx)
    overall = rates[(rates["kind"] == "A/A") & (rates["dataset"] == "all")].iloc[0]
    alarms = aa["verdict"].isin([stats.SUPPORTED, stats.CONTRADICTED]).sum()
    assert overall["comparisons"] == len(aa) and overall["rate"] == alarms / len(aa)
    assert overall["CI low"] <= overall["rate"] <= overall["CI high"]
    planted = splits[splits["kind"] == "planted"]
    assert len(planted) == math.comb(4, 2) * len(ctx.profile.datasets)
    assert (planted["first seeds"] == planted["second seeds"]).all()  # the same seeds on both sides


def test_every_tested_claim_carries_its_mde(ctx):
    from lgmrec.report.claims import compute_claims, verdict_frame

    for result in compute_claims(ctx):
        if result.verdict == stats.NOT_TESTED:
            assert result.detectable == "–"
        else:
            assert np.isfinite(result.mde) and result.mde > 0
            assert "this design detects" in result.detectable or "was detectable" in result.detectable
    frame = verdict_frame(ctx)
    inconclusive = frame[frame["verdict"] == stats.INCONCLUSIVE]
    assert len(inconclusive) and inconclusive["what this design could detect"].str.contains("detect").all()


def test_power_command_prints_the_design_table_and_writes_csv(smoke_results, tmp_path, capsys):
    target = tmp_path / "power.csv"
    assert main(["power", "--profile", "smoke", "--results", str(smoke_results.root), "--csv", str(target)]) == 0
    out = capsys.readouterr().out
    assert "MDE (80%)" in out and "C1 superiority" in out and "SYNTHETIC" in out
    frame = pd.read_csv(target)
    assert set(frame["claim"].str.split().str[0]) <= {"C1", "C2", "C3", "C4"}
    assert (frame["MDE"] > 0).all() and (frame["real test users"] == frame["real dataset"].map(
        {"baby": 19445, "sports": 35598})).all()
    assert frame["real-data basis"].str.contains("extrapolated").all()
