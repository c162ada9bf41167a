"""Profiles, experiments and units of work: what each profile plans, and the CLI's dry run."""

from __future__ import annotations

import pytest

from lgmrec.cli import main
from lgmrec.config import TrainConfig
from lgmrec.errors import ConfigError, DataError
from lgmrec.grids import (ABLATIONS, PAPER_SEEDS, PROFILES, PUBLISHED_VARIANT, SENSITIVITY_SYMBOLS, WorkUnit,
                          available_models, plan, unit_specs, units)
from lgmrec.models import get_model_spec
from lgmrec.models.lgmrec import SEARCH_RANGES
from lgmrec.resolve import resolve_run

from .conftest import grid, tiny_profile


def test_embedded_profile_is_the_papers_design_under_the_unchanged_protocol():
    embedded = PROFILES["embedded"]
    assert embedded.train == {}  # nothing overrides the protocol
    for model in available_models():  # ... except each model's own reference training settings
        train = resolve_run(model, "synth-baby-mini", profile_train=embedded.train).train_config
        protocol = TrainConfig(**{**TrainConfig().__dict__, **get_model_spec(model).train_defaults})
        assert (train.max_epochs, train.patience) == (1000, 20) and train == protocol
    assert embedded.seeds == PAPER_SEEDS and len(embedded.datasets) == 3
    work = units(embedded)
    overall = [u for u in work if u.experiment == "overall"]
    assert {(u.dataset, u.part) for u in overall} == {(d, m) for d in embedded.datasets for m in available_models()}
    ablation = [s for s in plan(embedded, "ablation")]
    assert {s.dataset for s in ablation} == set(embedded.datasets)
    assert {s.variant for s in ablation} == set(ABLATIONS) and len({s.seed for s in ablation}) >= 3
    sensitivity = plan(embedded, "sensitivity")
    for parameter, values in SEARCH_RANGES.items():  # the authors' whole range of each parameter
        if parameter in SENSITIVITY_SYMBOLS:
            assert sorted({s.value for s in sensitivity if s.parameter == parameter}) == sorted(values)


def test_every_baseline_is_tuned_on_a_reduced_subset_of_mmrecs_grid_in_the_embedded_profile():
    embedded = PROFILES["embedded"]
    for model in available_models():
        spec = get_model_spec(model)
        if model == "lgmrec":
            assert not embedded.is_tuned(model)  # the authors' grid is one point per dataset (the preset)
            continue
        assert embedded.is_tuned(model), model
        for name, values in spec.reduced_grid.items():
            assert set(values) <= set(spec.tuning_grid[name]), (model, name)
        points = embedded.tuning_points(model)
        assert len(points) >= 3 and all(resolve_run(model, "synth-baby-mini", p) for p in points)


def test_full_profile_tunes_on_mmrecs_grids_and_carries_both_lgmrec_rows():
    full = PROFILES["full"]
    assert full.data == "real" and full.datasets == ("baby", "sports", "clothing") and full.seeds == PAPER_SEEDS
    assert full.train == {}
    for model in available_models():
        grid_size = 1
        for values in get_model_spec(model).tuning_grid.values():
            grid_size *= len(values)
        assert len(full.tuning_points(model)) == grid_size
    specs = unit_specs(full, WorkUnit("overall", "baby", "lgmrec"))
    assert {s.variant for s in specs} == {"LGMRec", PUBLISHED_VARIANT}
    published = [s for s in specs if s.variant == PUBLISHED_VARIANT]
    assert len(published) == 5 and all(s.overrides_dict == {"hyperedge_bug": True} for s in published)
    for parameter in SENSITIVITY_SYMBOLS:
        assert tuple(full.sensitivity[parameter]) == tuple(SEARCH_RANGES[parameter])


def test_a_tuned_unit_plans_its_grid_then_its_seeds_at_the_chosen_point():
    smoke = PROFILES["smoke"]
    unit = WorkUnit("overall", "smoke-baby", "bpr")
    grid_specs = unit_specs(smoke, unit)
    assert [s.experiment for s in grid_specs] == ["tuning"] * 3 and {s.seed for s in grid_specs} == {999}
    assert [s.overrides_dict["reg_weight"] for s in grid_specs] == list(get_model_spec("bpr").reduced_grid["reg_weight"])
    chosen = unit_specs(smoke, unit, {"reg_weight": 0.001})
    seeds = [s for s in chosen if s.experiment == "overall"]
    assert [s.seed for s in seeds] == list(smoke.seeds) and all(s.overrides_dict == {"reg_weight": 0.001} for s in seeds)


def test_units_check_their_names():
    smoke = PROFILES["smoke"]
    for unit, message in [(WorkUnit("nope", "smoke-baby", ""), "unknown experiment"),
                          (WorkUnit("overall", "elsewhere", "bpr"), "no dataset"),
                          (WorkUnit("overall", "smoke-baby", "vbpr"), "no model"),
                          (WorkUnit("sensitivity", "smoke-baby", "keep_rate"), "no sensitivity curve")]:
        with pytest.raises(ConfigError, match=message):
            unit_specs(smoke, unit)


def test_full_profile_without_real_data_stops_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LGMREC_DATA_DIR", str(tmp_path / "no-data"))
    with pytest.raises(DataError, match="released Amazon datasets.*baby.*lgmrec data fetch"):
        grid("full", None)
    assert main(["grid", "--profile", "full", "--results", str(tmp_path / "r")]) == 2
    assert "released Amazon datasets" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_profile_and_experiment_are_config_errors():
    with pytest.raises(ConfigError, match="unknown profile"):
        plan("nope")
    with pytest.raises(ConfigError, match="unknown experiment"):
        plan("smoke", "tables")
    assert {s.experiment for s in plan("smoke", "sparsity")} == {"overall", "tuning"}


def test_grid_dry_run_lists_units_and_runs(capsys, tmp_path):
    assert main(["grid", "--profile", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "11 units" in out and "overall/smoke-baby/bpr: 3 runs + 2 seeds at the chosen point" in out
    assert "w/o HCL" in out and "hyper_num=8" in out
    assert not any(tmp_path.iterdir())


def test_grid_cli_runs_only_the_asked_experiment(tmp_path, capsys):
    assert main(["grid", "--profile", "smoke", "--only", "sensitivity", "--results", str(tmp_path),
                 "--executor", "inprocess", "--no-notebooks"]) == 0
    out = capsys.readouterr().out
    assert "8 runs in 2 units, 8 run now" in out
    assert len(list((tmp_path / "smoke").rglob("*-seed*.json"))) == 8


def test_tiny_profile_sanity(store):
    summary = grid(tiny_profile(seeds=(1, 2)), store, "overall")
    assert (summary.planned, summary.ran, summary.failed) == (4, 4, [])
    table = store.load("tiny")
    assert len(table) == 4 and (table["status"] == "ok").all() and (table["recall@20"] > 0).all()


def test_sensitivity_points_at_the_preset_values_all_appear(store):
    from lgmrec.collect import collect

    # alpha=0.3 and hyper_num=4 are both the Baby preset's values: one run serves both points
    profile = tiny_profile(models=("lgmrec",), sensitivity={"alpha": (0.3, 0.6), "hyper_num": (4, 8)})
    summary = grid(profile, store, "sensitivity")
    assert summary.ran == 3
    table = collect(profile, "sensitivity", store=store)
    assert sorted(table["variant"]) == ["alpha=0.3", "alpha=0.6", "hyper_num=4", "hyper_num=8"]
    shared = table[table["variant"].isin(["alpha=0.3", "hyper_num=4"])]
    assert shared["path"].nunique() == 1
