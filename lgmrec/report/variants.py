"""LGMRec variants: the ablation (full model against each change) and the sensitivity curves.

Every seed the profile ran is used. The spread of a variant's mean is a 95 % interval: a t
interval over seeds where there are two or more, else a bootstrap over the test users (one seed
has no spread over seeds; the table says which)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from ..grids import ABLATIONS, SENSITIVITY_SYMBOLS
from .context import MAIN_METRICS, BookContext, metric_label
from .contrasts import MDE_NOTE, contrast_cells, contrast_numbers, variant_contrasts
from .display import NBSP, Html, Table, Tables, escape, fmt_num, fmt_range, fmt_value
from .claims import FULL_VARIANT


def mean_interval(matrix: pd.DataFrame) -> dict:
    """Mean of a users x seeds matrix with its 95 % interval (t over seeds, or users with one seed)."""
    if matrix.empty:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "seeds": 0, "interval": "–"}
    seed_means = matrix.mean(axis=0).to_numpy(float)
    if len(seed_means) >= 2:
        low, high = stats.t_interval(seed_means)
        basis = f"t over {len(seed_means)} seeds"
    else:
        low, high = stats.percentile_interval(stats.bootstrap_means(matrix.iloc[:, 0].to_numpy(float)))
        basis = f"bootstrap over {len(matrix)} users (1 seed)"
    return {"mean": float(matrix.mean(axis=1).mean()), "low": low, "high": high, "seeds": len(seed_means),
            "sd": float(np.std(seed_means, ddof=1)) if len(seed_means) >= 2 else np.nan, "interval": basis}


def _mean_cell(summary: dict) -> str:
    return f"{fmt_num(summary['mean'])} [{fmt_num(summary['low'])},{NBSP}{fmt_num(summary['high'])}]"


# ---------------------------------------------------------------------------- ablation


def not_run(ctx: BookContext, experiment: str) -> Html | None:
    """A note to show instead of an experiment's tables and figure when the results hold none of
    its runs (a profile file may leave the experiment out); None when they hold some."""
    from ..grids import units

    if experiment in ctx.profile.experiments and not ctx.runs(experiment).empty:
        return None
    if experiment not in ctx.profile.experiments:
        why = f"profile {ctx.profile.name} does not include the {experiment} experiment"
    elif not units(ctx.profile, experiment):
        why = f"profile {ctx.profile.name} defines no {experiment} runs"
    else:
        why = f"the results hold no {experiment} runs of profile {ctx.profile.name} yet"
    return Html(f'<p class="lgmrec-not-run"><b>Not run</b>: {escape(why)}.</p>')


def ablation_frame(ctx: BookContext, metrics=MAIN_METRICS) -> pd.DataFrame:
    runs = ctx.runs("ablation")
    rows = []
    for (dataset, variant), part in runs.groupby(["dataset", "variant"], sort=False):
        for metric in metrics:
            summary = mean_interval(ctx.user_matrix(part, metric))
            rows.append({"dataset": dataset, "variant": variant, "metric": metric, **summary,
                         "best epochs": fmt_range(part["best_epoch"]), "epochs run": fmt_range(part["epochs_run"])})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = {label: i for i, label in enumerate(ABLATIONS)}
    return frame.sort_values(["dataset", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s,
                             kind="stable").reset_index(drop=True)


def ablation_tables(ctx: BookContext, metrics=MAIN_METRICS) -> Tables | Html:
    """Per dataset: each variant's mean [95 % interval] and its difference from the full model
    with intervals over users and seeds; a "not run" note without ablation runs."""
    if (note := not_run(ctx, "ablation")) is not None:
        return note
    frame = ablation_frame(ctx, metrics)
    contrasts = variant_contrasts(ctx, "ablation", FULL_VARIANT, list(ABLATIONS), metrics)
    out = Tables()
    for dataset, part in frame.groupby("dataset", sort=False):
        rows = []
        for row in part.to_dict("records"):
            found = contrasts[(contrasts["dataset"] == dataset) & (contrasts["variant"] == row["variant"])
                              & (contrasts["metric"] == row["metric"])]
            cells = contrast_cells(found["contrast"].iloc[0]) if len(found) else {}
            rows.append({"variant": row["variant"], "metric": metric_label(row["metric"]),
                         "mean [95% CI]": _mean_cell(row),
                         "full − variant": cells.get("difference", "reference"),
                         "95% CI users": cells.get("95% CI users", "–"),
                         "95% CI seeds": cells.get("95% CI seeds", "–"),
                         "MDE": cells.get("MDE", "–")})
        shown = pd.DataFrame(rows).set_index(["variant", "metric"])
        bases = sorted(set(part["interval"]))
        data = part.merge(contrast_numbers(contrasts[contrasts["dataset"] == dataset]),
                          on=["dataset", "variant", "metric"], how="left")
        out.append(Table(shown, f"ablation-{dataset}", data=data,
                         caption=f"{dataset}: LGMRec variants (interval of the mean: {'; '.join(bases)})",
                         note=MDE_NOTE))
        epochs = part.drop_duplicates("variant").set_index("variant")[["seeds", "best epochs", "epochs run"]]
        out.append(Table(epochs, f"ablation-epochs-{dataset}",
                         caption=f"{dataset}: when each variant peaked and stopped (range over seeds)"))
    return out


def ablation_figure(ctx: BookContext, metric: str = "recall@20"):
    """Each variant's mean with its 95 % interval, per dataset (None without ablation runs)."""
    import matplotlib.pyplot as plt

    if not_run(ctx, "ablation") is not None:
        return None
    frame = ablation_frame(ctx, [metric])
    datasets = list(frame["dataset"].unique())
    figure, axes = plt.subplots(1, max(len(datasets), 1), figsize=(3.6 * max(len(datasets), 1) + 1, 3.4),
                                squeeze=False, sharey=True)
    for ax, dataset in zip(axes.flat, datasets):
        part = frame[frame["dataset"] == dataset].reset_index(drop=True)
        y = np.arange(len(part))
        ax.errorbar(part["mean"], y, xerr=[part["mean"] - part["low"], part["high"] - part["mean"]], fmt="o",
                    color="#55a868", ecolor="#333333", capsize=3)
        full = part.loc[part["variant"] == FULL_VARIANT, "mean"]
        if len(full):
            ax.axvline(full.iloc[0], color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(y, part["variant"])
        if not ax.yaxis_inverted():  # shared axes: invert once
            ax.invert_yaxis()
        ax.set(title=dataset, xlabel=f"{metric_label(metric)} (mean, 95% CI)")
    figure.suptitle(f"Ablation · {ctx.short_label()}", fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------- sensitivity


def sensitivity_frame(ctx: BookContext, metrics=MAIN_METRICS) -> pd.DataFrame:
    """Per dataset, parameter and value (as written in the grid): mean [95 % interval] per metric."""
    runs = ctx.runs("sensitivity")
    grid = ctx.profile.sensitivity
    rows = []
    for (dataset, parameter, variant), part in runs.groupby(["dataset", "parameter", "variant"], sort=False):
        value = part["value"].iloc[0]
        written = next((v for v in grid.get(parameter, ()) if _same(v, value)), value)
        for metric in metrics:
            summary = mean_interval(ctx.user_matrix(part, metric))
            rows.append({"dataset": dataset, "parameter": parameter, "symbol": SENSITIVITY_SYMBOLS.get(parameter),
                         "value": fmt_value(written), "x": float(value), "metric": metric, **summary})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = {name: i for i, name in enumerate(SENSITIVITY_SYMBOLS)}
    frame["_order"] = frame["parameter"].map(order)
    return frame.sort_values(["dataset", "_order", "x"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def sensitivity_tables(ctx: BookContext, metrics=MAIN_METRICS) -> Tables | Html:
    """Per dataset and parameter, each value's means; a "not run" note without sensitivity runs."""
    if (note := not_run(ctx, "sensitivity")) is not None:
        return note
    frame = sensitivity_frame(ctx, metrics)
    out = Tables()
    for (dataset, parameter), part in frame.groupby(["dataset", "parameter"], sort=False):
        rows = []
        for value, group in part.groupby("value", sort=False):
            entry = {"value": value, "seeds": int(group["seeds"].iloc[0])}
            for row in group.to_dict("records"):
                entry[f"{metric_label(row['metric'])} [95% CI]"] = _mean_cell(row)
            rows.append(entry)
        shown = pd.DataFrame(rows).set_index("value").rename_axis(parameter)
        bases = "; ".join(sorted(set(part["interval"])))
        out.append(Table(shown, f"sensitivity-{dataset}-{parameter}", data=part.drop(columns=["x"]),
                         caption=f"{dataset}: {SENSITIVITY_SYMBOLS.get(parameter, parameter)} (interval: {bases})"))
    return out


def sensitivity_figure(ctx: BookContext, metrics=MAIN_METRICS):
    """One panel per hyperparameter: mean and 95 % interval per value; log x for A and lambda_cl
    (None without sensitivity runs: the tables say so)."""
    import matplotlib.pyplot as plt

    if not_run(ctx, "sensitivity") is not None:
        return None
    frame = sensitivity_frame(ctx, metrics)
    parameters = [p for p in SENSITIVITY_SYMBOLS if p in set(frame["parameter"])]
    columns = min(3, max(len(parameters), 1))
    rows = int(np.ceil(len(parameters) / columns)) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False)
    colours = {m: c for m, c in zip(metrics, ("#4c72b0", "#dd8452", "#55a868", "#c44e52"))}
    for ax, parameter in zip(axes.flat, parameters):
        part = frame[frame["parameter"] == parameter]
        if parameter == "cl_weight":
            ax.set_xscale("symlog", linthresh=1e-6)
        elif parameter == "hyper_num":
            ax.set_xscale("log", base=2)
        for (dataset, metric), line in part.groupby(["dataset", "metric"], sort=False):
            ax.plot(line["x"], line["mean"], marker="o", markersize=3, color=colours[metric],
                    label=f"{metric_label(metric)} · {dataset}")
            ax.fill_between(line["x"], line["low"], line["high"], color=colours[metric], alpha=0.2)
        ax.set_title(SENSITIVITY_SYMBOLS[parameter], fontsize=10)
        ax.set_xlabel(parameter)
    for ax in list(axes.flat)[len(parameters):]:
        ax.set_visible(False)
    if parameters:
        axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"LGMRec sensitivity (bands: 95% CI) · {ctx.short_label()}", fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


__all__ = ["ablation_figure", "ablation_tables", "sensitivity_figure", "sensitivity_tables"]
