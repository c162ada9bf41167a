"""The calibrated testbed: what was fitted (Methods) and the held-out check (Reported vs
reproduced, the landing page).

The fit is read from the committed files of :mod:`lgmrec.calibration` (knobs, trials, the 13
baselines' ratios before and after), so Methods shows it on every profile. The held-out check is
computed from this build's results: LGMRec's Recall@20 relative to LightGCN on each calibrated
preset (per seed, paired by seed, with a t interval over seeds) next to the published ratio, and
the ablation claims C2 and C3 on the same data. Both are predictions on data fitted to the
baselines only: LGMRec and its ablations were not in the objective.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import calibration, stats
from ..grids import PUBLISHED_VARIANT
from ..models import dataset_family, get_model_spec
from ..synthetic import PRESETS, generate_with_truth, read_calibrated_presets
from .context import BookContext
from .display import Html, Table, Tables, escape, paragraph

HONESTY = (
    "The calibrated presets are fitted to published numbers, and published numbers are each paper's best "
    "test-set results (the model and epoch chosen on the test set, at best a tuned maximum): so the presets are "
    "fitted to what the literature reports, which flatters strong models, not to what these baselines score on "
    "the Amazon files under this suite's protocol. A good fit says that the synthetic data order and space the "
    "baselines as the literature does; it does not make synthetic numbers real-data numbers, and no number "
    "computed on them is comparable with one on the Amazon data."
)
PREDICTION = ("a prediction on data fitted to the 13 baselines only: LGMRec and its ablations were not in the "
              "calibration's objective")


def calibrated_datasets(ctx: BookContext) -> list[str]:
    names = read_calibrated_presets()
    return [d for d in ctx.profile.datasets if d in names]


# ---------------------------------------------------------------------------- Methods


def knobs_table() -> Table | Html:
    """The calibrated presets' knobs next to the uncalibrated -mini presets'."""
    calibrated = read_calibrated_presets()
    if not calibrated:
        return paragraph("No calibrated presets are committed yet (python -m lgmrec calibrate).")
    columns = {}
    for name, preset in calibrated.items():
        old = name.removesuffix("-cal")
        columns[(dataset_family(name), "calibrated")] = pd.Series(vars(preset))
        if old in PRESETS:
            columns[(dataset_family(name), "uncalibrated")] = pd.Series(vars(PRESETS[old]))
    frame = pd.DataFrame(columns)
    frame = frame[[c for f in calibration.FAMILIES for c in frame.columns if c[0] == f]]
    frame.index.name = "knob"
    trials = calibration.read_trials()
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for column in [c for c in frame.columns if c[1] == "calibrated"]:
        bold.loc[frame.index.isin(calibration.searched_knobs(trials, column[0])), column] = True
    return Table(frame, "calibration-knobs", bold=bold, digits=3,
                 caption="The generator's knobs (lgmrec.synthetic.SyntheticPreset) of the calibrated presets "
                         "(synth-<family>-mini-cal) and of the uncalibrated -mini presets",
                 note="Bold: searched by the family's calibration (Optuna TPE, seed 0; lgmrec.calibration.SEARCH_SPACE). "
                      "n_items, mean_interactions, popularity_exponent and activity_dispersion are not searched: "
                      "they are fitted so that the filtered data keep the real dataset's interactions per user and "
                      "per item and its degree skew (next table).")


def degrees_table() -> Table | Html:
    """Interactions per user and per item and the degree Ginis: real, calibrated, uncalibrated."""
    calibrated = read_calibrated_presets()
    if not calibrated:
        return paragraph("No calibrated presets are committed yet.")
    rows = {}
    for name, preset in calibrated.items():
        family = dataset_family(name)
        rows[(family, "released dataset")] = vars(calibration.real_degrees(family))
        rows[(family, name)] = vars(calibration.preset_degrees(preset))
        old = name.removesuffix("-cal")
        if old in PRESETS:
            rows[(family, old)] = vars(calibration.preset_degrees(PRESETS[old]))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.names = ["family", "data"]
    frame.columns = ["interactions per user", "interactions per item", "Gini of user degrees",
                     "Gini of item degrees"]
    return Table(frame, "calibration-degrees", digits=3,
                 caption="What each preset keeps of its released dataset (after 5-core filtering)",
                 note="Released datasets: lgmrec/reference/datasets.csv (Ginis computed from public copies of the "
                      "same files, checked against MMRec's counts: docs/degree_skew_sources.md).")


def fit_tables() -> Tables:
    """Per family: every model's published ratio and the reproduced ones before and after, and the
    fit's summary against the target."""
    fit = calibration.read_fit()
    out = Tables()
    if fit.empty:
        out.append(paragraph("The calibration's fit has not been measured yet (python -m lgmrec calibrate measure)."))
        return out
    summary = calibration.fit_summary(fit).set_index(["family", "stage"])
    met = summary.xs("after", level="stage")["meets_target"]
    noise = {family: calibration.fit_noise(fit, family) for family in met.index}
    beyond = [f for f in met.index if summary.loc[(f, "after"), "median_error"] > noise[f].median_error[2]]
    out.append(paragraph(
        f"Target met on {int(met.sum())} of {len(met)} dataset families "
        f"({', '.join(f for f, ok in met.items() if ok) or 'none'}). Could the measure have seen a fit? A preset whose "
        f"true ratios were the published ones would meet the target in "
        f"{', '.join(f'{100 * n.meets_target:.1f} %' for n in noise.values())} of measures ({', '.join(noise)}) "
        f"through the seed noise measured here (each model's standard deviation of Recall@20 over the "
        f"{int(fit['after_seeds'].max())} seeds; the tuning choice and the data draw as measured, models "
        f"independent; each table's note). "
        + (f"On {', '.join(beyond)} the median error lies above the 95th percentile such a preset shows: "
           f"the misfit is the presets', not the measure's noise." if beyond else "")))
    for family, part in fit.groupby("family", sort=False):
        shown = part.assign(model=part["model"].map(lambda m: get_model_spec(m).label)).set_index("model")
        shown = shown[["published", "before", "after", "held_out"]].copy()
        shown["error before"] = (shown["before"] - shown["published"]).abs()
        shown["error after"] = (shown["after"] - shown["published"]).abs()
        shown["in the fit"] = np.where(shown.pop("held_out"), "no: held out", "yes")
        shown.loc[get_model_spec(calibration.REFERENCE_MODEL).label, "in the fit"] = "reference (1 = 1)"
        lines = []
        for stage in calibration.MEASURE_PROFILES:
            s = summary.loc[(family, stage)]
            lines.append(f"{stage}: Spearman {s['spearman']:.2f}, median error {s['median_error']:.3f}, mean error "
                         f"{s['mean_error']:.3f} over {int(s['models'])} baselines"
                         f"{' (meets the target)' if s['meets_target'] else ''}")
        seeds = int(part["after_seeds"].max())
        family_noise = noise[family]
        lines.append(f"a preset whose true ratios were the published ones would show, through this measure's "
                     f"seed noise, Spearman {family_noise.spearman[1]:.2f} [{family_noise.spearman[0]:.2f}, "
                     f"{family_noise.spearman[2]:.2f}] and median error {family_noise.median_error[1]:.3f} "
                     f"[{family_noise.median_error[0]:.3f}, {family_noise.median_error[2]:.3f}] (median [5 %, 95 %] "
                     f"of {family_noise.draws:,} draws) and meet the target in {100 * family_noise.meets_target:.1f} "
                     f"% of measures (calibration.perfect_fit_noise)")
        out.append(Table(shown, f"calibration-fit-{family}", digits=3,
                         caption=f"{family.capitalize()}: Recall@20 relative to LightGCN, published vs reproduced on "
                                 f"the uncalibrated (before) and calibrated (after) presets",
                         note=f"{'; '.join(lines)}. Target: Spearman ≥ {calibration.TARGET_SPEARMAN} and median "
                              f"error ≤ {calibration.TARGET_MEDIAN_ERROR}. Reproduced: the embedded design (reduced "
                              f"tuning, then {seeds} seeds), mean Recall@20 over seeds over LightGCN's. Published: the "
                              f"published record's value over LightGCN's (see The published record)."))
    return out


def trials_figure():
    """The search: each trial's loss per family, and the running best."""
    import matplotlib.pyplot as plt

    trials = calibration.read_trials()
    if trials.empty:
        return paragraph("No calibration trials are committed yet.")
    trials["trial"] = pd.to_numeric(trials["trial"], errors="coerce")  # the candidates' rows: NaN
    trials = trials.dropna(subset=["trial"])
    fig, ax = plt.subplots(figsize=(7, 3))
    kinds = {"quick": "11 baselines at defaults, seed 999", "design": "the measure: 13 baselines, 5 seeds"}
    for family, part in trials.groupby("family", sort=False):
        objective = part["objective"].dropna() if "objective" in part else pd.Series(dtype=str)
        objective = objective.iloc[0] if len(objective) else "quick"  # searches before the column: quick
        points = ax.scatter(part["trial"], part["loss"], s=10, alpha=0.5, label=f"{family} ({kinds[objective]})")
        ax.plot(part["trial"], part["loss"].cummin(), color=points.get_facecolor()[0], alpha=0.9)
    ax.set_xlabel("trial")
    ax.set_ylabel("loss (mean |ratio error| + 0.1 (1 − ρ))")
    ax.legend(frameon=False)
    ax.set_title("Calibration searches, each trial as its legend says (loss 1: infeasible or a failed run)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def regime_frame() -> pd.DataFrame:
    """Per family and data: LightGCN's Recall@20, what popularity alone (MostPop) and the
    generator's own logits (the oracle: synthetic data only) earn, each over LightGCN's, and the
    largest ratio a baseline reaches there (published on the released data, measured on a preset)."""
    fit, released = calibration.read_fit(), calibration.read_released_mostpop()
    rows = []
    for family in calibration.FAMILIES:
        published = calibration.published_ratios(family)
        lightgcn = calibration.published_lightgcn_recall(family)
        real = released[released["family"] == family].sort_values("split", key=lambda s: s != "shipped")
        split = f", MostPop on its {real['split'].iloc[0]} split" if len(real) else ""
        rows.append({"family": family, "data": f"released dataset (published LightGCN{split})", "LightGCN": lightgcn,
                     "MostPop": real["recall@20"].iloc[0] if len(real) else np.nan, "oracle": np.nan,
                     "top-20 items' share": real["top20_share"].iloc[0] if len(real) else np.nan,
                     "largest baseline ratio": published.drop(calibration.REFERENCE_MODEL).max()})
        part = fit[(fit["family"] == family) & ~fit["held_out"]].set_index("model") if not fit.empty else None
        for stage, dataset_column in (("before", "before_dataset"), ("after", "after_dataset")):
            if part is None or f"{stage}_recall" not in part or not part[dataset_column].iloc[0]:
                continue
            name = part[dataset_column].iloc[0]
            data, truth = generate_with_truth(PRESETS[name], name=name)
            rules = calibration.rule_recalls(data, truth)
            rows.append({"family": family, "data": name, "LightGCN": part.loc[calibration.REFERENCE_MODEL, f"{stage}_recall"],
                         "MostPop": rules["mostpop"], "oracle": rules["oracle"], "top-20 items' share": calibration.top_share(data),
                         "largest baseline ratio": part[stage].drop(calibration.REFERENCE_MODEL).max()})
    frame = pd.DataFrame(rows)
    frame["MostPop / LightGCN"] = frame["MostPop"] / frame["LightGCN"]
    frame["oracle / LightGCN"] = frame["oracle"] / frame["LightGCN"]
    return frame[["family", "data", "top-20 items' share", "LightGCN", "MostPop", "MostPop / LightGCN", "oracle",
                  "oracle / LightGCN", "largest baseline ratio"]]


def regime_table() -> Table | Html:
    """:func:`regime_frame` as the Methods chapter shows it."""
    frame = regime_frame().set_index(["family", "data"])
    if frame.empty:
        return paragraph("No calibration is committed yet.")
    return Table(frame, "calibration-regime", digits=3,
                 caption="What popularity alone and the generator's own logits earn: Recall@20 on the test split, "
                         "and over LightGCN's",
                 note="MostPop: items ranked by their number of training interactions (ties to the lower id), "
                      "training items masked, evaluated as every model is; on the released data computed from "
                      "public copies of the files (lgmrec/reference/mostpop_released.csv, scripts/real_mostpop.py; "
                      "Sports ships no split: the protocol's split is simulated). Top-20 items' share: the share of "
                      "all interactions held by the 20 most popular items. "
                      "Oracle: the generator's own logits (lgmrec.synthetic.GroundTruth), the best any model can do "
                      "on that data: no model's ratio to LightGCN can exceed oracle / LightGCN. LightGCN: the "
                      "published value on the released data, the calibration's measure (mean over seeds) on a "
                      "preset. Largest baseline ratio: the highest Recall@20 ratio to LightGCN among the other 12 "
                      "baselines there. Where MostPop / LightGCN is far above the released data's, popularity "
                      "alone earns most of what LightGCN earns, which leaves the baselines little room to differ.")


# ---------------------------------------------------------------------------- the held-out check


def held_out_frame(ctx: BookContext) -> pd.DataFrame:
    """Per calibrated dataset: LGMRec's Recall@20 over LightGCN's (mean of the per-seed ratios and
    its 95 % t interval over seeds), the published ratio, and C2's and C3's verdicts."""
    from .claims import compute_claims

    runs = ctx.runs("overall")
    runs = runs[runs["variant"] != PUBLISHED_VARIANT]
    verdicts = {(r.claim, r.dataset): r.verdict for r in compute_claims(ctx) if r.claim in ("C2", "C3")}
    rows = []
    for dataset in calibrated_datasets(ctx):
        part = runs[runs["dataset"] == dataset].pivot_table(index="seed", columns="model", values="recall@20")
        if calibration.FOCAL_MODEL not in part or calibration.REFERENCE_MODEL not in part:
            continue
        ratios = (part[calibration.FOCAL_MODEL] / part[calibration.REFERENCE_MODEL]).dropna()
        family = dataset_family(dataset)
        published = calibration.published_ratios(family, (calibration.FOCAL_MODEL,))[calibration.FOCAL_MODEL]
        low, high = stats.t_interval(ratios.to_numpy())
        rows.append({"dataset": dataset, "family": family, "reproduced ratio": ratios.mean(), "low": low,
                     "high": high, "seeds": len(ratios), "published ratio": published,
                     "published inside the interval": bool(low <= published <= high),
                     "C2": verdicts.get(("C2", dataset), "not run"), "C3": verdicts.get(("C3", dataset), "not run")})
    return pd.DataFrame(rows)


#: best epochs of the reference model further apart than this split its runs into two stopping
#: points (a transient bump of its validation curve that some seeds stop at within the protocol's
#: patience of 20 epochs, and others climb past)
STOPPING_GAP = 40


def stopping_split(best_epochs: np.ndarray, gap: int = STOPPING_GAP) -> float | None:
    """The best epoch that ends the early group where the sorted best epochs jump by more than
    ``gap`` (the largest such jump), else None: one stopping point."""
    ordered = np.sort(np.asarray(best_epochs))
    if len(ordered) < 2:
        return None
    jumps = np.diff(ordered)
    largest = int(np.argmax(jumps))
    return float(ordered[largest]) if jumps[largest] > gap else None


def reference_stopping(ctx: BookContext) -> pd.DataFrame:
    """Per calibrated dataset where LightGCN's runs (overall and A/A, its default and tuned settings)
    stop at two distinct points (:func:`stopping_split`): how many stop early, and their mean test
    Recall@20 against the others'. Ratios to LightGCN move with that split."""
    runs = ctx.runs(None)
    runs = runs[(runs["model"] == calibration.REFERENCE_MODEL) & runs["experiment"].isin(["overall", "error_rates"])
                & (runs["variant"] != PUBLISHED_VARIANT)]
    rows = []
    for dataset in calibrated_datasets(ctx):
        part = runs[runs["dataset"] == dataset]
        split = stopping_split(part["best_epoch"].to_numpy())
        if split is None:
            continue
        early = part["best_epoch"] <= split
        overall = part["experiment"] == "overall"
        rows.append({"dataset": dataset, "runs": len(part), "early": int(early.sum()), "last early epoch": split,
                     "first late epoch": part.loc[~early, "best_epoch"].min(),
                     "early recall@20": part.loc[early, "recall@20"].mean(),
                     "late recall@20": part.loc[~early, "recall@20"].mean(),
                     "overall runs": int(overall.sum()), "overall early": int((early & overall).sum())})
    return pd.DataFrame(rows)


def reference_stopping_note(ctx: BookContext) -> str:
    """A sentence per dataset of :func:`reference_stopping` ("" where LightGCN stops at one point)."""
    return " ".join(
        f"On {r['dataset']}, LightGCN (the ratios' denominator) stops at two points: {r['early']} of its {r['runs']} "
        f"overall and A/A runs by epoch {r['last early epoch']:.0f} (test Recall@20 {r['early recall@20']:.3f} on "
        f"average), the others from epoch {r['first late epoch']:.0f} on ({r['late recall@20']:.3f}); "
        f"ratios to LightGCN move with how many of the overall experiment's seeds stop early "
        f"({r['overall early']} of {r['overall runs']} here)."
        for _, r in reference_stopping(ctx).iterrows())


def ratio_interval(low: float, high: float, digits: int) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) else "–"


def held_out_table(ctx: BookContext) -> Table | Html:
    frame = held_out_frame(ctx)
    if frame.empty:
        return paragraph(f"Held-out check: not run (profile {ctx.profile.name} does not run LGMRec and LightGCN on "
                         f"the calibrated presets).")
    shown = pd.DataFrame({
        "LGMRec / LightGCN (reproduced)": frame["reproduced ratio"].map(lambda v: f"{v:.3f}"),
        "95% CI over seeds": [ratio_interval(lo, hi, 3) for lo, hi in zip(frame["low"], frame["high"])],
        "seeds": frame["seeds"],
        "published": frame["published ratio"].map(lambda v: f"{v:.3f}"),
        "C2 local embeddings": frame["C2"], "C3 global embeddings": frame["C3"],
    })
    shown.index = frame["dataset"]
    return Table(shown, "held-out-lgmrec", data=frame,
                 caption="Held-out check: LGMRec on the calibrated presets, Recall@20 relative to LightGCN, and the "
                         "ablation claims",
                 note=f"This is {PREDICTION}. The reproduced ratio is the mean over seeds of LGMRec's Recall@20 over "
                      f"LightGCN's with the same seed; published: the published record's values (LGMRec's and "
                      f"LightGCN's medians of independent values). C2, C3: the verdicts of the Claims chapter on "
                      f"these presets. {reference_stopping_note(ctx)}".rstrip())


def held_out_summary(ctx: BookContext) -> Html:
    """One paragraph for the landing page."""
    frame = held_out_frame(ctx)
    if frame.empty:
        return Html("")
    parts = [f"{row['family'].capitalize()}-like {row['reproduced ratio']:.2f} "
             f"({ratio_interval(row['low'], row['high'], 2)}; published {row['published ratio']:.2f}; C2 {row['C2']}, "
             f"C3 {row['C3']})" for _, row in frame.iterrows()]
    return Html(f"<p><b>Held-out check</b> ({escape(PREDICTION)}): LGMRec's Recall@20 relative to LightGCN on the "
                f"calibrated presets, 95 % interval over seeds: {escape('; '.join(parts))}. See "
                f'<a href="reported_vs_reproduced.html">Reported vs reproduced</a> and the calibration in '
                f'<a href="methods.html">Methods</a>.</p>')


def honesty_note() -> Html:
    return Html(f"<p>{escape(HONESTY)}</p>")


__all__ = ["degrees_table", "fit_tables", "held_out_frame", "held_out_summary", "held_out_table", "honesty_note",
           "reference_stopping", "reference_stopping_note", "stopping_split",
           "knobs_table", "trials_figure"]
