"""Every executor writes the same records for the same configuration, seed, device and torch
thread count (issue 27): ``--threads`` is applied by each of them, in-process included, and each
record states the thread count its run used. Real engines: papermill kernels in worker
processes, a local Ray instance, real training on the smoke profile's tiny data.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lgmrec.collect import collect
from lgmrec.executors import GridOptions, mixed_threads_line, run_grid, threads_per_run, usable_cores
from lgmrec.results import ResultStore

from .conftest import grid, tiny_profile

# What may differ between two executions of one run, and why; every other field must be equal:
# - timings: wall_seconds, train_seconds_per_epoch, eval_seconds (measured durations);
# - peak_memory_mb, baseline_memory_mb: the resident memory of the process the run happened to
#   share (a notebook kernel against this test process), not a property of the run;
# - written_at: the clock time the record was written;
# - _path: where each store keeps it (added when a record is read, not stored).
# Records carry no host or pid (the audit log runs.log does), so nothing else is excluded.
NOT_COMPARED = {"wall_seconds", "train_seconds_per_epoch", "eval_seconds", "peak_memory_mb",
                "baseline_memory_mb", "written_at", "_path"}
# A run planned by two experiments (LGMRec's full model: overall and ablation; a tuning point
# that is also an error-rate run) is one record, labelled with the experiment, variant and
# requested overrides of the unit that trained it first: which one that is depends on how the
# units were scheduled, so for such runs the label is checked to be one of the planned ones.
LABEL = ("experiment", "variant", "requested")


def records(store: ResultStore, profile: str = "smoke") -> dict:
    """(config hash, seed) -> record without the fields that may differ; warnings are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or unreadable record fails the test
        return {(r["config_hash"], r["seed"]): {k: v for k, v in r.items() if k not in NOT_COMPARED}
                for r in store.iter_records(profile)}


def planned_labels(store: ResultStore, profile: str = "smoke") -> dict:
    """(config hash, seed) -> the (experiment, variant) pairs the profile plans for that run."""
    table = collect(profile, store=store, include_failed=True)
    labels: dict = {}
    for row in table[["config_hash", "seed", "experiment", "variant"]].itertuples(index=False):
        labels.setdefault((row.config_hash, row.seed), set()).add((row.experiment, row.variant))
    return labels


def assert_same_records(store: ResultStore, reference: ResultStore, threads: int) -> None:
    found, expected = records(store), records(reference)
    assert found.keys() == expected.keys()
    labels = planned_labels(reference)
    shared = 0
    for key, record in expected.items():
        other = found[key]
        assert record["environment"]["torch_threads"] == threads, record["environment"]
        if len(labels[key]) > 1:
            shared += 1
            for each in (record, other):
                assert (each["experiment"], each["variant"]) in labels[key]
            record = {k: v for k, v in record.items() if k not in LABEL}
            other = {k: v for k, v in other.items() if k not in LABEL}
        differing = sorted(k for k in record.keys() | other.keys() if record.get(k) != other.get(k))
        assert not differing, f"{record['model']} seed {record['seed']} {key[0][:12]}: {differing} differ"
    assert shared < len(expected) // 4  # the exemption stays an exception


@pytest.fixture
def restore_threads():
    """The session's torch thread count, put back after a test that changes it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_inprocess_and_local_executors_write_the_same_records_at_the_workers_thread_count(tmp_path, restore_threads):
    workers = 2
    threads = threads_per_run("local", GridOptions(workers=workers))
    # this process runs with another thread count than the grid's: the in-process executor must
    # apply the grid's to its runs (and record it), and give this process its own back afterwards
    torch.set_num_threads(threads + 1)
    inprocess = ResultStore(tmp_path / "inprocess")
    summary = run_grid("smoke", None, inprocess, "inprocess", GridOptions(workers=workers), progress=False)
    assert summary.failed == [] and summary.ran > 40
    assert torch.get_num_threads() == threads + 1
    local = ResultStore(tmp_path / "local")
    summary = run_grid("smoke", None, local, "local", GridOptions(workers=workers), progress=False)
    assert summary.failed == []
    assert_same_records(local, inprocess, threads)


def test_ray_applies_threads_to_its_notebook_kernels_and_writes_the_inprocess_records(tmp_path):
    ray = pytest.importorskip("ray", reason="the cluster extra: pip install '.[cluster]'")
    # two threads, not the one CPU a Ray task declares (Ray's own default for a task's threads):
    # the ablation unit holds the run that disagreed in issue 27 (pre-fix hyperedges, seed 999)
    options = GridOptions(workers=2, threads=2)
    inprocess = ResultStore(tmp_path / "inprocess")
    assert run_grid("smoke", "ablation", inprocess, "inprocess", options, progress=False).failed == []
    store = ResultStore(tmp_path / "ray")
    try:
        summary = run_grid("smoke", "ablation", store, "ray", options, progress=False)
    finally:
        ray.shutdown()
    assert summary.failed == [] and summary.ran > 10
    assert_same_records(store, inprocess, threads=2)


def test_without_threads_inprocess_runs_take_the_local_workers_thread_count():
    cores = usable_cores()
    for workers in (None, 1, 2, cores):
        options = GridOptions(workers=workers)
        assert threads_per_run("inprocess", options) == threads_per_run("local", options)
    assert threads_per_run("local", GridOptions()) == 1  # as many workers as cores, one thread each
    assert threads_per_run("local", GridOptions(workers=1)) == cores
    assert threads_per_run("ray", GridOptions(cpus_per_run=3)) == 3
    assert threads_per_run("inprocess", GridOptions(workers=1, threads=3)) == 3


def test_a_grid_that_would_mix_thread_counts_in_one_folder_says_so_in_one_line(store, capsys):
    profile = tiny_profile()
    assert grid(profile, store, threads=2).failed == []
    capsys.readouterr()
    folder = store.root / profile.name
    made = len(list(store.iter_records(profile.name)))
    # nothing left to run: nothing would be mixed, nothing said
    run_grid(profile, None, store, "inprocess", GridOptions(notebooks=False, threads=1))
    assert "thread count" not in capsys.readouterr().out
    # rerun with another setting: one line, naming what the folder holds and what to pass
    run_grid(profile, None, store, "inprocess", GridOptions(notebooks=False, threads=1, force=True))
    lines = [line for line in capsys.readouterr().out.splitlines() if "thread count" in line]
    assert lines == [f"note: {folder} holds records made with another torch thread count ({made} with 2 thread(s)) "
                     f"than this grid's runs (1); thread counts round floats differently, and one "
                     f"experiment's records should come from one setting (--threads 2, or another results folder)"]
    assert {r["environment"]["torch_threads"] for r in store.iter_records(profile.name)} == {1}
    # the same setting as the records: silent
    run_grid(profile, None, store, "inprocess", GridOptions(notebooks=False, threads=1, force=True))
    assert "thread count" not in capsys.readouterr().out
    assert mixed_threads_line([{"environment": {"torch_threads": 1}}], 1, folder) is None


def test_threads_below_one_stop_with_one_line(store):
    from lgmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="^threads must be >= 1, got 0$"):
        run_grid(tiny_profile(), None, store, "inprocess", GridOptions(notebooks=False, threads=0), progress=False)
