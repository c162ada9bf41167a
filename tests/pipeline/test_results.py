"""The results store: atomic records, skipping, crash safety, failed runs, the loader."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lgmrec import results as results_module
from lgmrec.pipeline import load_named_dataset, prepare_run, run_experiment, run_grid
from lgmrec.grids import RunSpec
from lgmrec.results import ResultStore, config_hash

from .conftest import tiny_profile


def _record_files(store: ResultStore, profile: str) -> list[Path]:
    return sorted((store.root / profile).rglob("*-seed*.json"))


def test_grid_writes_one_record_and_parquet_per_run_then_skips(store):
    profile = tiny_profile()
    first = run_grid(profile, only="overall", store=store, progress=False)
    assert (first.planned, first.ran, first.skipped, first.failed) == (2, 2, 0, [])
    records = _record_files(store, "tiny")
    assert len(records) == 2
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "ok" and record["profile"] == "tiny" and record["seed"] == 999
        assert len(record["config_hash"]) == 64 and path.name.startswith(record["config_hash"][:16])
        assert record["data_kind"] == "synthetic" and record["dataset_source"].startswith("synthetic:smoke-baby")
        assert record["code_version"] and record["environment"]["python"]
        per_user = pd.read_parquet(path.with_suffix(".parquet"))
        assert {"user", "n_train", "recall@20", "ndcg@20"} <= set(per_user.columns)
        # the per-user vector averages to the record's test metric
        assert per_user["recall@20"].mean() == pytest.approx(record["test"]["recall@20"], abs=1e-12)
        assert (per_user["n_train"] >= 1).all()
    mtimes = [p.stat().st_mtime_ns for p in records]
    second = run_grid(profile, only="overall", store=store, progress=False)
    assert (second.ran, second.skipped) == (0, 2)
    assert [p.stat().st_mtime_ns for p in records] == mtimes


def test_config_hash_is_stable_and_covers_data_model_and_training(store):
    profile = tiny_profile()
    data = load_named_dataset("smoke-baby", profile)
    train = (("max_epochs", 2),)
    base = prepare_run(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, train=train), "tiny", data).key.config_hash
    again = prepare_run(RunSpec("y", "z", "smoke-baby", "lgmrec", 1, train=train), "tiny", data).key.config_hash
    assert base == again  # labels and seed are not part of the configuration
    default_alpha = prepare_run(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, (("alpha", 0.3),), train), "tiny", data)
    assert default_alpha.key.config_hash == base  # the preset's value: the same resolved config
    other_alpha = prepare_run(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, (("alpha", 0.5),), train), "tiny", data)
    other_epochs = prepare_run(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, train=(("max_epochs", 3),)), "tiny", data)
    other_data = load_named_dataset("smoke-sports", profile)
    moved = prepare_run(RunSpec("x", "x", "smoke-sports", "lgmrec", 999, train=train), "tiny", other_data)
    assert len({base, other_alpha.key.config_hash, other_epochs.key.config_hash, moved.key.config_hash}) == 4
    # the hash is a plain function of its inputs (no memory address, no dict order)
    params = {"b": 1, "a": [1, 2]}
    assert config_hash("d", "f", "m", params, {"x": 1}) == config_hash("d", "f", "m", dict(reversed(params.items())), {"x": 1})


def test_crash_between_parquet_and_record_loses_nothing_and_is_redone(store, monkeypatch):
    profile = tiny_profile()
    real_write = results_module.write_atomic
    calls = []

    def crash_on_record(path, write):
        calls.append(path)
        if path.suffix == ".json" and len(calls) == 4:  # the second run's record
            raise KeyboardInterrupt("simulated kill between the parquet and the JSON write")
        real_write(path, write)

    monkeypatch.setattr(results_module, "write_atomic", crash_on_record)
    with pytest.raises(KeyboardInterrupt):
        run_grid(profile, only="overall", store=store, progress=False)
    monkeypatch.setattr(results_module, "write_atomic", real_write)
    folder = store.root / "tiny"
    assert len(_record_files(store, "tiny")) == 1  # the first run survived
    assert len(list(folder.rglob("*.parquet"))) == 2  # the second run's parquet has no record
    assert not list(folder.rglob(".*.tmp"))
    summary = run_grid(profile, only="overall", store=store, progress=False)
    assert (summary.ran, summary.skipped) == (1, 1)
    table = store.load("tiny")
    assert len(table) == 2 and (table["status"] == "ok").all()
    for record in store.iter_records("tiny"):
        store.read_per_user(record)  # parquet matches its record's sha256


def test_corrupt_or_truncated_record_warns_and_is_redone(store):
    profile = tiny_profile()
    run_grid(profile, only="overall", store=store, progress=False)
    path = _record_files(store, "tiny")[0]
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[: len(path.read_text()) // 2])  # truncated mid-write by a dying disk
    with pytest.warns(UserWarning, match="unreadable run record"):
        assert len(store.load("tiny")) == 1
    with pytest.warns(UserWarning, match="unreadable run record"):
        summary = run_grid(profile, only="overall", store=store, progress=False)
    assert (summary.ran, summary.skipped) == (1, 1)
    redone = json.loads(path.read_text())
    assert redone["test"] == good["test"]  # same config, same seed, same machine: same metrics
    path.write_text('{"status": "ok"}')  # valid JSON, but not a record
    with pytest.warns(UserWarning, match="missing key"):
        assert store.read_record(path) is None


def test_parquet_replaced_after_the_record_is_detected(store):
    run_grid(tiny_profile(), only="overall", store=store, progress=False)
    record = next(store.iter_records("tiny"))
    path = Path(record["_path"]).with_suffix(".parquet")
    frame = pd.read_parquet(path)
    frame.loc[0, "recall@20"] = 1.0
    frame.to_parquet(path)
    with pytest.raises(Exception, match="does not match its record"):
        store.read_per_user(record)


def test_stray_temporary_files_are_removed_and_ignored(store):
    run_grid(tiny_profile(), only="overall", store=store, progress=False)
    folder = Path(next(store.iter_records("tiny"))["_path"]).parent
    stray = folder / ".abc-seed999.json.x1y2.tmp"
    stray.write_text('{"trunc')
    assert len(store.load("tiny")) == 2  # not read as a record
    assert store.remove_temp_files("tiny") == 1 and not stray.exists()


def test_killed_grid_process_keeps_finished_runs(tmp_path):
    """SIGKILL a real grid process mid-run; every file left is valid and the rerun completes it."""
    root = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lgmrec", "grid", "--profile", "smoke", "--results", str(root), "--only", "overall"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(root.rglob("*-seed*.json"))) < 3:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    store = ResultStore(root)
    finished = list(store.iter_records("smoke"))  # raises/warns on nothing: every record is whole
    assert 3 <= len(finished) < 12, "the kill should land mid-grid"
    for record in finished:
        store.read_per_user(record)
    summary = run_grid("smoke", only="overall", store=store, progress=False)
    assert summary.skipped == len(finished) and summary.ran == 12 - len(finished)
    assert len(store.load("smoke")) == 12


def test_failed_runs_are_recorded_and_the_grid_goes_on(store, monkeypatch):
    # a diverging run (infinite loss), through the per-run entry point
    record = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store, quiet=True)
    assert record["status"] == "failed" and "loss" in record["error"]
    assert record["_ran"] and Path(record["_path"]).is_file()
    again = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store, quiet=True)
    assert not again["_ran"]  # recorded failures are results too: not repeated...
    retried = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store,
                             quiet=True, force=True)
    assert retried["_ran"] and retried["status"] == "failed"  # ...unless forced

    # a crash inside a model is recorded with its reason, and the grid continues
    import lgmrec.models.bpr as bpr

    def broken_build(data, config):
        raise RuntimeError("simulated bug in a baseline")

    monkeypatch.setattr(bpr, "SPEC", dataclasses.replace(bpr.SPEC, build=broken_build))
    summary = run_grid(tiny_profile(), only="overall", store=store, progress=False)
    assert summary.ran == 2 and len(summary.failed) == 1 and "simulated bug" in summary.failed[0]
    table = store.load("tiny").set_index("model")
    assert table.loc["bpr", "status"] == "failed" and "RuntimeError: simulated bug" in table.loc["bpr", "error"]
    assert table.loc["lgmrec", "status"] == "ok" and table.loc["lgmrec", "recall@20"] > 0
    assert math.isnan(table.loc["bpr", "recall@20"])


def test_loader_gives_one_row_per_run_with_metric_columns(smoke_results):
    table = smoke_results.load("smoke")
    assert len(table) == 24  # 12 overall + 8 ablation variants + 4 sensitivity points (1 shared)
    assert table["config_hash"].nunique() * 1 >= 12
    for column in ("recall@20", "ndcg@20", "recall@10", "valid_recall@20", "n_parameters",
                   "train_seconds_per_epoch", "peak_memory_mb", "code_version", "data_kind"):
        assert column in table.columns, column
    assert table["recall@20"].between(0, 1).all() and table["recall@20"].dtype == np.float64
    assert set(table["data_kind"]) == {"synthetic"}
    one = table.iloc[0]
    record = json.loads(Path(one["path"]).read_text())
    assert one["ndcg@20"] == record["test"]["ndcg@20"]
