"""Running one run, or one unit of work, into the results store.

:func:`execute` trains one planned run unless its record exists, under a claim (:mod:`.claims`)
so that no two processes train it at once; :func:`run_unit` runs a unit's runs in order (a tuned
model's grid first, then its seeds at the chosen point). Every executor and the notebook
(``notebooks/run_experiment.ipynb``) end up here, so a run lands in the same record however it
was started.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .claims import CLAIM_SUFFIX, RunClaim
from .config import parse_assignments
from .data import InteractionData
from .datasets.named import data_kind, dataset_fingerprint, load_named_dataset
from .errors import ConfigError
from .grids import Profile, RunSpec, WorkUnit, get_profile, items, replication_specs, unit_specs
from .resolve import ResolvedRun, resolve_run
from .results import ResultStore, RunKey, config_hash


@dataclass
class PreparedRun:
    key: RunKey
    spec: RunSpec
    resolved: ResolvedRun


def prepare_run(spec: RunSpec, profile: Profile, data: InteractionData) -> PreparedRun:
    """Resolve the run's configuration (:func:`lgmrec.resolve.resolve_run`) and hash it."""
    resolved = resolve_run(spec.model, data.name, spec.overrides_dict, profile.train)
    digest = config_hash(data.name, dataset_fingerprint(data), resolved.model, resolved.model_params, resolved.train)
    return PreparedRun(RunKey(profile.name, data.name, resolved.model, digest, spec.seed), spec, resolved)


def finished_record(prepared: PreparedRun, store: ResultStore, retry_failed: bool = False) -> dict | None:
    """The stored record of this exact configuration, unless absent (or failed, with ``retry_failed``)."""
    record = store.read_record(prepared.key)
    if record is None or record["config_hash"] != prepared.key.config_hash:
        return None
    if retry_failed and record["status"] != "ok":
        return None
    record["_path"] = str(store.record_path(prepared.key))
    return record


def claim_path(store: ResultStore, key: RunKey) -> Path:
    return store.record_path(key).with_suffix(CLAIM_SUFFIX)


def execute(prepared: PreparedRun, data: InteractionData, store: ResultStore, force: bool = False,
            retry_failed: bool = False, quiet: bool = True) -> tuple[dict | None, str]:
    """Train and store one run unless its record exists. Returns (record, outcome) with outcome
    ``ran``, ``done`` (a record existed) or ``busy`` (another process is training it: no record yet).

    A crash of the training code is a recorded, failed run; KeyboardInterrupt and SIGKILL leave no
    record (nothing partial is written) and the run is redone later.
    """
    if not force and (existing := finished_record(prepared, store, retry_failed)) is not None:
        return existing, "done"
    with RunClaim(claim_path(store, prepared.key)) as claim:
        if not claim.acquired:
            return None, "busy"
        # the previous owner may have finished between our check and our claim
        if not force and (existing := finished_record(prepared, store, retry_failed)) is not None:
            return existing, "done"
        store.log_event(prepared.key, "start")
        record = train_record(prepared, data, quiet)
        per_user = record.pop("_per_user")
        path = store.write_run(prepared.key, record, per_user)
        store.log_event(prepared.key, f"{record['status']} {record['wall_seconds']:.1f}s")
    record = store.read_record(path) or record
    record["_path"] = str(path)
    return record, "ran"


def train_record(prepared: PreparedRun, data: InteractionData, quiet: bool = True) -> dict:
    """Train one run and return its record (with the per-user frame under ``_per_user``)."""
    from .training import RunResult, train_model

    resolved = prepared.resolved
    baseline_mb = _reset_peak_memory()
    start = time.perf_counter()
    try:
        result = train_model(data, resolved.model, model_config=resolved.model_config,
                             train_config=resolved.train_config, seed=prepared.key.seed, quiet=quiet,
                             preset=resolved.preset)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a crash is a recorded, failed run: the grid goes on
        result = RunResult(
            config={"dataset": data.name, "dataset_source": data.source, "model": resolved.model,
                    "preset": resolved.preset, "model_params": resolved.model_params, "train": resolved.train},
            seed=prepared.key.seed, status="failed", error=f"{type(exc).__name__}: {exc} [{_where(exc)}]",
        )
    record = result.to_record()
    record.update(
        data_kind=data_kind(data), dataset_source=data.source, dataset_fingerprint=dataset_fingerprint(data),
        dataset_summary=data.summary(), experiment=prepared.spec.experiment, variant=prepared.spec.variant,
        requested={"overrides": prepared.spec.overrides_dict},
        wall_seconds=time.perf_counter() - start, baseline_memory_mb=baseline_mb,
        _per_user=per_user_frame(result.per_user, data) if result.per_user else None,
    )
    return record


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def per_user_frame(per_user: Mapping[str, np.ndarray], data: InteractionData) -> pd.DataFrame:
    """Per-user test metrics plus each user's number of training interactions (for sparsity)."""
    users = np.asarray(per_user["user"], dtype=np.int64)
    n_train = np.diff(data.train_matrix.indptr)[users]
    columns = {"user": users, "n_train": n_train.astype(np.int32)}
    columns.update({name: np.asarray(values, dtype=np.float64)
                    for name, values in sorted(per_user.items()) if name != "user"})
    return pd.DataFrame(columns)


def _reset_peak_memory() -> float:
    """Reset the kernel's peak-RSS mark (Linux) so the run's peak is its own; return current MB.

    Runs share one process; without the reset every run would report the largest peak so far.
    """
    current = math.nan
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return current


# ----------------------------------------------------------------------------- units


@dataclass
class UnitOutcome:
    """What :func:`run_unit` did: records of the unit's runs (planned order) and counts."""

    unit: WorkUnit
    records: list[dict] = field(default_factory=list)
    ran: int = 0
    done: int = 0
    busy: int = 0  # claimed by another process: the unit must be run again later

    @property
    def complete(self) -> bool:
        return self.busy == 0


class DatasetCache:
    """The most recent dataset only (the real ones are large)."""

    def __init__(self, profile: Profile):
        self.profile, self.name, self.data = profile, None, None

    def get(self, name: str) -> InteractionData:
        if name != self.name:
            self.data, self.name = None, None
            self.data, self.name = load_named_dataset(name, self.profile), name
        return self.data


def run_unit(profile: str | Profile, unit: WorkUnit, store: ResultStore, force: bool = False,
             retry_failed: bool = False, quiet: bool = True, datasets: DatasetCache | None = None,
             on_record=None, wait: bool = True) -> UnitOutcome:
    """Run every run of ``unit`` that has no record: a tuned model's grid first, then (overall
    units) its seeds at the point with the best validation Recall@20, and, where the profile asks,
    MMRec's test-chosen point with every seed. A run another process is training is left for last
    and, with ``wait``, waited for (its record is then read); without, it counts as ``busy``.
    ``on_record(spec, record, outcome)`` is called per run."""
    from .tuning import choose

    profile = get_profile(profile)
    datasets = datasets or DatasetCache(profile)
    data = datasets.get(unit.dataset)
    outcome = UnitOutcome(unit)

    def attempt(spec: RunSpec) -> tuple[dict | None, str]:
        return execute(prepare_run(spec, profile, data), data, store, force=force,
                       retry_failed=retry_failed, quiet=quiet)

    def run(specs: list[RunSpec]) -> list[dict | None]:
        found: dict[int, dict | None] = {}
        later = []
        for index, spec in enumerate(specs):
            record, result = attempt(spec)
            if result == "busy":
                later.append(index)
                continue
            found[index] = record
            _count(outcome, spec, record, result, on_record)
        for index in later:  # trained elsewhere right now: wait for its record (or its claim)
            record, result = attempt(specs[index])
            while result == "busy" and wait:
                time.sleep(BUSY_POLL_S)
                record, result = attempt(specs[index])
            found[index] = record
            _count(outcome, specs[index], record, result, on_record)
        return [found[i] for i in range(len(specs))]

    specs = unit_specs(profile, unit)
    tuning = [s for s in specs if s.experiment == "tuning"]
    tuning_records = run(tuning)
    rest = [s for s in specs if s.experiment != "tuning"]
    if unit.experiment == "overall" and profile.is_tuned(unit.model):
        choice = choose([s.overrides_dict for s in tuning], tuning_records)
        if choice is None:  # part of the grid is being trained elsewhere: come back later
            return outcome
        rest = [s for s in unit_specs(profile, unit, choice.validation_point) if s.experiment != "tuning"]
        rest += replication_specs(profile, unit, choice.test_point, choice.validation_point)
    run(rest)
    return outcome


BUSY_POLL_S = 1.0


def _count(outcome: UnitOutcome, spec: RunSpec, record: dict | None, result: str, on_record) -> None:
    setattr(outcome, result, getattr(outcome, result) + 1)
    if record is not None:
        outcome.records.append(record)
    if on_record is not None:
        on_record(spec, record, result)


def run_experiment(
    dataset: str,
    model: str = "lgmrec",
    seed: int = 999,
    overrides: str | Mapping[str, Any] | None = None,
    profile: str = "embedded",
    force: bool = False,
    quiet: bool = True,
    store: ResultStore | None = None,
) -> dict:
    """Train and evaluate one configuration (ad hoc) and store its record in the profile's folder.

    ``profile`` gives the training settings and where the record goes (``results/<profile>/``);
    ``overrides`` holds model hyperparameters and training settings (``"alpha=0.5;max_epochs=50"``
    or a dict). A run whose record exists is not repeated unless ``force``.
    """
    profile_obj = get_profile(profile)
    spec = RunSpec("adhoc", model, dataset, model.lower(), int(seed), items(parse_overrides(overrides)))
    data = load_named_dataset(dataset, profile_obj)
    record, result = execute(prepare_run(spec, profile_obj, data), data, store or ResultStore(), force=force,
                             quiet=quiet)
    if record is None:
        raise ConfigError(f"{spec.describe()}: another process is training this run right now; try again later")
    record["_ran"] = result == "ran"
    return record


def parse_overrides(overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A dict, or a ``"key=value;key=value"`` string (or one per line), into a dict."""
    import re

    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if not isinstance(overrides, str):
        raise ConfigError(f"overrides must be a dict or a 'key=value;...' string, got {type(overrides).__name__}")
    return parse_assignments([p.strip() for p in re.split(r"[;\n]", overrides) if p.strip()])


__all__ = [
    "DatasetCache", "PreparedRun", "UnitOutcome", "execute", "finished_record", "parse_overrides",
    "per_user_frame", "prepare_run", "run_experiment", "run_notebook", "run_unit", "train_record",
]


def run_notebook(profile: str, experiment: str, dataset: str, model: str = "", parameter: str = "",
                 seeds: str | int = "", overrides: str = "", store: ResultStore | None = None,
                 force: bool = False, retry_failed: bool = False) -> list[dict]:
    """The per-unit notebook's call: one unit of the profile's grid (the records the grid writes),
    or with ``experiment="adhoc"`` one configuration (``overrides``) with ``seeds``."""
    store = store or ResultStore()
    if experiment == "adhoc":
        seed_list = [int(s) for s in str(seeds).replace(",", " ").split()] or [999]
        return [run_experiment(dataset, model, seed, overrides, profile, force=force, store=store)
                for seed in seed_list]
    if seeds or overrides:
        raise ConfigError("seeds and overrides apply to experiment='adhoc' only; a grid unit takes the profile's")
    unit = WorkUnit(experiment, dataset, parameter if experiment == "sensitivity" else
                    ("" if experiment == "ablation" else model))
    return run_unit(profile, unit, store, force=force, retry_failed=retry_failed).records
