"""Tables and figures of the book's chapters, computed from the results store.

The notebooks under ``book/`` only pick a profile and call these functions, so every number in
the book comes from here and can be recomputed outside a notebook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import DataError
from .grids import ABLATIONS, SENSITIVITY_SYMBOLS, Profile, get_profile
from .results import ResultStore, read_per_user_file
from . import stats

PROFILE_ENV = "LGMREC_PROFILE"
MAIN_METRICS = ("recall@20", "ndcg@20")
METRIC_LABELS = {"recall@10": "Recall@10", "recall@20": "Recall@20", "ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20"}
DATA_LABELS = {
    "synthetic": "SYNTHETIC data (lgmrec.synthetic; not the Amazon datasets, not comparable with the paper)",
    "real": "the released Amazon datasets (verified against the published statistics)",
    "folder": "a user-supplied dataset folder (unverified)",
}


def model_labels() -> dict[str, str]:
    from .grids import available_models
    from .models import get_model_spec

    return {name: get_model_spec(name).label for name in available_models()}


@dataclass
class BookContext:
    """The profile and results a chapter reads (``None``: ``$LGMREC_PROFILE`` / ``$LGMREC_RESULTS_DIR``)."""

    profile: Profile
    store: ResultStore

    @classmethod
    def create(cls, profile: str | None = None, results: str | None = None) -> "BookContext":
        name = profile or os.environ.get(PROFILE_ENV) or "embedded"
        context = cls(get_profile(name), ResultStore(results))
        if context.records.empty:
            raise DataError(
                f"{context.store.root / name}: no results for profile '{name}'; run "
                f"`python -m lgmrec grid --profile {name}` first"
            )
        return context

    @cached_property
    def records(self) -> pd.DataFrame:
        return self.store.load(self.profile.name)

    def runs(self, experiment: str, include_failed: bool = False) -> pd.DataFrame:
        from .collect import collect

        runs = collect(self.profile, experiment, include_failed=include_failed, records=self.records)
        runs["label"] = runs["model"].map(model_labels())
        return runs

    def per_user(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Per-user rows of the given runs, with dataset, model and seed columns."""
        frames = []
        for _, row in runs.drop_duplicates("path").iterrows():
            frame = read_per_user_file(row["path"], row["per_user_sha256"])
            frames.append(frame.assign(dataset=row["dataset"], model=row["model"], seed=row["seed"]))
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ provenance
    def data_statement(self) -> str:
        kinds = sorted(self.records["data_kind"].dropna().unique())
        datasets = ", ".join(sorted(self.records["dataset"].unique()))
        lines = [f"**Profile `{self.profile.name}`** ({self.profile.description}). Datasets: {datasets}."]
        lines += [f"Every number on this page comes from {DATA_LABELS.get(k, k)}." for k in kinds]
        return "\n\n".join(lines)

    def progress(self) -> pd.DataFrame:
        from .collect import progress_table

        return progress_table(self.profile, records=self.records)


def _order_models(frame: pd.DataFrame, column: str = "model") -> pd.DataFrame:
    from .models import MODEL_MODULES

    order = {name: i for i, name in enumerate(MODEL_MODULES)}
    return frame.sort_values(column, key=lambda s: s.map(order).fillna(len(order)), kind="stable")


def _metrics_present(frame: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    return [m for m in metrics if m in frame.columns]


# ---------------------------------------------------------------------------- overall


def overall_summary(ctx: BookContext, metrics: Iterable[str] = stats.TABLE_METRICS) -> pd.DataFrame:
    runs = ctx.runs("overall")
    summary = stats.mean_std(runs, ["dataset", "model", "label"], _metrics_present(runs, metrics))
    return _order_models(summary)


def overall_table(ctx: BookContext, metrics: Iterable[str] = stats.TABLE_METRICS):
    """Mean ± std over seeds, models as rows, (dataset, metric) as columns; best value in bold."""
    summary = overall_summary(ctx, metrics)
    metrics = [m for m in metrics if f"{m} mean" in summary.columns]
    text, best = {}, {}
    for dataset, part in summary.groupby("dataset", sort=False):
        for metric in metrics:
            column = (dataset, METRIC_LABELS.get(metric, metric))
            text[column] = pd.Series(
                [stats.format_mean_std(m, s) for m, s in zip(part[f"{metric} mean"], part[f"{metric} std"])],
                index=part["label"].to_numpy())
            best[column] = part.set_index("label")[f"{metric} mean"].idxmax()
    table = pd.DataFrame(text)
    table.index.name = "model"
    table = table.reindex(summary["label"].drop_duplicates())

    def bold_best(column: pd.Series) -> list[str]:
        return ["font-weight: bold" if label == best[column.name] else "" for label in column.index]

    seeds = int(summary["seeds"].max()) if len(summary) else 0
    return table.style.apply(bold_best).set_caption(
        f"Test metrics, mean ± std over {seeds} seeds (best per column in bold)")


def overall_figure(ctx: BookContext, metric: str = "recall@20"):
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = _order_models(ctx.runs("overall"))
    grid = sns.catplot(data=runs, x="label", y=metric, col="dataset", kind="bar", errorbar="sd",
                       height=3.2, aspect=1.3, sharey=False, color="#4c72b0")
    grid.set_axis_labels("", METRIC_LABELS.get(metric, metric))
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=60)
    grid.figure.suptitle(f"{METRIC_LABELS.get(metric, metric)} by model (bars: mean, lines: std over seeds)", y=1.04)
    plt.close(grid.figure)
    return grid.figure


def significance_tables(ctx: BookContext, metrics: Iterable[str] = MAIN_METRICS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(across seeds, across users) tests of LGMRec against every baseline, Holm-adjusted."""
    runs = ctx.runs("overall")
    by_seed = stats.paired_seed_tests(runs, metrics)
    by_user = stats.per_user_tests(runs, lambda row: read_per_user_file(row["path"], row["per_user_sha256"]), metrics)
    labels = model_labels()
    for table in (by_seed, by_user):
        if not table.empty:
            table["model"] = table["model"].map(labels)
    return _round(by_seed), _round(by_user)


def _round(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    table = table.copy()
    for column in table.columns:
        if column.endswith("p") or "(Holm)" in column:
            table[column] = table[column].map(lambda p: f"{p:.2e}" if pd.notna(p) else "–")
        elif table[column].dtype == float:
            table[column] = table[column].round(digits)
    return table


# ---------------------------------------------------------------------------- ablation


def ablation_table(ctx: BookContext, metrics: Iterable[str] = MAIN_METRICS) -> pd.DataFrame:
    runs = ctx.runs("ablation")
    metrics = _metrics_present(runs, metrics)
    summary = stats.mean_std(runs, ["dataset", "variant"], metrics)
    full = summary[summary["variant"] == "LGMRec"].set_index("dataset")
    epochs = runs.groupby(["dataset", "variant"])[["best_epoch", "epochs_run"]].mean()
    rows = []
    for _, row in summary.iterrows():
        best, run = epochs.loc[(row["dataset"], row["variant"])]
        entry = {"dataset": row["dataset"], "variant": row["variant"], "seeds": row["seeds"],
                 "epochs (best / run)": f"{best:.0f} / {run:.0f}"}
        for metric in metrics:
            entry[METRIC_LABELS[metric]] = stats.format_mean_std(row[f"{metric} mean"], row[f"{metric} std"])
            reference = full[f"{metric} mean"].get(row["dataset"], np.nan)
            entry[f"{METRIC_LABELS[metric]} vs full"] = f"{100 * (row[f'{metric} mean'] / reference - 1):+.1f} %"
        rows.append(entry)
    table = pd.DataFrame(rows)
    order = {label: i for i, label in enumerate(ABLATIONS)}
    table = table.sort_values(["dataset", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s)
    return table.set_index(["dataset", "variant"])


def ablation_figure(ctx: BookContext, metric: str = "recall@20"):
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = ctx.runs("ablation")
    grid = sns.catplot(data=runs, y="variant", x=metric, col="dataset", kind="bar", errorbar="sd",
                       order=list(ABLATIONS), height=3.4, aspect=1.1, sharex=False, color="#55a868")
    grid.set_axis_labels(METRIC_LABELS.get(metric, metric), "")
    grid.figure.suptitle(f"Ablation: {METRIC_LABELS.get(metric, metric)} of LGMRec variants", y=1.04)
    plt.close(grid.figure)
    return grid.figure


# ---------------------------------------------------------------------------- sensitivity


def sensitivity_frame(ctx: BookContext) -> pd.DataFrame:
    runs = ctx.runs("sensitivity")
    runs["parameter label"] = runs["parameter"].map(SENSITIVITY_SYMBOLS)
    runs["value"] = runs["value"].astype(float)
    return runs


def sensitivity_table(ctx: BookContext, metric: str = "recall@20") -> pd.DataFrame:
    runs = sensitivity_frame(ctx)
    table = runs.groupby(["dataset", "parameter label", "value"])[metric].agg(["mean", "std", "count"])
    return table.rename(columns={"mean": f"{METRIC_LABELS[metric]} mean", "std": "std", "count": "seeds"}).round(4)


def sensitivity_figure(ctx: BookContext, metrics: Iterable[str] = MAIN_METRICS):
    """One panel per hyperparameter; log-scaled x for hyper_num and cl_weight."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = sensitivity_frame(ctx)
    long = runs.melt(id_vars=["dataset", "parameter", "parameter label", "value", "seed"],
                     value_vars=list(metrics), var_name="metric", value_name="score")
    long["metric"] = long["metric"].map(METRIC_LABELS)
    parameters = [p for p in SENSITIVITY_SYMBOLS if p in set(runs["parameter"])]
    columns = min(4, len(parameters))
    rows = int(np.ceil(len(parameters) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False)
    for ax, parameter in zip(axes.flat, parameters):
        part = long[long["parameter"] == parameter].copy()
        if parameter == "cl_weight":  # 0 and powers of ten: plot on a symlog axis
            ax.set_xscale("symlog", linthresh=1e-6)
        elif parameter == "hyper_num":
            ax.set_xscale("log", base=2)
        sns.lineplot(data=part, x="value", y="score", hue="metric", style="dataset", marker="o",
                     errorbar="sd", ax=ax, legend=ax is axes.flat[0])
        ax.set_title(SENSITIVITY_SYMBOLS[parameter], fontsize=10)
        ax.set_xlabel(parameter)
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(parameters):]:
        ax.set_visible(False)
    figure.suptitle("LGMRec sensitivity (other hyperparameters at the dataset's preset values)")
    figure.tight_layout()
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------- sparsity


def strongest_baselines(ctx: BookContext, count: int = 2, metric: str = "recall@20") -> list[str]:
    summary = overall_summary(ctx, [metric])
    baselines = summary[summary["model"] != stats.REFERENCE_MODEL]
    mean = baselines.groupby("model")[f"{metric} mean"].mean().sort_values(ascending=False)
    return list(mean.index[:count])


def sparsity_table(ctx: BookContext, baselines: int = 2, edges: Iterable[int] | None = None) -> pd.DataFrame:
    """Per dataset and group of users by training interactions: LGMRec vs the strongest baselines."""
    models = [stats.REFERENCE_MODEL] + strongest_baselines(ctx, baselines)
    runs = ctx.runs("overall")
    runs = runs[runs["model"].isin(models)]
    groups = stats.sparsity_groups(ctx.per_user(runs), edges)
    groups["model"] = groups["model"].map(model_labels())
    wide = groups.pivot_table(index=["dataset", "group", "users"], columns="model",
                              values=list(MAIN_METRICS), observed=True)
    wide.columns = [f"{METRIC_LABELS[m]} {label}" for m, label in wide.columns]
    return wide.round(4)


def sparsity_figure(ctx: BookContext, baselines: int = 2, metric: str = "recall@20"):
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = [stats.REFERENCE_MODEL] + strongest_baselines(ctx, baselines)
    runs = ctx.runs("overall")
    groups = stats.sparsity_groups(ctx.per_user(runs[runs["model"].isin(models)]))
    groups["model"] = groups["model"].map(model_labels())
    grid = sns.catplot(data=groups, x="group", y=metric, hue="model", col="dataset", kind="bar",
                       height=3.2, aspect=1.2, sharey=False, sharex=False)
    grid.set_axis_labels("training interactions of the user", METRIC_LABELS[metric])
    grid.figure.suptitle(f"{METRIC_LABELS[metric]} by user activity (test users grouped)", y=1.04)
    plt.close(grid.figure)
    return grid.figure


# ---------------------------------------------------------------------------- efficiency


def efficiency_table(ctx: BookContext) -> pd.DataFrame:
    runs = _order_models(ctx.runs("overall"))
    runs["memory above start (MB)"] = runs["peak_memory_mb"] - runs["baseline_memory_mb"]
    table = runs.groupby(["dataset", "label"], sort=False).agg(
        parameters=("n_parameters", "first"),
        **{"s / epoch (median)": ("train_seconds_per_epoch", "median"),
           "s / evaluation": ("eval_seconds", "median"),
           "best epoch (mean)": ("best_epoch", "mean"),
           "epochs run (mean)": ("epochs_run", "mean"),
           "s / run (mean)": ("wall_seconds", "mean"),
           "peak RSS (MB)": ("peak_memory_mb", "max"),
           "memory above start (MB)": ("memory above start (MB)", "max")},
    )
    table.index.names = ["dataset", "model"]
    return table.round(3)


def efficiency_figure(ctx: BookContext):
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = _order_models(ctx.runs("overall"))
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.barplot(data=runs, y="label", x="train_seconds_per_epoch", hue="dataset", ax=axes[0], errorbar=None)
    axes[0].set(xlabel="training seconds per epoch (median per run)", ylabel="")
    sns.scatterplot(data=runs, x="wall_seconds", y="recall@20", hue="label", style="dataset", ax=axes[1])
    axes[1].set(xscale="log", xlabel="seconds per run (training + evaluation)", ylabel="Recall@20")
    axes[1].legend(fontsize=7, ncols=2, loc="lower right")
    figure.tight_layout()
    plt.close(figure)
    return figure


def environment_table(ctx: BookContext) -> pd.DataFrame:
    """Where the runs ran: one row per distinct environment and code version."""
    rows = []
    for record in ctx.store.iter_records(ctx.profile.name):
        env = record.get("environment") or {}
        rows.append({"code version": record.get("code_version"), "python": env.get("python"),
                     "torch": env.get("torch"), "threads": env.get("torch_threads"),
                     "cpus": env.get("cpu_count"), "gpu": env.get("gpu"), "platform": env.get("platform")})
    frame = pd.DataFrame(rows)
    return frame.groupby(list(frame.columns), dropna=False).size().rename("runs").reset_index()


# ---------------------------------------------------------------------------- reported vs reproduced


def reported_table(ctx: BookContext) -> pd.DataFrame:
    from .reference import read_reference

    table = stats.reported_vs_reproduced(ctx.runs("overall"), read_reference("reported"), model_labels())
    if table.empty:
        return table
    table["metric"] = table["metric"].map(METRIC_LABELS)
    table["delta %"] = table["delta %"].map(lambda d: f"{d:+.1f}" if pd.notna(d) else "n/a")
    columns = ["dataset", "data", "model", "metric", "reproduced", "seeds", "reported", "reported by", "delta %", "verdict"]
    return table[columns].set_index(["dataset", "model", "metric"])


def reported_figure(ctx: BookContext, metric: str = "recall@20"):
    """Reproduced mean next to each published number, per dataset family; synthetic marked."""
    import matplotlib.pyplot as plt
    from .reference import read_reference

    table = stats.reported_vs_reproduced(ctx.runs("overall"), read_reference("reported"), model_labels(), [metric])
    figure, ax = plt.subplots(figsize=(8, 0.35 * max(len(table), 6) + 1.2))
    if not table.empty:
        table = table.reset_index(drop=True)
        names = table["model"] + " · " + table["dataset"] + " · " + table["source id"]
        y = np.arange(len(table))
        ax.scatter(table["reported"], y, marker="s", color="#333333", label="reported")
        synthetic = table["data"].str.startswith("synthetic")
        ax.scatter(table.loc[~synthetic, "reproduced mean"], y[~synthetic], color="#c44e52", label="reproduced (real data)")
        ax.scatter(table.loc[synthetic, "reproduced mean"], y[synthetic], facecolors="none", edgecolors="#8172b2",
                   label="reproduced on SYNTHETIC data (not comparable)")
        ax.set_yticks(y, names, fontsize=7)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(METRIC_LABELS[metric])
    ax.set_title(f"{METRIC_LABELS[metric]}: published vs this suite")
    figure.tight_layout()
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------- methods


def provenance_table(ctx: BookContext) -> pd.DataFrame:
    """Which data and which LGMRec options produced the numbers of each experiment."""
    rows = []
    for experiment in ("overall", "ablation", "sensitivity"):
        runs = ctx.runs(experiment)
        if runs.empty:
            continue
        for (dataset, kind, source), part in runs.groupby(["dataset", "data_kind", "dataset_source"]):
            lgmrec = part[part["model"] == "lgmrec"]
            modes = sorted({p.get("eval_mode") for p in lgmrec["model_params"]} - {None})
            bugs = sorted({str(p.get("hyperedge_bug")) for p in lgmrec["model_params"]})
            rows.append({
                "experiment": experiment, "dataset": dataset, "data": kind, "source": source,
                "runs": len(part.drop_duplicates("path")),
                "LGMRec eval_mode": ", ".join(modes) or "–",
                "LGMRec hyperedge_bug": ", ".join(bugs) or "–",
                "max epochs / patience": ", ".join(sorted({f"{t['max_epochs']} / {t['patience']}" for t in part["train"]})),
                "code versions": ", ".join(sorted(part["code_version"].dropna().unique())),
            })
    return pd.DataFrame(rows).set_index(["experiment", "dataset"])


def data_figure(ctx: BookContext):
    """Training interactions per test user, per dataset (from one LGMRec run's per-user file)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = ctx.runs("overall")
    runs = runs[runs["model"] == stats.REFERENCE_MODEL].sort_values("seed").drop_duplicates("dataset")
    users = ctx.per_user(runs)
    figure, ax = plt.subplots(figsize=(7, 3))
    sns.histplot(data=users, x="n_train", hue="dataset", element="step", stat="density", common_norm=False,
                 discrete=True, ax=ax)
    ax.set(xlabel="training interactions of a test user", xlim=(0, float(users["n_train"].quantile(0.99)) + 1))
    ax.set_title("Users evaluated on test, by activity")
    figure.tight_layout()
    plt.close(figure)
    return figure


def history_figure(record: dict):
    """Training loss and validation Recall@20 per epoch of one run record."""
    import matplotlib.pyplot as plt

    history = pd.DataFrame(record.get("history") or [])
    figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    if not history.empty:
        axes[0].plot(history["epoch"], history["loss"], marker=".")
        metric = next((c for c in history.columns if c not in ("epoch", "loss")), None)
        if metric:
            axes[1].plot(history["epoch"], history[metric], marker=".")
            axes[1].axvline(record.get("best_epoch") or 0, color="grey", linestyle="--", label="best epoch")
            axes[1].legend()
            axes[1].set(ylabel=f"validation {metric}")
    axes[0].set(xlabel="epoch", ylabel="training loss (sum over batches)")
    axes[1].set(xlabel="epoch")
    figure.suptitle(f"{record['model']} on {record['dataset']}, seed {record['seed']}: {record['status']}")
    figure.tight_layout()
    plt.close(figure)
    return figure


def protocol_table(ctx: BookContext) -> pd.DataFrame:
    """The profile's sizes: seeds, epochs, datasets and sensitivity points."""
    p = ctx.profile
    rows = [
        ("datasets", ", ".join(p.datasets)),
        ("data", p.data),
        ("seeds (overall)", ", ".join(map(str, p.seeds))),
        ("seeds (ablation)", ", ".join(map(str, p.ablation_seeds or p.seeds))),
        ("seeds (sensitivity)", ", ".join(map(str, p.sensitivity_seeds or p.seeds))),
        ("training overrides", ", ".join(f"{k}={v}" for k, v in p.train.items())),
        ("sensitivity points", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in p.sensitivity.items())),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")


__all__ = [name for name in dir() if name.endswith(("_table", "_figure", "_tables")) or name in ("BookContext",)]
