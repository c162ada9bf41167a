"""The paper's claims, as its abstract states them, each turned into a test on the results store.

Per dataset of the profile:

- C1 superiority: LGMRec's Recall@10/20 and NDCG@10/20 exceed every baseline's (overall runs);
  the margin shown is over the strongest baseline (highest mean) on each metric;
- C2 decoupled local embeddings help: the full model beats w/o CGE and w/o MGE (ablation runs);
- C3 global hypergraph embeddings help: the full model beats w/o GHE and w/o HCL;
- C4 robustness under sparsity: LGMRec's advantage over the strongest baseline (by Recall@20) is
  larger for users with few training interactions (at most the median) than for the others;
- C5 the published numbers are reproduced: the paper's LGMRec row (Table 2) within 5 % (the
  check's tolerance, :data:`lgmrec.check.REAL_TOLERANCE`), on real data only.

The claims are about the profile's focal model (``Profile.focal_model``: LGMRec unless a profile file
names another, e.g. a plug-in): C1 and C4 compare it with the baselines under the same statistics;
C2, C3 (LGMRec's ablation) and C5 (LGMRec's published numbers) are "not tested" for another model.

Every comparison is a :class:`lgmrec.stats.Contrast`; the verdict rule is
:func:`lgmrec.stats.claim_verdict` (C5: :func:`lgmrec.stats.equivalence_verdict`), at
``stats.ALPHA`` = 0.05. Each verdict of C1-C4 carries the minimum detectable effect of its headline
comparison (80 % power, :mod:`lgmrec.power`) and, where the published record gives one, the margin
the paper claims for it (:func:`lgmrec.literature.claimed_margin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import power, stats
from ..grids import PUBLISHED_VARIANT, REFERENCE_MODEL
from .context import MAIN_METRICS, TABLE_METRICS, BookContext, is_reference, metric_label
from .contrasts import MDE_NOTE, contrast_cells, contrast_numbers, mde_numbers, overall_contrasts, variant_contrasts
from .display import DASH, NBSP, Html, Table, Tables, escape, fmt_ci, fmt_num, fmt_p, fmt_pct, fmt_signed

CLAIMS = {
    "C1": ("superiority", "LGMRec's Recall@10/20 and NDCG@10/20 exceed every baseline's"),
    "C2": ("local embeddings", "the decoupled local embeddings help: full model > w/o CGE and > w/o MGE"),
    "C3": ("global embeddings", "the global hypergraph embeddings help: full model > w/o GHE and > w/o HCL"),
    "C4": ("sparsity", "LGMRec's advantage over the strongest baseline is larger for users with few training "
                       "interactions than for users with many"),
    "C5": ("published numbers", "the paper's LGMRec numbers (Table 2) are reproduced within 5 %"),
}
TESTS = {
    "C1": "LGMRec − each baseline, 4 metrics (a family of 4 × the baselines): paired bootstrap over users and "
          "t over seeds (95 %); supported if all above 0 (intersection-union test: no correction), contradicted "
          "if one is below 0 at the Bonferroni level α / family size",
    "C2": "full − w/o CGE, full − w/o MGE on Recall@20, NDCG@20 (a family of 4): paired bootstrap over users, "
          "t over seeds (95 %); contradicted at α / 4",
    "C3": "full − w/o GHE, full − w/o HCL on Recall@20, NDCG@20 (a family of 4): paired bootstrap over users, "
          "t over seeds (95 %); contradicted at α / 4",
    "C4": "advantage (few) − advantage (many) on Recall@20, NDCG@20 (a family of 2): bootstrap within groups over "
          "users, t over seeds (95 %); Mann-Whitney U; contradicted at α / 2",
    "C5": "equivalence within ±5 % (TOST, 90 % t interval over seeds) on the 4 metrics",
}
ABLATION_PAIRS = {"C2": ("w/o CGE", "w/o MGE"), "C3": ("w/o GHE", "w/o HCL")}
FULL_VARIANT = "LGMRec"
PUBLISHED_SOURCE = "paper-table2"


@dataclass
class ClaimResult:
    claim: str
    dataset: str
    verdict: str
    effect: str  # the headline effect with its interval, formatted
    basis: str  # seeds and users behind it
    details: pd.DataFrame = field(repr=False)  # one row per comparison, numbers (the CSV)
    shown: pd.DataFrame = field(repr=False)  # the same, formatted for the chapter
    note: str = ""
    #: the headline comparison's minimum detectable effect (80 % power) and the paper's margin for
    #: it, both in % of the baseline where the baseline is a mean (else absolute), None: no margin
    mde: float = np.nan
    mde_relative: bool = True
    margin: float | None = None
    comparisons: int = 0  # the family behind the verdict (its Bonferroni divisor)
    headline: stats.Contrast | None = field(default=None, repr=False)  # the comparison the MDE is of

    @property
    def detectable(self) -> str:
        """What this design could see, for the verdict table; '–' where nothing was tested."""
        if self.verdict == stats.NOT_TESTED or not np.isfinite(self.mde):
            return DASH
        return power.detectability(self.mde, self.margin, self.mde_relative)


def _with_mde(result: ClaimResult, contrast: stats.Contrast, margin: float | None, comparisons: int) -> ClaimResult:
    """``result`` with the MDE of its headline ``contrast`` (in % of its baseline where it has one)."""
    found = power.mde(contrast).rule
    relative = bool(np.isfinite(contrast.baseline) and contrast.baseline)
    result.mde = 100 * found / contrast.baseline if relative else found
    result.mde_relative = relative
    result.margin = margin
    result.comparisons = comparisons
    result.headline = contrast
    return result


def compute_claims(ctx: BookContext) -> list[ClaimResult]:
    """Every claim on every dataset of the profile (cached on the context)."""
    if "claims" not in ctx.cache:
        results = []
        for dataset in ctx.profile.datasets:
            results += [claim_c1(ctx, dataset), *claim_ablation(ctx, dataset), claim_c4(ctx, dataset),
                        claim_c5(ctx, dataset)]
        ctx.cache["claims"] = sorted(results, key=lambda r: (r.claim, ctx.profile.datasets.index(r.dataset)))
    return ctx.cache["claims"]


def _basis(contrasts) -> str:
    seeds = sorted({c.n_seeds for c in contrasts if c.n_users})
    users = sorted({c.n_users for c in contrasts if c.n_users})
    if not users:
        return DASH
    seeds_text = "/".join(map(str, seeds))
    return f"{seeds_text} seed{'s' if seeds != [1] else ''}, {'/'.join(map(str, users))} users"


def _headline(contrast: stats.Contrast, what: str) -> str:
    return (f"{what}: {fmt_signed(contrast.estimate)} ({fmt_pct(contrast.relative)}), "
            f"95%{NBSP}CI{NBSP}users {fmt_ci(*contrast.ci_users())}")


def _not_tested(claim: str, dataset: str, why: str) -> ClaimResult:
    empty = pd.DataFrame({"dataset": [dataset], "note": [why]})
    return ClaimResult(claim, dataset, stats.NOT_TESTED, why, DASH, empty, empty.set_index("dataset"), why)


# ---------------------------------------------------------------------------- C1


def claim_c1(ctx: BookContext, dataset: str) -> ClaimResult:
    table = overall_contrasts(ctx, TABLE_METRICS)
    table = table[table["dataset"] == dataset]
    if table.empty:
        return _not_tested("C1", dataset, f"no overall runs of {ctx.focal_label} and a baseline on this dataset")
    verdict = stats.claim_verdict(list(table["contrast"]))
    rows, shown = [], []
    for metric, part in table.groupby("metric", sort=False):
        strongest = part.loc[part["baseline mean"].idxmax()]
        contrast = strongest["contrast"]
        beaten = sum(c.above_zero() for c in part["contrast"])
        rows.append({"metric": metric, "strongest baseline": strongest["variant"], **contrast.row(),
                     "baselines beaten (all intervals > 0)": beaten, "baselines": len(part)})
        cells = contrast_cells(contrast)
        margin = _paper_margin(ctx, dataset, strongest["model"], metric)
        rows[-1].update(mde_numbers(contrast), **{"paper's margin %": margin})
        shown.append({"metric": metric_label(metric), "strongest baseline": strongest["variant"],
                      f"{ctx.focal_label} − strongest": cells["difference"], "95% CI users": cells["95% CI users"],
                      "95% CI seeds": cells["95% CI seeds"], "MDE": cells["MDE"],
                      "margin (paper)": fmt_pct(margin) if margin is not None else DASH,
                      "beats": f"{beaten}/{len(part)}"})
    main = table[(table["metric"] == "recall@20")]
    main = main.loc[main["baseline mean"].idxmax()] if len(main) else table.iloc[0]
    every = contrast_numbers(table).assign(level="every baseline")
    every["paper's margin %"] = [_paper_margin(ctx, dataset, m, metric) for m, metric in zip(table["model"], table["metric"])]
    details = pd.concat([pd.DataFrame(rows).assign(dataset=dataset), every], ignore_index=True)
    result = ClaimResult("C1", dataset, verdict,
                         _headline(main["contrast"], f"over {main['variant']} ({metric_label(main['metric'])})"),
                         _basis(table["contrast"]), details, pd.DataFrame(shown).set_index("metric"),
                         f"beats: baselines whose every interval of {ctx.focal_label} − baseline lies above 0; " + MDE_NOTE +
                         "; margin (paper): the paper's LGMRec number over the baseline's published value (the "
                         "published record, on the Amazon data)")
    return _with_mde(result, main["contrast"], _paper_margin(ctx, dataset, main["model"], main["metric"]), len(table))


def _paper_margin(ctx: BookContext, dataset: str, baseline: str, metric: str) -> float | None:
    """The paper's margin of LGMRec over ``baseline`` in % (the published record), None where it has
    none or the focal model is not LGMRec (the paper claims nothing about another model)."""
    from ..literature import METRICS, claimed_margin
    from ..models import dataset_family

    if ctx.focal != REFERENCE_MODEL:
        return None
    family = dataset_family(dataset)
    margin = claimed_margin(family, baseline, metric) if family and metric in METRICS else None
    return None if margin is None else 100 * margin


# ---------------------------------------------------------------------------- C2, C3


def claim_ablation(ctx: BookContext, dataset: str) -> list[ClaimResult]:
    results = []
    if ctx.focal != REFERENCE_MODEL:
        why = f"not run: the ablation is LGMRec's; the focal model {ctx.focal_label} defines none"
        return [_not_tested(claim, dataset, why) for claim in ABLATION_PAIRS]
    for claim, variants in ABLATION_PAIRS.items():
        table = variant_contrasts(ctx, "ablation", FULL_VARIANT, None, MAIN_METRICS)
        table = table[(table["dataset"] == dataset) & table["variant"].isin(variants)]
        if table.empty:
            results.append(_not_tested(claim, dataset, "no ablation runs on this dataset in this profile"))
            continue
        verdict = stats.claim_verdict(list(table["contrast"]))
        shown = []
        for row in table.to_dict("records"):
            cells = contrast_cells(row["contrast"])
            shown.append({"comparison": f"full − {row['variant']}", "metric": metric_label(row["metric"]),
                          "difference": cells["difference"], "95% CI users": cells["95% CI users"],
                          "95% CI seeds": cells["95% CI seeds"], "p users": cells["p users"],
                          "p seeds (min)": cells["p seeds (min)"], "MDE": cells["MDE"]})
        weakest = min(table["contrast"], key=lambda c: c.ci_users()[0] if np.isfinite(c.ci_users()[0]) else np.inf)
        row = table[table["contrast"].map(lambda c: c is weakest)].iloc[0]
        result = ClaimResult(
            claim, dataset, verdict,
            _headline(weakest, f"weakest: full − {row['variant']} ({metric_label(row['metric'])})"),
            _basis(table["contrast"]), contrast_numbers(table), pd.DataFrame(shown).set_index(["comparison", "metric"]),
            MDE_NOTE + "; the paper's ablation numbers were not obtained: no claimed margin to set it against")
        results.append(_with_mde(result, weakest, None, len(table)))
    return results


# ---------------------------------------------------------------------------- C4


def strongest_baseline(ctx: BookContext, dataset: str, metric: str = "recall@20") -> str | None:
    runs = ctx.runs("overall")
    runs = runs[(runs["dataset"] == dataset) & ~is_reference(runs, ctx.focal) & (runs["variant"] != PUBLISHED_VARIANT)]
    if runs.empty:
        return None
    return runs.groupby("variant")[metric].mean().idxmax()


def claim_c4(ctx: BookContext, dataset: str) -> ClaimResult:
    runs = ctx.runs("overall")
    runs = runs[runs["dataset"] == dataset]
    baseline = strongest_baseline(ctx, dataset)
    reference = runs[is_reference(runs, ctx.focal)]
    if baseline is None or reference.empty:
        return _not_tested("C4", dataset, f"no overall runs of {ctx.focal_label} and a baseline on this dataset")
    other = runs[runs["variant"] == baseline]
    n_train = ctx.n_train(dataset)
    cut = float(n_train.median())
    few = n_train <= cut
    contrasts, rows, shown = [], [], []
    for metric in MAIN_METRICS:
        a, b = ctx.user_matrix(reference, metric), ctx.user_matrix(other, metric)
        seeds = [s for s in a.columns if s in set(b.columns)]
        users = a.index.intersection(b.index)
        differences = a.loc[users, seeds] - b.loc[users, seeds]
        contrast = stats.group_contrast(differences, few)
        contrasts.append(contrast)
        in_few = few.reindex(users).fillna(False).astype(bool)
        advantage_few = float(differences[in_few.to_numpy()].mean(axis=1).mean())
        advantage_many = float(differences[~in_few.to_numpy()].mean(axis=1).mean())
        rows.append({"metric": metric, "strongest baseline": baseline, "median n_train": cut,
                     "users few": int(in_few.sum()), "users many": int((~in_few).sum()),
                     "advantage few": advantage_few, "advantage many": advantage_many, **contrast.row()})
        cells = contrast_cells(contrast)
        shown.append({"metric": metric_label(metric), "advantage, few": fmt_signed(advantage_few),
                      "advantage, many": fmt_signed(advantage_many), "few − many": fmt_signed(contrast.estimate),
                      "95% CI users": cells["95% CI users"], "95% CI seeds": cells["95% CI seeds"],
                      "p (Mann-Whitney)": fmt_p(contrast.p_users), "MDE": cells["MDE"]})
        rows[-1].update(mde_numbers(contrast))
    verdict = stats.claim_verdict(contrasts)
    main = contrasts[0]
    note = (f"strongest baseline (mean Recall@20): {baseline}; few: at most {cut:g} training interactions "
            f"({rows[0]['users few']} users), many: more ({rows[0]['users many']} users); MDE: the minimum "
            f"detectable effect at 80 % power, absolute (a difference of differences has no baseline mean)")
    effect = (f"advantage over {baseline}, few − many (Recall@20): {fmt_signed(main.estimate)}, "
              f"95%{NBSP}CI{NBSP}users {fmt_ci(*main.ci_users())}")
    result = ClaimResult("C4", dataset, verdict, effect, _basis(contrasts),
                         pd.DataFrame(rows).assign(dataset=dataset), pd.DataFrame(shown).set_index("metric"), note)
    return _with_mde(result, main, None, len(contrasts))


# ---------------------------------------------------------------------------- C5


def claim_c5(ctx: BookContext, dataset: str) -> ClaimResult:
    """The equivalence test on real data; on every profile, the published record's evidence
    (LGMRec's published range, its independent values, the authors' post-fix rerun) goes with the
    verdict, and on real data the reproduced mean is placed in that range."""
    from ..check import REAL_TOLERANCE
    from ..models import dataset_family
    from ..reference import read_reference
    from .published import lgmrec_record_text, placement_text

    family = dataset_family(dataset)
    record = f"; {lgmrec_record_text(family)}" if family else ""
    if ctx.focal != REFERENCE_MODEL:
        return _not_tested("C5", dataset, f"not run: the published numbers are LGMRec's; the focal model is "
                                          f"{ctx.focal_label}")
    runs = ctx.runs("overall")
    runs = runs[runs["dataset"] == dataset]
    kinds = set(runs["data_kind"].dropna())
    if runs.empty:
        return _not_tested("C5", dataset, "no overall runs on this dataset" + record)
    if kinds != {"real"}:
        why = ("not testable on synthetic data" if "synthetic" in kinds
               else "not testable: the data are not the verified released files")
        if family:  # the Amazon data's published numbers, beside runs on other data
            record = (f"; for reference (the Amazon data, not comparable with this profile's runs): "
                      f"{lgmrec_record_text(family)}")
        return _not_tested("C5", dataset, why + record)
    reported = read_reference("reported")
    published = reported[(reported["dataset"] == dataset_family(dataset)) & (reported["model"] == "LGMRec")
                         & (reported["source"] == PUBLISHED_SOURCE)]
    variant = PUBLISHED_VARIANT if (runs["variant"] == PUBLISHED_VARIANT).any() else FULL_VARIANT
    lgmrec = runs[(runs["model"] == "lgmrec") & (runs["variant"] == variant)]
    if published.empty or lgmrec.empty:
        return _not_tested("C5", dataset, "no published LGMRec number or no LGMRec run for this dataset" + record)
    tolerance = REAL_TOLERANCE["rel_tol"]
    tests, rows, shown = [], [], []
    for metric in TABLE_METRICS:
        value = published.loc[published["metric"] == metric, "value"]
        if value.empty:
            continue
        test = stats.Equivalence(float(value.iloc[0]), lgmrec.sort_values("seed")[metric].to_numpy(float), tolerance)
        tests.append(test)
        low, high = test.interval()
        rows.append({"metric": metric, "variant": variant, "published": test.published,
                     "reproduced mean": float(test.values.mean()), "seeds": len(test.values),
                     "deviation": test.deviation, "90% CI low": low, "90% CI high": high,
                     "tolerance": tolerance, "verdict": test.verdict()})
        shown.append({"metric": metric_label(metric), "published": fmt_num(test.published),
                      "reproduced": fmt_num(test.values.mean()), "deviation": fmt_pct(100 * test.deviation),
                      "90% CI": (f"[{fmt_pct(100 * low)}, {fmt_pct(100 * high)}]" if np.isfinite(low) else DASH),
                      "verdict": test.verdict()})
    verdict = stats.equivalence_verdict(tests)
    worst = max(tests, key=lambda t: abs(t.deviation))
    effect = f"{variant} vs paper: largest deviation {fmt_pct(100 * worst.deviation)} (tolerance ±{100 * tolerance:g}{NBSP}%)"
    placed = placement_text(family, lgmrec["recall@20"].to_numpy(float)) if family else ""
    effect += (f"; {placed}" if placed else "") + record
    return ClaimResult("C5", dataset, verdict, effect, f"{len(worst.values)} seeds",
                       pd.DataFrame(rows).assign(dataset=dataset), pd.DataFrame(shown).set_index("metric"),
                       note=(placed + record).lstrip("; "))


# ---------------------------------------------------------------------------- tables


def verdict_frame(ctx: BookContext) -> pd.DataFrame:
    """One row per claim and dataset: claim, dataset, verdict, effect, basis (formatted)."""
    rows = [{"claim": f"{r.claim} {CLAIMS[r.claim][0]}", "dataset": r.dataset, "verdict": r.verdict,
             "effect (95% CI)": r.effect, "seeds, users": r.basis, "what this design could detect": r.detectable}
            for r in compute_claims(ctx)]
    return pd.DataFrame(rows)


def verdict_table(ctx: BookContext, name: str = "claims-verdicts") -> Table:
    frame = verdict_frame(ctx).set_index(["claim", "dataset"])
    counts = frame["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in stats.VERDICTS if counts.get(v, 0))
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold["verdict"] = True
    return Table(frame, name, caption=f"Claims of the paper tested on {ctx.data_line()} "
                 f"(level α = {stats.ALPHA}; {summary})", bold=bold,
                 note="supported: every comparison of the claim lies above 0 with every 95 % interval (users, and "
                      "seeds where there are 2 or more); contradicted: one lies below 0 at the Bonferroni-corrected "
                      "level; inconclusive: neither. C5 is an equivalence test within ±5 %. What this design could "
                      "detect: the headline comparison's minimum detectable effect (80 % power at the verdict's "
                      "level, from the observed variances over users and seeds) against the paper's margin for it "
                      "where the published record gives one.")


def claim_tables(ctx: BookContext, claim: str) -> Tables:
    """The detailed comparisons of one claim, one table per dataset."""
    out = Tables()
    for result in [r for r in compute_claims(ctx) if r.claim == claim]:
        if result.verdict == stats.NOT_TESTED:
            out.append(Html(f'<p class="lgmrec-not-tested" data-claim="{claim}-{escape(result.dataset)}">'
                            f"<b>{claim} on {escape(result.dataset)}: not tested</b>: {escape(result.effect)}.</p>"))
            continue
        caption = f"{claim} on {result.dataset}: {result.verdict} ({result.basis})"
        out.append(Table(result.shown, f"claim-{claim}-{result.dataset}", caption=caption, data=result.details,
                         index=True, note=result.note))
    return out


def claim_definitions(focal_label: str = "LGMRec") -> pd.DataFrame:
    """The claims as the paper states them for LGMRec; C1 and C4 of another focal model name it instead."""
    rows = []
    for key, (_, statement) in CLAIMS.items():
        if key in ("C1", "C4"):
            statement = statement.replace("LGMRec", focal_label)
        rows.append({"claim": key, "statement": statement, "test": TESTS[key].replace("LGMRec", focal_label)
                     if key == "C1" else TESTS[key]})
    return pd.DataFrame(rows).set_index("claim")


def definitions_table(ctx: BookContext | None = None) -> Table:
    label = ctx.focal_label if ctx is not None else "LGMRec"
    return Table(claim_definitions(label), "claims-definitions", caption="The claims and how each is tested")


__all__ = ["CLAIMS", "ClaimResult", "claim_definitions", "claim_tables", "compute_claims", "definitions_table",
           "strongest_baseline", "verdict_frame", "verdict_table"]
