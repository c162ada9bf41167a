"""The published record: what later papers print for the 14 models on the Amazon Baby, Sports and
Clothing files (:mod:`lgmrec.literature`), per dataset:

- every model's distinct published values, with the sources printing each (figure and table);
- the lineage of every cell (which source copies which) and the suspected transcription errors;
- the noise floor of the literature (how much independent runs of one model differ in print) and
  the paper's margin of LGMRec over the strongest published baseline next to it, in words.

Every number here is a published number on the Amazon data or computed from them; none comes from
this suite's runs, so the chapter is the same on every profile. The text for claim C5
(:func:`lgmrec_record_text`, :func:`placement_text`) is built here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import literature
from .context import metric_label
from .display import NBSP, Html, Table, Tables, escape, fmt_num, fmt_pct

FAMILIES = ("baby", "sports", "clothing")
FIGURE_METRIC = "recall@20"


def _labels() -> dict[str, str]:
    sources = literature.read_sources()
    return dict(zip(sources["source_id"], sources["label"]))


def _pct(fraction: float) -> str:
    """A signed relative difference (a margin) in %."""
    return fmt_pct(100 * fraction).replace("-", "−") if np.isfinite(fraction) else "n/a"


def _spread(fraction: float) -> str:
    """An unsigned relative range in %."""
    return f"{100 * fraction:.1f}{NBSP}%" if np.isfinite(fraction) else "n/a"


def _models(family: str) -> list[str]:
    """The registry's models on a dataset, LGMRec last (the order of the paper's table)."""
    table = literature.read_registry()
    models = list(dict.fromkeys(table.loc[table["family"] == family, "model"]))
    return [m for m in models if m != literature.MODEL] + ([literature.MODEL] if literature.MODEL in models else [])


# ---------------------------------------------------------------------------- overview


def record_summary() -> Html:
    """How big the record is and how much of it is copies, per dataset."""
    registry = literature.read_registry()
    table = literature.lineage()
    flags = literature.transcription_flags()
    verified = int((registry["verified"] == "yes").sum())
    parts = []
    for family in FAMILIES:
        part = table[table["family"] == family]
        parts.append(f"{family.capitalize()}: {len(part)} cells, {int((~part['independent']).sum())} copies of an "
                     f"earlier source, {int(part['independent'].sum())} independent, "
                     f"{int(part['flagged'].sum())} flagged as transcription errors")
    return Html(
        f"<p>The registry (<code>lgmrec/reference/literature.csv</code>) holds {len(registry)} published numbers "
        f"(Recall@20 and NDCG@20) from {registry['source_id'].nunique()} sources; {verified} of them were checked "
        f"against the source itself (the <code>verified_how</code> column says what was opened), the others were "
        f"read from result-table images or third-party transcriptions and may hold reading errors. "
        f"A <em>cell</em> is one source's pair (Recall@20, NDCG@20) for one model on one dataset. "
        f"{escape('; '.join(parts))}.</p>")


# ---------------------------------------------------------------------------- values


def values_frame(family: str, metric: str = FIGURE_METRIC) -> pd.DataFrame:
    """One row per model and distinct published value: value, sources printing it, flags."""
    labels = _labels()
    paper = literature.paper_value(family, metric)
    rows = []
    for model in _models(family):
        for _, row in literature.distinct_values(family, model, metric).iterrows():
            rows.append({"dataset": family, "model": model, "metric": metric, "value": row["value"],
                         "sources": int(row["n_sources"]),
                         "printed by": ", ".join(labels.get(s, s) for s in row["sources"]),
                         "source ids": " ".join(row["sources"]), "verified": row["verified"],
                         "secondary only": row["secondary"], "transcription error": row["flagged"],
                         "the paper's number": bool(model == literature.MODEL and paper is not None
                                                    and round(row["value"], 6) == round(paper, 6))})
    return pd.DataFrame(rows)


def values_tables(metrics=literature.METRICS) -> Tables:
    out = Tables()
    for family in FAMILIES:
        for metric in metrics:
            frame = values_frame(family, metric)
            if frame.empty:
                continue
            def status(row) -> str:
                marks = []
                if row["the paper's number"]:
                    marks.append("the LGMRec paper's number")
                if row["transcription error"]:
                    marks.append("suspected transcription error")
                if row["secondary only"]:
                    marks.append("secondary transcription only")
                marks.append("verified" if row["verified"] else "not verified")
                return "; ".join(marks)
            shown = pd.DataFrame({"model": frame["model"], "value": frame["value"].map(fmt_num),
                                  "sources": frame["sources"], "printed by": frame["printed by"],
                                  "status": frame.apply(status, axis=1)}).set_index(["model", "value"])
            out.append(Table(shown, f"published-values-{family}-{metric}", data=frame, index=True,
                             caption=f"Amazon {family.capitalize()}, {metric_label(metric)}: every distinct published "
                                     f"value per model and the sources printing it"))
    return out


ZOOM = 0.07  # the right panel shows values within ±7 % of the paper's LGMRec number


def values_figure(family: str, metric: str = FIGURE_METRIC):
    """One row per model, one mark per distinct published value, its area growing with the number of
    sources printing it; LGMRec's row highlighted, the paper's number ringed, suspected
    transcription errors crossed, values only known from secondary transcriptions hollow. The right
    panel zooms on the values within ±7 % of the paper's LGMRec number, where LGMRec's own values
    and the strongest baselines sit too close together to tell apart on the full scale."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    frame = values_frame(family, metric)
    models = _models(family)
    paper = literature.paper_value(family, metric)
    figure, axes = plt.subplots(1, 2 if paper else 1, figsize=(7.0, 0.32 * len(models) + 1.4), sharey=True,
                                gridspec_kw={"width_ratios": [3, 2]} if paper else None, squeeze=False)
    axes = axes[0]
    position = {m: i for i, m in enumerate(models)}
    for ax in axes:
        if literature.MODEL in position:
            ax.axhspan(position[literature.MODEL] - 0.45, position[literature.MODEL] + 0.45, color="#fde9c8",
                       zorder=0)
        for _, row in frame.iterrows():
            y = position[row["model"]]
            colour = "#d95f02" if row["model"] == literature.MODEL else ("#1b9e77" if row["verified"] else "#7570b3")
            size = 25 + 30 * row["sources"]
            if row["transcription error"]:
                ax.scatter(row["value"], y, s=size, marker="X", color="#e7298a", zorder=3)
            elif row["secondary only"]:
                ax.scatter(row["value"], y, s=size, facecolors="none", edgecolors=colour, zorder=3)
            else:
                ax.scatter(row["value"], y, s=size, color=colour, alpha=0.7, zorder=3)
            if row["the paper's number"]:
                ax.scatter(row["value"], y, s=size + 90, facecolors="none", edgecolors="black", linewidths=1.2,
                           zorder=4)
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(range(len(models)), models)
    for tick in axes[0].get_yticklabels():
        if tick.get_text() == literature.MODEL:
            tick.set_fontweight("bold")
    axes[0].set_ylim(len(models) - 0.5, -0.5)
    axes[0].set_xlabel(f"published {metric_label(metric)}, Amazon {family.capitalize()}", fontsize=8)
    if paper:
        axes[1].set_xlim(paper * (1 - ZOOM), paper * (1 + ZOOM))
        axes[1].axvline(paper, color="black", linewidth=0.6, linestyle=":")
        axes[1].set_xlabel(f"zoom: ±{100 * ZOOM:g} % of the paper's LGMRec number", fontsize=8)
    legend = [Line2D([], [], marker="o", linestyle="", color="#1b9e77", label="verified value"),
              Line2D([], [], marker="o", linestyle="", color="#7570b3", label="not verified"),
              Line2D([], [], marker="o", linestyle="", color="#d95f02", label="LGMRec"),
              Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
                     markersize=9, label="the LGMRec paper's number"),
              Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="#7570b3",
                     label="secondary transcription only"),
              Line2D([], [], marker="X", linestyle="", color="#e7298a", label="suspected transcription error")]
    figure.legend(handles=legend, fontsize=6, loc="lower center", ncol=3, frameon=False)
    figure.suptitle(f"Published {metric_label(metric)}, Amazon {family.capitalize()}: one mark per distinct value, "
                    f"area ∝ sources printing it", fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------- lineage


def lineage_tables() -> Tables:
    """Every cell with the source it copies (computed: the earliest earlier source printing the
    same pair), per dataset."""
    labels = _labels()
    table = literature.lineage()
    out = Tables()
    for family in FAMILIES:
        part = table[table["family"] == family].copy()
        part["model"] = pd.Categorical(part["model"], _models(family), ordered=True)
        part = part.sort_values(["model", "order"])
        shown = pd.DataFrame({
            "model": part["model"].astype(str), "source": part["source_id"].map(labels),
            "Recall@20": part["recall@20"].map(fmt_num), "NDCG@20": part["ndcg@20"].map(fmt_num),
            "copy of": part["copy_of"].map(lambda s: labels.get(s, s) if s else "independent"),
            "read from": part["read_from"], "verified": part["verified"].map({True: "yes", False: "no"}),
            "transcription error": part["flagged"].map({True: "suspected", False: ""}),
        }).set_index(["model", "source"])
        out.append(Table(shown, f"published-lineage-{family}", data=part.astype({"model": str}), index=True,
                         caption=f"Amazon {family.capitalize()}: every cell and its lineage "
                                 f"({int(part['independent'].sum())} independent of {len(part)})"))
    return out


def flags_table() -> Table | Html:
    flags = literature.transcription_flags()
    if flags.empty:
        return Html("<p>No source prints the same block of pairs on two datasets.</p>")
    labels = _labels()
    registry = literature.read_registry()
    rows = []
    for _, flag in flags.iterrows():
        here = registry[(registry["source_id"] == flag["source_id"]) & (registry["family"] == flag["family"])
                        & (registry["model"] == flag["model"])].set_index("metric")["value"]
        rows.append({"source": labels.get(flag["source_id"], flag["source_id"]), "dataset": flag["family"],
                     "model": flag["model"], "Recall@20": here.get("recall@20"), "NDCG@20": here.get("ndcg@20"),
                     "repeats its row on": flag["repeats"], "models in the block": int(flag["block"]),
                     "pairs printed by another source": int(flag["corroborated"])})
    frame = pd.DataFrame(rows)
    return Table(frame.set_index(["source", "dataset", "model"]), "published-transcription-flags", data=frame,
                 caption="Suspected transcription errors (left out of every published value and noise floor)",
                 note=f"Rule: one source printing the same (Recall@20, NDCG@20) pair for at least "
                      f"{literature.TRANSCRIPTION_BLOCK} models on two datasets; the side whose pairs fewer other "
                      f"sources print for that dataset is flagged (both on a tie).")


# ---------------------------------------------------------------------------- noise floor and margin


def noise_floor_tables(metric: str = FIGURE_METRIC) -> Tables:
    out = Tables()
    rows, parts = [], []
    for family in FAMILIES:
        floor = literature.noise_floor(family, metric)
        rows.append({"dataset": family, "models with 2+ independent values": floor.n_models,
                     "median relative range": floor.median, "largest relative range": floor.max})
        parts.append(floor.per_model.assign(dataset=family))
    summary = pd.DataFrame(rows)
    shown = summary.assign(**{c: summary[c].map(_spread) for c in ("median relative range", "largest relative range")})
    out.append(Table(shown.set_index("dataset"), f"published-noise-floor-{metric}", data=summary,
                     caption=f"The noise floor of the literature, {metric_label(metric)}: how much independent "
                             f"published values of one model differ",
                     note="Relative range = (max − min) / median of a model's distinct independent values (not "
                          "copies, not flagged, not secondary transcriptions)."))
    per_model = pd.concat(parts, ignore_index=True)
    if not per_model.empty:
        shown = per_model.assign(**{"relative range": per_model["relative range"].map(_spread),
                                    "low": per_model["low"].map(fmt_num), "high": per_model["high"].map(fmt_num)})
        out.append(Table(shown.set_index(["dataset", "model"]), f"published-noise-floor-models-{metric}",
                         data=per_model, caption=f"Per model: the independent published {metric_label(metric)} "
                                                 f"values' range"))
    return out


def margin_frame(metric: str = FIGURE_METRIC) -> pd.DataFrame:
    """Per dataset: the paper's LGMRec number, the strongest published baseline, the claimed margin
    and the noise floor."""
    labels = _labels()
    rows = []
    for family in FAMILIES:
        baseline = literature.strongest_published_baseline(family, metric)
        label = next((m for m in _models(family) if m.lower() == baseline), None) if baseline else None
        found = literature.published(family, label, metric) if label else None
        floor = literature.noise_floor(family, metric)
        paper = literature.paper_value(family, metric)
        used = literature.independent_values(family, label, metric) if label else pd.DataFrame({"value": []})
        if found is not None and found.verified:
            used = used[used["verified"]]
        low, high = (used["value"].min(), used["value"].max()) if len(used) else (np.nan, np.nan)
        rows.append({"dataset": family, "metric": metric, "LGMRec (paper)": paper,
                     "strongest baseline": label, "baseline published value": found.value if found else np.nan,
                     "baseline values": found.n_values if found else 0,
                     "baseline sources": found.n_sources if found else 0,
                     "baseline verified": found.verified if found else False,
                     "baseline printed by": ", ".join(labels.get(s, s) for s in found.sources) if found else "",
                     "claimed margin": _nan(literature.claimed_margin(family, baseline, metric) if baseline else None),
                     # the margin against each of the baseline's values used, smallest and largest
                     "margin low": paper / high - 1 if paper is not None else np.nan,
                     "margin high": paper / low - 1 if paper is not None else np.nan,
                     "noise floor (median)": floor.median, "noise floor (max)": floor.max})
    return pd.DataFrame(rows)


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _margin_range(row: pd.Series) -> str:
    if row["baseline values"] < 2:
        return ""
    return f" ({_pct(row['margin low'])} to {_pct(row['margin high'])} against each of its values)"


def margin_sentence(row: pd.Series) -> str:
    """In words: does the published margin exceed what independent runs of one model differ by?"""
    margin, floor, top = row["claimed margin"], row["noise floor (median)"], row["noise floor (max)"]
    name = row["dataset"].capitalize()
    if not np.isfinite(margin):
        return f"{name}: no margin can be computed (no paper number or no published baseline)."
    base = (f"{name}: the paper's LGMRec {metric_label(row['metric'])} {fmt_num(row['LGMRec (paper)'])} against "
            f"{row['strongest baseline']}'s published {fmt_num(row['baseline published value'])} "
            f"({row['baseline values']} independent value{'s' if row['baseline values'] != 1 else ''}, "
            f"{row['baseline sources']} source{'s' if row['baseline sources'] != 1 else ''}) is a margin of "
            f"{_pct(margin)}{_margin_range(row)}; independent runs of one model differ by {_spread(floor)} (median over models), "
            f"up to {_spread(top)}.")
    if margin <= 0:
        return base + " The paper's number is not above the strongest published baseline."
    if margin <= floor:
        return base + (" The published margin does not exceed what independent runs of one model differ by: "
                       "it is within the literature's noise.")
    if margin <= top:
        return base + (" The published margin exceeds the median spread between runs of one model, but not the "
                       "largest.")
    return base + " The published margin exceeds what independent runs of one model differ by."


def margin_tables(metric: str = FIGURE_METRIC) -> Tables:
    frame = margin_frame(metric)
    shown = pd.DataFrame({
        "LGMRec (paper)": frame["LGMRec (paper)"].map(fmt_num), "strongest published baseline": frame["strongest baseline"],
        "its published value": frame["baseline published value"].map(fmt_num),
        "independent values, sources": [f"{v}, {s}" for v, s in zip(frame["baseline values"], frame["baseline sources"])],
        "claimed margin": frame["claimed margin"].map(_pct),
        "noise floor (median / max)": [f"{_spread(a)} / {_spread(b)}" for a, b in zip(frame["noise floor (median)"],
                                                                               frame["noise floor (max)"])],
    }).set_axis(pd.Index(frame["dataset"], name="dataset"))  # set after: a Series column would align on the index
    sentences = "".join(f"<li>{escape(margin_sentence(row))}</li>" for _, row in frame.iterrows())
    return Tables([
        Table(shown, f"published-margin-{metric}", data=frame,
              caption=f"The paper's margin of LGMRec over the strongest published baseline, {metric_label(metric)}, "
                      f"next to the literature's noise floor",
              note="Published value of a baseline: the median of its distinct independent values read from text or "
                   "image, verified ones only where any is verified. The LGMRec paper's own baseline rows are not in "
                   "the registry: the margin is over what other documents print for that baseline, and a "
                   "negative one means the paper's LGMRec number is below it."),
        Html(f'<ul class="lgmrec-margins">{sentences}</ul>'),
    ])


# ---------------------------------------------------------------------------- C5


def lgmrec_record_text(family: str, metric: str = FIGURE_METRIC) -> str:
    """LGMRec's published range, how many of its values are independent, and the authors' post-fix
    rerun, in one line (the evidence C5 carries on every profile)."""
    record = literature.model_record(family, literature.MODEL, metric)
    if record is None:
        return f"the published record has no LGMRec {metric_label(metric)} on {family.capitalize()}"
    rerun = literature.rerun_value(family, metric)
    paper = literature.paper_value(family, metric)
    text = (f"published LGMRec {metric_label(metric)} on Amazon {family.capitalize()}: "
            f"{fmt_num(record.low)}–{fmt_num(record.high)} in {record.n_sources} sources, "
            f"{record.n_independent} independent value{'s' if record.n_independent != 1 else ''}, "
            f"{record.n_others} of them from other groups than the authors"
            + (f" ({record.n_others_secondary} known only from a secondary transcription)"
               if record.n_others_secondary else ""))
    if paper is not None:
        text += f"; paper {fmt_num(paper)}"
    if rerun is not None:
        text += f"; authors' post-fix rerun {fmt_num(rerun)}"
    return text


def placement(mean: float, low: float, high: float) -> str:
    """'inside', 'below' or 'above' the published range [low, high], by the reproduced mean."""
    if mean < low:
        return "below"
    if mean > high:
        return "above"
    return "inside"


def placement_text(family: str, values, metric: str = FIGURE_METRIC) -> str:
    """Where the reproduced mean over seeds (with its 95 % t interval) lies in LGMRec's published
    range (real data only)."""
    from .. import stats

    record = literature.model_record(family, literature.MODEL, metric)
    values = np.asarray(values, dtype=float)
    if record is None or not len(values):
        return ""
    mean, (low, high) = float(values.mean()), stats.t_interval(values)
    where = placement(mean, record.low, record.high)
    interval = f" [{fmt_num(low)},{NBSP}{fmt_num(high)}]" if np.isfinite(low) else ""
    return (f"reproduced {metric_label(metric)} {fmt_num(mean)}{interval} is {where} the published range "
            f"{fmt_num(record.low)}–{fmt_num(record.high)}")


__all__ = ["flags_table", "lgmrec_record_text", "lineage_tables", "margin_frame", "margin_sentence", "margin_tables",
           "noise_floor_tables", "placement", "placement_text", "record_summary", "values_figure", "values_frame",
           "values_tables"]
