"""The verdict rule's error rates, measured on the ``error_rates`` experiment instead of assumed.

- **A/A (false alarms)**: a model's runs with 2k seeds, split into two disjoint halves of k in
  every way (each split in both orders); each half is compared with the other exactly as a claim
  compares two models (paired over users, the halves' seeds paired by position, Recall@20 and
  NDCG@20, :func:`lgmrec.stats.claim_verdict`). The true difference is 0, so every "supported" or
  "contradicted" is a false alarm; the rule is built for at most 5 %.
- **Planted effect (power)**: the model against itself with a loss planted by construction (a
  quarter of the embedding), on every choice of k of the seeds (the same seeds on both sides, as
  the overall experiment pairs them). "supported" (the full model ahead) is a detection; the rate
  is the rule's power at the planted effect, whose size is measured on all 2k seeds.

The splits share seeds, so they are not independent: the Clopper-Pearson intervals below treat
them as if they were and are too narrow; the per-dataset rows show how much the rate varies.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as sps

from .. import power, stats
from ..grids import AA_VARIANT
from .context import MAIN_METRICS, BookContext, model_labels
from .display import DASH, Html, Table, escape, fmt_pct

FALSE_ALARM, DETECTION = "false alarm", "detection"


def _halves(matrix: pd.DataFrame, seeds) -> pd.DataFrame:
    """The users x seeds columns of ``seeds``, relabelled 0..k-1 so two halves pair by position."""
    part = matrix[list(seeds)]
    part.columns = range(len(part.columns))
    return part


def split_verdicts(ctx: BookContext) -> pd.DataFrame:
    """One row per compared pair of seed halves: kind (A/A or planted), dataset, model, variant, the
    seeds of each side, the verdict, the Recall@20 estimate and MDE in % (cached on the context)."""
    if "error_rate_splits" in ctx.cache:
        return ctx.cache["error_rate_splits"]
    runs = ctx.runs("error_rates")
    rows = []
    for (dataset, model), part in runs.groupby(["dataset", "model"], sort=False):
        same = part[part["variant"] == AA_VARIANT]
        seeds = sorted(same["seed"].unique())
        half = len(seeds) // 2
        if half < 2:
            continue
        base = {m: ctx.user_matrix(same, m) for m in MAIN_METRICS}
        comparisons = [(AA_VARIANT, first, [s for s in seeds if s not in first][:half], base)
                       for first in itertools.combinations(seeds, half)]
        for variant, planted in part[part["variant"] != AA_VARIANT].groupby("variant", sort=False):
            other = {m: ctx.user_matrix(planted, m) for m in MAIN_METRICS}
            common = [s for s in seeds if s in set(planted["seed"])]
            comparisons += [(variant, first, first, other) for first in itertools.combinations(common, half)]
        for variant, first, second, against in comparisons:
            contrasts = [stats.paired_contrast(_halves(base[m], first), _halves(against[m], second))
                         for m in MAIN_METRICS]
            main = contrasts[0]
            rows.append({"kind": "A/A" if variant == AA_VARIANT else "planted", "dataset": dataset, "model": model,
                         "variant": variant, "first seeds": " ".join(map(str, first)),
                         "second seeds": " ".join(map(str, second)), "verdict": stats.claim_verdict(contrasts),
                         "recall@20 difference %": main.relative,
                         "recall@20 MDE %": 100 * power.mde(main).rule / main.baseline})
    frame = pd.DataFrame(rows, columns=["kind", "dataset", "model", "variant", "first seeds", "second seeds",
                                        "verdict", "recall@20 difference %", "recall@20 MDE %"])
    ctx.cache["error_rate_splits"] = frame
    return frame


def planted_effects(ctx: BookContext) -> pd.DataFrame:
    """Each planted effect's size on all of its seeds: full model minus planted, Recall@20, in %."""
    runs = ctx.runs("error_rates")
    rows = []
    for (dataset, model), part in runs.groupby(["dataset", "model"], sort=False):
        full = ctx.user_matrix(part[part["variant"] == AA_VARIANT], "recall@20")
        for variant, planted in part[part["variant"] != AA_VARIANT].groupby("variant", sort=False):
            contrast = stats.paired_contrast(full, ctx.user_matrix(planted, "recall@20"))
            rows.append({"dataset": dataset, "model": model, "variant": variant, "seeds": contrast.n_seeds,
                         "effect %": contrast.relative})
    return pd.DataFrame(rows, columns=["dataset", "model", "variant", "seeds", "effect %"])


def rate_frame(ctx: BookContext) -> pd.DataFrame:
    """Per kind, model and variant (and per dataset): comparisons, verdict counts, the rate that
    matters (false alarms for A/A, detections for planted) with its 95 % Clopper-Pearson interval."""
    splits = split_verdicts(ctx)
    if splits.empty:
        return pd.DataFrame()
    effects = planted_effects(ctx)
    rows = []
    for by_dataset in (False, True):
        keys = ["kind", "model", "variant"] + (["dataset"] if by_dataset else [])
        for key, part in splits.groupby(keys, sort=False):
            labels = dict(zip(keys, key))
            counts = part["verdict"].value_counts()
            supported, contradicted = int(counts.get(stats.SUPPORTED, 0)), int(counts.get(stats.CONTRADICTED, 0))
            hits = supported + contradicted if labels["kind"] == "A/A" else supported
            interval = sps.binomtest(hits, len(part)).proportion_ci(1 - stats.ALPHA, method="exact")
            effect = effects[(effects["variant"] == labels["variant"]) & (effects["model"] == labels["model"])]
            if by_dataset:
                effect = effect[effect["dataset"] == labels["dataset"]]
            rows.append({**labels, "dataset": labels.get("dataset", "all"), "measures": FALSE_ALARM
                         if labels["kind"] == "A/A" else DETECTION, "comparisons": len(part),
                         "supported": supported, "contradicted": contradicted, "rate": hits / len(part),
                         "CI low": interval.low, "CI high": interval.high,
                         "planted effect %": float(effect["effect %"].mean()) if len(effect) else np.nan,
                         "median MDE %": float(part["recall@20 MDE %"].median())})
    return pd.DataFrame(rows)


def error_rate_table(ctx: BookContext) -> Table | Html:
    frame = rate_frame(ctx)
    if frame.empty:
        return Html("<p>The verdict rule's error rates: not measured (this profile runs no error_rates "
                    "experiment, or its runs are not finished).</p>")
    shown = frame.assign(
        rate=[f"{100 * r:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" for r, lo, hi in
              zip(frame["rate"], frame["CI low"], frame["CI high"])],
        model=frame["model"].map(lambda m: model_labels().get(m, m)),
        **{"planted effect": [fmt_pct(e) if np.isfinite(e) else DASH for e in frame["planted effect %"]],
           "MDE (median)": [f"±{m:.1f} %" if np.isfinite(m) else DASH for m in frame["median MDE %"]]})
    shown = shown[["measures", "model", "variant", "dataset", "comparisons", "supported", "contradicted", "rate",
                   "planted effect", "MDE (median)"]].set_index(["measures", "model", "variant", "dataset"])
    half = len(ctx.profile.error_rate_seeds) // 2
    return Table(shown, "error-rates", data=frame,
                 caption=f"The verdict rule's measured error rates ({half} seeds a side, Recall@20 and NDCG@20, "
                         f"α = {stats.ALPHA}; rate with its 95 % Clopper-Pearson interval)",
                 note="false alarm: an A/A comparison (a model against itself on other seeds) judged supported or "
                      "contradicted; detection: the model judged better than itself with the planted loss. The "
                      "splits share seeds, so the intervals, which treat them as independent, are too narrow. "
                      "Planted effect: the full model's Recall@20 minus the planted variant's, in % of the "
                      "planted variant's, on all seeds (positive: the planted loss is real).")


def error_rate_summary(ctx: BookContext) -> Html:
    """One paragraph for the landing page: the measured false-alarm rate and power, linked to Methods."""
    frame = rate_frame(ctx)
    link = '<a href="methods.html#verdict-error-rates">Methods</a>'
    if frame.empty:
        return Html(f"<p>The verdict rule's error rates are not measured on this profile (see {link}).</p>")
    overall = frame[frame["dataset"] == "all"]
    parts = []
    for row in overall.to_dict("records"):
        model = escape(model_labels().get(row["model"], row["model"]))
        what = (f"false alarms of {model} against itself" if row["measures"] == FALSE_ALARM else
                f"power of {model} against its {escape(row['variant'].removeprefix('planted: '))} variant, a planted "
                f"effect of {row['planted effect %']:+.1f} % Recall@20")
        parts.append(f"{what}: {100 * row['rate']:.1f} % of {row['comparisons']} comparisons "
                     f"(95 % CI {100 * row['CI low']:.1f}-{100 * row['CI high']:.1f} %)")
    return Html(f"<p><b>How often the rule errs, measured on this build</b> ({link}): {'; '.join(parts)}. "
                f"The rule is built for at most 5 % false alarms.</p>")


__all__ = ["error_rate_summary", "error_rate_table", "planted_effects", "rate_frame", "split_verdicts"]
