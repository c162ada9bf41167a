"""The calibrated testbed in the book: the committed fit (Methods) and the held-out check."""

import pandas as pd
import pytest

from lgmrec import calibration as C
from lgmrec import stats
from lgmrec.collect import collect
from lgmrec.report import BookContext
from lgmrec.report.calibration import (degrees_table, fit_tables, held_out_frame, held_out_table, knobs_table,
                                       reference_stopping, stopping_split)
from lgmrec.report.display import Html, Table
from lgmrec.synthetic import read_calibrated_presets

from .conftest import grid, tiny_profile


def test_methods_tables_show_the_committed_calibration():
    knobs = knobs_table()
    assert isinstance(knobs, Table) and set(C.SEARCH_SPACE) <= set(knobs.frame.index)
    families = {family for family, _ in knobs.frame.columns}
    assert families == set(C.FAMILIES)
    for family in C.FAMILIES:  # the shown knobs are the committed presets'
        preset = read_calibrated_presets()[C.calibrated_name(family)]
        assert knobs.frame.loc["sharpness", (family, "calibrated")] == preset.sharpness
    degrees = degrees_table().frame
    assert len(degrees) == 3 * len(C.FAMILIES)  # real, calibrated, uncalibrated per family
    tables = [t for t in fit_tables() if isinstance(t, Table)]
    assert [t.name for t in tables] == [f"calibration-fit-{f}" for f in C.FAMILIES]
    fit = C.read_fit()
    shown = tables[0].frame
    baby = fit[fit["family"] == "baby"].set_index("model")
    assert shown.loc["FREEDOM", "after"] == pytest.approx(baby.loc["freedom", "after"])
    assert shown.loc["LGMRec", "in the fit"] == "no: held out"
    assert "Spearman" in tables[0].note
    noise = C.fit_noise(fit, "baby")  # what a perfect preset would show through the measure's seed noise
    assert f"meet the target in {100 * noise.meets_target:.1f} % of measures" in tables[0].note


def test_held_out_check_on_a_calibrated_preset(store):
    """LGMRec and LightGCN (2 seeds, 2 epochs) and the ablation on the Baby-like calibrated preset."""
    profile = tiny_profile("heldout", datasets=(C.calibrated_name("baby"),), models=("lightgcn", "lgmrec"),
                           seeds=(999, 1), experiments=("overall", "ablation"))
    summary = grid(profile, store)
    assert summary.failed == []
    ctx = BookContext(profile, store)
    frame = held_out_frame(ctx)
    assert len(frame) == 1
    row = frame.iloc[0]
    runs = collect(profile, "overall", store=store)  # the ablation's LGMRec variants are records too
    by_seed = runs.pivot_table(index="seed", columns="model", values="recall@20")
    expected = (by_seed["lgmrec"] / by_seed["lightgcn"]).mean()
    assert row["reproduced ratio"] == pytest.approx(expected) and row["seeds"] == 2
    assert row["low"] <= row["reproduced ratio"] <= row["high"]
    assert row["published ratio"] == pytest.approx(C.published_ratios("baby", ("lgmrec",))["lgmrec"])
    assert row["C2"] in stats.VERDICTS and row["C3"] in stats.VERDICTS
    table = held_out_table(ctx)
    assert isinstance(table, Table) and "prediction on data fitted to the 13 baselines only" in table.note
    assert reference_stopping(ctx).empty and "stops at two points" not in table.note  # 2 epochs: one point


def test_stopping_split_finds_two_stopping_points_only_across_a_wide_gap():
    assert stopping_split([18, 22, 24, 41, 169, 250]) == 41  # the Baby-like preset's LightGCN, 2026-12-06
    assert stopping_split([58, 71, 86, 109, 147, 177, 210]) is None  # no jump above 40 epochs
    assert stopping_split([30]) is None and stopping_split([]) is None


def test_held_out_check_says_not_run_off_the_calibrated_presets(smoke_results):
    ctx = BookContext.create("smoke", str(smoke_results.root))
    assert held_out_frame(ctx).empty
    shown = held_out_table(ctx)
    assert isinstance(shown, Html) and "not run" in shown.text


def test_the_regime_table_sets_each_preset_beside_its_released_dataset():
    """Per family: the released dataset (published LightGCN, MostPop from the committed file) and
    the uncalibrated and calibrated presets (LightGCN from the committed fit, MostPop and the
    oracle computed on the preset)."""
    from lgmrec.report.calibration import regime_frame, regime_table

    frame = regime_frame()
    assert len(frame) == 3 * len(C.FAMILIES)
    released, fit = C.read_released_mostpop(), C.read_fit()
    for family, part in frame.groupby("family"):
        real = part[part["data"].str.startswith("released")].iloc[0]
        assert real["LightGCN"] == C.published_lightgcn_recall(family) and pd.isna(real["oracle"])
        assert real["MostPop"] in set(released.loc[released["family"] == family, "recall@20"])
        assert real["largest baseline ratio"] == pytest.approx(C.published_ratios(family).drop("lightgcn").max())
        for _, row in part[~part["data"].str.startswith("released")].iterrows():
            stage = "after" if row["data"].endswith("-cal") else "before"
            lightgcn = fit[(fit["family"] == family) & (fit["model"] == "lightgcn")].iloc[0]
            assert row["LightGCN"] == pytest.approx(lightgcn[f"{stage}_recall"])
            assert 0 < row["MostPop"] < row["oracle"] <= 1
            assert row["oracle / LightGCN"] == pytest.approx(row["oracle"] / row["LightGCN"])
    assert isinstance(regime_table(), Table)
