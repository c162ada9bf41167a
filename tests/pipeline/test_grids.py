"""Experiment grids and profiles, the per-run entry point, labelling records, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from lgmrec.cli import main
from lgmrec.errors import ConfigError, DataError
from lgmrec.grids import ABLATIONS, PROFILES, SENSITIVITY_SYMBOLS, available_models, plan
from lgmrec.models.lgmrec import SEARCH_RANGES
from lgmrec.pipeline import collect, parse_overrides, progress_table, run_experiment, run_grid, unique_runs
from lgmrec.results import ResultStore

from .conftest import tiny_profile


def test_quick_profile_mirrors_the_paper_on_the_small_synthetic_presets():
    quick = PROFILES["quick"]
    assert quick.datasets == ("synth-baby-small", "synth-sports-small", "synth-clothing-small")
    specs = plan(quick)
    overall = [s for s in specs if s.experiment == "overall"]
    models = available_models()
    assert "lgmrec" in models and "bpr" in models
    assert len(overall) == len(models) * 3 * len(quick.seeds)
    assert {s.model for s in overall} == set(models)
    ablation = [s for s in specs if s.experiment == "ablation"]
    assert {s.variant for s in ablation} == set(ABLATIONS)
    switches = {k: v for s in ablation for k, v in s.overrides}
    assert switches == {"use_cge": False, "use_mge": False, "use_ghe": False, "use_hcl": False,
                        "modalities": ("text",), "cf_model": "mf", "hyperedge_bug": True}
    sensitivity = [s for s in specs if s.experiment == "sensitivity"]
    assert {s.parameter for s in sensitivity} == set(SENSITIVITY_SYMBOLS)
    for spec in sensitivity:  # every point lies in the authors' search range
        assert spec.value in SEARCH_RANGES[spec.parameter]
    # the preset value of each parameter (Baby: A=4, alpha=0.3, rho=0.5, L=2, K=2, H=1, cl=1e-4)
    # is among the points, and that run is the overall LGMRec run (same configuration)
    defaults = {"hyper_num": 4, "alpha": 0.3, "keep_rate": 0.5, "n_ui_layers": 2, "n_mm_layers": 2,
                "n_hyper_layer": 1, "cl_weight": 1e-4}
    for parameter, value in defaults.items():
        assert value in quick.sensitivity[parameter]
    assert len(unique_runs(specs)) < len(specs)


def test_full_profile_is_paper_scale_with_the_whole_search_grid():
    full = PROFILES["full"]
    assert full.data == "real" and full.datasets == ("baby", "sports", "clothing")
    assert len(full.seeds) == 5 and full.train["max_epochs"] == 1000 and full.train["patience"] == 20
    for parameter in SENSITIVITY_SYMBOLS:
        assert tuple(full.sensitivity[parameter]) == tuple(SEARCH_RANGES[parameter])


def test_full_profile_without_real_data_stops_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LGMREC_DATA_DIR", str(tmp_path / "no-data"))
    with pytest.raises(DataError, match="released Amazon datasets.*baby.*lgmrec data fetch"):
        run_grid("full", progress=False)
    assert main(["grid", "--profile", "full", "--results", str(tmp_path / "r")]) == 2
    assert "released Amazon datasets" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_profile_and_experiment_are_config_errors():
    with pytest.raises(ConfigError, match="unknown profile"):
        plan("nope")
    with pytest.raises(ConfigError, match="unknown experiment"):
        plan("smoke", "tables")
    assert {s.experiment for s in plan("smoke", "sparsity")} == {"overall"}


def test_overrides_parse_from_dict_or_string():
    assert parse_overrides("alpha=0.5; hyper_num=8;modalities=image") == {
        "alpha": 0.5, "hyper_num": 8, "modalities": "image"}
    assert parse_overrides({"alpha": 0.1}) == {"alpha": 0.1}
    assert parse_overrides("") == {} and parse_overrides(None) == {}
    with pytest.raises(ConfigError):
        parse_overrides("alpha")


def test_run_experiment_applies_overrides_and_reuses_its_record(store):
    record = run_experiment("smoke-baby", "lgmrec", seed=5, overrides="alpha=0.5;hyper_num=8;patience=1",
                            max_epochs=2, profile="smoke", store=store, quiet=True)
    assert record["_ran"] and record["status"] == "ok"
    params, train = record["config"]["model_params"], record["config"]["train"]
    assert (params["alpha"], params["hyper_num"], train["max_epochs"], train["patience"]) == (0.5, 8, 2, 1)
    assert record["epochs_run"] <= 2 and 0 < record["test"]["recall@20"] <= 1
    again = run_experiment("smoke-baby", "lgmrec", seed=5, overrides={"hyper_num": 8, "alpha": 0.5, "patience": 1},
                           max_epochs=2, profile="smoke", store=store, quiet=True)
    assert not again["_ran"] and again["test"] == record["test"]
    with pytest.raises(ConfigError, match="unknown LGMRecConfig key"):
        run_experiment("smoke-baby", "lgmrec", overrides="alpah=0.5", profile="smoke", store=store)


def test_collect_labels_runs_with_every_experiment_they_serve(smoke_results):
    table = collect("smoke", store=smoke_results)
    counts = table.groupby("experiment").size().to_dict()
    assert counts == {"overall": 12, "ablation": 9, "sensitivity": 4}
    full_in_ablation = table[(table.experiment == "ablation") & (table.variant == "LGMRec")]
    overall_lgmrec = table[(table.experiment == "overall") & (table.model == "lgmrec")
                           & (table.dataset == "smoke-baby") & (table.seed == 999)]
    assert full_in_ablation["path"].tolist() == overall_lgmrec["path"].tolist()  # one shared run
    sens = table[table.experiment == "sensitivity"].set_index("variant")
    assert sens.loc["alpha=0.6", "model_params"]["alpha"] == 0.6 and sens.loc["alpha=0.6", "value"] == 0.6
    ablation = table[table.experiment == "ablation"].set_index("variant")
    assert ablation.loc["w/o GHE", "model_params"]["use_ghe"] is False
    assert ablation.loc["image only", "model_params"]["modalities"] == ["image"]
    progress = progress_table("smoke", store=smoke_results).set_index("experiment")
    assert progress["missing"].sum() == 0 and progress.loc["overall", "ok"] == 12


def test_grid_dry_run_lists_the_plan(capsys, tmp_path):
    assert main(["grid", "--profile", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "24 unique runs" in out and "w/o HCL" in out and "hyper_num=8" in out
    assert not any(tmp_path.iterdir())


def test_grid_cli_runs_only_the_asked_experiment(tmp_path, capsys):
    assert main(["grid", "--profile", "smoke", "--only", "sensitivity", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 4 run now" in out
    assert len(list((tmp_path / "smoke").rglob("*.json"))) == 4


def test_tiny_profile_sanity(store):
    summary = run_grid(tiny_profile(seeds=(1, 2)), only="overall", store=store, progress=False)
    assert summary.planned == 4 and summary.ran == 4


def test_run_notebook_under_papermill_writes_the_record_of_its_parameters(store, tmp_path):
    import papermill

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "run_experiment.ipynb"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / "out.ipynb"), progress_bar=False,
        parameters={"dataset": "smoke-baby", "model": "lgmrec", "seed": 7, "overrides": "alpha=0.7",
                    "max_epochs": 2, "profile": "smoke", "results": str(store.root)},
    )
    records = store.load("smoke")
    assert len(records) == 1
    record = records.iloc[0]
    assert record["seed"] == 7 and record["model_params"]["alpha"] == 0.7 and record["status"] == "ok"


def test_papermill_executor_writes_the_same_records_as_the_inprocess_grid(tmp_path, capsys):
    root = tmp_path / "results"
    assert main(["grid", "--profile", "smoke", "--only", "sensitivity", "--executor", "papermill",
                 "--results", str(root)]) == 0
    assert "4 runs, 4 run now" in capsys.readouterr().out
    records = sorted((root / "smoke").rglob("*-seed*.json"))
    assert len(records) == 4
    assert all(path.with_suffix(".ipynb").is_file() for path in records)  # executed notebooks kept
    assert not list(root.rglob("*.tmp"))
    # the in-process runner finds every record of the same plan: nothing to redo
    summary = run_grid("smoke", only="sensitivity", store=ResultStore(root), progress=False)
    assert summary.skipped == 4 and summary.ran == 0


def test_sensitivity_points_at_the_preset_values_all_appear(store):
    # alpha=0.3 and hyper_num=4 are both the Baby preset's values: one run serves both points
    profile = tiny_profile(models=("lgmrec",), sensitivity={"alpha": (0.3, 0.6), "hyper_num": (4, 8)})
    summary = run_grid(profile, only="sensitivity", store=store, progress=False)
    assert summary.ran == 3
    table = collect(profile, "sensitivity", store=store)
    assert sorted(table["variant"]) == ["alpha=0.3", "alpha=0.6", "hyper_num=4", "hyper_num=8"]
    shared = table[table["variant"].isin(["alpha=0.3", "hyper_num=4"])]
    assert shared["path"].nunique() == 1
