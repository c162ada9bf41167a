"""The published record: every Recall@20 / NDCG@20 that public documents print for the 14 models
on the Amazon Baby, Sports and Clothing files, and what can be computed from it.

The registry (``lgmrec/reference/literature.csv``) holds one row per published number: its source
(``source_id``, with the document and ``location`` in it), how it was read (``read_from``: text,
image, or secondary = a third party's transcription) and whether this project checked it against
the source itself (``verified`` yes/no, ``verified_how``: what was opened). The companion
``literature_sources.csv`` orders the sources by publication (``order``): "earlier" below means a
smaller ``order``.

Definitions (all computed here, none hand-labelled):

- a *cell* is one source's pair (Recall@20, NDCG@20) for one model on one dataset;
- **lineage**: a cell whose pair equals the pair of an earlier source's cell for the same model
  and dataset is a *copy* of the earliest such source; every other cell is *independent* (a run,
  or a copy of something outside the registry: the record cannot tell those apart);
- **transcription flags**: when one source prints the same pair for at least
  ``TRANSCRIPTION_BLOCK`` models on two datasets, the block is taken for a transcription error
  (two identical 4-digit pairs by chance are very unlikely; a whole block of them is a
  copied table row). Of the two datasets, the side whose pairs fewer other sources print for that
  dataset is flagged (the other side is corroborated); on a tie both sides are;
- **published value** of a model on a dataset and metric: the median of the distinct values of
  its independent, unflagged cells read from text or image (secondary transcriptions are left
  out); where any of those cells is verified, only verified cells count;
- **noise floor**: per model with at least two such distinct values, the relative range
  (max - min) / median; the floor of a dataset is the median of that over models (its maximum is
  reported next to it). It is how much independent runs of the same model differ in print.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

REGISTRY_FILE = "literature.csv"
SOURCES_FILE = "literature_sources.csv"
METRICS = ("recall@20", "ndcg@20")  # a cell is the pair of these two
DATASETS = {"Baby": "baby", "Sports": "sports", "Clothing": "clothing"}  # as printed -> family
READ_FROM = ("text", "image", "secondary")
REGISTRY_COLUMNS = ("source_id", "source", "location", "model", "dataset", "metric", "value", "read_from",
                    "note", "verified", "verified_how")
SOURCE_COLUMNS = ("order", "source_id", "label", "published", "date_basis")
TRANSCRIPTION_BLOCK = 3  # identical pairs on two datasets of one source that make a block
MODEL = "LGMRec"  # the model of the paper
PAPER_SOURCE = "lgmrec-paper-2023"  # the paper's Table 2 (the claim)
RERUN_SOURCE = "lgmrec-issue2-rerun-2026"  # the authors' rerun after the hyperedge fix
AUTHOR_SOURCES = ("lgmrec-logs-2023", PAPER_SOURCE, RERUN_SOURCE)  # LGMRec's authors' own numbers


# ---------------------------------------------------------------------------- reading


def _reference_path(name: str) -> Path:
    return Path(str(resources.files("lgmrec.reference").joinpath(name)))


def _fail(path: Path, row: int | None, problem: str) -> DataError:
    where = f"{path}: row {row}" if row is not None else str(path)
    return DataError(f"{where}: {problem}")


def read_sources(path: str | Path | None = None) -> pd.DataFrame:
    """The sources' order of publication, one row per ``source_id`` (validated)."""
    path = Path(path) if path is not None else _reference_path(SOURCES_FILE)
    table = _read_table(path, SOURCE_COLUMNS)
    for i, row in table.iterrows():
        if not row["order"].isdigit():
            raise _fail(path, i + 2, f"order {row['order']!r} is not a whole number")
        if not row["source_id"]:
            raise _fail(path, i + 2, "empty source_id")
    for column in ("order", "source_id"):
        duplicated = table[column].duplicated()
        if duplicated.any():
            i = int(np.flatnonzero(duplicated)[0])
            raise _fail(path, i + 2, f"{column} {table[column].iloc[i]!r} appears twice")
    return table.assign(order=table["order"].astype(int)).sort_values("order", ignore_index=True)


def read_registry(path: str | Path | None = None, sources: str | Path | None = None) -> pd.DataFrame:
    """The registry with its sources' ``order``, ``label`` and ``published`` date joined, ``value``
    as float and ``family`` (lowercase dataset). Rows are validated; a bad one raises
    :class:`~lgmrec.errors.DataError` naming the file and the row (1 = the header line)."""
    if path is None and sources is None:
        return _bundled_registry().copy()
    return _read_registry(Path(path) if path is not None else _reference_path(REGISTRY_FILE),
                          Path(sources) if sources is not None else _reference_path(SOURCES_FILE))


@lru_cache(maxsize=1)
def _bundled_registry() -> pd.DataFrame:
    return _read_registry(_reference_path(REGISTRY_FILE), _reference_path(SOURCES_FILE))


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as strings, with a one-line error naming the file when it is unreadable or lacks a column."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as error:
        raise _fail(path, None, f"cannot be read ({error})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise _fail(path, None, f"missing column(s) {', '.join(missing)}")
    return table


def _read_registry(path: Path, sources_path: Path) -> pd.DataFrame:
    table = _read_table(path, REGISTRY_COLUMNS)
    sources = read_sources(sources_path)
    known = set(sources["source_id"])
    values = []
    for i, row in table.iterrows():
        line = i + 2
        if row["source_id"] not in known:
            raise _fail(path, line, f"source_id {row['source_id']!r} is not in {sources_path.name}")
        if row["dataset"] not in DATASETS:
            raise _fail(path, line, f"dataset {row['dataset']!r} is not one of {', '.join(DATASETS)}")
        if row["metric"] not in METRICS:
            raise _fail(path, line, f"metric {row['metric']!r} is not one of {', '.join(METRICS)}")
        if row["read_from"] not in READ_FROM:
            raise _fail(path, line, f"read_from {row['read_from']!r} is not one of {', '.join(READ_FROM)}")
        if row["verified"] not in ("yes", "no"):
            raise _fail(path, line, f"verified {row['verified']!r} is not yes or no")
        if row["verified"] == "yes" and not row["verified_how"].strip():
            raise _fail(path, line, "verified yes without verified_how (what was opened)")
        if not row["model"]:
            raise _fail(path, line, "empty model")
        try:
            value = float(row["value"])
        except ValueError:
            raise _fail(path, line, f"value {row['value']!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise _fail(path, line, f"value {value} is outside (0, 1)")
        values.append(value)
    duplicated = table.duplicated(["source_id", "dataset", "model", "metric"])
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise _fail(path, i + 2, "a second number for the same source, dataset, model and metric")
    table = table.assign(value=values, family=table["dataset"].map(DATASETS))
    return table.merge(sources[["source_id", "order", "label", "published"]], on="source_id", how="left")


def _registry(registry: pd.DataFrame | None) -> pd.DataFrame:
    return read_registry() if registry is None else registry


def _family(family: str) -> str:
    if family not in DATASETS.values():
        raise ValueError(f"unknown dataset family {family!r}; choose from {', '.join(DATASETS.values())}")
    return family


# ---------------------------------------------------------------------------- lineage


def cells(registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (family, model, source): the pair (recall@20, ndcg@20), the source's order,
    label, read_from, and whether all of the cell's numbers are verified."""
    registry = _registry(registry)
    keys = ["family", "dataset", "model", "source_id"]
    wide = registry.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(METRICS))
    info = registry.groupby(keys).agg(order=("order", "first"), label=("label", "first"),
                                      read_from=("read_from", "first"),
                                      verified=("verified", lambda v: bool((v == "yes").all())))
    out = wide.join(info).reset_index()
    out.columns.name = None
    return out.sort_values(["family", "model", "order"], ignore_index=True)


def _pair(row: pd.Series) -> tuple:
    # values are printed with 4 decimals; rounding removes float noise from the CSV parse
    return tuple(round(float(row[m]), 6) if pd.notna(row[m]) else None for m in METRICS)


def lineage(registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`cells` with ``copy_of`` (the earliest earlier source printing the same pair for the
    same model and dataset; "" when none), ``independent`` (no such source) and ``flagged`` (the
    cell is part of a suspected transcription error, :func:`transcription_flags`).

    A pair with a missing metric is never a copy: only a full pair identifies a run."""
    if registry is None:
        return _bundled_lineage().copy()
    return _lineage(registry)


@lru_cache(maxsize=1)
def _bundled_lineage() -> pd.DataFrame:
    return _lineage(read_registry())


def _lineage(registry: pd.DataFrame) -> pd.DataFrame:
    table = cells(registry)
    copy_of: dict[int, str] = {}
    for _, group in table.groupby(["family", "model"], sort=False):
        seen: dict[tuple, str] = {}
        for index, row in group.sort_values("order").iterrows():  # in order of publication
            pair = _pair(row)
            complete = None not in pair
            copy_of[index] = seen.get(pair, "") if complete else ""
            if complete:
                seen.setdefault(pair, row["source_id"])
    table["copy_of"] = pd.Series(copy_of)
    table["independent"] = table["copy_of"] == ""
    flags = transcription_flags(registry)
    flagged = set(zip(flags["family"], flags["model"], flags["source_id"]))
    table["flagged"] = [(f, m, s) in flagged for f, m, s in zip(table["family"], table["model"], table["source_id"])]
    return table


def transcription_flags(registry: pd.DataFrame | None = None, block: int = TRANSCRIPTION_BLOCK) -> pd.DataFrame:
    """Cells suspected to be transcription errors: one source printing the same pair for at least
    ``block`` models on two datasets. Columns: family, model, source_id, repeats (the other
    dataset's family), block (how many models repeat), corroborated (how many of the block's pairs
    other sources print on this dataset). The less corroborated side is flagged; both on a tie."""
    table = cells(_registry(registry))
    rows = []
    for source, part in table.groupby("source_id", sort=False):
        pairs = {(r["family"], r["model"]): _pair(r) for _, r in part.iterrows() if None not in _pair(r)}
        families = sorted({f for f, _ in pairs})
        for i, first in enumerate(families):
            for second in families[i + 1:]:
                models = [m for (f, m), p in pairs.items()
                          if f == first and pairs.get((second, m)) == p]
                if len(models) < block:
                    continue
                support = {}
                for family in (first, second):
                    others = table[(table["family"] == family) & (table["source_id"] != source)
                                   & table["model"].isin(models)]
                    printed = {(r["model"], _pair(r)) for _, r in others.iterrows()}
                    support[family] = sum((m, pairs[(family, m)]) in printed for m in models)
                low = min(support.values())
                for family, other in ((first, second), (second, first)):
                    if support[family] == low:
                        rows.extend({"family": family, "model": m, "source_id": source, "repeats": other,
                                     "block": len(models), "corroborated": support[family]} for m in models)
    return pd.DataFrame(rows, columns=["family", "model", "source_id", "repeats", "block", "corroborated"])


# ---------------------------------------------------------------------------- values


def distinct_values(family: str, model: str, metric: str = "recall@20",
                    registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every distinct published value of a model on a dataset, one row each: value, sources (the
    source_ids printing it, in order), n_sources, independent (some source printing it is not a
    copy), flagged (every source printing it is flagged), verified (some source printing it is
    verified), secondary (every source printing it is secondary)."""
    table = lineage(registry)
    table = table[(table["family"] == _family(family)) & (table["model"] == model) & table[metric].notna()]
    rows = []
    for value, group in table.groupby(table[metric].round(6), sort=True):
        rows.append({"value": float(value), "sources": tuple(group["source_id"]), "n_sources": len(group),
                     "independent": bool(group["independent"].any()), "flagged": bool(group["flagged"].all()),
                     "verified": bool(group["verified"].any()),
                     "secondary": bool((group["read_from"] == "secondary").all())})
    return pd.DataFrame(rows, columns=["value", "sources", "n_sources", "independent", "flagged", "verified",
                                       "secondary"])


def independent_values(family: str, model: str, metric: str = "recall@20",
                       registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """The cells that count for the published value (independent, unflagged, not secondary), one
    row per cell: source_id, label, value, verified."""
    table = lineage(registry)
    keep = ((table["family"] == _family(family)) & (table["model"] == model) & table[metric].notna()
            & table["independent"] & ~table["flagged"] & (table["read_from"] != "secondary"))
    part = table[keep]
    return pd.DataFrame({"source_id": part["source_id"], "label": part["label"], "value": part[metric],
                         "verified": part["verified"]}).reset_index(drop=True)


@dataclass(frozen=True)
class Published:
    """A model's published value on one dataset and metric, and what stands behind it."""

    value: float  # median of the distinct values used
    n_values: int  # distinct values used
    n_sources: int  # sources printing one of them, copies included
    verified: bool  # only verified cells were used
    sources: tuple[str, ...]  # the sources printing a value used, in order of publication


def published(family: str, model: str, metric: str = "recall@20",
              registry: pd.DataFrame | None = None) -> Published | None:
    """The published value (module docstring) with its support; None where no cell qualifies."""
    used = independent_values(family, model, metric, registry)
    if used.empty:
        return None
    verified = bool(used["verified"].any())
    if verified:
        used = used[used["verified"]]
    values = sorted(set(used["value"].round(6)))
    printed = lineage(registry)
    printed = printed[(printed["family"] == family) & (printed["model"] == model)
                      & printed[metric].round(6).isin(values)]
    return Published(float(np.median(values)), len(values), int(printed["source_id"].nunique()), verified,
                     tuple(printed.sort_values("order")["source_id"].unique()))


def published_value(family: str, model: str, metric: str = "recall@20",
                    registry: pd.DataFrame | None = None) -> float | None:
    """The median of the model's distinct independent values (module docstring); None if none."""
    found = published(family, model, metric, registry)
    return None if found is None else found.value


def paper_value(family: str, metric: str = "recall@20", registry: pd.DataFrame | None = None) -> float | None:
    """LGMRec's number in the paper's Table 2 (the claim)."""
    return _source_value(PAPER_SOURCE, family, metric, registry)


def rerun_value(family: str, metric: str = "recall@20", registry: pd.DataFrame | None = None) -> float | None:
    """LGMRec's number in the authors' rerun after the hyperedge fix."""
    return _source_value(RERUN_SOURCE, family, metric, registry)


def _source_value(source: str, family: str, metric: str, registry: pd.DataFrame | None) -> float | None:
    table = _registry(registry)
    row = table[(table["source_id"] == source) & (table["family"] == _family(family))
                & (table["model"] == MODEL) & (table["metric"] == metric)]
    return None if row.empty else float(row["value"].iloc[0])


def _label(model_key: str, registry: pd.DataFrame) -> str | None:
    """The registry's spelling of a suite model key ('lightgcn' -> 'LightGCN')."""
    return next((m for m in registry["model"].unique() if m.lower() == model_key.lower()), None)


def claimed_margin(family: str, baseline: str, metric: str = "recall@20",
                   registry: pd.DataFrame | None = None) -> float | None:
    """Relative margin (a fraction: 0.010 = +1.0 %) of the paper's LGMRec number over the
    baseline's published value; None where either is missing. ``baseline``: a suite model key."""
    label = _label(baseline, _registry(registry))
    claim = paper_value(family, metric, registry)
    base = published_value(family, label, metric, registry) if label else None
    if claim is None or base is None:
        return None
    return claim / base - 1.0


def strongest_published_baseline(family: str, metric: str = "recall@20",
                                 registry: pd.DataFrame | None = None) -> str | None:
    """The suite key of the baseline (any model but LGMRec) with the highest published value."""
    best, best_value = None, -np.inf
    for model in sorted(_registry(registry)["model"].unique()):
        if model == MODEL:
            continue
        value = published_value(family, model, metric, registry)
        if value is not None and value > best_value:
            best, best_value = model.lower(), value
    return best


# ---------------------------------------------------------------------------- spread


@dataclass(frozen=True)
class NoiseFloor:
    """How much independent published runs of one model differ, on one dataset and metric."""

    median: float  # median over models of (max - min) / median of the model's values; NaN if none
    max: float
    n_models: int  # models with at least two distinct independent values
    per_model: pd.DataFrame  # model, n_values, low, high, relative range


def noise_floor(family: str, metric: str = "recall@20", registry: pd.DataFrame | None = None) -> NoiseFloor:
    """The literature's noise floor on a dataset (module docstring)."""
    rows = []
    models = _registry(registry).loc[lambda t: t["family"] == _family(family), "model"].unique()
    for model in sorted(models):
        values = sorted(set(independent_values(family, model, metric, registry)["value"].round(6)))
        if len(values) >= 2:
            rows.append({"model": model, "n_values": len(values), "low": values[0], "high": values[-1],
                         "relative range": (values[-1] - values[0]) / float(np.median(values))})
    per_model = pd.DataFrame(rows, columns=["model", "n_values", "low", "high", "relative range"])
    spread = per_model["relative range"]
    return NoiseFloor(float(spread.median()) if len(spread) else float("nan"),
                      float(spread.max()) if len(spread) else float("nan"), len(per_model), per_model)


@dataclass(frozen=True)
class ModelRecord:
    """Everything the record prints for one model on one dataset and metric (LGMRec for C5)."""

    low: float
    high: float
    n_sources: int  # sources printing a value (copies included)
    n_values: int  # distinct values
    n_independent: int  # distinct values printed by some independent, unflagged source
    independent: tuple[float, ...]
    #: of those, the values some independent source other than LGMRec's authors prints
    #: (:data:`AUTHOR_SOURCES`), and how many of these only secondary transcriptions print
    n_others: int = 0
    n_others_secondary: int = 0


def model_record(family: str, model: str = MODEL, metric: str = "recall@20",
                 registry: pd.DataFrame | None = None) -> ModelRecord | None:
    """Range and counts of a model's published values, secondary sources included."""
    values = distinct_values(family, model, metric, registry)
    if values.empty:
        return None
    independent = values[values["independent"] & ~values["flagged"]]["value"]
    table = lineage(registry)
    others = table[(table["family"] == family) & (table["model"] == model) & table["independent"]
                   & ~table["flagged"] & ~table["source_id"].isin(AUTHOR_SOURCES) & table[metric].notna()]
    by_value = others.groupby(others[metric].round(6))["read_from"].agg(lambda r: bool((r == "secondary").all()))
    return ModelRecord(float(values["value"].min()), float(values["value"].max()),
                       int(values["n_sources"].sum()), len(values), len(independent),
                       tuple(float(v) for v in independent), len(by_value), int(by_value.astype(bool).sum()))


__all__ = ["AUTHOR_SOURCES", "METRICS", "MODEL", "ModelRecord", "NoiseFloor", "PAPER_SOURCE", "Published", "RERUN_SOURCE",
           "TRANSCRIPTION_BLOCK", "cells", "claimed_margin", "distinct_values", "independent_values", "lineage",
           "model_record", "noise_floor", "paper_value", "published", "published_value", "read_registry",
           "read_sources", "rerun_value", "strongest_published_baseline", "transcription_flags"]
