"""Paired comparisons computed from the per-user metrics: LGMRec against every baseline of the
overall experiment, and against each ablation variant; each a :class:`lgmrec.stats.Contrast`
(difference, bootstrap interval over users, t interval and exact Wilcoxon over seeds) with its
minimum detectable effect at 80 % power (:mod:`lgmrec.power`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import power, stats
from ..grids import PUBLISHED_VARIANT
from .context import MAIN_METRICS, BookContext, is_reference, metric_label, order_rows
from .display import DASH, NBSP, fmt_ci, fmt_num, fmt_p, fmt_pct, fmt_signed


def overall_contrasts(ctx: BookContext, metrics=stats.TABLE_METRICS) -> pd.DataFrame:
    """The focal model (LGMRec unless the profile names another) minus each baseline, per dataset and
    metric: columns dataset, model, variant, metric, baseline mean, focal mean, contrast (a Contrast),
    plus Holm-adjusted p-values."""
    key = ("overall_contrasts", tuple(metrics))
    if key in ctx.cache:
        return ctx.cache[key]
    runs = ctx.runs("overall")
    rows = []
    for dataset, part in runs.groupby("dataset", sort=False):
        reference = part[is_reference(part, ctx.focal)]
        if reference.empty:
            continue
        others = part[~is_reference(part, ctx.focal) & (part["variant"] != PUBLISHED_VARIANT)]
        for (model, variant), other in order_rows(others).groupby(["model", "variant"], sort=False):
            for metric in metrics:
                contrast = stats.paired_contrast(ctx.user_matrix(reference, metric), ctx.user_matrix(other, metric))
                rows.append({"dataset": dataset, "model": model, "variant": variant, "metric": metric,
                             "focal mean": reference[metric].mean(), "baseline mean": other[metric].mean(),
                             "contrast": contrast})
    table = pd.DataFrame(rows, columns=["dataset", "model", "variant", "metric", "focal mean", "baseline mean",
                                        "contrast"])
    table = adjust(table)
    ctx.cache[key] = table
    return table


def variant_contrasts(ctx: BookContext, experiment: str, reference_variant: str, variants=None,
                      metrics=MAIN_METRICS) -> pd.DataFrame:
    """Within one experiment (ablation): ``reference_variant`` minus each other variant."""
    key = ("variant_contrasts", experiment, reference_variant, tuple(variants or ()), tuple(metrics))
    if key in ctx.cache:
        return ctx.cache[key]
    runs = ctx.runs(experiment)
    rows = []
    for dataset, part in runs.groupby("dataset", sort=False):
        reference = part[part["variant"] == reference_variant]
        if reference.empty:
            continue
        names = [v for v in (variants or part["variant"].unique()) if v != reference_variant]
        for variant in names:
            other = part[part["variant"] == variant]
            if other.empty:
                continue
            for metric in metrics:
                contrast = stats.paired_contrast(ctx.user_matrix(reference, metric), ctx.user_matrix(other, metric))
                rows.append({"dataset": dataset, "variant": variant, "metric": metric,
                             "reference mean": reference[metric].mean(), "variant mean": other[metric].mean(),
                             "contrast": contrast})
    table = adjust(pd.DataFrame(rows, columns=["dataset", "variant", "metric", "reference mean", "variant mean",
                                               "contrast"]))
    ctx.cache[key] = table
    return table


def adjust(table: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjusted p-values (users, seeds) within each dataset x metric family."""
    table = table.copy()
    table["p users"] = [c.p_users for c in table["contrast"]] if len(table) else []
    table["p seeds"] = [c.p_seeds for c in table["contrast"]] if len(table) else []
    for column in ("p users", "p seeds"):
        adjusted = pd.Series(np.nan, index=table.index, dtype=float)
        for _, family in table.groupby(["dataset", "metric"], sort=False):
            adjusted[family.index] = stats.holm(family[column])
        table[f"{column} (Holm)"] = adjusted
    return table


def contrast_numbers(table: pd.DataFrame, level: float = stats.LEVEL) -> pd.DataFrame:
    """A contrasts table with the Contrast objects spelled out as numeric columns (for CSVs)."""
    if table.empty:
        return table.drop(columns=["contrast"], errors="ignore")
    numbers = pd.DataFrame([{**c.row(level), **mde_numbers(c)} for c in table["contrast"]], index=table.index)
    return pd.concat([table.drop(columns=["contrast", "p users", "p seeds"], errors="ignore"), numbers], axis=1)


def contrast_cells(contrast: stats.Contrast, p_users: float | None = None, p_seeds: float | None = None,
                   level: float = stats.LEVEL) -> dict[str, str]:
    """Formatted cells: difference (and %), 95 % CIs over users and seeds, p-values with the
    smallest attainable exact p over seeds."""
    p_users = contrast.p_users if p_users is None else p_users
    p_seeds = contrast.p_seeds if p_seeds is None else p_seeds
    seeds_ci = fmt_ci(*contrast.ci_seeds(level)) if contrast.n_seeds >= 2 else f"– ({contrast.n_seeds} seed)"
    return {
        "difference": f"{fmt_signed(contrast.estimate)}{NBSP}({fmt_pct(contrast.relative)})",
        "95% CI users": fmt_ci(*contrast.ci_users(level)),
        "95% CI seeds": seeds_ci,
        "p users": fmt_p(p_users),
        "p seeds (min)": (f"{fmt_p(p_seeds)} ({fmt_p(contrast.p_seeds_min)})" if contrast.n_seeds >= 2
                          else f"– ({contrast.n_seeds} seed)"),
        "MDE": mde_cell(contrast),
    }


MDE_NOTE = ("MDE: the minimum detectable effect, the true difference this design would detect with 80 % power at "
            "the verdict's level (in % of the baseline mean; absolute in the CSV)")


def mde_numbers(contrast: stats.Contrast) -> dict[str, float]:
    """The contrast's minimum detectable effect at 80 % power for its own design (CSV columns)."""
    found = power.mde(contrast)
    relative = 100 * found.rule / contrast.baseline if np.isfinite(contrast.baseline) and contrast.baseline else np.nan
    return {"MDE": found.rule, "MDE %": relative, "MDE users": found.users, "MDE seeds": found.seeds}


def mde_cell(contrast: stats.Contrast) -> str:
    numbers = mde_numbers(contrast)
    if not np.isfinite(numbers["MDE"]):
        return DASH
    if np.isfinite(numbers["MDE %"]):  # in % of the baseline, as the paper's margins are (absolute: the CSV)
        return f"±{numbers['MDE %']:.1f} %"  # a plain space: the narrowest column may wrap here
    return f"±{fmt_num(numbers['MDE'])}"


def label_metric(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["metric"] = table["metric"].map(metric_label)
    return table


__all__ = ["MDE_NOTE", "contrast_cells", "contrast_numbers", "mde_cell", "mde_numbers", "overall_contrasts", "variant_contrasts"]
