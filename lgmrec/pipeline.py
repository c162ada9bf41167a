"""Running experiments: one run into the results store, whole profiles, and their CLI.

:func:`run_experiment` is the single entry point for one run; the per-run notebook
(``notebooks/run_experiment.ipynb``) and the grid runner (:func:`run_grid`) both use it, so a run
started either way lands in the same record. Runs execute in this process, one after another.

Commands added to ``python -m lgmrec`` by :func:`add_grid_parsers`:
``grid`` (run a profile's experiments), ``check`` (compare Recall@20/NDCG@20 with expected
values) and ``book`` (build the Jupyter Book from the results).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .config import TrainConfig, asdict, build_dataclass, field_names, parse_assignments
from .data import InteractionData, load_dataset
from .errors import ConfigError, DataError, LGMRecError
from .files import write_atomic
from .grids import PROFILES, Profile, RunSpec, get_profile, plan
from .results import ResultStore, RunKey, config_hash

REAL_DATASETS = ("baby", "sports", "clothing")
EXECUTORS = ("inprocess", "papermill")
RUN_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run_experiment.ipynb"


# ----------------------------------------------------------------------------- datasets


def load_named_dataset(name: str, profile: str | Profile | None = None) -> InteractionData:
    """A dataset by name: a synthetic preset (the profile's own or :mod:`lgmrec.synthetic`'s),
    a released dataset (baby, sports, clothing; verified, from the data cache), or a folder."""
    from . import synthetic

    extra = get_profile(profile).synthetic_presets if profile is not None else {}
    data_seed = get_profile(profile).data_seed if profile is not None else 0
    if name in extra:
        return synthetic.generate(extra[name], seed=data_seed, name=name)
    if name in synthetic.PRESETS:
        return synthetic.generate(name, seed=data_seed)
    if name in REAL_DATASETS:
        from .datasets.fetch import dataset_folder, find_real_dataset

        folder = find_real_dataset(name)
        if folder is None:
            raise DataError(
                f"{dataset_folder(name)}: released dataset '{name}' is not present or not valid; "
                f"get it with `python -m lgmrec data fetch {name}` (or set LGMREC_DATA_DIR)"
            )
        data = load_dataset(folder)
        return InteractionData(data.name, data.n_users, data.n_items, data.splits, data.features,
                               source=f"real:{name}:{folder}")
    if Path(name).is_dir():
        return load_dataset(name)
    raise DataError(
        f"{name}: not a synthetic preset ({', '.join(list(extra) + list(synthetic.PRESETS))}), "
        f"a released dataset ({', '.join(REAL_DATASETS)}) or a dataset folder"
    )


def data_kind(data: InteractionData) -> str:
    """'synthetic' (generated), 'real' (a verified released dataset) or 'folder' (anything else)."""
    if data.source.startswith("synthetic:"):
        return "synthetic"
    if data.source.startswith("real:"):
        return "real"
    return "folder"


_FINGERPRINTS: "weakref.WeakKeyDictionary[InteractionData, str]" = weakref.WeakKeyDictionary()


def dataset_fingerprint(data: InteractionData) -> str:
    """Content hash of a dataset: sizes, the three splits and every feature table."""
    from .cache import fingerprint

    if data not in _FINGERPRINTS:
        parts: list[Any] = [data.n_users, data.n_items]
        for split in ("train", "valid", "test"):
            parts.append(np.ascontiguousarray(data.splits[split]))
        for modality in sorted(data.features):
            parts += [modality, data.features[modality]]
        _FINGERPRINTS[data] = fingerprint(*parts)
    return _FINGERPRINTS[data]


# ----------------------------------------------------------------------------- one run


def parse_overrides(overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A dict, or a ``"key=value;key=value"`` string (also ``,``-free newlines), into a dict."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if not isinstance(overrides, str):
        raise ConfigError(f"overrides must be a dict or a 'key=value;...' string, got {type(overrides).__name__}")
    pairs = [p.strip() for p in re.split(r"[;\n]", overrides) if p.strip()]
    return parse_assignments(pairs)


@dataclass
class PreparedRun:
    key: RunKey
    spec: RunSpec
    model_config: Any
    train_config: TrainConfig


def prepare_run(spec: RunSpec, profile_name: str, data: InteractionData) -> PreparedRun:
    """Resolve the model and training configuration of ``spec`` and hash it."""
    from .models import get_model_spec, resolve_model_config

    model_spec = get_model_spec(spec.model)
    model_config = resolve_model_config(model_spec, data.name, None, spec.overrides_dict)
    train_config = build_dataclass(TrainConfig, spec.train_dict)
    digest = config_hash(data.name, dataset_fingerprint(data), model_spec.name,
                         asdict(model_config), asdict(train_config))
    key = RunKey(profile_name, data.name, model_spec.name, digest, spec.seed)
    return PreparedRun(key, spec, model_config, train_config)


def finished_record(prepared: PreparedRun, store: ResultStore, retry_failed: bool = False) -> dict | None:
    """The stored record of this exact configuration, unless absent (or failed, with ``retry_failed``)."""
    record = store.read_record(prepared.key)
    if record is None or record["config_hash"] != prepared.key.config_hash:
        return None
    if retry_failed and record["status"] != "ok":
        return None
    record["_path"] = str(store.record_path(prepared.key))
    return record


def execute(
    prepared: PreparedRun,
    data: InteractionData,
    store: ResultStore,
    force: bool = False,
    retry_failed: bool = False,
    quiet: bool = True,
) -> tuple[dict, bool]:
    """Train and store one prepared run unless its record exists; returns (record, ran)."""
    from .training import RunResult, train_model

    existing = None if force else finished_record(prepared, store, retry_failed)
    if existing is not None:
        return existing, False
    baseline_mb = _reset_peak_memory()
    start = time.perf_counter()
    try:
        result = train_model(data, prepared.key.model, model_config=prepared.model_config,
                             train_config=prepared.train_config, seed=prepared.key.seed, quiet=quiet)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crash is a recorded, failed run: the grid goes on
        result = RunResult(
            config={"dataset": data.name, "dataset_source": data.source, "model": prepared.key.model,
                    "model_params": asdict(prepared.model_config), "train": asdict(prepared.train_config)},
            seed=prepared.key.seed, status="failed",
            error=f"{type(exc).__name__}: {exc} [{_where(exc)}]",
        )
    wall = time.perf_counter() - start
    record = result.to_record()
    record.update(
        data_kind=data_kind(data),
        dataset_source=data.source,
        dataset_fingerprint=dataset_fingerprint(data),
        dataset_summary=data.summary(),
        requested={"overrides": prepared.spec.overrides_dict, "train": prepared.spec.train_dict},
        wall_seconds=wall,
        baseline_memory_mb=baseline_mb,
    )
    per_user = per_user_frame(result.per_user, data) if result.per_user else None
    path = store.write_run(prepared.key, record, per_user)
    record = store.read_record(path) or record
    record["_path"] = str(path)
    return record, True


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


def run_experiment(
    dataset: str,
    model: str = "lgmrec",
    seed: int = 999,
    overrides: str | Mapping[str, Any] | None = None,
    max_epochs: int | None = None,
    profile: str = "quick",
    force: bool = False,
    quiet: bool = False,
    store: ResultStore | None = None,
) -> dict:
    """Train and evaluate one configuration and store its record (the per-run notebook's call).

    ``profile`` gives the training settings (epochs, patience) and where the record goes
    (``results/<profile>/``); ``overrides`` holds model hyperparameters and training settings
    (``"alpha=0.5;hyper_num=8"`` or a dict); ``max_epochs`` overrides the profile's.
    A run whose record exists is not repeated unless ``force``.
    """
    profile_obj = get_profile(profile)
    values = parse_overrides(overrides)
    train_keys = field_names(TrainConfig)
    train = {**profile_obj.train, **{k: v for k, v in values.items() if k in train_keys}}
    if max_epochs is not None:
        train["max_epochs"] = int(max_epochs)
    model_values = {k: v for k, v in values.items() if k not in train_keys}
    spec = RunSpec("adhoc", model, dataset, model.lower(), int(seed),
                   tuple(sorted(model_values.items())), tuple(sorted(train.items())))
    data = load_named_dataset(dataset, profile_obj)
    store = store or ResultStore()
    record, ran = execute(prepare_run(spec, profile_obj.name, data), data, store, force=force, quiet=quiet)
    record["_ran"] = ran
    return record


def summarize_record(record: dict) -> pd.DataFrame:
    """A one-row table of a record for display."""
    test = record.get("test") or {}
    return pd.DataFrame([{
        "dataset": record["dataset"], "data": record.get("data_kind"), "model": record["model"],
        "seed": record["seed"], "status": record["status"], "error": record.get("error"),
        "best epoch": record.get("best_epoch"), "epochs": record.get("epochs_run"),
        "Recall@20": test.get("recall@20"), "NDCG@20": test.get("ndcg@20"),
        "s/epoch": record.get("train_seconds_per_epoch"), "record": record.get("_path"),
    }])


# ----------------------------------------------------------------------------- grids


@dataclass
class GridSummary:
    profile: str
    planned: int = 0  # unique runs
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"profile {self.profile}: {self.planned} runs, {self.ran} run now, {self.skipped} already done, "
                f"{len(self.failed)} failed, {self.seconds / 60:.1f} min")


def check_datasets_available(profile: Profile) -> None:
    """Stop with one clear message when a real-data profile lacks a released dataset."""
    if profile.data != "real":
        return
    from .datasets.fetch import dataset_folder, find_real_dataset

    missing = [name for name in profile.datasets if find_real_dataset(name) is None]
    if missing:
        where = ", ".join(str(dataset_folder(n)) for n in missing)
        raise DataError(
            f"profile '{profile.name}' runs on the released Amazon datasets, and {', '.join(missing)} "
            f"is not present ({where}); fetch with `python -m lgmrec data fetch NAME` "
            f"(set LGMREC_DATA_DIR for another place) or run the embedded default: --profile quick"
        )


def unique_runs(specs: list[RunSpec]) -> list[RunSpec]:
    """The specs with duplicates (same dataset, model, overrides, training, seed) removed."""
    seen, result = set(), []
    for spec in specs:
        identity = (spec.dataset, spec.model, spec.overrides, spec.train, spec.seed)
        if identity not in seen:
            seen.add(identity)
            result.append(spec)
    return result


def run_grid(
    profile: str | Profile,
    only: str | list[str] | None = None,
    store: ResultStore | None = None,
    force: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    epoch_progress: bool = False,
    executor: str = "inprocess",
) -> GridSummary:
    """Run every not-yet-recorded run of the profile (``only``: some experiments), in order.

    ``executor``: ``inprocess`` (default: every run in this process) or ``papermill`` (every run
    executes ``notebooks/run_experiment.ipynb`` in its own kernel, and the executed notebook is
    kept beside the record; a kernel start per run costs seconds). Both write the same record.
    Safe to interrupt at any moment and rerun: finished runs are kept and skipped.
    """
    from tqdm.auto import tqdm

    profile = get_profile(profile)
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "papermill" and PROFILES.get(profile.name) is not profile:
        raise ConfigError(f"profile {profile.name}: the papermill executor needs a named profile")
    check_datasets_available(profile)
    store = store or ResultStore()
    removed = store.remove_temp_files(profile.name)
    specs = unique_runs(plan(profile, only))
    summary = GridSummary(profile.name, planned=len(specs))
    start = time.perf_counter()
    cache: dict[str, InteractionData] = {}
    interactive = sys.stderr.isatty()
    # in a log (not a terminal) the bar redraws rarely; every finished run prints its own line
    bar = tqdm(total=len(specs), desc=f"grid {profile.name}", unit="run", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.05, mininterval=0.1 if interactive else 60)
    if progress:
        if removed:
            bar.write(f"removed {removed} temporary file(s) left by an interrupted run")
        bar.write(f"profile {profile.name}: {len(specs)} runs planned ({profile.description}); "
                  f"results in {store.root / profile.name}")
    try:
        for spec in specs:
            bar.set_postfix_str(spec.describe(), refresh=interactive)
            if spec.dataset not in cache:
                cache.clear()  # one dataset in memory at a time (the real ones are large)
                cache[spec.dataset] = load_named_dataset(spec.dataset, profile)
            data = cache[spec.dataset]
            prepared = prepare_run(spec, profile.name, data)
            if executor == "papermill":
                record, ran = execute_notebook(prepared, store, force=force, retry_failed=retry_failed)
            else:
                record, ran = execute(prepared, data, store, force=force, retry_failed=retry_failed,
                                      quiet=not epoch_progress)
            if ran:
                summary.ran += 1
                if progress:
                    bar.write(_run_line(bar.n + 1, len(specs), spec, record))
            else:
                summary.skipped += 1
            if record["status"] != "ok":
                summary.failed.append(f"{spec.describe()}: {record.get('error')}")
            bar.update()
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def execute_notebook(prepared: PreparedRun, store: ResultStore, force: bool = False,
                     retry_failed: bool = False) -> tuple[dict, bool]:
    """Like :func:`execute`, through papermill and the per-run notebook; the executed notebook is
    written (atomically) beside the record as ``<stem>.ipynb``."""
    import papermill

    existing = None if force else finished_record(prepared, store, retry_failed)
    if existing is not None:
        return existing, False
    spec = prepared.spec
    overrides = {key: list(value) if isinstance(value, tuple) else value
                 for key, value in {**spec.overrides_dict, **spec.train_dict}.items()}
    parameters = dict(dataset=spec.dataset, model=spec.model, seed=spec.seed, overrides=overrides,
                      profile=prepared.key.profile, force=True, results=str(store.root.resolve()))
    output = store.record_path(prepared.key).with_suffix(".ipynb")
    try:
        with warnings.catch_warnings():  # the temporary name does not end in .ipynb, by design
            warnings.filterwarnings("ignore", message="The specified file", category=UserWarning)
            write_atomic(output, lambda tmp: papermill.execute_notebook(
                str(RUN_NOTEBOOK), str(tmp), parameters=parameters, progress_bar=False, log_output=False))
    except papermill.PapermillExecutionError as exc:  # training errors are recorded, not raised
        raise LGMRecError(f"{RUN_NOTEBOOK}: failed for {spec.describe()}: {exc.ename}: {exc.evalue}") from None
    record = store.read_record(prepared.key)
    if record is None or record["config_hash"] != prepared.key.config_hash:
        raise LGMRecError(f"{output}: the notebook ran but wrote no record for {spec.describe()}")
    record["_path"] = str(store.record_path(prepared.key))
    return record, True


def _run_line(done: int, total: int, spec: RunSpec, record: dict) -> str:
    if record["status"] != "ok":
        return f"[{done}/{total}] {spec.describe()}: FAILED: {record.get('error')}"
    test = record.get("test") or {}
    return (f"[{done}/{total}] {spec.describe()}: recall@20 {test.get('recall@20', math.nan):.4f} "
            f"ndcg@20 {test.get('ndcg@20', math.nan):.4f}, best epoch {record.get('best_epoch')}/"
            f"{record.get('epochs_run')}, {record.get('wall_seconds', math.nan):.1f} s")


def collect(profile: str | Profile, experiment: str | None = None, store: ResultStore | None = None,
            include_failed: bool = False, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Records of a profile labelled with the experiments they serve (one row per experiment
    and run): columns ``experiment``, ``variant``, ``parameter``, ``value`` plus the record's.

    Planned runs are matched to records by their resolved configuration (no dataset is loaded).
    ``records``: the profile's records when the caller has loaded them already.
    """
    from .models import get_model_spec, resolve_model_config
    from .results import setting_key

    profile = get_profile(profile)
    if records is None:
        records = (store or ResultStore()).load(profile.name)
    if records.empty:
        return records.assign(experiment=[], variant=[], parameter=[], value=[])
    rows = []
    for spec in plan(profile, experiment):
        model_config = resolve_model_config(get_model_spec(spec.model), spec.dataset, None, spec.overrides_dict)
        train = asdict(build_dataclass(TrainConfig, spec.train_dict))
        rows.append({
            "experiment": spec.experiment, "variant": spec.variant, "parameter": spec.parameter,
            "value": spec.value, "setting_key": setting_key(spec.dataset, spec.model, asdict(model_config), train),
            "seed": spec.seed,
        })
    # one row per (experiment, variant): the sensitivity points at the preset values share one run
    planned = pd.DataFrame(rows).drop_duplicates(["experiment", "variant", "setting_key", "seed"])
    # a dataset whose content changed leaves older records of the same setting: newest wins
    records = records.sort_values("written_at").drop_duplicates(["setting_key", "seed"], keep="last")
    merged = planned.merge(records, on=["setting_key", "seed"], how="inner")
    if not include_failed:
        merged = merged[merged["status"] == "ok"]
    return merged.reset_index(drop=True)


def progress_table(profile: str | Profile, store: ResultStore | None = None,
                   records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per experiment: planned runs, finished ok, failed, missing."""
    profile = get_profile(profile)
    done = collect(profile, store=store, include_failed=True, records=records)
    rows = []
    for experiment in ("overall", "ablation", "sensitivity"):
        planned = unique_runs(plan(profile, experiment))
        part = done[done["experiment"] == experiment].drop_duplicates(["setting_key", "seed"])
        ok = int((part["status"] == "ok").sum())
        failed = int((part["status"] != "ok").sum())
        rows.append({"experiment": experiment, "planned": len(planned), "ok": ok, "failed": failed,
                     "missing": len(planned) - ok - failed})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- CLI


def add_grid_parsers(subparsers) -> None:
    """Add ``grid``, ``check`` and ``book`` to ``python -m lgmrec``."""
    from .grids import DERIVED, EXPERIMENTS, PROFILES

    grid = subparsers.add_parser(
        "grid", help="run the experiment grid of a profile into results/",
        description="Run every run of a profile that has no record yet (one JSON + one Parquet file "
                    "per run under <results>/<profile>/). Interrupt and rerun at will: finished runs "
                    "are kept. Profiles: " + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
    )
    grid.add_argument("--profile", default="quick", choices=list(PROFILES))
    grid.add_argument("--only", action="append", choices=list(EXPERIMENTS) + list(DERIVED),
                      help="run only these experiments (repeatable; sparsity/efficiency = overall)")
    grid.add_argument("--results", default=None, help="results root (default: $LGMREC_RESULTS_DIR or ./results)")
    grid.add_argument("--force", action="store_true", help="rerun runs that have a record")
    grid.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    grid.add_argument("--dry-run", action="store_true", help="print the planned runs and their state, run nothing")
    grid.add_argument("--epoch-progress", action="store_true", help="also show a per-epoch progress bar")
    grid.add_argument("--executor", default="inprocess", choices=EXECUTORS,
                      help="inprocess (default, fastest) or papermill: each run executes "
                           "notebooks/run_experiment.ipynb, kept beside its record")
    grid.set_defaults(func=_run_grid_command)

    check = subparsers.add_parser(
        "check", help="compare reproduced Recall@20/NDCG@20 with expected values (exit 1 on a miss)",
        description="Mean test Recall@20 and NDCG@20 over seeds of the overall experiment, compared "
                    "with an expected-values CSV (for synthetic data: one produced by this suite) or, "
                    "for real data, with the published numbers and literature bands. A row passes "
                    "when |reproduced - expected| <= max(abs_tol, rel_tol * |expected|).",
    )
    check.add_argument("--profile", default="quick", choices=list(PROFILES))
    check.add_argument("--expected", default=None,
                       help="CSV with dataset,model,metric,expected[,abs_tol,rel_tol] (default: "
                            "lgmrec/reference/expected/<profile>.csv for synthetic profiles, the published "
                            "numbers for real ones)")
    check.add_argument("--results", default=None)
    check.add_argument("--tolerance", action="append", default=[], metavar="METRIC:abs=A,rel=R",
                       help="override a metric's tolerance, e.g. recall@20:abs=0.01,rel=0.1 (repeatable)")
    check.add_argument("--write-expected", default=None, metavar="CSV",
                       help="instead of checking, write the current means as expected values to CSV")
    check.set_defaults(func=_run_check_command)

    book = subparsers.add_parser(
        "book", help="build the Jupyter Book from the results of a profile",
        description="Execute the analysis notebooks against <results>/<profile>/ and build HTML "
                    "(fails if any notebook fails).",
    )
    book.add_argument("--profile", default="quick", choices=list(PROFILES))
    book.add_argument("--results", default=None)
    book.add_argument("--out", default=None, help="output folder (default: book/_build)")
    book.set_defaults(func=_run_book_command)


def _run_grid_command(args: argparse.Namespace) -> int:
    store = ResultStore(args.results)
    if args.dry_run:
        profile = get_profile(args.profile)
        specs = unique_runs(plan(profile, args.only))
        print(f"profile {profile.name}: {len(specs)} unique runs ({profile.description})")
        for spec in specs:
            print(f"  {spec.experiment:<12}{spec.variant:<24}{spec.describe()}")
        return 0
    summary = run_grid(args.profile, args.only, store, force=args.force, retry_failed=args.retry_failed,
                       epoch_progress=args.epoch_progress, executor=args.executor)
    print(summary.line())
    for line in summary.failed:
        print(f"  failed: {line}")
    print(f"results in {store.root / args.profile}")
    return 0


def _run_check_command(args: argparse.Namespace) -> int:
    from .check import run_check_command

    return run_check_command(args)


def _run_book_command(args: argparse.Namespace) -> int:
    from .book import build_book

    out = build_book(args.profile, results_root=args.results, output=args.out)
    print(f"book built: {out / 'index.html'}")
    return 0


__all__ = [
    "GridSummary", "add_grid_parsers", "collect", "execute", "finished_record", "load_named_dataset", "parse_overrides",
    "per_user_frame", "prepare_run", "progress_table", "run_experiment", "run_grid",
]
