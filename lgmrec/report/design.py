"""The design calculator: per claim and dataset, what the headline comparison of the verdict could
detect, and the seeds and test users that would detect the paper's margin at 80 % power
(:mod:`lgmrec.power`), extrapolated from the observed variances over users and seeds.

Every row also says what the real dataset of the same family would give: its test users (every
user of the released files has a test interaction under the protocol's split, so the test users
are the users of ``lgmrec/reference/datasets.csv``) with the profile's seeds. On synthetic results
that is an extrapolation from synthetic variances, and the table says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import power, stats
from .claims import CLAIMS, compute_claims
from .context import BookContext
from .display import DASH, Table, fmt_int

EXTRAPOLATION = "extrapolated from synthetic variances (no real runs yet)"


def real_test_users() -> dict[str, int]:
    """Family -> users of the released dataset (each has at least one test interaction)."""
    from ..reference import read_reference

    return {row["dataset"]: int(row["users"]) for row in read_reference("datasets").to_dict("records")}


def design_frame(ctx: BookContext) -> pd.DataFrame:
    """One row per tested claim and dataset (numbers; see the module docstring)."""
    from ..models import dataset_family

    real = real_test_users()
    rows = []
    for result in compute_claims(ctx):
        contrast = result.headline
        if contrast is None or result.verdict == stats.NOT_TESTED:
            continue
        relative = result.mde_relative
        scale = 100 / contrast.baseline if relative else 1.0
        margin = result.margin if relative else None
        # a design is sought for a claimed advantage only: a margin at or below 0 claims none over this baseline
        target = margin / scale if margin is not None and margin > 0 else np.nan
        wanted = bool(np.isfinite(target))
        family = dataset_family(result.dataset)
        n_real = real.get(family) if family else None
        at_real = power.mde(contrast, n_users=n_real) if n_real else None
        rows.append({
            "claim": f"{result.claim} {CLAIMS[result.claim][0]}", "dataset": result.dataset,
            "verdict": result.verdict, "in %": relative, "users": contrast.n_users, "seeds": contrast.n_seeds,
            "difference": contrast.estimate * scale, "MDE": result.mde, "paper's margin": margin,
            "seeds needed": power.seeds_needed(contrast, target) if wanted else None,
            "users needed": power.users_needed(contrast, target) if wanted else None,
            "real dataset": family or "", "real test users": n_real,
            "MDE at real users": at_real.rule * scale if at_real else np.nan,
            "seeds needed at real users": power.seeds_needed(contrast, target, n_real) if wanted and n_real else None,
            "real-data basis": ("real runs" if not ctx.synthetic else EXTRAPOLATION) if n_real else "",
        })
    return pd.DataFrame(rows)


def _count(value, seeds: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return f"more than {power.MAX_SEEDS}" if seeds else "none suffices"
    return fmt_int(value)


def _effect(value: float, relative: bool) -> str:
    if value is None or not np.isfinite(value):
        return DASH
    return f"{value:.1f} %" if relative else f"{value:.4f}"


def design_table(ctx: BookContext) -> Table:
    frame = design_frame(ctx)
    shown = []
    for row in frame.to_dict("records"):
        relative, margin = row["in %"], row["paper's margin"]
        margin = margin if margin is not None and np.isfinite(margin) else None
        wanted = margin is not None and margin > 0  # a claimed advantage to design for
        shown.append({
            "claim": row["claim"], "dataset": row["dataset"], "verdict": row["verdict"],
            "design": f"{row['users']} users, {row['seeds']} seeds",
            "difference": _effect(row["difference"], relative), "MDE (80%)": _effect(row["MDE"], relative),
            "paper's margin": _effect(margin, True) if margin is not None else DASH,
            "seeds needed (these users)": _count(row["seeds needed"], seeds=True) if wanted else DASH,
            "users needed (these seeds)": _count(row["users needed"]) if wanted else DASH,
            "MDE at the real test users (these seeds)": (
                f"{_effect(row['MDE at real users'], relative)} ({fmt_int(row['real test users'])} users)"
                if row["real test users"] else DASH),
            "seeds needed at the real test users": (_count(row["seeds needed at real users"], seeds=True)
                                                    if wanted and row["real test users"] else DASH),
        })
    table = pd.DataFrame(shown).set_index(["claim", "dataset"]) if shown else pd.DataFrame()
    basis = EXTRAPOLATION if ctx.synthetic else "from this profile's runs on the released data"
    return Table(table, "claims-design", data=frame,
                 caption="What each verdict's design could detect, and the design that would detect the paper's margin "
                         "(80 % power at α = 0.05)",
                 note="MDE: the headline comparison's minimum detectable effect, in % of its baseline (absolute for C4). "
                      "Seeds and users needed: the fewest that bring the MDE down to the paper's margin, the other kept "
                      "as run; 'none suffices' when the other's interval alone stays wider than the margin; '–' where "
                      "the paper claims no advantage over that baseline (no margin, or its number below the "
                      "baseline's published value). Real test "
                      f"users: the released dataset's users; those columns are {basis}.")


__all__ = ["EXTRAPOLATION", "design_frame", "design_table", "real_test_users"]
