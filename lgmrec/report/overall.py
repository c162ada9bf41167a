"""Chapters computed from the overall runs: the main table, its significance tests, sparsity
(users grouped by training interactions) and efficiency."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from .. import stats
from ..grids import PUBLISHED_VARIANT
from .context import MAIN_METRICS, TABLE_METRICS, BookContext, is_reference, metric_label, metrics_present, order_rows
from .contrasts import MDE_NOTE, contrast_cells, contrast_numbers, overall_contrasts
from .display import Table, Tables, fmt_mean_sd, fmt_p, fmt_short


def overall_summary(ctx: BookContext, metrics: Iterable[str] = TABLE_METRICS) -> pd.DataFrame:
    """Mean, sd and seeds per dataset and row (model, or LGMRec's as-published variant)."""
    runs = ctx.runs("overall")
    summary = stats.mean_std(runs, ["dataset", "model", "variant"], metrics_present(runs, metrics))
    return order_rows(summary)


def overall_tables(ctx: BookContext, metrics: Iterable[str] = TABLE_METRICS) -> Tables:
    """One table per dataset: mean ± sd over seeds, models as rows (best mean per column in bold)."""
    metrics = list(metrics)
    summary = overall_summary(ctx, metrics)
    out = Tables()
    for dataset, part in summary.groupby("dataset", sort=False):
        part = part.set_index("variant")
        shown = pd.DataFrame({metric_label(m): [fmt_mean_sd(a, b) for a, b in zip(part[f"{m} mean"], part[f"{m} std"])]
                              for m in metrics if f"{m} mean" in part}, index=part.index)
        shown.insert(0, "seeds", part["seeds"].astype(int))
        shown.index.name = "model"
        bold = pd.DataFrame(False, index=shown.index, columns=shown.columns)
        for m in metrics:
            if f"{m} mean" in part:
                bold.loc[part[f"{m} mean"].idxmax(), metric_label(m)] = True
        data = part.drop(columns=["dataset"]).rename_axis("variant").reset_index()
        seeds = sorted(set(part["seeds"].astype(int)))
        out.append(Table(shown, f"overall-{dataset}", bold=bold, data=data, index=True,
                         caption=f"{dataset}: test metrics, mean ± sd over {'/'.join(map(str, seeds))} seeds "
                                 f"(best mean per column in bold)"))
    return out


def overall_figure(ctx: BookContext, metric: str = "recall@20"):
    """Mean per model (bars) with the sd over seeds (lines), one panel per dataset."""
    import matplotlib.pyplot as plt

    summary = overall_summary(ctx, [metric])
    datasets = list(dict.fromkeys(summary["dataset"]))
    columns = max(1, min(3, len(datasets)))
    rows = int(np.ceil(len(datasets) / columns)) or 1
    labels = list(dict.fromkeys(summary["variant"]))
    height = 0.6 + 0.24 * len(labels)
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns + 1.4, height * rows + 0.8), squeeze=False,
                                sharey=True)
    for ax, dataset in zip(axes.flat, datasets):
        part = summary[summary["dataset"] == dataset].set_index("variant").reindex(labels)
        y = np.arange(len(labels))
        ax.barh(y, part[f"{metric} mean"], xerr=part[f"{metric} std"].fillna(0), color="#4c72b0",
                error_kw={"elinewidth": 1})
        ax.set_yticks(y, labels)
        if not ax.yaxis_inverted():  # shared axes: invert once
            ax.invert_yaxis()
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel(metric_label(metric))
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    figure.suptitle(f"{metric_label(metric)} by model (bars: mean, lines: sd over seeds) · {ctx.short_label()}",
                    fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


def significance_tables(ctx: BookContext, metrics: Iterable[str] = MAIN_METRICS) -> Tables:
    """Per dataset: the focal model (LGMRec by default) minus each baseline with 95 % intervals over users and seeds,
    Wilcoxon p over users and exact Wilcoxon p over seeds (both Holm-adjusted per dataset and
    metric over the baselines), with the smallest attainable exact p."""
    table = overall_contrasts(ctx, TABLE_METRICS)
    table = table[table["metric"].isin(list(metrics))]
    out = Tables()
    for dataset, part in table.groupby("dataset", sort=False):
        rows = []
        for row in part.to_dict("records"):
            cells = contrast_cells(row["contrast"], row["p users (Holm)"], row["p seeds (Holm)"])
            rows.append({"baseline": row["variant"], "metric": metric_label(row["metric"]),
                         f"{ctx.focal_label} − baseline": cells["difference"], "95% CI users": cells["95% CI users"],
                         "95% CI seeds": cells["95% CI seeds"], "p users (Holm)": cells["p users"],
                         "p seeds (Holm; min)": cells["p seeds (min)"], "MDE": cells["MDE"]})
        shown = pd.DataFrame(rows).set_index(["baseline", "metric"])
        first = part["contrast"].iloc[0]
        caption = (f"{dataset}: {ctx.focal_label} minus each baseline; {first.n_users} test users, {first.n_seeds} seeds "
                   f"(smallest attainable exact Wilcoxon p over {first.n_seeds} seeds: {fmt_p(first.p_seeds_min)})")
        out.append(Table(shown, f"significance-{dataset}", caption=caption, data=contrast_numbers(part), note=MDE_NOTE))
    return out


# ---------------------------------------------------------------------------- sparsity


def sparsity_models(ctx: BookContext, dataset: str, count: int = 2) -> list[str]:
    """The focal model and the ``count`` strongest baselines on a dataset (by mean Recall@20): variant labels."""
    runs = ctx.runs("overall")
    runs = runs[(runs["dataset"] == dataset) & (runs["variant"] != PUBLISHED_VARIANT)]
    focal = is_reference(runs, ctx.focal)
    baselines = runs[~focal].groupby("variant")["recall@20"].mean().sort_values(ascending=False)
    return list(dict.fromkeys(runs.loc[focal, "variant"])) + list(baselines.index[:count])


def sparsity_frame(ctx: BookContext, edges: Iterable[int] | None = None, count: int = 2) -> pd.DataFrame:
    runs = ctx.runs("overall")
    frames = []
    for dataset in runs["dataset"].unique():
        chosen = runs[(runs["dataset"] == dataset) & runs["variant"].isin(sparsity_models(ctx, dataset, count))]
        users = ctx.per_user(chosen)
        users["model"] = users["variant"]
        frames.append(stats.sparsity_groups(users, edges))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sparsity_tables(ctx: BookContext, edges: Iterable[int] | None = None) -> Tables:
    groups = sparsity_frame(ctx, edges)
    out = Tables()
    for dataset, part in groups.groupby("dataset", sort=False):
        models = sparsity_models(ctx, dataset)
        wide = part.pivot_table(index=["group", "users"], columns="model", values=list(MAIN_METRICS), observed=True)
        wide = wide.reindex(columns=[(m, v) for m in MAIN_METRICS for v in models if (m, v) in wide.columns])
        wide.columns = pd.MultiIndex.from_tuples([(metric_label(m), v) for m, v in wide.columns])
        out.append(Table(wide.round(4), f"sparsity-{dataset}", data=part,
                         caption=f"{dataset}: mean per-user metric by training interactions of the user "
                                 f"(users averaged within a seed, then seeds)"))
    return out


def sparsity_figure(ctx: BookContext, metric: str = "recall@20"):
    """Grouped bars per dataset: LGMRec and the strongest baselines by user activity group."""
    import matplotlib.pyplot as plt

    groups = sparsity_frame(ctx)
    datasets = list(dict.fromkeys(groups["dataset"]))
    columns = max(1, min(3, len(datasets)))
    rows = int(np.ceil(len(datasets) / columns)) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.6, 3.2 * rows + 0.5), squeeze=False)
    colours = ("#dd8452", "#4c72b0", "#55a868", "#8172b3")
    for ax, dataset in zip(axes.flat, datasets):
        part = groups[groups["dataset"] == dataset]
        models = [m for m in sparsity_models(ctx, dataset) if m in set(part["model"])]
        labels = list(dict.fromkeys(part.sort_values("group")["group"].astype(str)))
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            mine = part[part["model"] == model]
            values = mine.set_index(mine["group"].astype(str))[metric].reindex(labels)
            ax.bar(np.arange(len(labels)) + (i - (len(models) - 1) / 2) * width, values, width, label=model,
                   color=colours[i % len(colours)])
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set(title=dataset, xlabel="training interactions of the user", ylabel=metric_label(metric))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    figure.suptitle(f"{metric_label(metric)} by user activity · {ctx.short_label()}", fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------- efficiency


def efficiency_frame(ctx: BookContext) -> pd.DataFrame:
    runs = order_rows(ctx.runs("overall"))
    runs["memory above start (MB)"] = runs["peak_memory_mb"] - runs["baseline_memory_mb"]
    table = runs.groupby(["dataset", "variant"], sort=False).agg(
        parameters=("n_parameters", "first"),
        **{"s / epoch": ("train_seconds_per_epoch", "median"),
           "s / eval": ("eval_seconds", "median"),
           "best epoch": ("best_epoch", "mean"),
           "epochs": ("epochs_run", "mean"),
           "s / run": ("wall_seconds", "mean"),
           "peak MB": ("peak_memory_mb", "max"),
           "MB above start": ("memory above start (MB)", "max")},
    )
    return table.reset_index()


def efficiency_tables(ctx: BookContext) -> Tables:
    frame = efficiency_frame(ctx)
    out = Tables()
    for dataset, part in frame.groupby("dataset", sort=False):
        shown = part.drop(columns=["dataset"]).set_index("variant").rename_axis("model")
        digits = {"s / epoch": 3, "s / eval": 3, "best epoch": 1, "epochs": 1, "s / run": 1, "peak MB": 0,
                  "MB above start": 0}
        shown = shown.assign(**{column: shown[column].map(lambda v, d=d: fmt_short(v, d)).astype(object)
                                for column, d in digits.items()})
        out.append(Table(shown, f"efficiency-{dataset}", data=part,
                         caption=f"{dataset}: parameters, median seconds per training epoch and per evaluation, "
                                 f"mean best epoch / epochs run / seconds per run, memory (MB)"))
    return out


def efficiency_figure(ctx: BookContext):
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = order_rows(ctx.runs("overall"))
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.barplot(data=runs, y="variant", x="train_seconds_per_epoch", hue="dataset", ax=axes[0], errorbar=None)
    axes[0].set(xlabel="training seconds per epoch (median per run)", ylabel="")
    sns.scatterplot(data=runs, x="wall_seconds", y="recall@20", hue="variant", style="dataset", ax=axes[1])
    axes[1].set(xscale="log", xlabel="seconds per run (training + evaluation)", ylabel="Recall@20")
    axes[1].legend(fontsize=6, ncols=2, loc="lower right")
    figure.suptitle(ctx.short_label(), fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


def environment_table(ctx: BookContext) -> Table:
    """Where the runs ran: one row per distinct environment and code version."""
    rows = []
    for record in ctx.store.iter_records(ctx.profile.name):
        env = record.get("environment") or {}
        rows.append({"code version": record.get("code_version"), "python": env.get("python"),
                     "torch": env.get("torch"), "threads": env.get("torch_threads"),
                     "cpus": env.get("cpu_count"), "gpu": env.get("gpu"), "platform": env.get("platform")})
    frame = pd.DataFrame(rows)
    frame = frame.groupby(list(frame.columns), dropna=False).size().rename("runs").reset_index()
    return Table(frame, "environments", caption="Machines and code versions of the runs", index=False)


__all__ = ["efficiency_figure", "efficiency_tables", "environment_table", "overall_figure", "overall_summary",
           "overall_tables", "significance_tables", "sparsity_figure", "sparsity_tables"]
