"""What an experiment could have seen: the minimum detectable effect (MDE) of a contrast under the
verdict rule, and the design (test users, seeds) that would detect a given margin.

The rule (:func:`lgmrec.stats.claim_verdict`) calls a contrast above zero when its 95 % bootstrap
interval over users and, with two or more seeds, its 95 % t interval over seeds both lie above 0.
A contrast's MDE is the true difference at which each of those intervals clears 0 with
probability :data:`POWER` (80 %), at the rule's level:

- over users, the percentile bootstrap interval is taken as normal with the bootstrap
  distribution's standard deviation: MDE = (z(1 - alpha/2) + z(power)) x SE;
- over seeds, the one-sample t test of the per-seed differences, exactly: the noncentral t
  distribution (``scipy.stats.nct``) solved for the effect with the given power;
- the rule needs both, so its MDE is the larger of the two. At that effect the rule's own power
  lies between 60 % and 80 % (each interval clears 0 with 80 %); the Methods chapter measures it.

Other designs are extrapolated with a two-way model of the per-user, per-seed differences,
d(u, s) = effect + a(u) + b(s) + e(u, s): the users interval's SE^2 = (var a + var e / seeds) / users,
the per-seed differences' variance = var b + var e / users. ``var e`` is the observed two-way residual
(:attr:`lgmrec.stats.Contrast.residual_var`); ``var a`` and ``var b`` follow from the observed
bootstrap SE and seed variance. With one seed ``var e`` and ``var b`` cannot be told apart from the
rest: more seeds are then assumed not to narrow the users interval, and the seeds test has no MDE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .stats import ALPHA, Contrast

POWER = 0.8  # the power at which a minimum detectable effect is quoted
MAX_SEEDS = 1000  # the design calculator's search limit on seeds


@lru_cache(maxsize=None)
def t_noncentrality(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Noncentrality (effect / sd x sqrt(n)) at which the two-sided one-sample t test of ``n``
    values at level ``alpha`` rejects with probability ``power``; NaN below 2 values."""
    if n < 2:
        return np.nan
    df = n - 1
    critical = sps.t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        # the lower tail is negligible where scipy's series underflows to NaN
        lower = float(np.nan_to_num(sps.nct.cdf(-critical, df, nc), nan=0.0))
        return float(sps.nct.sf(critical, df, nc)) + lower - power

    return float(optimize.brentq(shortfall, 0.0, 200.0, xtol=1e-10))


def z_multiplier(alpha: float = ALPHA, power: float = POWER) -> float:
    """(z(1 - alpha/2) + z(power)): an MDE in standard errors under the normal approximation."""
    return float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))


@dataclass(frozen=True)
class VarianceModel:
    """The variance components of one contrast (see the module docstring) and its observed design."""

    between_users: float  # var a: users' own differences
    between_seeds: float  # var b: a seed's shift common to all users (NaN with one seed)
    residual: float  # var e: what more seeds average away (0 assumed with one seed)
    n_users: float  # effective users (two groups: 1 / (1/n1 + 1/n2))
    n_seeds: int

    @classmethod
    def of(cls, contrast: Contrast) -> "VarianceModel":
        n, s = float(contrast.n_effective), int(contrast.n_seeds)
        residual = float(contrast.residual_var) if s >= 2 and np.isfinite(contrast.residual_var) else 0.0
        between_users = max(contrast.se_users ** 2 * n - residual / max(s, 1), 0.0)
        seed_var = float(np.var(contrast.seed_values, ddof=1)) if s >= 2 else np.nan
        between_seeds = max(seed_var - residual / n, 0.0) if s >= 2 else np.nan
        return cls(between_users, between_seeds, residual, n, s)

    def se_users(self, n_users: float, n_seeds: int) -> float:
        return math.sqrt((self.between_users + self.residual / n_seeds) / n_users)

    def sd_seeds(self, n_users: float) -> float:
        return math.sqrt(self.between_seeds + self.residual / n_users)


@dataclass(frozen=True)
class Detectable:
    """Minimum detectable effects (absolute) of one contrast at one design."""

    users: float  # the users interval alone
    seeds: float  # the seeds interval alone (NaN below 2 seeds)
    n_users: float
    n_seeds: int

    @property
    def rule(self) -> float:
        """The rule's MDE: the larger of the two (the users one alone with one seed)."""
        return float(np.nanmax([self.users, self.seeds])) if np.isfinite(self.users) else np.nan


def mde(contrast: Contrast, n_users: float | None = None, n_seeds: int | None = None,
        alpha: float = ALPHA, power: float = POWER) -> Detectable:
    """The contrast's MDE at its own design, or extrapolated to ``n_users`` / ``n_seeds``."""
    if contrast.n_users == 0 or not np.isfinite(contrast.se_users):
        return Detectable(np.nan, np.nan, n_users or 0, n_seeds or 0)
    model = VarianceModel.of(contrast)
    # the observed effective count, scaled like the users count (two groups keep their proportions)
    users = model.n_users if n_users is None else model.n_users * n_users / contrast.n_users
    seeds = model.n_seeds if n_seeds is None else int(n_seeds)
    by_users = z_multiplier(alpha, power) * model.se_users(users, max(seeds, 1))
    by_seeds = np.nan
    if seeds >= 2 and np.isfinite(model.between_seeds):
        by_seeds = t_noncentrality(seeds, alpha, power) * model.sd_seeds(users) / math.sqrt(seeds)
    shown_users = contrast.n_users if n_users is None else n_users
    return Detectable(float(by_users), float(by_seeds), float(shown_users), seeds)


def seeds_needed(contrast: Contrast, effect: float, n_users: float | None = None,
                 alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Fewest seeds (2 or more) whose design detects ``effect`` (absolute) at ``n_users`` (default:
    the contrast's); None when no number of seeds up to :data:`MAX_SEEDS` does, or with one seed
    observed (the seed variance is unknown)."""
    if not effect > 0 or contrast.n_seeds < 2:
        return None
    for seeds in range(2, MAX_SEEDS + 1):
        if mde(contrast, n_users, seeds, alpha, power).rule <= effect:
            return seeds
    return None


def users_needed(contrast: Contrast, effect: float, n_seeds: int | None = None,
                 alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Fewest test users whose design detects ``effect`` at ``n_seeds`` (default: the contrast's);
    None when no number of users does (the seeds interval alone stays wider)."""
    if not effect > 0 or contrast.n_users == 0:
        return None

    def detected(users: float) -> bool:
        return mde(contrast, users, n_seeds, alpha, power).rule <= effect

    low, high = 1.0, 1e12
    if not detected(high):
        return None
    if detected(low):
        return 1
    for _ in range(100):  # the MDE falls as users grow: bisect the boundary on a log scale
        middle = math.sqrt(low * high)
        low, high = (low, middle) if detected(middle) else (middle, high)
    return math.ceil(high)


def detectability(mde: float, margin_percent: float | None, relative: bool = True) -> str:
    """One phrase for a verdict: what the design could see (``mde`` in % of the baseline, or
    absolute where ``relative`` is False) against the paper's margin in % (None: no margin)."""
    if not np.isfinite(mde):
        return "no detectable effect could be computed"
    detects = f"{mde:.1f} %" if relative else f"differences of {mde:.4f}"
    if margin_percent is None or not np.isfinite(margin_percent) or not relative:
        return f"this design detects {detects} or more (no published margin)"
    if margin_percent <= 0:
        return (f"this design detects {detects} or more; the paper's own number is {-margin_percent:.1f} % below "
                f"this baseline's published value (no margin claimed over it)")
    if mde <= margin_percent:
        return f"the paper's margin of {margin_percent:.1f} % was detectable (this design detects {detects})"
    return f"this design detects {detects} or more; the paper's margin is {margin_percent:.1f} %"


__all__ = ["Detectable", "MAX_SEEDS", "POWER", "VarianceModel", "detectability", "mde", "seeds_needed",
           "t_noncentrality", "users_needed", "z_multiplier"]
