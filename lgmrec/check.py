"""The Recall@20 / NDCG@20 check: reproduced means against expected values, with tolerances.

Expected values come from a CSV with columns ``dataset, model, metric, expected`` and optional
``abs_tol, rel_tol, source``. For a synthetic profile the default is the committed
``lgmrec/reference/expected/<profile>.csv``, written by this suite (``--write-expected``) from a run on
the project's machines; for a real-data profile it is the published numbers
(``lgmrec/reference/reported.csv``: the paper's LGMRec row, the MMRec README's baseline rows).

A row passes when ``|reproduced - expected| <= max(abs_tol, rel_tol * |expected|)``; an expected
row with no reproduced run is a miss too.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .grids import Profile, get_profile
from .files import write_atomic
from .results import ResultStore

CHECK_METRICS = ("recall@20", "ndcg@20")
EXPECTED_COLUMNS = ("dataset", "model", "metric", "expected")
#: Synthetic expectations were computed by this suite: a run on a machine like the project's
#: should land within these (same config and seed: the same numbers); a regression in a model,
#: the data or the protocol should not. Relative, so that a small NDCG is held as tightly as a
#: large Recall (tests/pipeline/test_check.py shows broken models falling outside).
SYNTHETIC_TOLERANCE = {"abs_tol": 0.0, "rel_tol": 0.02}
#: Published numbers came from other hardware and code; 5 % is the usual "reproduced" margin.
REAL_TOLERANCE = {"abs_tol": 0.0, "rel_tol": 0.05}
#: which published number stands for a model when several sources give one (first found wins)
REAL_SOURCES = ("paper-table2", "official-log-2023-08-12", "mmrec-evaluation-readme")


def expected_path(profile: Profile) -> Path:
    """The committed expected values of a synthetic profile (package data)."""
    return Path(__file__).resolve().parent / "reference" / "expected" / f"{profile.name}.csv"


def reproduced_means(profile: Profile, store: ResultStore, metrics=CHECK_METRICS) -> pd.DataFrame:
    """Mean over seeds of the overall experiment's test metrics: dataset, model, metric, reproduced, seeds."""
    from .collect import collect

    runs = collect(profile, "overall", store)
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "model", "metric", "reproduced", "seeds"])
    long = runs[["dataset", "model", "seed", *metrics]].melt(
        id_vars=["dataset", "model", "seed"], var_name="metric", value_name="reproduced")
    return (long.groupby(["dataset", "model", "metric"], sort=False)
            .agg(reproduced=("reproduced", "mean"), seeds=("seed", "nunique")).reset_index())


def read_expected(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected-values file not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in EXPECTED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise DataError(f"{path}: no expected values")
    for column, default in SYNTHETIC_TOLERANCE.items():
        table[column] = table[column] if column in table.columns else default
    for column in ("expected", "abs_tol", "rel_tol"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values < 0).any():
            raise DataError(f"{path}: column {column} must hold non-negative numbers")
        table[column] = values
    if "source" not in table.columns:
        table["source"] = str(path)
    return table


def published_expected(profile: Profile) -> pd.DataFrame:
    """The published numbers for the profile's real datasets and models, one source each."""
    from .grids import available_models
    from .models import dataset_family, get_model_spec
    from .reference import read_reference

    reported = read_reference("reported")
    models = list(profile.models) if profile.models is not None else available_models()
    rows = []
    for dataset in profile.datasets:
        family = dataset_family(dataset)
        for model in models:
            label = get_model_spec(model).label
            for metric in CHECK_METRICS:
                found = reported[(reported["dataset"] == family) & (reported["model"] == label)
                                 & (reported["metric"] == metric)]
                for source in REAL_SOURCES:
                    hit = found[found["source"] == source]
                    if not hit.empty:
                        rows.append({"dataset": dataset, "model": model, "metric": metric,
                                     "expected": float(hit["value"].iloc[0]), "source": source,
                                     **REAL_TOLERANCE})
                        break
    return pd.DataFrame(rows)


def parse_tolerance(text: str) -> tuple[str, dict[str, float]]:
    """``recall@20:abs=0.01,rel=0.1`` -> ("recall@20", {"abs_tol": 0.01, "rel_tol": 0.1})."""
    metric, _, spec = text.partition(":")
    values: dict[str, float] = {}
    try:
        for part in filter(None, spec.split(",")):
            key, _, number = part.partition("=")
            if key.strip() not in ("abs", "rel"):
                raise ValueError(key)
            values[f"{key.strip()}_tol"] = float(number)
    except ValueError:
        raise ConfigError(f"--tolerance {text!r}: expected METRIC:abs=A,rel=R") from None
    if metric not in CHECK_METRICS or not values:
        raise ConfigError(f"--tolerance {text!r}: expected METRIC:abs=A,rel=R with METRIC in {', '.join(CHECK_METRICS)}")
    return metric, values


def compare(reproduced: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """One row per expected value: reproduced, difference, allowed difference, ``ok``."""
    table = expected.merge(reproduced, on=["dataset", "model", "metric"], how="left")
    table["difference"] = table["reproduced"] - table["expected"]
    table["allowed"] = np.maximum(table["abs_tol"], table["rel_tol"] * table["expected"].abs())
    table["ok"] = table["difference"].abs() <= table["allowed"] + 1e-12  # NaN (not run) -> False
    return table[["dataset", "model", "metric", "reproduced", "expected", "difference", "allowed",
                  "ok", "seeds", "source"]]


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["result"] = np.where(shown["ok"], "ok", np.where(shown["reproduced"].isna(), "NOT RUN", "MISS"))
    shown["difference"] = shown["difference"].round(4) + 0.0  # no "-0.0000"
    shown = shown.drop(columns=["ok"])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def run_check_command(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    store = ResultStore(args.results)
    reproduced = reproduced_means(profile, store)
    if args.write_expected:
        if reproduced.empty:
            raise DataError(f"{store.root / profile.name}: no finished overall runs to write as expected values")
        stamp = _dt.date.today().isoformat()
        expected = reproduced.rename(columns={"reproduced": "expected"}).round({"expected": 6}).assign(
            **SYNTHETIC_TOLERANCE, source=f"lgmrec-repro profile {profile.name}, {stamp}")
        write_atomic(Path(args.write_expected), lambda tmp: expected.drop(columns=["seeds"]).to_csv(tmp, index=False))
        print(f"wrote {len(expected)} expected values to {args.write_expected}")
        return 0
    if args.expected:
        expected = read_expected(args.expected)
    elif profile.data == "real":
        expected = published_expected(profile)
    else:
        expected = read_expected(expected_path(profile))
    for text in args.tolerance:
        metric, values = parse_tolerance(text)
        for column, value in values.items():
            expected.loc[expected["metric"] == metric, column] = value
    table = compare(reproduced, expected)
    print(format_table(table))
    misses = int((~table["ok"]).sum())
    print(f"{len(table) - misses} of {len(table)} within tolerance"
          + (f"; {misses} MISSED" if misses else ""))
    return 1 if misses else 0


__all__ = ["compare", "published_expected", "read_expected", "reproduced_means", "run_check_command"]
