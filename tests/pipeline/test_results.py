"""The results store: atomic durable records, skipping, crash safety, failed runs, the loader."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lgmrec import files
from lgmrec.datasets.named import load_named_dataset
from lgmrec.grids import PROFILES, RunSpec
from lgmrec.results import ResultStore, config_hash
from lgmrec.runner import prepare_run, run_experiment

from .conftest import grid, tiny_profile


def _record_files(store: ResultStore, profile: str) -> list[Path]:
    return sorted((store.root / profile).rglob("*-seed*.json"))


def test_grid_writes_one_record_and_parquet_per_run_then_skips(store):
    profile = tiny_profile()
    first = grid(profile, store, "overall")
    assert (first.planned, first.ran, first.skipped, first.failed) == (2, 2, 0, [])
    records = _record_files(store, "tiny")
    assert len(records) == 2
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "ok" and record["profile"] == "tiny" and record["seed"] == 999
        assert len(record["config_hash"]) == 64 and path.name.startswith(record["config_hash"][:16])
        assert record["data_kind"] == "synthetic" and record["dataset_source"].startswith("synthetic:smoke-baby")
        assert record["code_version"] and record["environment"]["python"]
        assert record["experiment"] == "overall" and record["config"]["train"]["max_epochs"] == 2
        per_user = pd.read_parquet(path.with_suffix(".parquet"))
        assert {"user", "n_train", "recall@20", "ndcg@20"} <= set(per_user.columns)
        # the per-user vector averages to the record's test metric
        assert per_user["recall@20"].mean() == pytest.approx(record["test"]["recall@20"], abs=1e-12)
        assert (per_user["n_train"] >= 1).all()
    mtimes = [p.stat().st_mtime_ns for p in records]
    second = grid(profile, store, "overall")
    assert (second.ran, second.skipped) == (0, 2)
    assert [p.stat().st_mtime_ns for p in records] == mtimes


def test_config_hash_is_stable_and_covers_data_model_and_training():
    profile = tiny_profile()
    data = load_named_dataset("smoke-baby", profile)
    key = lambda spec, p=profile, d=data: prepare_run(spec, p, d).key.config_hash
    base = key(RunSpec("x", "x", "smoke-baby", "lgmrec", 999))
    assert base == key(RunSpec("y", "z", "smoke-baby", "lgmrec", 1))  # labels and seed are not part of it
    assert key(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, (("alpha", 0.3),))) == base  # the preset's value
    other_alpha = key(RunSpec("x", "x", "smoke-baby", "lgmrec", 999, (("alpha", 0.5),)))
    other_epochs = key(RunSpec("x", "x", "smoke-baby", "lgmrec", 999), dataclasses.replace(profile, train={"max_epochs": 3}))
    other_data = load_named_dataset("smoke-sports", profile)
    moved = key(RunSpec("x", "x", "smoke-sports", "lgmrec", 999), profile, other_data)
    assert len({base, other_alpha, other_epochs, moved}) == 4
    # the hash is a plain function of its inputs (no memory address, no dict order)
    params = {"b": 1, "a": [1, 2]}
    assert config_hash("d", "f", "m", params, {"x": 1}) == config_hash("d", "f", "m", dict(reversed(params.items())), {"x": 1})


def test_writes_are_flushed_to_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((str(a), len(synced))) or real_replace(a, b))
    target = tmp_path / "record.json"
    files.write_atomic(target, lambda tmp: tmp.write_text("{}"))
    assert target.read_text() == "{}"
    (temp, synced_before_rename), = renamed
    assert synced[:synced_before_rename] == [temp]  # the content reached the disk under the temporary name
    assert synced[synced_before_rename:] == [str(tmp_path)]  # then the folder entry of the new name


def test_crash_between_parquet_and_record_loses_nothing_and_is_redone(store, monkeypatch):
    profile = tiny_profile()
    real_replace, renames = os.replace, []

    def killed_at_the_records_rename(source, target):  # the real write_atomic runs up to here
        renames.append(target)
        if str(target).endswith(".json") and len([t for t in renames if str(t).endswith(".json")]) == 2:
            raise KeyboardInterrupt("simulated kill just before the second record's rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_at_the_records_rename)
    with pytest.raises(KeyboardInterrupt):
        grid(profile, store, "overall")
    monkeypatch.setattr(os, "replace", real_replace)
    folder = store.root / "tiny"
    assert len(_record_files(store, "tiny")) == 1  # the first run survived
    assert len(list(folder.rglob("*.parquet"))) == 2  # the second run's parquet has no record
    assert not list(folder.rglob(".*.tmp"))  # write_atomic removed its temporary file
    summary = grid(profile, store, "overall")
    assert (summary.ran, summary.skipped) == (1, 1)
    table = store.load("tiny")
    assert len(table) == 2 and (table["status"] == "ok").all()
    for record in store.iter_records("tiny"):
        store.read_per_user(record)  # parquet matches its record's sha256


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a record"])
def test_a_torn_or_empty_record_is_reported_and_redone(store, damage):
    profile = tiny_profile()
    grid(profile, store, "overall")
    path = _record_files(store, "tiny")[0]
    good = json.loads(path.read_text())
    text = {"truncated": path.read_text()[: len(path.read_text()) // 2], "empty": "",  # a power loss
            "not a record": '{"status": "ok"}'}[damage]
    path.write_text(text)
    with pytest.warns(UserWarning, match=f"{path.name}: unreadable run record .*treating the run as not done"):
        assert len(store.load("tiny")) == 1
    with pytest.warns(UserWarning, match="unreadable run record"):
        summary = grid(profile, store, "overall")
    assert (summary.ran, summary.skipped, summary.failed) == (1, 1, [])
    redone = json.loads(path.read_text())
    assert redone["test"] == good["test"]  # same config, same seed, same machine: same metrics


def test_parquet_replaced_after_the_record_is_detected(store):
    grid(tiny_profile(), store, "overall")
    record = next(store.iter_records("tiny"))
    path = Path(record["_path"]).with_suffix(".parquet")
    frame = pd.read_parquet(path)
    frame.loc[0, "recall@20"] = 1.0
    frame.to_parquet(path)
    with pytest.raises(Exception, match="does not match its record"):
        store.read_per_user(record)


def test_only_dead_writers_temporary_files_are_removed(store):
    grid(tiny_profile(), store, "overall")
    folder = Path(next(store.iter_records("tiny"))["_path"]).parent
    host = files.socket.gethostname().split(".")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = folder / f".abc-seed999.json.{host}~{dead}.x1y2.tmp"
    live = folder / f".abc-seed1.json.{host}~{os.getpid()}.x1y2.tmp"
    elsewhere = folder / f".abc-seed2.json.otherhost~{dead}.x1y2.tmp"
    for path in (stale, live, elsewhere):
        path.write_text('{"trunc')
    assert len(store.load("tiny")) == 2  # temporary files are never read as records
    assert store.remove_temp_files("tiny") == 1
    assert not stale.exists() and live.exists() and elsewhere.exists()


def test_killed_grid_process_keeps_finished_runs(tmp_path):
    """SIGKILL a real grid process mid-run; every file left is valid and the rerun completes it."""
    root = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "lgmrec", "grid", "--profile", "smoke", "--results", str(root), "--only", "ablation",
         "--executor", "inprocess", "--no-notebooks"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn record would warn: it must not exist
        finished = list(store.iter_records("smoke"))
        for record in finished:
            store.read_per_user(record)
    assert 3 <= len(finished) < 18, "the kill should land mid-grid"
    summary = grid("smoke", store, "ablation")
    assert summary.skipped == len(finished) and summary.ran == 18 - len(finished)
    assert len(store.load("smoke")) == 18


def test_failed_runs_are_recorded_and_the_grid_goes_on(store, monkeypatch):
    # a diverging run (infinite loss), through the per-run entry point
    record = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store)
    assert record["status"] == "failed" and "loss" in record["error"]
    assert record["_ran"] and Path(record["_path"]).is_file()
    again = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store)
    assert not again["_ran"]  # recorded failures are results too: not repeated...
    retried = run_experiment("smoke-baby", "bpr", overrides="reg_weight=inf", profile="smoke", store=store, force=True)
    assert retried["_ran"] and retried["status"] == "failed"  # ...unless forced

    # a crash inside a model is recorded with its reason, and the grid continues
    import lgmrec.models.bpr as bpr

    def broken_build(data, config):
        raise RuntimeError("simulated bug in a baseline")

    monkeypatch.setattr(bpr, "SPEC", dataclasses.replace(bpr.SPEC, build=broken_build))
    summary = grid(tiny_profile(), store, "overall")
    assert summary.ran == 2 and len(summary.failed) == 1 and "1 run(s) recorded as failed" in summary.failed[0]
    assert ", 1 failed," in summary.line()
    table = store.load("tiny").set_index("model")
    assert table.loc["bpr", "status"] == "failed" and "RuntimeError: simulated bug" in table.loc["bpr", "error"]
    assert table.loc["lgmrec", "status"] == "ok" and table.loc["lgmrec", "recall@20"] > 0
    assert math.isnan(table.loc["bpr", "recall@20"])
    # the line counts failed runs, not failure messages (it said "1 failed" with 2 failed runs)
    summary = grid(tiny_profile(seeds=(999, 1)), store, "overall")
    assert summary.failed_runs == 2 and ", 2 failed," in summary.line() and len(summary.failed) == 1


def test_retry_failed_reruns_only_failed_runs_and_force_reruns_all(store, monkeypatch, capsys):
    import lgmrec.models.bpr as bpr
    from lgmrec.cli import main

    profile = tiny_profile(name="smoke", datasets=("smoke-baby",), seeds=(999,))
    monkeypatch.setitem(PROFILES, "smoke", profile)  # a named profile the CLI can select
    good_spec = bpr.SPEC
    monkeypatch.setattr(bpr, "SPEC", dataclasses.replace(bpr.SPEC, build=lambda d, c: 1 / 0))
    args = ["grid", "--profile", "smoke", "--only", "overall", "--results", str(store.root), "--executor", "inprocess",
            "--no-notebooks"]
    assert main(args) == 0
    assert "1 run(s) recorded as failed" in capsys.readouterr().out
    times = {p.name: p.stat().st_mtime_ns for p in _record_files(store, "smoke")}
    monkeypatch.setattr(bpr, "SPEC", good_spec)  # the bug is fixed
    assert main(args) == 0
    assert "0 run now, 2 already done" in capsys.readouterr().out  # without the flag: nothing to redo
    assert main(args + ["--retry-failed"]) == 0
    assert "1 run now" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in _record_files(store, "smoke")}
    changed = {name for name in times if after[name] != times[name]}
    table = store.load("smoke").set_index("model")
    assert (table["status"] == "ok").all() and changed == {Path(table.loc["bpr", "path"]).name}
    assert main(args + ["--force"]) == 0
    assert "2 run now" in capsys.readouterr().out
    forced = {p.name: p.stat().st_mtime_ns for p in _record_files(store, "smoke")}
    assert all(forced[name] != after[name] for name in after)


def test_same_config_and_seed_in_two_processes_gives_the_same_metrics(tiny_folder, tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        subprocess.run([sys.executable, "-m", "lgmrec", "train", "--data", str(tiny_folder), "--model", "lgmrec",
                        "--max-epochs", "3", "--output", str(out), "--quiet"], check=True)
        outputs.append(json.loads(out.read_text()))
    a, b = outputs
    assert a["test"] == b["test"] and a["valid"] == b["valid"] and a["history"] == b["history"]


def test_loader_gives_one_row_per_run_with_metric_columns(smoke_results):
    table = smoke_results.load("smoke")
    # overall 12 (tuning grids' seed-999 runs included), tuning 12, ablation 16 + sensitivity 8 of their own,
    # error rates 16 (LightGCN and its planted variant, 4 seeds of their own, 2 datasets)
    assert len(table) == 12 + 12 - 4 + 16 + 8 + 16
    for column in ("recall@20", "ndcg@20", "recall@10", "valid_recall@20", "n_parameters",
                   "train_seconds_per_epoch", "peak_memory_mb", "code_version", "data_kind"):
        assert column in table.columns, column
    assert table["recall@20"].between(0, 1).all() and table["recall@20"].dtype == np.float64
    assert set(table["data_kind"]) == {"synthetic"}
    one = table.iloc[0]
    record = json.loads(Path(one["path"]).read_text())
    assert one["ndcg@20"] == record["test"]["ndcg@20"]
