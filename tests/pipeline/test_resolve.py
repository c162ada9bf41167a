"""One resolved configuration whichever way a run is started: the CLI, the grid, the notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lgmrec.cli import main
from lgmrec.grids import PROFILES
from lgmrec.resolve import resolve_run

from .conftest import grid, tiny_profile

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "run_experiment.ipynb"
MODELS = ("lattice", "mgcn", "micro")  # the models with their own training defaults


def test_precedence_defaults_preset_model_training_profile_overrides():
    base = resolve_run("lattice", "synth-baby-mini")
    assert (base.train_config.lr_decay, base.train_config.lr_decay_epochs) == (0.96, 50)  # the model's yaml
    assert base.train_config.max_epochs == 1000  # the protocol
    profiled = resolve_run("lattice", "synth-baby-mini", profile_train={"max_epochs": 3, "lr_decay": 0.5})
    assert (profiled.train_config.max_epochs, profiled.train_config.lr_decay) == (3, 0.5)
    explicit = resolve_run("lattice", "synth-baby-mini", {"lr_decay": 0.9, "reg_weight": 1e-3},
                           profile_train={"lr_decay": 0.5})
    assert explicit.train_config.lr_decay == 0.9 and explicit.model_config.reg_weight == 1e-3
    # a regulariser divided by the configured batch size follows the resolved batch size
    assert resolve_run("lattice", "x").model_config.reg_batch_size == 2048
    assert resolve_run("lattice", "x", {"batch_size": 512}).model_config.reg_batch_size == 512
    assert resolve_run("micro", "x").model_config.reg_batch_size == 1024  # MICRO trains with 1024
    assert resolve_run("lattice", "x", {"batch_size": 512, "reg_batch_size": 0}).model_config.reg_batch_size == 0
    lgmrec = resolve_run("lgmrec", "synth-sports-mini")  # the preset's values for the dataset family
    assert (lgmrec.preset, lgmrec.model_config.alpha, lgmrec.model_config.n_hyper_layer) == ("official-log", 0.6, 4)
    assert resolve_run("lgmrec", "synth-sports-mini", {"alpha": 0.1}).model_config.alpha == 0.1


def test_cli_grid_and_notebook_resolve_and_compute_the_same_runs(tmp_path, store):
    import papermill

    smoke = PROFILES["smoke"]
    profile = tiny_profile(name="three", models=MODELS, train=dict(smoke.train), experiments=("overall",))
    assert grid(profile, store).failed == []
    grid_records = {r["model"]: r for r in store.iter_records("three")}
    for model in MODELS:
        out = tmp_path / f"{model}.json"
        assert main(["train", "--data", "smoke-baby", "--profile", "smoke", "--model", model,
                     "--output", str(out), "--quiet"]) == 0
        cli = json.loads(out.read_text())
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / f"{model}.ipynb"), progress_bar=False,
                                   kernel_name="python3", language="python",
                                   parameters=dict(profile="smoke", experiment="adhoc", dataset="smoke-baby",
                                                   model=model, seeds="999", results=str(tmp_path / "nb")))
        (notebook,) = [r for r in store.__class__(tmp_path / "nb").iter_records("smoke") if r["model"] == model]
        expected = grid_records[model]
        for other in (cli, notebook):
            assert other["config"]["model_params"] == expected["config"]["model_params"], model
            assert other["config"]["train"] == expected["config"]["train"], model
            assert other["test"] == expected["test"] and other["best_epoch"] == expected["best_epoch"], model
        assert notebook["config_hash"] == expected["config_hash"]
    train = grid_records["micro"]["config"]["train"]
    assert (train["learning_rate"], train["batch_size"]) == (5e-4, 1024)  # MICRO's own training defaults
    assert grid_records["lattice"]["config"]["train"]["lr_decay"] == 0.96
    assert grid_records["mgcn"]["config"]["train"]["lr_decay"] == 0.96


@pytest.mark.parametrize("model", ["lattice", "micro"])
def test_changing_a_models_training_defaults_changes_the_hash(model, store, monkeypatch):
    import dataclasses
    import importlib

    profile = tiny_profile(models=(model,), train={"max_epochs": 1, "patience": 1}, experiments=("overall",))
    first = grid(profile, store)
    module = importlib.import_module(f"lgmrec.models.{model}")
    monkeypatch.setattr(module, "SPEC", dataclasses.replace(module.SPEC, train_defaults={}))
    second = grid(profile, store)
    assert (first.ran, second.ran) == (1, 1)  # a new configuration: a new run
    assert store.load("tiny")["config_hash"].nunique() == 2
