"""The Runs appendix and the downloadable run tables.

Appendix: one page per dataset listing every (experiment, model, variant) with its seeds,
status, best epoch and epochs run, a learning curve (validation Recall@20 per epoch from the
record's history, drawn inline) and a link to the executed notebook of its unit, which
:mod:`lgmrec.book` copies into the book (rendered, never re-executed) at
``runs/<dataset>/<model>-<unit>.ipynb``.

Downloads: one tidy CSV per experiment with every run (config hash, seed, variant,
hyperparameters, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..grids import EXPERIMENTS, WorkUnit, units
from .context import BookContext, model_order
from .display import DASH, Html, Table, Tables, download_links, escape, fmt_num, fmt_range, fmt_value, write_csv

RUNS_FOLDER = "runs"
CURVE_METRIC = "recall@20"
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


# ---------------------------------------------------------------------------- units and their notebooks


def unit_name(unit: WorkUnit) -> str:
    """The executed notebook's file stem, as lgmrec.worker.notebook_path names it."""
    return unit.experiment + (f"-{unit.part}" if unit.experiment == "sensitivity" else "")


def unit_page(unit: WorkUnit) -> str:
    """The unit's page in the book, relative to the runs folder: ``<dataset>/<model>-<unit>``."""
    return f"{unit.dataset}/{unit.model}-{unit_name(unit)}"


def unit_source(ctx_or_root, profile: str, unit: WorkUnit) -> Path:
    from ..worker import notebook_path

    root = ctx_or_root.store.root if isinstance(ctx_or_root, BookContext) else ctx_or_root
    return notebook_path(root, profile, {"experiment": unit.experiment, "dataset": unit.dataset, "part": unit.part})


def executed_units(profile, root) -> list[tuple[WorkUnit, Path]]:
    """The profile's units whose executed notebook exists under the results root."""
    found = []
    for unit in units(profile):
        source = unit_source(Path(root), profile.name, unit)
        if source.is_file():
            found.append((unit, source))
    return found


def unit_for(profile, experiment: str, dataset: str, model: str, parameter) -> WorkUnit:
    if experiment in ("overall", "tuning"):
        kind = "overall" if "overall" in profile.experiments else "tuning"
        return WorkUnit(kind, dataset, model)
    if experiment == "ablation":
        return WorkUnit("ablation", dataset, "")
    if experiment == "error_rates":
        return WorkUnit("error_rates", dataset, model)
    return WorkUnit("sensitivity", dataset, parameter or "")


# ---------------------------------------------------------------------------- learning curves


def read_history(path: str) -> list[dict]:
    try:
        return json.loads(Path(path).read_text()).get("history") or []
    except (OSError, ValueError):
        return []


def sparkline(curves: list[tuple[list, list, object]], width: int = 150, height: int = 34) -> str:
    """An inline SVG of validation curves: one line per seed, a dot at each best epoch."""
    curves = [(e, v, b) for e, v, b in curves if len(e)]
    if not curves:
        return DASH
    epochs = [x for e, _, _ in curves for x in e]
    values = [y for _, v, _ in curves for y in v if y is not None and np.isfinite(y)]
    if not values:
        return DASH
    x0, x1 = min(epochs), max(max(epochs), min(epochs) + 1)
    y0, y1 = min(values), max(values)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5 * abs(y0 or 1) * 0.1, y1 + 0.5 * abs(y1 or 1) * 0.1
    pad = 3

    def px(x, y):
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad))

    parts = []
    for i, (e, v, best) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join("%.1f,%.1f" % px(x, y) for x, y in zip(e, v) if y is not None and np.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{points}"/>')
        if best in e:
            bx, by = px(best, v[e.index(best)])
            parts.append(f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="2.2" fill="{colour}"/>')
    title = (f"validation {CURVE_METRIC}, epochs {x0}-{max(epochs)}, range {min(values):.4f}-{max(values):.4f}; "
             f"dots: best epochs")
    return (f'<svg class="lgmrec-curve" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<title>{escape(title)}</title>{"".join(parts)}</svg>')


def _curves(rows: pd.DataFrame) -> list:
    curves = []
    for row in rows.sort_values("seed").to_dict("records"):
        history = read_history(row["path"]) if isinstance(row.get("path"), str) else []
        epochs = [h.get("epoch") for h in history if CURVE_METRIC in h]
        values = [h.get(CURVE_METRIC) for h in history if CURVE_METRIC in h]
        curves.append((epochs, values, row.get("best_epoch")))
    return curves


# ---------------------------------------------------------------------------- the appendix


def seed_order(profile) -> dict:
    seeds = list(dict.fromkeys(list(profile.seeds) + [profile.tuning_seed] + list(profile.ablation_seeds or ())
                               + list(profile.sensitivity_seeds or ())))
    return {seed: i for i, seed in enumerate(seeds)}


def variant_key(profile, experiment: str, model: str, variant: str) -> tuple:
    """Rows in the order of the design: models as in the paper's table, tuning points in grid
    order (MMRec's replicated point last), ablation variants as listed, sensitivity values by size."""
    from ..grids import ABLATIONS, PUBLISHED_VARIANT, SENSITIVITY_SYMBOLS, point_label

    model_rank = model_order().get(model, len(model_order()))
    if experiment == "tuning":
        labels = [point_label(p) for p in profile.tuning_points(model)]
        return (model_rank, labels.index(variant) if variant in labels else len(labels), variant)
    if experiment == "ablation":
        names = list(ABLATIONS)
        return (model_rank, names.index(variant) if variant in names else len(names), variant)
    if experiment == "sensitivity":
        parameter, _, value = variant.partition("=")
        names = list(SENSITIVITY_SYMBOLS)
        try:
            number = float(value)
        except ValueError:
            number = float("inf")
        return (names.index(parameter) if parameter in names else len(names), number, variant)
    return (model_rank, variant == PUBLISHED_VARIANT, variant)


def planned_and_done(ctx: BookContext) -> pd.DataFrame:
    """Every planned run (as far as the records determine the plan) with its record, if any."""
    if "planned_and_done" in ctx.cache:
        return ctx.cache["planned_and_done"]
    from ..collect import planned_specs

    keys = ["experiment", "variant", "dataset", "model", "seed"]
    planned = pd.DataFrame([{"experiment": s.experiment, "variant": s.variant, "dataset": s.dataset,
                             "model": s.model, "seed": s.seed, "parameter": s.parameter}
                            for s in planned_specs(ctx.profile, None, ctx.records)])
    planned = planned.drop_duplicates(keys)
    done = ctx.runs(None, include_failed=True).drop_duplicates(keys)
    merged = planned.merge(done.drop(columns=["parameter"]), on=keys, how="outer")
    merged["status"] = merged["status"].fillna("missing")
    ctx.cache["planned_and_done"] = merged
    return merged


def runs_overview(ctx: BookContext) -> Table:
    """Per dataset and experiment: runs planned, ok, failed, missing, with a link to the dataset's page."""
    frame = planned_and_done(ctx)
    rows = []
    for (dataset, experiment), part in frame.groupby(["dataset", "experiment"], sort=False):
        rows.append({"dataset": f'<a href="{escape(dataset)}.html">{escape(dataset)}</a>', "experiment": experiment,
                     "variants": part.drop_duplicates(["model", "variant"]).shape[0], "runs": len(part),
                     "ok": int((part["status"] == "ok").sum()), "failed": int((part["status"] == "failed").sum()),
                     "missing": int((part["status"] == "missing").sum())})
    table = pd.DataFrame(rows)
    order = {e: i for i, e in enumerate(EXPERIMENTS)}
    table = table.sort_values(["dataset", "experiment"], key=lambda s: s.map(order) if s.name == "experiment" else s)
    data = table.assign(dataset=[d.split(">")[1].split("<")[0] for d in table["dataset"]])
    return Table(table.set_index(["dataset", "experiment"]), "runs-overview", data=data, index=True,
                 caption="Runs of every experiment by dataset (the dataset's page lists each one)")


def runs_tables(ctx: BookContext, dataset: str) -> Tables:
    """One table per experiment of the dataset: one row per (model, variant)."""
    frame = planned_and_done(ctx)
    frame = frame[frame["dataset"] == dataset]
    out = Tables()
    executed = {u: p for u, p in executed_units(ctx.profile, ctx.store.root)}
    for experiment in EXPERIMENTS:
        part = frame[frame["experiment"] == experiment]
        if part.empty:
            continue
        rows, data = [], []
        keys = part.drop_duplicates(["model", "variant"])[["model", "variant"]].itertuples(index=False)
        for model, variant in sorted(keys, key=lambda k: variant_key(ctx.profile, experiment, k[0], k[1])):
            group = part[(part["model"] == model) & (part["variant"] == variant)]
            group = group.assign(_seed=group["seed"].map(seed_order(ctx.profile))).sort_values("_seed")
            ok = group[group["status"] == "ok"]
            counts = group["status"].value_counts()
            status = ", ".join(f"{status} {counts[status]}" for status in ("ok", "failed", "missing")
                               if status in counts)
            parameter = group["parameter"].dropna().iloc[0] if group["parameter"].notna().any() else None
            unit = unit_for(ctx.profile, experiment, dataset, model, parameter)
            link = (f'<a href="{escape(unit_page(unit))}.html">{escape(unit_name(unit))}</a>'
                    if unit in executed else "not executed")
            rows.append({"model": group["label"].dropna().iloc[0] if group["label"].notna().any() else model,
                         "variant": variant, "seeds": ", ".join(str(int(s)) for s in group["seed"]),
                         "status": status, "best epoch": fmt_range(ok["best_epoch"]),
                         "epochs run": fmt_range(ok["epochs_run"]),
                         "test R@20": fmt_num(ok["recall@20"].mean()) if len(ok) else DASH,
                         "validation R@20 per epoch": sparkline(_curves(group[group["status"] != "missing"])),
                         "notebook": link})
            for row in group.to_dict("records"):
                data.append({"experiment": experiment, "dataset": dataset, "model": model, "variant": variant,
                             "seed": row["seed"], "status": row["status"], "best_epoch": row.get("best_epoch"),
                             "epochs_run": row.get("epochs_run"), "recall@20": row.get("recall@20"),
                             "valid_recall@20": row.get("valid_recall@20"),
                             "notebook": f"{unit_page(unit)}.ipynb" if unit in executed else ""})
        shown = pd.DataFrame(rows)
        if experiment in ("ablation", "sensitivity"):
            shown = shown.drop(columns=["model"])
        elif experiment == "overall":
            shown = shown.drop(columns=["variant"]) if (shown["variant"] == shown["model"]).all() else shown
        shown = shown.set_index(shown.columns[0])
        out.append(Table(shown, f"runs-{dataset}-{experiment}", data=pd.DataFrame(data), index=True,
                         raw_columns=("validation R@20 per epoch", "notebook"),
                         caption=f"{dataset}, {experiment}: every variant's runs (curves: one line per seed, "
                                 f"dots at the best epochs)"))
    return out


# ---------------------------------------------------------------------------- tidy downloads


def tidy_runs(ctx: BookContext, experiment: str) -> pd.DataFrame:
    """Every run of an experiment (failed ones included), one row each: identity, config hash,
    hyperparameters (as written, ``param:`` columns), training settings (``train:``), metrics."""
    runs = ctx.runs(experiment, include_failed=True)
    if runs.empty:
        return runs
    base = ["experiment", "variant", "dataset", "model", "seed", "status", "error", "config_hash", "setting_key",
            "parameter", "value", "data_kind", "dataset_source", "dataset_fingerprint", "preset", "code_version",
            "best_epoch", "epochs_run", "train_seconds_per_epoch", "eval_seconds", "wall_seconds", "n_parameters",
            "peak_memory_mb", "written_at"]
    table = runs[[c for c in base if c in runs.columns]].copy()
    table["value"] = [_written_value(ctx, p, v) for p, v in zip(runs["parameter"], runs["value"])]
    for prefix, column in (("param: ", "model_params"), ("train: ", "train")):
        dicts = list(runs[column])
        names = sorted({k for d in dicts for k in (d or {})})
        for name in names:
            table[prefix + name] = pd.Series([fmt_value(d.get(name)) if d and name in d else None for d in dicts],
                                             index=table.index, dtype=object)
    metrics = [c for c in runs.columns if "@" in c]
    for column in metrics:
        table[column] = runs[column]
    return table


def _written_value(ctx: BookContext, parameter, value):
    if parameter is None or (isinstance(parameter, float) and np.isnan(parameter)):
        return None
    for written in ctx.profile.sensitivity.get(parameter, ()):
        try:
            if float(written) == float(value):
                return fmt_value(written)
        except (TypeError, ValueError):
            pass
    return fmt_value(value)


def tidy_downloads(ctx: BookContext) -> Html:
    """Write one CSV per experiment (every run) and list the links."""
    paths = []
    for experiment in EXPERIMENTS:
        if experiment not in ctx.profile.experiments:
            continue
        table = tidy_runs(ctx, experiment)
        if table.empty:
            continue
        paths.append((f"{experiment}: {len(table)} runs (CSV)",
                      write_csv(table, f"runs-{ctx.profile.name}-{experiment}", index=False)))
    return download_links(paths)


__all__ = ["executed_units", "planned_and_done", "runs_overview", "runs_tables", "sparkline", "tidy_downloads",
           "tidy_runs", "unit_name", "unit_page"]
