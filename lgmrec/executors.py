"""Executing a profile's grid: one execution layer, three backends.

A grid is a list of :class:`~lgmrec.grids.WorkUnit` s. A unit runs, by default, as one papermill
execution of ``notebooks/run_experiment.ipynb`` whose executed copy is kept beside the unit's
records (``notebooks=False``: the same code as a plain function call). Backends:

- ``local`` (default): N worker processes on this machine, each running one unit at a time with
  ``threads`` torch threads (N x threads = the cores);
- ``ray``: every unit is a Ray task with declared resources (``cpus_per_run``, ``gpus_per_run``,
  fractional GPUs allowed) on an existing cluster (``address="auto"`` or ``"ray://host:port"``)
  or, without an address, a local Ray instance; needs ``pip install '.[cluster]'``;
- ``inprocess``: units one after another in this process, as function calls (debugging).

Every backend runs its runs with the same torch thread count (:func:`threads_per_run`): the thread
count changes the order of float reductions, hence the metrics' last digits, and records of one
configuration and seed should not depend on the executor that wrote them.

Faults: a unit whose worker dies (SIGKILL, a lost Ray node, a crashed kernel) is run again, up to
``max_attempts`` times; its finished runs are kept and its interrupted run, which left no record,
is redone. Runs are claimed while they train (:mod:`lgmrec.claims`), so a second driver on the
same results folder skips what the first is training and waits for it. Records appear atomically
(:mod:`lgmrec.files`), so nothing is lost, duplicated or half-written.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
import warnings

from .datasets.named import check_datasets_available, synthetic_fingerprints
from .errors import ConfigError
from .grids import PROFILES, Profile, WorkUnit, get_profile, units
from .results import ResultStore, read_record_file, records_frame
from .worker import run_unit_job

EXECUTORS = ("local", "ray", "inprocess")
RETRY_DELAY_S = 2.0  # before rerunning a unit whose runs another driver is training
NOTEBOOK_MODULES = ("papermill", "ipykernel")  # the ``book`` extra; checked before any worker starts


@dataclass
class GridOptions:
    force: bool = False
    retry_failed: bool = False
    notebooks: bool = True  # each unit is a papermill-executed notebook
    max_attempts: int = 3  # per unit, counting the first
    workers: int | None = None  # local: parallel units (None: the usable cores)
    threads: int | None = None  # torch threads per run, every executor (None: see threads_per_run)
    address: str | None = None  # ray: cluster address; None starts a local instance
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0


@dataclass
class GridSummary:
    profile: str
    units: int = 0
    planned: int = 0  # runs known at the start (tuned models' seeds included)
    ran: int = 0
    skipped: int = 0
    failed_runs: int = 0  # runs recorded as failed (the whole grid's, earlier ones included)
    gave_up: list[str] = field(default_factory=list)  # units whose every attempt failed, a line each
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        """What failed, a line each: the failed runs (one line for all), then each unit that gave up."""
        runs = [f"{self.failed_runs} run(s) recorded as failed (see their records; --retry-failed reruns them)"]
        return (runs if self.failed_runs else []) + self.gave_up

    def line(self) -> str:
        gave_up = len(self.gave_up)
        return (f"profile {self.profile}: {self.planned} runs in {self.units} units, {self.ran} run now, "
                f"{self.skipped} already done, {self.failed_runs} failed"
                f"{f', {gave_up} unit(s) gave up' if gave_up else ''}, {self.seconds / 60:.1f} min")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_run(executor: str, options: GridOptions) -> int:
    """The torch threads every run of a grid uses: ``options.threads`` where given; otherwise, for
    ``local`` and ``inprocess``, what a local worker gets (the cores / the workers, so that the
    default commands of both write the same records: one thread each unless ``workers`` is
    smaller than the cores); for ``ray``, the CPUs a unit declares."""
    if options.threads is not None:
        return options.threads
    if executor == "ray":
        return max(1, int(options.cpus_per_run))
    cores = usable_cores()
    return max(1, cores // max(1, options.workers or cores))


# ----------------------------------------------------------------------------- one unit


def passable_reference(profile: Profile) -> str | None:
    """What another process can resolve to this very profile: a built-in's name, or the TOML file
    it was read from (while the file still says the same); None for a profile made in code."""
    if PROFILES.get(profile.name) == profile:
        return profile.name
    if profile.source is not None and get_profile(profile.source) == profile:
        return profile.source
    return None


def check_notebook_units(profile: Profile, options: GridOptions) -> None:
    """Notebook units need a profile the notebook can read (a name or a file) and the ``book`` extra."""
    if not options.notebooks:
        return
    if passable_reference(profile) is None:
        raise ConfigError(f"profile {profile.name}: notebooks need a named profile or a profile file "
                          f"(use --no-notebooks)")
    if missing := [m for m in NOTEBOOK_MODULES if importlib.util.find_spec(m) is None]:
        raise ConfigError(f"notebook units need {' and '.join(missing)}: pip install -e '.[book]', "
                          f"or run the grid with --no-notebooks")


def unit_job(profile: Profile, store: ResultStore, options: GridOptions, threads: int | None) -> dict:
    """What a worker needs to run units (:func:`lgmrec.worker.run_unit_job`): for notebooks a built-in
    or file profile by name or path (the notebook takes those); otherwise a built-in's name, or the
    object itself (a Ray node need not hold the profile file; ``get_profile`` loads its plug-ins there)."""
    reference = passable_reference(profile)
    if not options.notebooks and profile.source is not None:
        reference = None
    return {"profile": reference or profile, "profile_name": profile.name, "results": str(store.root.resolve()),
            "notebooks": options.notebooks, "force": options.force, "retry_failed": options.retry_failed,
            "threads": threads}


# ----------------------------------------------------------------------------- the driver


class Progress:
    """The driver's view: a bar over runs and one line per record that appears in the folder."""

    def __init__(self, profile: Profile, store: ResultStore, total: int, done: int, show: bool):
        from tqdm import tqdm

        self.folder = store.root / profile.name
        self.seen = self._records()
        self.ran = 0
        self.last_poll = time.monotonic()
        interactive = sys.stderr.isatty()
        # in a log (not a terminal) the bar redraws rarely; every finished run prints its own line
        self.bar = tqdm(total=total, initial=min(done, total), desc=f"grid {profile.name}", unit="run",
                        disable=not show, file=sys.stderr, dynamic_ncols=True, smoothing=0.05,
                        mininterval=0.5 if interactive else 60)
        self.show = show

    def _records(self) -> dict[Path, int]:
        """Record files and their modification times (a rewritten record is a new run)."""
        found = {}
        for path in self.folder.rglob("*-seed*.json") if self.folder.is_dir() else []:
            try:
                found[path] = path.stat().st_mtime_ns
            except FileNotFoundError:
                pass
        return found

    #: the local and Ray drivers look for new records at most this often (each look lists the
    #: folder's records: ~7 ms of CPU with the embedded grid's 651, taken from the workers' cores)
    INTERVAL_S = 2.0

    def poll(self, every: float = 0.0) -> None:
        """Report the records written since the last look; with ``every``, only if the last look is
        at least that many seconds old."""
        now = time.monotonic()
        if every and now - self.last_poll < every:
            return
        self.last_poll = now
        for path, mtime in sorted(self._records().items()):
            if self.seen.get(path) == mtime:
                continue
            with warnings.catch_warnings():  # a torn record was reported when it was found
                warnings.simplefilter("ignore")
                record = read_record_file(path)
            if record is None:
                continue
            self.seen[path] = mtime
            self.ran += 1
            if self.bar.n < self.bar.total:
                self.bar.update()
            if self.show:
                self.bar.write(f"[{self.bar.n}/{self.bar.total}] {run_line(record)}")

    def write(self, text: str) -> None:
        if self.show:
            self.bar.write(text)

    def close(self) -> None:
        self.poll()
        self.bar.close()


def run_line(record: dict) -> str:
    what = f"{record['model']} on {record['dataset']} seed {record['seed']} [{record.get('experiment', '?')}: {record.get('variant', '')}]"
    if record["status"] != "ok":
        return f"{what}: FAILED: {record.get('error')}"
    test = record.get("test") or {}
    return (f"{what}: recall@20 {test.get('recall@20', math.nan):.4f} ndcg@20 {test.get('ndcg@20', math.nan):.4f}, "
            f"best epoch {record.get('best_epoch')}/{record.get('epochs_run')}, {record.get('wall_seconds') or math.nan:.1f} s")


def run_grid(profile: str | Profile, only: str | list[str] | None = None, store: ResultStore | None = None,
             executor: str = "local", options: GridOptions | None = None, progress: bool = True) -> GridSummary:
    """Run every unit of the profile (``only``: some experiments) that is not finished.

    Safe to interrupt at any moment and to rerun: finished runs are kept and skipped.
    """
    from .collect import finished_runs, planned_run_count

    profile = get_profile(profile)
    options = options or GridOptions()
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {options.threads}")
    threads = threads_per_run(executor, options)
    check_datasets_available(profile)
    check_notebook_units(profile, options)
    store = store or ResultStore()
    removed = store.remove_temp_files(profile.name)
    work = units(profile, only)
    existing = list(store.iter_records(profile.name))  # read once: the counts and the thread check
    # records of a synthetic preset as it was before a change of its knobs are not done runs
    current = synthetic_fingerprints(profile)
    before = finished_runs(profile, only, records=records_frame(existing), store=store, fingerprints=current)
    total = planned_run_count(profile, only)
    summary = GridSummary(profile.name, units=len(work), planned=total)
    tracker = Progress(profile, store, total, sum(before), progress)
    if removed:
        tracker.write(f"removed {removed} temporary file(s) left by an interrupted run")
    tracker.write(f"profile {profile.name}: {len(work)} units, {total} runs ({profile.description}); "
                  f"executor {executor}, {threads} torch thread(s) per run; results in {store.root / profile.name}")
    to_run = options.force or total > before[0] + (0 if options.retry_failed else before[1])
    if to_run and (mixed := mixed_threads_line(existing, threads, store.root / profile.name)):
        tracker.write(mixed)
    start = time.perf_counter()
    backend = {"local": _run_local, "ray": _run_ray, "inprocess": _run_inprocess}[executor]
    try:
        summary.gave_up = backend(profile, work, store, options, tracker, threads)
    finally:
        tracker.close()
        summary.seconds = time.perf_counter() - start
        # a killed worker's notebook kernel outlives it by up to a second (it polls for its parent)
        # and may die mid-write after the retry's clean-up: sweep again once all work has ended
        store.remove_temp_files(profile.name)
    summary.ran = tracker.ran
    summary.skipped = sum(before)
    summary.failed_runs = finished_runs(profile, only, store=store, fingerprints=current)[1]
    return summary


def mixed_threads_line(records: list[dict], threads: int, folder: Path) -> str | None:
    """One line when records already in the folder were made with another torch thread count than
    this grid's runs will use (a rerun with other ``--workers``, say), else None."""
    counts = collections.Counter((r.get("environment") or {}).get("torch_threads") for r in records)
    other = sorted(((n, count) for count, n in counts.items() if count != threads), key=lambda item: -item[0])
    if not other:
        return None
    made = ", ".join(f"{n} with {count if count is not None else 'an unrecorded number of'} thread(s)"
                     for n, count in other)
    usual = next((count for _, count in other if count is not None), None)
    advice = f"--threads {usual}" if usual is not None else "--threads"
    return (f"note: {folder} holds records made with another torch thread count ({made}) than this "
            f"grid's runs ({threads}); thread counts round floats differently, and one experiment's "
            f"records should come from one setting ({advice}, or another results folder)")


def _run_inprocess(profile: Profile, work: list[WorkUnit], store: ResultStore, options: GridOptions,
                   tracker: Progress, threads: int) -> list[str]:
    import torch

    from .runner import DatasetCache, run_unit

    datasets = DatasetCache(profile)
    pending = collections.deque(largest_first(profile, work))
    callers_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        while pending:
            unit = pending.popleft()
            outcome = run_unit(profile, unit, store, force=options.force, retry_failed=options.retry_failed,
                               datasets=datasets, on_record=lambda *_: tracker.poll())
            if not outcome.complete:  # another driver is training some of its runs
                time.sleep(RETRY_DELAY_S)
                pending.append(unit)
    finally:  # this process is the caller's (a test, a notebook): leave its setting as it was
        torch.set_num_threads(callers_threads)
    return []


def largest_first(profile: Profile, work: list[WorkUnit]) -> list[WorkUnit]:
    """Units with the most runs first, so that no long unit starts last while the other workers
    idle: in the order of `units` (which stays the book's order) the embedded profile's two
    workers ended 1.4 min apart, in this order 3 s apart. The in-process executor keeps the same
    order: a run shared by two experiments (LGMRec's full model: overall and ablation) is labelled
    with the experiment of the unit that trains it first, and so gets the same label."""
    from .collect import planned_unit_runs

    return sorted(work, key=lambda unit: -planned_unit_runs(profile, unit))


@dataclass
class _Attempt:
    unit: WorkUnit
    number: int
    log: Path


class _Scheduler:
    """Units waiting, attempts counted, the decision after each attempt (shared by local and ray)."""

    def __init__(self, profile: Profile, work: list[WorkUnit], store: ResultStore, options: GridOptions,
                 tracker: Progress):
        self.profile, self.store, self.options, self.tracker = profile, store, options, tracker
        work = largest_first(profile, work)
        self.waiting = collections.deque((unit, 1, 0.0) for unit in work)  # (unit, attempt, not before)
        self.failures: list[str] = []
        self.logs = store.root / profile.name / "logs"

    def next_ready(self) -> _Attempt | None:
        now = time.monotonic()
        for _ in range(len(self.waiting)):
            unit, number, not_before = self.waiting.popleft()
            if not_before <= now:
                return _Attempt(unit, number, self.logs / f"{unit.key.replace('/', '__')}.log")
            self.waiting.append((unit, number, not_before))
        return None

    def finished(self, attempt: _Attempt, error: str | None) -> None:
        """After an attempt: done, wait (another driver trains some of its runs), rerun (it died, or
        it ended leaving runs that nobody trains), or give up."""
        from .claims import CLAIM_SUFFIX, held
        from .collect import unit_folder, unit_pending

        if error is None:
            if not unit_pending(self.profile, attempt.unit, self.store):
                return
            if any(held(c) for c in unit_folder(self.profile, attempt.unit, self.store).rglob(f"*{CLAIM_SUFFIX}")):
                self.waiting.append((attempt.unit, attempt.number, time.monotonic() + RETRY_DELAY_S))
                return
            error = "it ended, but some of its runs have no record and no process is training them"
        self.store.remove_temp_files(self.profile.name)  # what the dead worker was writing
        if attempt.number < self.options.max_attempts:
            self.tracker.write(f"unit {attempt.unit.key}: attempt {attempt.number} failed ({error}); retrying")
            self.waiting.append((attempt.unit, attempt.number + 1, time.monotonic()))
        else:
            self.failures.append(f"unit {attempt.unit.key}: gave up after {attempt.number} attempts: {error} "
                                 f"(log: {attempt.log})")
            self.tracker.write(self.failures[-1])


class _LocalWorker:
    """One ``python -m lgmrec.worker JOB --serve`` process of the local executor: it runs the unit
    attempts it is sent one after another (notebook units in one kernel it keeps), in its own
    process group, and answers each with one line; its own output goes to ``log``."""

    def __init__(self, job_file: Path, env: dict, log: Path):
        with open(log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "lgmrec.worker", str(job_file), "--serve"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, env=env,
                                            start_new_session=True)
        self.attempt: _Attempt | None = None
        self.pending = b""

    def send(self, attempt: _Attempt) -> bool:
        """Hand it ``attempt``; False if it is gone."""
        self.attempt = attempt
        request = json.dumps({"unit": attempt.unit.__dict__, "log": str(attempt.log)}) + "\n"
        try:
            self.process.stdin.write(request.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def reply(self) -> str | None:
        """Its answer once complete: ``ok``, ``error: ...``, or ``""`` when it died (None: not yet).
        Call when its stdout is readable."""
        chunk = os.read(self.process.stdout.fileno(), 65536)
        if not chunk:
            return ""
        self.pending += chunk
        if b"\n" not in self.pending:
            return None
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def stop(self, wait_s: float = 5.0) -> None:
        """End it: stdin closed (it stops its kernel and exits), killed if it does not within ``wait_s``."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=wait_s)
        except (OSError, subprocess.TimeoutExpired):
            _kill_group(self.process)


def _run_local(profile: Profile, work: list[WorkUnit], store: ResultStore, options: GridOptions,
               tracker: Progress, threads: int) -> list[str]:
    """Up to ``workers`` serving worker processes (:class:`_LocalWorker`), each sent one unit attempt
    at a time; a worker that dies costs its attempt (rerun by the scheduler) and is replaced."""
    import select

    n_workers = max(1, options.workers or usable_cores())
    scheduler = _Scheduler(profile, work, store, options, tracker)
    scheduler.logs.mkdir(parents=True, exist_ok=True)
    job = unit_job(profile, store, options, threads)
    started = 0
    with tempfile.TemporaryDirectory(prefix="lgmrec-grid-") as tmp:
        job_file = Path(tmp) / "job.pkl"
        job_file.write_bytes(pickle.dumps(job))
        env = {**os.environ, **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
               "PYTHONUNBUFFERED": "1"}
        idle: list[_LocalWorker] = []
        busy: list[_LocalWorker] = []
        try:
            while scheduler.waiting or busy:
                while len(busy) < n_workers and (attempt := scheduler.next_ready()) is not None:
                    with open(attempt.log, "a") as log:
                        log.write(f"--- attempt {attempt.number} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                    while True:  # an idle worker that died meanwhile is replaced
                        if not idle:
                            started += 1
                            idle.append(_LocalWorker(job_file, env, scheduler.logs / f"worker-{started}.log"))
                        worker = idle.pop()
                        if worker.send(attempt):
                            break
                        _kill_group(worker.process)
                    busy.append(worker)
                if busy:
                    readable, _, _ = select.select([w.process.stdout for w in busy], [], [], 0.3)
                else:
                    readable = []
                    time.sleep(0.3)
                tracker.poll(Progress.INTERVAL_S)
                for worker in [w for w in busy if w.process.stdout in readable]:
                    answer = worker.reply()
                    if answer is None:
                        continue
                    busy.remove(worker)
                    if answer:
                        idle.append(worker)
                        error = None if answer == "ok" else answer.removeprefix("error: ")
                    else:  # it died: its process group (and a kernel that outlives it) goes too
                        try:
                            returncode = worker.process.wait(timeout=5)
                        except subprocess.TimeoutExpired:
                            _kill_group(worker.process)
                            returncode = worker.process.returncode
                        error = _exit_reason(returncode, worker.attempt.log)
                    scheduler.finished(worker.attempt, error)
        finally:
            for worker in busy:  # interrupted: stop the workers (their runs left no record)
                _kill_group(worker.process)
            for worker in idle:
                worker.stop()
    return scheduler.failures


def _kill_group(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _exit_reason(returncode: int, log: Path) -> str:
    import signal

    if returncode < 0:
        return f"worker killed by {signal.Signals(-returncode).name}"
    try:
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1]
    except (OSError, IndexError):
        last = ""
    return f"worker exited with code {returncode}: {last[-300:]}"


def _ray_task(job: dict, unit: dict) -> None:
    run_unit_job(job, unit)


def _run_ray(profile: Profile, work: list[WorkUnit], store: ResultStore, options: GridOptions,
             tracker: Progress, threads: int) -> list[str]:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install '.[cluster]'") from None
    if not ray.is_initialized():
        local = options.address is None
        ray.init(address=options.address, num_cpus=(options.workers or usable_cores()) if local else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    job = unit_job(profile, store, options, threads)
    task = ray.remote(_ray_task).options(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run,
                                         max_retries=0)
    scheduler = _Scheduler(profile, work, store, options, tracker)
    running: dict = {}
    try:
        while scheduler.waiting or running:
            while (attempt := scheduler.next_ready()) is not None:
                running[task.remote(job, attempt.unit.__dict__)] = attempt
            if not running:
                time.sleep(0.3)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            tracker.poll(Progress.INTERVAL_S)
            for ref in ready:
                attempt = running.pop(ref)
                try:
                    ray.get(ref)
                    error = None
                except Exception as exc:  # a task error, a dead worker or a lost node: rerun the unit
                    error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
                scheduler.finished(attempt, error)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
    return scheduler.failures


__all__ = ["EXECUTORS", "GridOptions", "GridSummary", "run_grid", "threads_per_run"]
