"""Reported vs reproduced: what can be compared with the published numbers.

- Real data (the released Amazon files): every reproduced mean next to every published number
  for the same dataset, model and metric, with Delta %; the paper's LGMRec row is compared with
  the "LGMRec (as published)" row where the profile trains one (the hyperedge-bug code behind
  the paper), the authors' post-fix rerun with the fixed LGMRec.
- Synthetic data: absolute numbers are not comparable, so the chapter compares the ranking of the
  models and each model's score relative to a reference model (LightGCN = 1.0) with the same
  ratios computed from the published record (:func:`lgmrec.literature.published`: the median of
  each model's independent published values, verified ones first; each row says how many sources
  stand behind it), with Spearman's and Kendall's rank correlations; the absolute published
  numbers appear only as a separate reference table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from ..grids import PUBLISHED_VARIANT
from ..models import DATASET_FAMILIES as FAMILIES, dataset_family
from .context import MAIN_METRICS, TABLE_METRICS, BookContext, metric_label, model_labels, order_rows
from .display import NBSP, Html, Table, Tables, escape, fmt_p

RECORD_SOURCE = "published-record"  # the published record's value, as a source of reported_tables
PAPER_SOURCES = ("paper-table2", "official-log-2023-08-12")  # produced by the hyperedge-bug code
FIXED_SOURCES = ("author-rerun-after-fix",)
REFERENCE_MODELS = ("LightGCN", "BPR")


def reported() -> pd.DataFrame:
    from ..reference import read_reference

    return read_reference("reported")


def published_for(family: str, metric: str) -> pd.DataFrame:
    """One published value per model for a dataset family and metric, from the published record:
    value, verified (only verified values used), values (distinct independent values behind it),
    sources (the sources printing them, copies included), source ids."""
    from .. import literature

    rows = {}
    if family in FAMILIES and metric in literature.METRICS:
        for model in literature.read_registry()["model"].unique():
            found = literature.published(family, model, metric)
            if found is not None:
                rows[model] = {"value": found.value, "verified": found.verified, "values": found.n_values,
                               "sources": found.n_sources, "source ids": " ".join(found.sources)}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "verified", "values", "sources",
                                                                  "source ids"])
    frame.index.name = "model"
    return frame


def support_text(row: pd.Series) -> str:
    """How many sources stand behind a published value, for a table cell."""
    values = f"{row['values']} independent value{'s' if row['values'] != 1 else ''}"
    return f"{row['sources']} source{'s' if row['sources'] != 1 else ''} ({values}{', verified' if row['verified'] else ''})"


def printed_by(family: str | None, model: str, metric: str, value: float) -> str:
    """How many sources of the published record print this value, for a table cell."""
    from .. import literature

    if family not in FAMILIES or metric not in literature.METRICS:
        return "not in the published record (Recall@20, NDCG@20 only)"
    table = literature.lineage()
    table = table[(table["family"] == family) & (table["model"] == model)]
    n = int((table[metric].round(6) == round(float(value), 6)).sum())
    return f"{n} source{'s' if n != 1 else ''} of the published record print it"


def record_reported() -> pd.DataFrame:
    """The published record's value of every model, in the shape of the ``reported`` table."""
    rows = []
    for family in FAMILIES:
        for metric in MAIN_METRICS:
            frame = published_for(family, metric)
            rows += [{"dataset": family, "model": model, "metric": metric, "value": row["value"],
                      "source": RECORD_SOURCE, "support": support_text(row)} for model, row in frame.iterrows()]
    return pd.DataFrame(rows)


def reproduced_means(ctx: BookContext, dataset: str, metric: str) -> pd.Series:
    """Mean over seeds per row label; LGMRec stands for the as-published variant where there is one."""
    runs = ctx.runs("overall")
    runs = runs[runs["dataset"] == dataset]
    means = order_rows(runs).groupby("variant", sort=False)[metric].mean()
    if PUBLISHED_VARIANT in means.index:
        means = means.drop("LGMRec", errors="ignore").rename({PUBLISHED_VARIANT: "LGMRec"})
    return means


def ranking_frame(ctx: BookContext, dataset: str, metric: str) -> tuple[pd.DataFrame, str | None]:
    """Per model with a published number: reproduced and published scores relative to the
    reference model, and their ranks among those models."""
    family = dataset_family(dataset)
    if family is None:
        return pd.DataFrame(), None
    means = reproduced_means(ctx, dataset, metric)
    published = published_for(family, metric)
    common = [m for m in means.index if m in published.index]
    reference = next((m for m in REFERENCE_MODELS if m in common), None)
    if reference is None:
        return pd.DataFrame(), None
    frame = pd.DataFrame({
        "reproduced": means[common], "reproduced ratio": means[common] / means[reference],
        "published": published.loc[common, "value"].astype(float),
        "published ratio": published.loc[common, "value"].astype(float) / float(published.loc[reference, "value"]),
        "verified": published.loc[common, "verified"].astype(bool),
        "sources": published.loc[common, "sources"], "values": published.loc[common, "values"],
        "source ids": published.loc[common, "source ids"],
    })
    frame["reproduced rank"] = frame["reproduced ratio"].rank(ascending=False, method="min").astype(int)
    frame["published rank"] = frame["published ratio"].rank(ascending=False, method="min").astype(int)
    frame.index.name = "model"
    return frame, reference


def agreement_line(frame: pd.DataFrame) -> str:
    parts = []
    for name, subset in (("all models", frame), ("verified values only", frame[frame["verified"]])):
        result = stats.rank_agreement(subset["reproduced ratio"], subset["published ratio"])
        if result["n"] < 3 or np.isnan(result["spearman"]):
            parts.append(f"{name}: n = {result['n']}, too few models to rank")
        else:
            parts.append(f"{name}: Spearman ρ = {result['spearman']:.2f} (p = {fmt_p(result['spearman p'])}), "
                         f"Kendall τ = {result['kendall']:.2f} (p = {fmt_p(result['kendall p'])}), n = {result['n']}")
    return "; ".join(parts)


def agreement_frame(ctx: BookContext, metrics=MAIN_METRICS) -> pd.DataFrame:
    rows = []
    for dataset in ctx.profile.datasets:
        for metric in metrics:
            frame, reference = ranking_frame(ctx, dataset, metric)
            if frame.empty:
                continue
            for name, subset in (("all", frame), ("verified", frame[frame["verified"]])):
                rows.append({"dataset": dataset, "metric": metric, "sources": name, "reference": reference,
                             **stats.rank_agreement(subset["reproduced ratio"], subset["published ratio"])})
    return pd.DataFrame(rows)


def ranking_tables(ctx: BookContext, metrics=MAIN_METRICS) -> Tables:
    out = Tables()
    for dataset in ctx.profile.datasets:
        for metric in metrics:
            frame, reference = ranking_frame(ctx, dataset, metric)
            if frame.empty:
                out.append(Html(f"<p>{escape(dataset)}, {metric_label(metric)}: no published numbers for this "
                                f"dataset family and the profile's models, or no reference model (LightGCN / BPR).</p>"))
                continue
            shown = pd.DataFrame({
                "reproduced ratio": frame["reproduced ratio"].map(lambda v: f"{v:.3f}"),
                "rank": frame["reproduced rank"],
                "published ratio": frame["published ratio"].map(lambda v: f"{v:.3f}"),
                "published rank": frame["published rank"],
                "published value": frame["published"].map(lambda v: f"{v:.4f}"),
                "behind it": frame.apply(support_text, axis=1),
            }, index=frame.index)
            out.append(Table(shown, f"ranking-{dataset}-{metric}", data=frame.reset_index(),
                             caption=f"{dataset} (synthetic) vs published {dataset_family(dataset)}: "
                                     f"{metric_label(metric)} relative to {reference} = 1.0",
                             note=f"Published ratio: the published record's value (median of a model's independent "
                                  f"published values, verified ones first; see The published record) over "
                                  f"{reference}'s. Rank agreement: {agreement_line(frame)} (p: permutation test)"))
    return out


def published_reference_tables(ctx: BookContext) -> Tables:
    """The published record's values on the dataset families the profile mimics (reference only)."""
    out = Tables()
    families = list(dict.fromkeys(f for f in map(dataset_family, ctx.profile.datasets) if f))
    labels = model_labels()
    for family in families:
        parts = []
        for metric in MAIN_METRICS:
            frame = published_for(family, metric)
            frame = frame[frame.index.isin(set(labels[m] for m in ctx.profile.model_names))]
            parts.append(frame.assign(metric=metric_label(metric)))
        data = pd.concat(parts).reset_index()
        if data.empty:
            continue
        data["_model"] = data["model"].map({v: k for k, v in labels.items()})
        data = order_rows(data, "_model", None).drop(columns="_model")
        shown = pd.DataFrame({"model": data["model"], "metric": data["metric"],
                              "published value": data["value"].map(lambda v: f"{v:.4f}"),
                              "behind it": data.apply(support_text, axis=1)}).set_index(["model", "metric"])
        out.append(Table(shown, f"published-{family}", data=data,
                         caption=f"Published numbers on the Amazon {family} data, from the published record "
                                 f"(reference only: not comparable with synthetic numbers)"))
    return out


def reported_tables(ctx: BookContext) -> Tables:
    """Real data: absolute reproduced means next to the published numbers, Delta % and verdicts."""
    runs = ctx.runs("overall")
    record = record_reported()
    table = pd.concat([reported(), record.drop(columns="support")], ignore_index=True)
    support = {(r["dataset"], r["model"], r["metric"]): r["support"] for _, r in record.iterrows()}
    out = Tables()
    labels = model_labels()
    for dataset, part in runs.groupby("dataset", sort=False):
        pieces = []
        published_row = (part["variant"] == PUBLISHED_VARIANT).any()
        for variant, group in order_rows(part).groupby("variant", sort=False):
            sources = table
            if group["model"].iloc[0] == "lgmrec" and published_row:
                allowed = PAPER_SOURCES if variant == PUBLISHED_VARIANT else FIXED_SOURCES
                sources = table[table["source"].isin(allowed)]
            elif group["model"].iloc[0] == "lgmrec":  # LGMRec's record is its range: the verdict says where it lies
                sources = table[table["source"] != RECORD_SOURCE]
            found = stats.reported_vs_reproduced(group, sources, labels, TABLE_METRICS)
            if len(found):
                # the 95 % t interval over seeds of the difference from each published number, in %
                intervals = [stats.t_interval(100.0 * (group[metric].to_numpy(float) / value - 1.0))
                             for metric, value in zip(found["metric"], found["reported"])]
                pieces.append(found.assign(model=variant, label=found["model"], **{"delta % low": [i[0] for i in intervals],
                                                             "delta % high": [i[1] for i in intervals]}))
        if not pieces:
            continue
        found = pd.concat(pieces, ignore_index=True)
        family = dataset_family(dataset)
        found["sources behind it"] = [
            support[(family, label, metric)] if source == RECORD_SOURCE else printed_by(family, label, metric, value)
            for label, metric, value, source in zip(found["label"], found["metric"], found["reported"],
                                                    found["source id"])]
        found["metric"] = found["metric"].map(metric_label)
        def delta(row) -> str:
            if pd.isna(row["delta %"]):
                return "n/a"
            text = f"{row['delta %']:+.1f}"
            if pd.notna(row["delta % low"]):
                text += f" [{row['delta % low']:+.1f},{NBSP}{row['delta % high']:+.1f}]"
            return text.replace("-", "−")

        shown = found.assign(**{"Δ % [95% CI]": found.apply(delta, axis=1)})
        shown = shown[["model", "metric", "reproduced", "reported", "reported by", "sources behind it", "Δ % [95% CI]",
                       "verdict"]]
        out.append(Table(shown.set_index(["model", "metric"]), f"reported-{dataset}", data=found,
                         caption=f"{dataset} ({found['data'].iloc[0]}): reproduced mean ± sd over "
                                 f"{int(found['seeds'].max())} seeds vs published"))
    return out


def comparison_tables(ctx: BookContext) -> Tables:
    """What can be compared: ranks and ratios on synthetic data, absolute values on real data."""
    if ctx.synthetic:
        return ranking_tables(ctx)
    return reported_tables(ctx)


def reported_figure(ctx: BookContext, metric: str = "recall@20"):
    """Synthetic: reproduced vs published ratios to the reference model; real: absolute values."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    if ctx.synthetic:
        for dataset in ctx.profile.datasets:
            frame, reference = ranking_frame(ctx, dataset, metric)
            if frame.empty:
                continue
            points = ax.scatter(frame["published ratio"], frame["reproduced ratio"], label=dataset)
            for model, row in frame.iterrows():
                ax.annotate(model, (row["published ratio"], row["reproduced ratio"]), fontsize=6,
                            color=points.get_facecolor()[0], xytext=(2, 2), textcoords="offset points")
        limits = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
        ax.plot(limits, limits, color="grey", linewidth=1, linestyle="--")
        ax.set(xlabel=f"published {metric_label(metric)} / published LightGCN",
               ylabel=f"reproduced {metric_label(metric)} / reproduced LightGCN (SYNTHETIC)")
    else:
        runs = ctx.runs("overall")
        for dataset in runs["dataset"].unique():
            means = reproduced_means(ctx, dataset, metric)
            published = published_for(dataset_family(dataset) or "", metric)
            common = [m for m in means.index if m in published.index]
            ax.scatter(published.loc[common, "value"], means[common], label=dataset)
            for model in common:
                ax.annotate(model, (published.loc[model, "value"], means[model]), fontsize=6)
        limits = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
        ax.plot(limits, limits, color="grey", linewidth=1, linestyle="--")
        ax.set(xlabel=f"published {metric_label(metric)}", ylabel=f"reproduced {metric_label(metric)}")
    ax.legend(fontsize=7)
    ax.set_title(f"{metric_label(metric)}: reproduced vs published · {ctx.short_label()}", fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure


__all__ = ["agreement_frame", "comparison_tables", "published_reference_tables", "ranking_frame", "ranking_tables", "reported_figure",
           "reported_tables"]
