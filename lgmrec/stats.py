"""Statistics of the experiment results: means over seeds, effect sizes with confidence
intervals, paired tests with Holm correction, claim verdicts, and the reported-vs-reproduced
comparison.

Two sources of variation, two intervals for every mean difference (LGMRec minus another model or
variant, per dataset and metric):

- across test users: each user's metric averaged over the seeds both sides ran with, the
  difference per user, and a percentile bootstrap of its mean over users (``N_RESAMPLES``
  resamples, fixed seed: the book is deterministic); test: Wilcoxon signed-rank over users (users
  with equal values carry no sign and are dropped, Wilcoxon's standard treatment);
- across seeds: the difference of the two runs' metrics per seed and a t interval over seeds
  (needs 2 seeds); test: the EXACT two-sided Wilcoxon signed-rank over seeds, whose smallest
  attainable p-value is 2 / 2^n (0.5 at 2 seeds, 0.25 at 3, 0.0625 at 5): with 5 seeds or fewer it
  can never fall below 0.05, which the tables say next to every p-value.

Claims (:func:`claim_verdict`), at level ``ALPHA``: SUPPORTED when every comparison the claim
makes lies on the claimed side of zero with every available 95 % interval (users, and seeds where
there are 2 or more): an intersection-union test, which needs no multiplicity correction;
CONTRADICTED when some comparison lies on the other side with every available interval at the
Bonferroni-corrected level 1 - ALPHA / m (m comparisons); INCONCLUSIVE otherwise.

p-values are Holm-corrected within each family: one dataset x metric x test over all baselines.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

REFERENCE_MODEL = "lgmrec"
ALPHA = 0.05  # level of every test and verdict in the book
LEVEL = 1 - ALPHA  # confidence level of the intervals shown
N_RESAMPLES = 2000  # bootstrap resamples
BOOTSTRAP_SEED = 20240  # the bootstrap's random generator seed: the same results give the same book
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")  # the paper's table columns


def literature_band(family: str, metric: str) -> tuple[float, float, int] | None:
    """LGMRec's published range on a dataset family and metric, and how many sources print a
    value in it, computed from the published record (:mod:`lgmrec.literature`); None: no values."""
    from . import literature

    if family not in ("baby", "sports", "clothing") or metric not in literature.METRICS:
        return None
    record = literature.model_record(family, literature.MODEL, metric)
    return None if record is None else (record.low, record.high, record.n_sources)


SOURCE_LABELS = {
    "paper-table2": "LGMRec paper, Table 2",
    "official-log-2023-08-12": "authors' released training logs",
    "author-rerun-after-fix": "authors' rerun after the hyperedge fix",
    "mmrec-evaluation-readme": "MMRec framework README",
    "third-party-table-unverified": "later paper's table (unverified)",
    "published-record": "published record: median of the independent values (lgmrec.literature)",
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
                band = literature_band(family, metric) if label == "LGMRec" else None
                if not real:
                    verdict = "synthetic data: not comparable" if row["data_kind"] == "synthetic" \
                        else "unverified data folder: not comparable"
                elif band is not None:
                    inside = band[0] <= mean <= band[1]
                    verdict = (f"{'inside' if inside else 'outside'} the published range {band[0]:.4f}-{band[1]:.4f} "
                               f"({band[2]} sources)")
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



# ---------------------------------------------------------------------------- intervals and tests


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n`` pairs:
    2 / 2^n (all differences of one sign), i.e. 1 at n = 1, 0.5 at 2, 0.25 at 3, 0.0625 at 5."""
    return float(min(1.0, 2.0 / 2.0 ** n)) if n > 0 else np.nan


def wilcoxon_p(differences: Sequence[float], exact: bool = True) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy.stats.wilcoxon):
    exact where possible (no zero and no tied absolute difference, at most 50 pairs), else the
    normal approximation; 1.0 when every difference is zero, NaN without pairs."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return np.nan
    if not np.any(d != 0):
        return 1.0
    nonzero = d[d != 0]
    can_be_exact = exact and len(d) <= 50 and len(nonzero) == len(d) and len(np.unique(np.abs(d))) == len(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(d, method="exact" if can_be_exact else "auto").pvalue)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """t confidence interval of the mean (scipy.stats.t); (NaN, NaN) with fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return (np.nan, np.nan)
    mean, sem = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    if sem == 0:
        return (float(mean), float(mean))
    half = sps.t.ppf(0.5 + level / 2, len(x) - 1) * sem
    return (float(mean - half), float(mean + half))


_RESAMPLES: dict = {}  # (n, resamples, seed, sample) -> index matrix: every contrast on one dataset reuses it


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int, sample: int) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``; the resampling indices
    depend only on (len, resamples, seed, sample), so paired contrasts on the same users share them."""
    n = len(values)
    key = (n, n_resamples, seed, sample)
    if n * n_resamples <= 8_000_000:
        if key not in _RESAMPLES:
            if len(_RESAMPLES) > 16:
                _RESAMPLES.clear()
            _RESAMPLES[key] = np.random.default_rng([seed, sample]).integers(0, n, (n_resamples, n), dtype=np.int32)
        return values[_RESAMPLES[key]].mean(axis=1)
    rng = np.random.default_rng([seed, sample])  # large samples: in chunks, not kept
    return np.concatenate([values[rng.integers(0, n, (min(200, n_resamples - i), n))].mean(axis=1)
                           for i in range(0, n_resamples, 200)])


def bootstrap_means(*samples: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap distribution of the mean of one sample, or of the difference of means of two
    (first minus second), each sample resampled on its own (percentile bootstrap, as
    ``scipy.stats.bootstrap(method="percentile")``, with resampling indices shared by all
    contrasts of the same size so that a page's many contrasts cost one draw)."""
    arrays = [np.asarray(x, dtype=float) for x in samples]
    if any(len(a) == 0 for a in arrays):
        return np.full(1, np.nan)
    if all(np.all(a == a[0]) for a in arrays):  # no variation: the distribution is one point
        return np.full(1, arrays[0][0] - (arrays[1][0] if len(arrays) > 1 else 0.0))
    means = _resampled_means(arrays[0], n_resamples, seed, 0)
    if len(arrays) > 1:
        means = means - _resampled_means(arrays[1], n_resamples, seed, 1)
    return means


def percentile_interval(distribution: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    if distribution.size == 0 or np.isnan(distribution).all():
        return (np.nan, np.nan)
    low, high = np.quantile(distribution, [0.5 - level / 2, 0.5 + level / 2])
    return (float(low), float(high))


@dataclass
class Contrast:
    """One estimated difference with what is needed for its intervals and tests.

    ``estimate``: the difference of means over users (each user's value averaged over the seeds);
    ``users_distribution``: its bootstrap distribution over users; ``seed_values``: the same
    difference computed within each seed (for the t interval and the exact Wilcoxon over seeds);
    ``baseline``: the mean it is relative to (for a difference in %, NaN when not meaningful)."""

    estimate: float
    n_users: int
    n_seeds: int
    users_distribution: np.ndarray = field(repr=False)
    seed_values: np.ndarray = field(repr=False)
    p_users: float = np.nan
    users_test: str = "Wilcoxon signed-rank over users"
    baseline: float = np.nan
    #: variance of a user x seed difference around its user and seed means (two-way residual; NaN
    #: with one seed) and the users count that scales the users interval (the design calculator's
    #: inputs, :mod:`lgmrec.power`)
    residual_var: float = np.nan
    n_effective: float = np.nan

    @property
    def se_users(self) -> float:
        """Standard error of the estimate over users: the bootstrap distribution's spread."""
        finite = self.users_distribution[np.isfinite(self.users_distribution)]
        return float(finite.std(ddof=1)) if len(finite) > 1 else np.nan

    def ci_users(self, level: float = LEVEL) -> tuple[float, float]:
        return percentile_interval(self.users_distribution, level)

    def ci_seeds(self, level: float = LEVEL) -> tuple[float, float]:
        return t_interval(self.seed_values, level)

    @property
    def p_seeds(self) -> float:
        return wilcoxon_p(self.seed_values) if self.n_seeds else np.nan

    @property
    def p_seeds_min(self) -> float:
        return min_wilcoxon_p(self.n_seeds)

    @property
    def relative(self) -> float:
        """The difference in % of the baseline mean."""
        if not np.isfinite(self.baseline) or self.baseline == 0:
            return np.nan
        return 100.0 * self.estimate / self.baseline

    def intervals(self, level: float = LEVEL) -> list[tuple[float, float]]:
        """The available intervals: users always, seeds where there are 2 or more."""
        found = [self.ci_users(level)]
        if self.n_seeds >= 2:
            found.append(self.ci_seeds(level))
        return [ci for ci in found if not any(np.isnan(ci))]

    def above_zero(self, level: float = LEVEL) -> bool:
        intervals = self.intervals(level)
        return bool(intervals) and all(low > 0 for low, _ in intervals)

    def below_zero(self, level: float = LEVEL) -> bool:
        intervals = self.intervals(level)
        return bool(intervals) and all(high < 0 for _, high in intervals)

    def row(self, level: float = LEVEL) -> dict:
        """The contrast as table columns (numbers; the book formats them)."""
        users, seeds = self.ci_users(level), self.ci_seeds(level)
        return {"difference": self.estimate, "difference %": self.relative,
                "CI users low": users[0], "CI users high": users[1],
                "CI seeds low": seeds[0], "CI seeds high": seeds[1],
                "p users": self.p_users, "p seeds (exact)": self.p_seeds, "min p seeds": self.p_seeds_min,
                "seeds": self.n_seeds, "users": self.n_users}


def paired_contrast(a: pd.DataFrame, b: pd.DataFrame, n_resamples: int = N_RESAMPLES) -> Contrast:
    """``a`` minus ``b``, paired over users and seeds. ``a``, ``b``: one metric as a users x seeds
    frame (index: user, columns: seed); only the seeds and users both hold are compared."""
    seeds = [s for s in a.columns if s in set(b.columns)]
    users = a.index.intersection(b.index)
    if not seeds or len(users) == 0:
        return Contrast(np.nan, 0, 0, np.full(1, np.nan), np.array([]))
    x, y = a.loc[users, seeds], b.loc[users, seeds]
    per_user = (x.mean(axis=1) - y.mean(axis=1)).to_numpy(float)
    per_seed = (x.mean(axis=0) - y.mean(axis=0)).to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_users = wilcoxon_p(per_user, exact=False) if len(per_user) else np.nan
    return Contrast(float(per_user.mean()), len(users), len(seeds), bootstrap_means(per_user, n_resamples=n_resamples),
                    per_seed, p_users, baseline=float(y.to_numpy().mean()),
                    residual_var=residual_variance([(x - y).to_numpy(float)]), n_effective=float(len(users)))


def group_contrast(differences: pd.DataFrame, in_first: pd.Series, n_resamples: int = N_RESAMPLES) -> Contrast:
    """Mean paired difference among the users of a first group minus that among the others.

    ``differences``: per-user paired differences as a users x seeds frame; ``in_first``: a boolean
    per user (same index). Users are resampled within their group; the test over users is the
    Mann-Whitney U test of the two groups' differences (scipy.stats.mannwhitneyu)."""
    mask = in_first.reindex(differences.index).fillna(False).astype(bool).to_numpy()
    first, second = differences[mask], differences[~mask]
    if len(first) == 0 or len(second) == 0:
        return Contrast(np.nan, len(differences), differences.shape[1], np.full(1, np.nan), np.array([]),
                        users_test="Mann-Whitney U (groups)")
    u1, u2 = first.mean(axis=1).to_numpy(float), second.mean(axis=1).to_numpy(float)
    per_seed = (first.mean(axis=0) - second.mean(axis=0)).to_numpy(float)
    p = float(sps.mannwhitneyu(u1, u2, alternative="two-sided").pvalue) if np.any(np.r_[u1, u2] != u1[0]) else 1.0
    return Contrast(float(u1.mean() - u2.mean()), len(differences), differences.shape[1],
                    bootstrap_means(u1, u2, n_resamples=n_resamples), per_seed, p, users_test="Mann-Whitney U (groups)",
                    residual_var=residual_variance([first.to_numpy(float), second.to_numpy(float)]),
                    n_effective=1.0 / (1.0 / len(u1) + 1.0 / len(u2)))


def residual_variance(blocks: Sequence[np.ndarray]) -> float:
    """Pooled two-way residual variance of users x seeds blocks: each entry minus its user's mean
    and its seed's mean (plus the block's mean), on (users - 1)(seeds - 1) degrees of freedom per
    block. It is the part of a per-user difference that more seeds average away. NaN with one seed."""
    total, df = 0.0, 0
    for block in blocks:
        n, s = block.shape
        if n < 2 or s < 2:
            continue
        residual = block - block.mean(axis=1, keepdims=True) - block.mean(axis=0, keepdims=True) + block.mean()
        total += float((residual ** 2).sum())
        df += (n - 1) * (s - 1)
    return total / df if df else np.nan


SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_TESTED = "not tested"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED)


def claim_verdict(contrasts: Sequence[Contrast], alpha: float = ALPHA) -> str:
    """Verdict of a claim that every contrast is above zero (see the module docstring):
    supported (all above at 1 - alpha), contradicted (one below at 1 - alpha / m), else
    inconclusive; "not tested" without any estimable contrast."""
    usable = [c for c in contrasts if c.n_users > 0 and np.isfinite(c.estimate)]
    if not usable:
        return NOT_TESTED
    if len(usable) == len(contrasts) and all(c.above_zero(1 - alpha) for c in usable):
        return SUPPORTED
    if any(c.below_zero(1 - alpha / len(contrasts)) for c in usable):
        return CONTRADICTED
    return INCONCLUSIVE


@dataclass
class Equivalence:
    """Relative deviation of seed values from a published number, tested for equivalence within
    ``tolerance`` (two one-sided t tests, TOST, at ``alpha``: the 1 - 2 alpha t interval)."""

    published: float
    values: np.ndarray
    tolerance: float

    @property
    def deviation(self) -> float:
        return float(self.values.mean() / self.published - 1.0) if len(self.values) else np.nan

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        return t_interval(self.values / self.published - 1.0, 1 - 2 * alpha)

    def verdict(self, alpha: float = ALPHA) -> str:
        low, high = self.interval(alpha)
        if np.isnan(low):
            return INCONCLUSIVE  # one seed: no interval
        if -self.tolerance <= low and high <= self.tolerance:
            return SUPPORTED
        if high < -self.tolerance or low > self.tolerance:
            return CONTRADICTED
        return INCONCLUSIVE


def equivalence_verdict(tests: Sequence[Equivalence], alpha: float = ALPHA) -> str:
    """Every metric within tolerance: supported; one entirely outside at the Bonferroni level: contradicted."""
    if not tests:
        return NOT_TESTED
    if all(t.verdict(alpha) == SUPPORTED for t in tests):
        return SUPPORTED
    if any(t.verdict(alpha / len(tests)) == CONTRADICTED for t in tests):
        return CONTRADICTED
    return INCONCLUSIVE


def rank_agreement(reproduced: Sequence[float], published: Sequence[float]) -> dict:
    """Spearman's rho and Kendall's tau (scipy.stats) between two score lists, with n and
    two-sided p-values that hold for few models: Kendall's exact test where scipy can give it
    (no ties), Spearman's from its permutation distribution (every ordering up to n = 8, else
    20000 random ones); the asymptotic p-values would be far too small at n = 3 to 10."""
    x, y = np.asarray(reproduced, float), np.asarray(published, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    result = {"n": int(len(x)), "spearman": np.nan, "spearman p": np.nan, "kendall": np.nan, "kendall p": np.nan}
    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        tau = sps.kendalltau(x, y)
        rho = float(sps.spearmanr(x, y).statistic)
        result.update({"spearman": rho, "spearman p": _spearman_permutation_p(x, y, rho),
                       "kendall": float(tau.statistic), "kendall p": float(tau.pvalue)})
    return result


def _spearman_permutation_p(x: np.ndarray, y: np.ndarray, observed: float) -> float:
    import itertools

    rx, ry = sps.rankdata(x), sps.rankdata(y)
    n = len(x)
    if n <= 8:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(0)
        orders = np.argsort(rng.random((20000, n)), axis=1)
    permuted = ry[orders]
    cx = rx - rx.mean()
    cy = permuted - permuted.mean(axis=1, keepdims=True)
    rhos = (cy @ cx) / (np.sqrt((cx ** 2).sum()) * np.sqrt((cy ** 2).sum(axis=1)))
    hits = int(np.sum(np.abs(rhos) >= abs(observed) - 1e-12))
    return hits / len(rhos) if n <= 8 else (hits + 1) / (len(rhos) + 1)  # random orderings: never 0


__all__ = [
    "ALPHA", "CONTRADICTED", "Contrast", "Equivalence", "INCONCLUSIVE", "LEVEL", "NOT_TESTED",
    "SUPPORTED", "TABLE_METRICS", "VERDICTS", "bootstrap_means", "claim_verdict", "equivalence_verdict",
    "format_mean_std", "group_contrast", "holm", "literature_band", "mean_std", "min_wilcoxon_p", "paired_contrast",
    "paired_seed_tests", "per_user_tests", "percentile_interval", "rank_agreement", "reported_vs_reproduced",
    "residual_variance",
    "significance_marks", "sparsity_groups", "t_interval", "wilcoxon_p",
]
