"""Reading results back: records labelled with their experiments, tuning choices, progress."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from lgmrec.collect import collect, progress_table, tuning_choices
from lgmrec.datasets.named import dataset_fingerprint, load_named_dataset
from lgmrec.grids import PROFILES, SMOKE_PRESETS, WorkUnit, unit_specs
from lgmrec.results import ResultStore
from lgmrec.tuning import choose

from .conftest import grid, tiny_profile


def test_collect_labels_runs_with_every_experiment_they_serve(smoke_results):
    table = collect("smoke", store=smoke_results)
    counts = table.groupby("experiment").size().to_dict()
    # overall: 3 models x 2 datasets x 2 seeds; tuning: 3 points x 2 tuned models x 2 datasets
    assert counts == {"overall": 12, "tuning": 12, "ablation": 18, "sensitivity": 8, "error_rates": 16}
    full_in_ablation = table[(table.experiment == "ablation") & (table.variant == "LGMRec")].sort_values("seed")
    overall_lgmrec = table[(table.experiment == "overall") & (table.model == "lgmrec")
                           & (table.dataset == "smoke-baby")].sort_values("seed")
    assert full_in_ablation["path"].tolist() == overall_lgmrec["path"].tolist()  # shared runs
    sens = table[(table.experiment == "sensitivity") & (table.seed == 999)].set_index("variant")
    assert sens.loc["alpha=0.6", "model_params"]["alpha"] == 0.6 and sens.loc["alpha=0.6", "value"] == 0.6
    ablation = table[(table.experiment == "ablation") & (table.seed == 1)].set_index("variant")
    assert ablation.loc["w/o GHE", "model_params"]["use_ghe"] is False
    assert ablation.loc["image only", "model_params"]["modalities"] == ["image"]
    progress = progress_table("smoke", store=smoke_results).set_index("experiment")
    assert progress["missing"].sum() == 0 and progress.loc["overall", "ok"] == 12


def test_overall_runs_use_the_point_with_the_best_validation_recall(smoke_results):
    records = smoke_results.load("smoke")
    choices = tuning_choices("smoke", records)
    assert set(choices) == {(d, m) for d in ("smoke-baby", "smoke-sports") for m in ("bpr", "lightgcn")}
    table = collect("smoke", store=smoke_results)
    for (dataset, model), choice in choices.items():
        tuning = table[(table.experiment == "tuning") & (table.dataset == dataset) & (table.model == model)]
        assert len(tuning) == 3 and choice.points == 3 and choice.finished == 3
        best_valid = tuning.loc[tuning["valid_recall@20"].idxmax()]
        best_test = tuning.loc[tuning["recall@20"].idxmax()]
        assert best_valid["model_params"]["reg_weight"] == choice.validation_point["reg_weight"]
        assert best_test["model_params"]["reg_weight"] == choice.test_point["reg_weight"]
        overall = table[(table.experiment == "overall") & (table.dataset == dataset) & (table.model == model)]
        assert sorted(overall["seed"]) == [1, 999]
        assert {row["reg_weight"] for row in overall["model_params"]} == {choice.validation_point["reg_weight"]}
        # the tuning seed's overall run IS the chosen point's tuning run
        assert overall[overall.seed == 999]["path"].item() == best_valid["path"]


def test_choice_rules_ties_failures_and_missing_records():
    points = [{"r": 1}, {"r": 2}, {"r": 3}]
    ok = lambda valid, test: {"status": "ok", "valid": {"recall@20": valid}, "test": {"recall@20": test}}
    choice = choose(points, [ok(0.2, 0.3), ok(0.4, 0.1), ok(0.4, 0.5)])
    assert choice.validation_point == {"r": 2}  # ties: the first in grid order
    assert choice.test_point == {"r": 3}
    failed = {"status": "failed", "valid": {}, "test": {}}
    assert choose(points, [failed, ok(0.1, 0.1), failed]).validation_point == {"r": 2}
    assert choose(points, [ok(0.1, 0.1), None, ok(0.2, 0.2)]) is None  # not all points have run


def test_a_tuned_model_waits_for_its_whole_grid(store):
    from lgmrec.runner import run_unit

    smoke = PROFILES["smoke"]
    unit = WorkUnit("overall", "smoke-baby", "bpr")
    outcome = run_unit(smoke, unit, store)
    assert outcome.ran == 3 + 1  # the grid, then seed 1 at the chosen point (seed 999 is a grid run)
    records = store.load("smoke")
    # remove one grid point's record: the unit's overall runs are no longer matched
    spec = unit_specs(smoke, unit)[1]
    victim = [r for r in store.iter_records("smoke") if r["config"]["model_params"]["reg_weight"]
              == spec.overrides_dict["reg_weight"]][0]
    json_path = victim["_path"]
    assert tuning_choices(smoke, records)
    import os
    os.remove(json_path)
    assert tuning_choices(smoke, store.load("smoke")) == {}
    assert set(collect(smoke, store=store)["experiment"]) == {"tuning"}


def test_a_reverted_dataset_is_collected_by_its_fingerprint_not_by_age(store):
    """Records of a preset tried and then reverted are newer than the reverted-to data's: the grid
    finds the current data's records done, collect() without fingerprints takes the newest (the
    tried data's), with the current fingerprints the current data's."""
    original = tiny_profile(models=("bpr",), tuning="none", experiments=("overall",))
    tried = tiny_profile(models=("bpr",), tuning="none", experiments=("overall",), synthetic_presets={
        **SMOKE_PRESETS, "smoke-baby": replace(SMOKE_PRESETS["smoke-baby"], sharpness=2.0)})
    assert grid(original, store).ran == 1
    time.sleep(1.1)  # records say when they were written to the second
    assert grid(tried, store).ran == 1
    assert grid(original, store).ran == 0  # the original data's record is there
    current = dataset_fingerprint(load_named_dataset("smoke-baby", original))
    newest = collect(original, "overall", store=store)
    assert len(newest) == 1 and newest["dataset_fingerprint"].iloc[0] != current
    kept = collect(original, "overall", store=store, fingerprints={"smoke-baby": current})
    assert len(kept) == 1 and kept["dataset_fingerprint"].iloc[0] == current
    assert kept["config_hash"].iloc[0] != newest["config_hash"].iloc[0]


def test_records_of_a_preset_before_its_knobs_changed_are_not_done_runs(store):
    """The grid counts as done only the records of its synthetic data as generated now: after a
    preset's knobs change, the old data's records neither fill the progress bar nor count as
    already done (they did: "363 already done" while those runs were running again)."""
    before = tiny_profile(models=("bpr",), tuning="none", experiments=("overall",))
    after = tiny_profile(models=("bpr",), tuning="none", experiments=("overall",), synthetic_presets={
        **SMOKE_PRESETS, "smoke-baby": replace(SMOKE_PRESETS["smoke-baby"], sharpness=2.0)})
    assert grid(before, store).ran == 1
    changed = grid(after, store)
    assert (changed.ran, changed.skipped) == (1, 0)
    again = grid(after, store)
    assert (again.ran, again.skipped) == (0, 1)
