"""The results store: one JSON record and one per-user Parquet file per finished run.

Layout: ``<root>/<profile>/<dataset>/<model>/<config-hash>-seed<seed>.json`` (+ ``.parquet``).

- ``config_hash`` is the sha256 of the resolved run configuration: dataset name and content
  fingerprint, model name, every model hyperparameter and every training setting (not the seed,
  which is part of the file name).
- Both files are written to a temporary name in the same folder and renamed into place; the
  Parquet file first and the JSON record LAST, so a record's presence means the run finished.
  A run killed at any moment leaves at most a Parquet file without a record (or a temporary
  file), and the run is simply redone.
- A truncated or otherwise unreadable record is treated as absent, with a warning, and the run
  is redone. The record holds the sha256 of its Parquet file, so a Parquet file that does not
  belong to the record is detected too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .errors import DataError
from .files import remove_stale_temp_files, write_atomic

RECORD_VERSION = 1
RUN_LOG = "runs.log"
RESULTS_ENV = "LGMREC_RESULTS_DIR"
# keys every valid record has; a record missing one is treated as corrupt
REQUIRED_KEYS = ("record_version", "config_hash", "profile", "dataset", "model", "seed", "status", "config")


def default_results_root() -> Path:
    """``$LGMREC_RESULTS_DIR``, else ``results/`` of the source checkout, else ``./results``."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "results"
    return Path.cwd() / "results"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def config_hash(
    dataset: str, dataset_fingerprint: str, model: str, model_params: dict, train: dict
) -> str:
    """Stable sha256 of a resolved run configuration (the seed is not part of it)."""
    payload = {
        "dataset": {"name": dataset, "fingerprint": dataset_fingerprint},
        "model": model,
        "model_params": model_params,
        "train": train,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def setting_key(dataset: str, model: str, model_params: dict, train: dict) -> str:
    """Like :func:`config_hash` without the data fingerprint: matches planned runs to records
    without loading any dataset (the analysis notebooks use it)."""
    payload = {"dataset": dataset, "model": model, "model_params": model_params, "train": train}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def _safe_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise DataError(f"{name!r}: not usable as a results folder name (letters, digits, . _ + - only)")
    return name


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean_json(value: Any) -> Any:
    """NaN/Inf become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


@dataclass(frozen=True)
class RunKey:
    profile: str
    dataset: str
    model: str
    config_hash: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.config_hash[:16]}-seed{self.seed}"


class ResultStore:
    """Run records under ``root`` (default :func:`default_results_root`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_results_root()

    # ------------------------------------------------------------------ paths
    def folder(self, key: RunKey) -> Path:
        return self.root / _safe_name(key.profile) / _safe_name(key.dataset) / _safe_name(key.model)

    def record_path(self, key: RunKey) -> Path:
        return self.folder(key) / f"{key.stem}.json"

    def per_user_path(self, key: RunKey) -> Path:
        return self.folder(key) / f"{key.stem}.parquet"

    # ------------------------------------------------------------------ reading
    def read_record(self, key_or_path: RunKey | Path) -> dict | None:
        """The record, or None when absent; a corrupt record warns and counts as absent."""
        path = self.record_path(key_or_path) if isinstance(key_or_path, RunKey) else Path(key_or_path)
        return read_record_file(path)

    def has_run(self, key: RunKey) -> bool:
        record = self.read_record(key)
        return record is not None and record["config_hash"] == key.config_hash

    def iter_records(self, profile: str | None = None, folder: Path | None = None) -> Iterator[dict]:
        """Every readable record of a profile (or of the whole store, or under ``folder``)."""
        base = folder if folder is not None else self.root / _safe_name(profile) if profile else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*-seed*.json")):
            if path.name.startswith("."):
                continue
            record = read_record_file(path)
            if record is not None:
                record["_path"] = str(path)
                yield record

    def read_per_user(self, record: dict) -> pd.DataFrame:
        """The per-user test metrics of a record (one row per evaluated test user)."""
        if "_path" not in record:
            raise DataError("record has no path: load it through ResultStore.iter_records")
        return read_per_user_file(record["_path"], record.get("per_user_sha256"))

    # ------------------------------------------------------------------ writing
    def write_run(self, key: RunKey, record: dict, per_user: pd.DataFrame | None) -> Path:
        """Write the per-user Parquet file (if any) and then the JSON record, each atomically."""
        record = dict(record)
        record.update(
            record_version=RECORD_VERSION, config_hash=key.config_hash, profile=key.profile,
            dataset=key.dataset, model=key.model, seed=key.seed,
            written_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        parquet_path = self.per_user_path(key)
        if per_user is not None and len(per_user):
            write_atomic(parquet_path, lambda tmp: per_user.to_parquet(tmp, index=False, compression="zstd"))
            record["per_user_file"] = parquet_path.name
            record["per_user_sha256"] = _sha256_file(parquet_path)
        else:
            parquet_path.unlink(missing_ok=True)
            record["per_user_file"] = None
            record["per_user_sha256"] = None
        text = json.dumps(_clean_json(record), indent=1, sort_keys=True)
        path = self.record_path(key)
        write_atomic(path, lambda tmp: tmp.write_text(text))
        return path

    def log_event(self, key: RunKey, event: str) -> None:
        """Append ``<time> <host>:<pid> <record> <event>`` to ``<profile>/runs.log``: which process
        trained what, when (one short append per line; readable while grids run)."""
        line = (f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='milliseconds')} "
                f"{socket.gethostname()}:{os.getpid()} {key.dataset}/{key.model}/{key.stem} {event}\n")
        path = self.root / _safe_name(key.profile) / RUN_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(line)

    def remove_temp_files(self, profile: str) -> int:
        """Delete temporary files left by killed writers on this machine; returns how many."""
        base = self.root / _safe_name(profile)
        return remove_stale_temp_files(base) if base.is_dir() else 0

    # ------------------------------------------------------------------ tables
    def load(self, profile: str | None = None) -> pd.DataFrame:
        """All records of a profile (or of every profile) as one row per run."""
        return records_frame(list(self.iter_records(profile)))


def read_per_user_file(record_path: str | Path, expected_sha256: str | None) -> pd.DataFrame:
    """The Parquet file beside a record, checked against the record's sha256."""
    path = Path(record_path).with_suffix(".parquet")
    if not path.is_file():
        raise DataError(f"{path}: per-user file missing (the run has no per-user results)")
    if expected_sha256 and _sha256_file(path) != expected_sha256:
        raise DataError(f"{path}: does not match its record (sha256 differs); rerun the grid with --force")
    return pd.read_parquet(path)


def read_record_file(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: unreadable run record ({exc}); treating the run as not done, it will be redone",
                      stacklevel=3)
        return None
    return record


METRIC_PATTERN = re.compile(r"^(recall|ndcg|precision|map)@\d+$")


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: identity, status, test metrics as columns (``recall@20``...), validation
    metrics as ``valid_recall@20``..., efficiency figures, and the resolved config as dicts."""
    rows = []
    for record in records:
        config = record.get("config") or {}
        row = {
            "profile": record["profile"],
            "dataset": record["dataset"],
            "model": record["model"],
            "seed": record["seed"],
            "config_hash": record["config_hash"],
            "status": record["status"],
            "error": record.get("error"),
            "data_kind": record.get("data_kind"),
            "dataset_source": record.get("dataset_source") or config.get("dataset_source"),
            "preset": config.get("preset"),
            "best_epoch": record.get("best_epoch"),
            "epochs_run": record.get("epochs_run"),
            "train_seconds_per_epoch": record.get("train_seconds_per_epoch"),
            "eval_seconds": record.get("eval_seconds"),
            "wall_seconds": record.get("wall_seconds"),
            "n_parameters": record.get("n_parameters"),
            "peak_memory_mb": record.get("peak_memory_mb"),
            "baseline_memory_mb": record.get("baseline_memory_mb"),
            "code_version": record.get("code_version"),
            "dataset_fingerprint": record.get("dataset_fingerprint"),
            "written_at": record.get("written_at"),
            "model_params": config.get("model_params", {}),
            "train": config.get("train", {}),
            "setting_key": setting_key(record["dataset"], record["model"], config.get("model_params", {}),
                                       config.get("train", {})),
            "path": record.get("_path"),
            "per_user_sha256": record.get("per_user_sha256"),
        }
        for name, value in (record.get("test") or {}).items():
            row[name] = value
        for name, value in (record.get("valid") or {}).items():
            row[f"valid_{name}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["profile", "dataset", "model", "seed", "config_hash", "status"])
    # metric columns may be absent for failed runs: float NaN, never object None
    for column in frame.columns:
        if METRIC_PATTERN.match(column.removeprefix("valid_")) or column in (
            "train_seconds_per_epoch", "eval_seconds", "wall_seconds", "peak_memory_mb", "baseline_memory_mb"
        ):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def load_results(profile: str | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """Shortcut: ``ResultStore(root).load(profile)``."""
    return ResultStore(root).load(profile)


__all__ = [
    "ResultStore", "RunKey", "config_hash", "setting_key", "canonical_json", "default_results_root",
    "load_results", "records_frame", "read_record_file", "read_per_user_file",
]
