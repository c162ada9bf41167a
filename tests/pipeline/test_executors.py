"""The execution layer on real engines: papermill kernels, worker processes, a local Ray instance.

Every grid here runs the smoke profile's overall experiment (6 units, 20 runs with the tuning
grids) and is compared with the same runs made in-process (the session's ``smoke_results``):
same records, same metrics. Faults are real: SIGKILL of the process that is training a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from lgmrec.claims import CLAIM_SUFFIX, owner as claim_owner
from lgmrec.executors import GridOptions, run_grid
from lgmrec.results import RUN_LOG, ResultStore

OVERALL_RUNS = 20  # 2 datasets x (LGMRec 2 seeds + 2 tuned models x (3 grid points + 1 more seed))
# the reference's torch threads (in-process with the default workers: one); every grid here uses it,
# since records are the same bit for bit only at one thread count, and cores / workers varies by machine
THREADS = 1


def records_by_run(store: ResultStore, profile: str = "smoke") -> dict:
    """(config hash, seed) -> (status, test metrics, best epoch) of every record; warnings are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or unreadable record fails the test
        return {(r["config_hash"], r["seed"]): (r["status"], r["test"], r["best_epoch"])
                for r in store.iter_records(profile)}


def reference(smoke_results: ResultStore) -> dict:
    overall = {}
    from lgmrec.collect import collect

    table = collect("smoke", store=smoke_results)
    keep = set(zip(table[table.experiment.isin(["overall", "tuning"])]["config_hash"],
                   table[table.experiment.isin(["overall", "tuning"])]["seed"]))
    for key, value in records_by_run(smoke_results).items():
        if key in keep:
            overall[key] = value
    assert len(overall) == OVERALL_RUNS
    return overall


def trainings(root: Path) -> list[str]:
    """The records whose training started, one entry per start (from the audit log)."""
    log = root / "smoke" / RUN_LOG
    return [line.split()[2] for line in log.read_text().splitlines() if line.split()[3] == "start"]


def grid_process(root: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lgmrec", "grid", "--profile", "smoke", "--only", "overall",
               "--results", str(root), "--threads", str(THREADS), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill_training(root: Path, kills: int, pick_pid, deadline_s: float = 240) -> list[int]:
    """SIGKILL ``kills`` times, each time the process ``pick_pid(claim pid)`` while a run is
    being trained (a claim is held); waits a random moment into the run first."""
    killed, deadline = [], time.monotonic() + deadline_s
    while len(killed) < kills and time.monotonic() < deadline:
        claims = list(root.rglob(f"*{CLAIM_SUFFIX}"))
        held = [c for c in claims if _held(c)]
        if not held:
            time.sleep(0.01)
            continue
        time.sleep(random.uniform(0.0, 0.05))
        # None when the run ended and its claim was removed meanwhile, or is being written
        owner = (claim_owner(held[0]) or {}).get("pid")
        if not owner or not _held(held[0]):
            continue
        target = pick_pid(owner)
        if target <= 1 or not _alive(target):  # an orphaned kernel of an earlier kill: not a worker
            continue
        os.kill(target, signal.SIGKILL)
        killed.append(target)
        while _alive(owner) and time.monotonic() < deadline:  # a kernel outlives its worker briefly
            time.sleep(0.05)
    return killed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _held(claim: Path) -> bool:
    """Whether another process holds the claim (probed without taking or removing it)."""
    import fcntl

    try:
        descriptor = os.open(claim, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # closing drops our lock, if we got it
    return False


def parent_pid(pid: int) -> int:
    """The parent of ``pid``; 0 when ``pid`` is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return 0


def test_notebook_units_without_papermill_stop_before_any_worker_with_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    import lgmrec.executors as executors
    from lgmrec.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(executors.importlib.util, "find_spec", lambda name: None if name == "papermill" else real(name))
    assert main(["grid", "--profile", "smoke", "--only", "overall", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "need papermill" in err and "--no-notebooks" in err, err
    assert not list(tmp_path.rglob("*-seed*.json"))


def test_local_notebook_executor_writes_the_inprocess_records_and_keeps_readable_notebooks(smoke_results, tmp_path):
    store = ResultStore(tmp_path / "results")
    summary = run_grid("smoke", "overall", store, "local", GridOptions(workers=2, threads=THREADS), progress=False)
    assert summary.failed == [] and summary.ran == OVERALL_RUNS
    assert records_by_run(store) == reference(smoke_results)
    notebooks = sorted((store.root / "smoke").rglob("overall.ipynb"))
    assert len(notebooks) == 6  # one per unit, beside its records
    for path in notebooks:
        assert list(path.parent.glob("*-seed*.json"))
        cells = json.loads(path.read_text())["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        text = json.dumps(outputs)
        assert "\\r" not in text and "TqdmWarning" not in text and "it/s" not in text, path
        assert not [o for o in outputs if o.get("name") == "stderr"], path
        kinds = [set(o.get("data", {})) for o in outputs if o["output_type"] == "execute_result" or "data" in o]
        assert any("text/html" in k for k in kinds) and any("image/png" in k for k in kinds)
        # each worker keeps one kernel for its units, reset before each notebook: numbered as if fresh
        counts = [c.get("execution_count") for c in cells if c["cell_type"] == "code"]
        assert counts == list(range(1, len(counts) + 1)), path
    assert len(list((store.root / "smoke" / "logs").glob("worker-*.log"))) == 2  # 6 units, 2 workers
    assert not list(store.root.rglob("*.tmp")) and not [c for c in store.root.rglob(f"*{CLAIM_SUFFIX}") if _held(c)]


def test_ray_executor_on_a_local_instance_writes_the_inprocess_records(smoke_results, tmp_path):
    ray = pytest.importorskip("ray", reason="the cluster extra: pip install '.[cluster]'")
    store = ResultStore(tmp_path / "results")
    try:
        summary = run_grid("smoke", "overall", store, "ray", GridOptions(workers=2, threads=THREADS), progress=False)
    finally:
        ray.shutdown()
    assert summary.failed == [] and summary.ran == OVERALL_RUNS
    assert records_by_run(store) == reference(smoke_results)
    assert len(list((store.root / "smoke").rglob("overall.ipynb"))) == 6


def test_killed_workers_under_local_are_retried_and_nothing_is_lost(smoke_results, tmp_path):
    root = tmp_path / "results"
    driver = grid_process(root, "--executor", "local", "--workers", "2")
    # the claim holder is the notebook's kernel; kill its worker (the kernel dies with it)
    killed = kill_training(root, kills=2, pick_pid=parent_pid)
    output, _ = driver.communicate(timeout=600)
    assert len(killed) == 2, output
    assert driver.returncode == 0, output
    assert output.count("failed (worker killed by SIGKILL); retrying") == 2, output
    assert records_by_run(ResultStore(root)) == reference(smoke_results)
    assert not list(root.rglob("*.tmp"))


def test_killed_workers_under_ray_are_retried_and_nothing_is_lost(smoke_results, tmp_path):
    pytest.importorskip("ray", reason="the cluster extra: pip install '.[cluster]'")
    root = tmp_path / "results"
    # without notebooks the claim holder is the Ray worker process itself
    driver = grid_process(root, "--executor", "ray", "--workers", "2", "--no-notebooks")
    killed = kill_training(root, kills=2, pick_pid=lambda pid: pid)
    output, _ = driver.communicate(timeout=600)
    assert len(killed) == 2, output
    assert driver.returncode == 0, output
    assert output.count("; retrying") == 2, output
    assert records_by_run(ResultStore(root)) == reference(smoke_results)


def test_two_drivers_on_one_folder_share_the_work_and_train_every_run_once(smoke_results, tmp_path):
    root = tmp_path / "results"
    drivers = [grid_process(root, "--executor", "local", "--workers", "1", "--no-notebooks") for _ in range(2)]
    outputs = [d.communicate(timeout=600)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    assert records_by_run(ResultStore(root)) == reference(smoke_results)
    started = trainings(root)
    assert len(started) == len(set(started)) == OVERALL_RUNS  # no run trained twice


def test_a_unit_that_ends_leaving_runs_nobody_trains_is_retried_then_given_up(tmp_path):
    """A unit whose attempt ends cleanly but leaves runs without a record waits while another
    process holds one of their claims, and otherwise counts as a failed attempt (no endless loop)."""
    from lgmrec.collect import unit_folder
    from lgmrec.executors import Progress, _Attempt, _Scheduler
    from lgmrec.grids import get_profile, units

    profile = get_profile("smoke")
    unit = units(profile, "overall")[0]
    store = ResultStore(tmp_path)
    scheduler = _Scheduler(profile, [], store, GridOptions(max_attempts=2), Progress(profile, store, 1, 0, False))
    claim = unit_folder(profile, unit, store) / f"run-seed1{CLAIM_SUFFIX}"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lgmrec.claims import RunClaim; "
         "c = RunClaim(sys.argv[1]).__enter__(); print(c.acquired, flush=True); time.sleep(120)", str(claim)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        scheduler.finished(_Attempt(unit, 1, tmp_path / "log"), None)
        assert scheduler.failures == [] and [(u, n) for u, n, _ in scheduler.waiting] == [(unit, 1)]
    finally:
        holder.kill()
        holder.wait()
    scheduler.waiting.clear()
    scheduler.finished(_Attempt(unit, 1, tmp_path / "log"), None)
    assert [(u, n) for u, n, _ in scheduler.waiting] == [(unit, 2)]
    scheduler.waiting.clear()
    scheduler.finished(_Attempt(unit, 2, tmp_path / "log"), None)
    assert not scheduler.waiting and len(scheduler.failures) == 1
    assert "gave up after 2 attempts" in scheduler.failures[0] and "no process is training them" in scheduler.failures[0]


def test_the_scheduler_starts_the_units_with_the_most_runs_first(tmp_path):
    from lgmrec.collect import planned_run_count, planned_unit_runs
    from lgmrec.executors import Progress, _Scheduler
    from lgmrec.grids import get_profile, units

    profile = get_profile("embedded")
    work = units(profile)
    store = ResultStore(tmp_path)
    scheduler = _Scheduler(profile, work, store, GridOptions(), Progress(profile, store, 1, 0, False))
    queued = [unit for unit, attempt, _ in scheduler.waiting]
    sizes = [planned_unit_runs(profile, unit) for unit in queued]
    assert sorted(queued, key=lambda u: u.key) == sorted(work, key=lambda u: u.key)  # every unit, once
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert sum(sizes) >= planned_run_count(profile)  # a run shared by two units counts in each
