"""The tuning chapter: which point of each baseline's grid the overall table uses (our rule: best
VALIDATION Recall@20), which MMRec's rule would have used (best TEST Recall@20), and how much the
test-selected point's test score overstates it ("selection optimism")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from ..grids import point_label
from ..models import get_model_spec
from .context import MAIN_METRICS, BookContext, metric_label, model_order
from .contrasts import MDE_NOTE, contrast_cells, mde_numbers
from .display import Html, Table, Tables, escape, fmt_num, fmt_value

TEST_CHOSEN_PREFIX = "test-chosen: "


def grid_text(grid) -> str:
    return "; ".join(f"{name}: {', '.join(fmt_value(v) for v in values)}" for name, values in grid.items()) or "–"


def grid_points(grid) -> int:
    return int(np.prod([len(v) for v in grid.values()])) if grid else 1


def grids_table(ctx: BookContext) -> Table:
    """Per model: the grid this profile searches next to MMRec's whole grid."""
    rows = []
    for model in sorted(ctx.profile.model_names, key=lambda m: model_order().get(m, 99)):
        spec = get_model_spec(model)
        searched = ctx.profile.tuning_grid(model)
        rows.append({"model": spec.label, "searched here": grid_text(searched), "points": grid_points(searched),
                     "MMRec's grid": grid_text(spec.tuning_grid), "MMRec points": grid_points(spec.tuning_grid)})
    mode = {"none": "no tuning (defaults / presets)", "reduced": "each model's reduced grid (ModelSpec.reduced_grid)",
            "full": "MMRec's whole grids (ModelSpec.tuning_grid)"}[ctx.profile.tuning]
    return Table(pd.DataFrame(rows).set_index("model"), "tuning-grids",
                 caption=f"Grids searched by profile {ctx.profile.name}: {mode}; seed {ctx.profile.tuning_seed}")


def tuning_frame(ctx: BookContext) -> pd.DataFrame:
    """One row per tuned (dataset, model) and metric: the two points, their test metrics at the
    tuning seed, the optimism (test-chosen minus validation-chosen) over users and, where MMRec's
    point was replicated with fresh seeds, over those seeds."""
    if "tuning_frame" in ctx.cache:
        return ctx.cache["tuning_frame"]
    from ..collect import tuning_choices

    choices = tuning_choices(ctx.profile, ctx.records)
    tuning = ctx.runs("tuning")
    overall = ctx.runs("overall")
    seed = ctx.profile.tuning_seed
    rows = []
    for (dataset, model), choice in sorted(choices.items(), key=lambda kv: (ctx.profile.datasets.index(kv[0][0]),
                                                                            model_order().get(kv[0][1], 99))):
        label = get_model_spec(model).label
        here = tuning[(tuning["dataset"] == dataset) & (tuning["model"] == model)]
        valid_label, test_label = point_label(choice.validation_point), point_label(choice.test_point)
        valid_run = here[(here["variant"] == valid_label) & (here["seed"] == seed)]
        test_run = here[(here["variant"] == test_label) & (here["seed"] == seed)]
        replicas = here[here["variant"] == TEST_CHOSEN_PREFIX + test_label]
        fresh = overall[(overall["dataset"] == dataset) & (overall["model"] == model)
                        & overall["seed"].isin(set(replicas["seed"]))]
        for metric in MAIN_METRICS:
            row = {"dataset": dataset, "model": label, "metric": metric, "points": choice.points,
                   "finished": choice.finished, "validation-chosen": valid_label, "test-chosen": test_label,
                   "same point": valid_label == test_label,
                   "validation-chosen test": valid_run[metric].mean() if len(valid_run) else np.nan,
                   "test-chosen test": test_run[metric].mean() if len(test_run) else np.nan,
                   "validation-chosen valid": valid_run[f"valid_{metric}"].mean() if len(valid_run) else np.nan,
                   "test-chosen valid": test_run[f"valid_{metric}"].mean() if len(test_run) else np.nan}
            contrast = (stats.paired_contrast(ctx.user_matrix(test_run, metric), ctx.user_matrix(valid_run, metric))
                        if len(valid_run) and len(test_run) else None)
            row["users contrast"] = contrast
            replicated = None
            if len(replicas) and len(fresh):
                replicated = stats.paired_contrast(ctx.user_matrix(replicas, metric), ctx.user_matrix(fresh, metric))
            row["seeds contrast"] = replicated
            rows.append(row)
    frame = pd.DataFrame(rows)
    ctx.cache["tuning_frame"] = frame
    return frame


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.drop(columns=["users contrast", "seeds contrast"]).copy()
    for column, prefix in (("users contrast", "tuning seed: "), ("seeds contrast", "fresh seeds: ")):
        numbers = pd.DataFrame([{**c.row(), **mde_numbers(c)} if c is not None else {} for c in frame[column]],
                               index=frame.index)
        out = pd.concat([out, numbers.add_prefix(prefix)], axis=1)
    return out


def choice_tables(ctx: BookContext) -> Tables:
    frame = tuning_frame(ctx)
    out = Tables()
    if frame.empty:
        out.append(Html("<p>No tuned model has a complete grid in this profile's results.</p>"))
        return out
    for dataset, part in frame.groupby("dataset", sort=False):
        first = part.drop_duplicates("model").set_index("model")
        shown = pd.DataFrame({"grid points (run)": [f"{p} ({f})" for p, f in zip(first["points"], first["finished"])],
                              "validation-chosen (ours)": first["validation-chosen"],
                              "test-chosen (MMRec)": first["test-chosen"],
                              "same": first["same point"].map({True: "yes", False: "no"})}, index=first.index)
        out.append(Table(shown, f"tuning-choice-{dataset}", data=first.reset_index()[
            ["model", "points", "finished", "validation-chosen", "test-chosen", "same point"]],
            caption=f"{dataset}: the chosen points (seed {ctx.profile.tuning_seed})"))
    return out


def optimism_tables(ctx: BookContext) -> Tables:
    """Per dataset: test metrics of the two points at the tuning seed and their difference over users."""
    frame = tuning_frame(ctx)
    out = Tables()
    for dataset, part in frame.groupby("dataset", sort=False):
        rows = []
        for row in part.to_dict("records"):
            contrast = row["users contrast"]
            cells = contrast_cells(contrast) if contrast is not None else {}
            rows.append({"model": row["model"], "metric": metric_label(row["metric"]),
                         "validation-chosen": fmt_num(row["validation-chosen test"]),
                         "test-chosen": fmt_num(row["test-chosen test"]),
                         "optimism": cells.get("difference", "–"), "95% CI users": cells.get("95% CI users", "–"),
                         "p users": cells.get("p users", "–"), "MDE": cells.get("MDE", "–")})
        shown = pd.DataFrame(rows).set_index(["model", "metric"])
        users = next((c.n_users for c in part["users contrast"] if c is not None), 0)
        out.append(Table(shown, f"tuning-optimism-{dataset}", data=_numbers(part),
                         caption=f"{dataset}: test metrics at seed {ctx.profile.tuning_seed} of the two points; "
                                 f"optimism = test-chosen − validation-chosen over {users} test users "
                                 f"(Wilcoxon signed-rank p)", note=MDE_NOTE))
    return out


def replication_tables(ctx: BookContext) -> Tables:
    """Where MMRec's point was trained again with fresh seeds: its advantage over ours across seeds."""
    frame = tuning_frame(ctx)
    out = Tables()
    if frame.empty or frame["seeds contrast"].isna().all():
        reason = ("this profile does not replicate MMRec's choice with fresh seeds (Profile.replicate_test_choice)"
                  if not ctx.profile.replicate_test_choice else
                  "no model's two points differ, or their fresh-seed runs are not finished")
        out.append(Html(f"<p>Across seeds: not measured: {escape(reason)}.</p>"))
        return out
    for dataset, part in frame[frame["seeds contrast"].notna()].groupby("dataset", sort=False):
        rows = []
        for row in part.to_dict("records"):
            contrast = row["seeds contrast"]
            cells = contrast_cells(contrast)
            rows.append({"model": row["model"], "metric": metric_label(row["metric"]), "seeds": contrast.n_seeds,
                         "test-chosen − validation-chosen": cells["difference"],
                         "95% CI seeds": cells["95% CI seeds"], "95% CI users": cells["95% CI users"],
                         "p seeds (min)": cells["p seeds (min)"], "MDE": cells["MDE"]})
        out.append(Table(pd.DataFrame(rows).set_index(["model", "metric"]), f"tuning-replication-{dataset}",
                         data=_numbers(part), caption=f"{dataset}: the two points trained with the other seeds",
                         note=MDE_NOTE))
    return out


def optimism_figure(ctx: BookContext, metric: str = "recall@20"):
    import matplotlib.pyplot as plt

    frame = tuning_frame(ctx)
    frame = frame[(frame["metric"] == metric) & frame["users contrast"].notna()]
    figure, ax = plt.subplots(figsize=(8, 3.4))
    datasets = list(dict.fromkeys(frame["dataset"]))
    models = list(dict.fromkeys(frame["model"]))
    width = 0.8 / max(len(datasets), 1)
    for i, dataset in enumerate(datasets):
        part = frame[frame["dataset"] == dataset].set_index("model").reindex(models)
        x = np.arange(len(models)) + (i - (len(datasets) - 1) / 2) * width
        estimate = np.array([c.estimate if c is not None and not pd.isna(c) else np.nan for c in part["users contrast"]])
        intervals = np.array([c.ci_users() if c is not None and not pd.isna(c) else (np.nan, np.nan)
                              for c in part["users contrast"]])
        ax.errorbar(x, estimate, yerr=[estimate - intervals[:, 0], intervals[:, 1] - estimate], fmt="o",
                    capsize=3, label=dataset)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xticks(np.arange(len(models)), models, rotation=30 if len(models) > 6 else 0,
                  ha="right" if len(models) > 6 else "center")
    ax.set(ylabel=f"{metric_label(metric)}: test-chosen\n− validation-chosen",
           title=f"Selection optimism at the tuning seed (95% CI over users)\n{ctx.short_label()}")
    ax.title.set_fontsize(9)
    if datasets:
        ax.legend(fontsize=7)
    figure.tight_layout()
    plt.close(figure)
    return figure


__all__ = ["choice_tables", "grids_table", "optimism_figure", "optimism_tables", "replication_tables",
           "tuning_frame"]
