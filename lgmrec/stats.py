"""Statistics of the experiment results: means over seeds, paired tests with Holm correction, and
the reported-vs-reproduced comparison.

Tests of LGMRec against each baseline, per dataset and metric:

- across seeds: paired t-test and Wilcoxon signed-rank over the seeds both models ran with
  (n = number of seeds; with 3 seeds Wilcoxon cannot reach p < 0.25, it is shown for completeness);
- across test users: Wilcoxon signed-rank on the per-user metric, each user's value averaged over
  the seeds both models ran with (the users are the same: the dataset's test users). Users with
  equal values under both models carry no sign and are dropped (Wilcoxon's standard treatment).

p-values are Holm-corrected within each family: one dataset x metric x test over all baselines.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

REFERENCE_MODEL = "lgmrec"
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")  # the paper's table columns

#: Recall@20 of LGMRec reported by later papers that re-ran it on the released files
#: (shared/reference/README.md): a reproduction inside the band agrees with the literature.
LITERATURE_BANDS = {
    ("baby", "recall@20"): (0.0965, 0.1002),
    ("sports", "recall@20"): (0.1063, 0.1091),
    ("clothing", "recall@20"): (0.0791, 0.0830),
}

SOURCE_LABELS = {
    "paper-table2": "LGMRec paper, Table 2",
    "official-log-2023-08-12": "authors' released training logs",
    "author-rerun-after-fix": "authors' rerun after the hyperedge fix",
    "mmrec-evaluation-readme": "MMRec framework README",
    "third-party-table-unverified": "later paper's table (unverified)",
}


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN, is not counted)."""
    p = np.asarray(list(pvalues), dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))  # (m - rank + 1) * p_(rank), ranks from 1
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def mean_std(runs: pd.DataFrame, by: list[str], metrics: Iterable[str] = TABLE_METRICS) -> pd.DataFrame:
    """Mean, sample std (ddof 1; NaN for one seed) and number of seeds per group."""
    metrics = [m for m in metrics if m in runs.columns]
    grouped = runs.groupby(by, sort=False)[metrics]
    out = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=1).add_suffix(" std"))
    out["seeds"] = runs.groupby(by, sort=False)["seed"].nunique()
    return out.reset_index()


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_seed_tests(
    runs: pd.DataFrame,
    metrics: Iterable[str] = ("recall@20", "ndcg@20"),
    reference: str = REFERENCE_MODEL,
) -> pd.DataFrame:
    """LGMRec vs each other model, paired over matching seeds, per dataset and metric.

    ``runs``: one row per run with columns dataset, model, seed and the metrics.
    """
    rows = []
    for dataset, part in runs.groupby("dataset", sort=False):
        ref = part[part["model"] == reference].set_index("seed")
        for model, other in part[part["model"] != reference].groupby("model", sort=False):
            other = other.set_index("seed")
            seeds = ref.index.intersection(other.index)
            for metric in metrics:
                a, b = ref.loc[seeds, metric].to_numpy(float), other.loc[seeds, metric].to_numpy(float)
                rows.append({"dataset": dataset, "model": model, "metric": metric, "seeds": len(seeds),
                             "reference mean": a.mean() if len(a) else np.nan,
                             "model mean": b.mean() if len(b) else np.nan,
                             "difference": (a - b).mean() if len(a) else np.nan,
                             "t-test p": _paired_t(a, b), "Wilcoxon p": _wilcoxon(a, b)})
    table = pd.DataFrame(rows)
    return _adjust(table, ["t-test p", "Wilcoxon p"])


def per_user_tests(
    runs: pd.DataFrame,
    read_per_user: Callable[[pd.Series], pd.DataFrame],
    metrics: Iterable[str] = ("recall@20", "ndcg@20"),
    reference: str = REFERENCE_MODEL,
) -> pd.DataFrame:
    """Wilcoxon signed-rank over test users (values averaged over matching seeds), per dataset,
    baseline and metric. ``read_per_user(row)`` returns a run's per-user frame (user + metrics)."""
    metrics = list(metrics)
    rows = []
    for dataset, part in runs.groupby("dataset", sort=False):
        ref = part[part["model"] == reference]
        for model, other in part[part["model"] != reference].groupby("model", sort=False):
            seeds = sorted(set(ref["seed"]) & set(other["seed"]))
            if not seeds:
                continue
            a = _seed_mean_per_user(ref[ref["seed"].isin(seeds)], read_per_user, metrics)
            b = _seed_mean_per_user(other[other["seed"].isin(seeds)], read_per_user, metrics)
            both = a.add_suffix(" ref").join(b.add_suffix(" other"), how="inner")
            for metric in metrics:
                x, y = both[f"{metric} ref"].to_numpy(), both[f"{metric} other"].to_numpy()
                rows.append({"dataset": dataset, "model": model, "metric": metric, "seeds": len(seeds),
                             "users": len(both), "users differing": int((x != y).sum()),
                             "reference mean": x.mean(), "model mean": y.mean(),
                             "difference": (x - y).mean(), "Wilcoxon p": _wilcoxon(x, y)})
    return _adjust(pd.DataFrame(rows), ["Wilcoxon p"])


def _seed_mean_per_user(runs: pd.DataFrame, read_per_user, metrics: list[str]) -> pd.DataFrame:
    frames = [read_per_user(row).set_index("user")[metrics] for _, row in runs.iterrows()]
    return pd.concat(frames).groupby(level=0).mean()


def _paired_t(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return np.nan
    d = a - b
    if np.allclose(d, d[0]):  # zero variance: the t statistic is undefined
        return np.nan if d[0] != 0 else 1.0
    return float(sps.ttest_rel(a, b).pvalue)


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) == 0:
        return np.nan
    if not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(a, b).pvalue)


def _adjust(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Holm within each dataset x metric family, one adjusted column per test."""
    if table.empty:
        return table
    for column in columns:
        adjusted = pd.Series(np.nan, index=table.index)
        for _, family in table.groupby(["dataset", "metric"], sort=False):
            adjusted[family.index] = holm(family[column])
        table[f"{column} (Holm)"] = adjusted
    return table


def significance_marks(p: float, alpha: float = 0.05) -> str:
    if p is None or np.isnan(p):
        return ""
    return "**" if p < alpha / 5 else "*" if p < alpha else ""


def reported_vs_reproduced(
    runs: pd.DataFrame,
    reported: pd.DataFrame,
    labels: dict[str, str],
    metrics: Iterable[str] = TABLE_METRICS,
) -> pd.DataFrame:
    """Every reproduced mean next to every published number for the same dataset family, model
    and metric, with its source. Delta % only where the reproduction ran on the released data;
    numbers from synthetic data are shown and labelled "not comparable".

    ``runs``: one row per run (dataset, model, seed, data_kind, metrics); ``reported``: the
    ``reported`` reference table; ``labels``: model name -> label as spelled in ``reported``.
    """
    from .models import dataset_family

    rows = []
    summary = mean_std(runs, ["dataset", "model", "data_kind"], metrics)
    for _, row in summary.iterrows():
        family = dataset_family(row["dataset"])
        label = labels.get(row["model"], row["model"])
        matches = reported[(reported["dataset"] == family) & (reported["model"] == label)]
        for metric in metrics:
            if f"{metric} mean" not in row:
                continue
            mean, std = row[f"{metric} mean"], row[f"{metric} std"]
            real = row["data_kind"] == "real"
            data = (f"real: {row['dataset']} (released files)" if real else
                    f"{row['data_kind']}: {row['dataset']}" + (" (not the Amazon data)" if not real else ""))
            for _, ref in matches[matches["metric"] == metric].iterrows():
                delta = 100.0 * (mean - ref["value"]) / ref["value"] if real else np.nan
                band = LITERATURE_BANDS.get((family, metric)) if label == "LGMRec" else None
                if not real:
                    verdict = "synthetic data: not comparable" if row["data_kind"] == "synthetic" \
                        else "unverified data folder: not comparable"
                elif band is not None:
                    inside = band[0] <= mean <= band[1]
                    verdict = f"{'inside' if inside else 'outside'} literature band {band[0]:.4f}-{band[1]:.4f}"
                else:
                    verdict = f"delta {delta:+.1f} %"
                rows.append({
                    "dataset": row["dataset"], "data": data, "model": label, "metric": metric,
                    "reproduced": format_mean_std(mean, std), "reproduced mean": mean, "seeds": row["seeds"],
                    "reported": ref["value"], "reported by": SOURCE_LABELS.get(ref["source"], ref["source"]),
                    "source id": ref["source"], "delta %": delta, "verdict": verdict,
                })
    return pd.DataFrame(rows)


def sparsity_groups(
    per_user: pd.DataFrame,
    edges: Iterable[int] | None = None,
    metrics: Iterable[str] = ("recall@20", "ndcg@20"),
) -> pd.DataFrame:
    """Mean per-user metric by group of training-interaction counts.

    ``per_user``: rows of (dataset, model, seed, user, n_train, metrics...). ``edges``: lower
    bounds of the groups (default: quartile-like cut points of the users' counts, at least 3).
    Values are averaged over users within a seed, then over seeds.
    """
    metrics = list(metrics)
    counts = per_user.drop_duplicates(["dataset", "user"])["n_train"]
    if edges is None:
        cuts = np.unique(np.quantile(counts, [0.0, 0.25, 0.5, 0.75]).round().astype(int))
        edges = [int(c) for c in cuts]
    edges = sorted(set(int(e) for e in edges))
    bounds = edges + [int(counts.max()) + 1]
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in zip(bounds[:-1], bounds[1:])]
    frame = per_user.copy()
    frame["group"] = pd.cut(frame["n_train"], bins=bounds, right=False, labels=labels)
    per_seed = frame.groupby(["dataset", "group", "model", "seed"], observed=True)[metrics].mean()
    users = frame.groupby(["dataset", "group", "model", "seed"], observed=True)["user"].nunique()
    per_seed = per_seed.join(users.rename("users")).reset_index()
    result = per_seed.groupby(["dataset", "group", "model"], observed=True).agg(
        **{m: (m, "mean") for m in metrics}, users=("users", "first"), seeds=("seed", "nunique"))
    return result.reset_index()


__all__ = [
    "LITERATURE_BANDS", "TABLE_METRICS", "format_mean_std", "holm", "mean_std", "paired_seed_tests",
    "per_user_tests", "reported_vs_reproduced", "significance_marks", "sparsity_groups",
]
