"""The Methods chapter: which data and options produced the numbers, the profile's sizes and
reductions, how runs ended (early stopping or the epoch cap) and the downloadable run tables."""

from __future__ import annotations

import pandas as pd

from ..grids import EXPERIMENTS, REFERENCE_MODEL
from .context import BookContext, order_rows
from .display import Html, Table, escape, fmt_value


def provenance_table(ctx: BookContext) -> Table:
    """Which data and which LGMRec options produced the numbers of each experiment."""
    rows = []
    for experiment in EXPERIMENTS:
        runs = ctx.runs(experiment)
        if runs.empty:
            continue
        for (dataset, kind, source), part in runs.groupby(["dataset", "data_kind", "dataset_source"]):
            lgmrec = part[part["model"] == REFERENCE_MODEL]
            modes = sorted({p.get("eval_mode") for p in lgmrec["model_params"]} - {None})
            bugs = sorted({str(p.get("hyperedge_bug")) for p in lgmrec["model_params"]})
            rows.append({
                "experiment": experiment, "dataset": dataset, "data": kind, "source": source,
                "runs": len(part.drop_duplicates("path")),
                "LGMRec eval_mode": ", ".join(modes) or "–",
                "hyperedge_bug": ", ".join(bugs) or "–",
                "epochs / patience": ", ".join(sorted({f"{t['max_epochs']} / {t['patience']}" for t in part["train"]})),
            })
    return Table(pd.DataFrame(rows).set_index(["experiment", "dataset"]), "provenance",
                 caption="Data and LGMRec options behind each experiment's numbers")


def code_versions(ctx: BookContext) -> Table:
    frame = ctx.records.groupby("code_version", dropna=False).size().rename("runs").reset_index()
    return Table(frame.set_index("code_version"), "code-versions", caption="Code versions of the runs")


def protocol_table(ctx: BookContext) -> Table:
    """The profile's sizes: seeds, epochs, datasets, tuning and sensitivity points."""
    p = ctx.profile
    rows = [
        ("profile", f"{p.name}: {p.description}"),
        ("datasets", ", ".join(p.datasets)),
        ("data", p.data),
        ("models", ", ".join(p.model_names)),
        ("experiments", ", ".join(p.experiments)),
        ("seeds (overall)", ", ".join(map(str, p.seeds))),
        ("seeds (ablation)", ", ".join(map(str, p.ablation_seeds or p.seeds))),
        ("seeds (sensitivity)", ", ".join(map(str, p.sensitivity_seeds or p.seeds))),
        ("ablation datasets", ", ".join(p.ablation_datasets or p.datasets)),
        ("sensitivity datasets", ", ".join(p.sensitivity_datasets or p.datasets)),
        ("error rates", (f"{', '.join(p.error_rate_models)} on every dataset, seeds "
                         f"{', '.join(map(str, p.error_rate_seeds))}" if p.error_rate_models else "not run")),
        ("tuning", f"{p.tuning} (seed {p.tuning_seed}; MMRec's point replicated with fresh seeds: "
                   f"{'yes' if p.replicate_test_choice else 'no'})"),
        ("training overrides", ", ".join(f"{k}={fmt_value(v)}" for k, v in p.train.items()) or "none (the protocol)"),
        ("sensitivity points", "; ".join(f"{k}: {', '.join(fmt_value(x) for x in v)}" for k, v in p.sensitivity.items())
         or "none"),
    ]
    return Table(pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting"), "protocol",
                 caption="What this profile runs")


def reductions(ctx: BookContext) -> Html:
    items = "".join(f"<li>{escape(r)}</li>" for r in ctx.profile.reductions)
    if not items:
        return Html(f"<p>Profile <code>{escape(ctx.profile.name)}</code> declares no reductions of the paper's "
                    f"design (<code>Profile.reductions</code> is empty).</p>")
    return Html(f"<p>What profile <code>{escape(ctx.profile.name)}</code> leaves out of the paper's design "
                f"(<code>Profile.reductions</code>):</p><ul class=\"lgmrec-reductions\">{items}</ul>")


def ended_by(epochs_run: int, best_epoch: int, max_epochs: int, patience: int) -> str:
    """"epoch cap" when the run trained ``max_epochs`` epochs and its best epoch is followed by
    fewer than ``patience`` + 1 stale epochs (it might still have improved); else "early stopping"."""
    if epochs_run >= max_epochs and (epochs_run - best_epoch) < patience + 1:
        return "epoch cap"
    return "early stopping"


def stopping_frame(ctx: BookContext) -> pd.DataFrame:
    """Per run: how it ended. Early stopping: fewer epochs than the cap, or ``patience`` + 1 stale
    epochs after the best one; the epoch cap: ``max_epochs`` epochs with fewer stale epochs."""
    rows = []
    for experiment in EXPERIMENTS:
        runs = ctx.runs(experiment)
        if runs.empty:
            continue
        for row in runs.drop_duplicates(["path"]).to_dict("records"):
            train = row["train"] or {}
            cap, patience = train.get("max_epochs"), train.get("patience")
            run, best = row["epochs_run"], row["best_epoch"]
            rows.append({"experiment": experiment, "model": row["model"], "label": row["label"],
                         "dataset": row["dataset"], "seed": row["seed"], "variant": row["variant"],
                         "max_epochs": cap, "patience": patience, "best_epoch": best, "epochs_run": run,
                         "ended by": ended_by(run, best, cap, patience),
                         # the model peaks that early, or its validation score stalled at the start
                         "early best": best <= patience})
    return pd.DataFrame(rows)


def stopping_table(ctx: BookContext) -> Table:
    frame = stopping_frame(ctx)
    grouped = []
    for (experiment, model), part in frame.groupby(["experiment", "model"], sort=False):
        capped = int((part["ended by"] == "epoch cap").sum())
        grouped.append({"experiment": experiment, "model": model, "label": part["label"].iloc[0], "runs": len(part),
                        "early stopping": len(part) - capped, "epoch cap": capped,
                        "best epoch <= patience": int(part["early best"].sum()),
                        "max epochs / patience": ", ".join(sorted({f"{int(c)} / {int(p)}" for c, p in
                                                                   zip(part["max_epochs"], part["patience"])}))})
    table = pd.DataFrame(grouped)
    order = {e: i for i, e in enumerate(EXPERIMENTS)}
    table = order_rows(table, "model", None).sort_values("experiment", key=lambda s: s.map(order), kind="stable")
    capped = int(table["epoch cap"].sum())
    shown = table.drop(columns=["model"]).rename(columns={"label": "model"}).set_index(["experiment", "model"])
    return Table(shown, "stopping", data=frame,
                 caption=f"How the runs ended: {capped} of {int(table['runs'].sum())} at the epoch cap (target: none)")


def stopping_summary(ctx: BookContext) -> Html:
    frame = stopping_frame(ctx)
    capped = int((frame["ended by"] == "epoch cap").sum())
    if capped == 0:
        text = f"<p>All {len(frame)} runs ended by early stopping: none was cut by the epoch cap.</p>"
    else:
        text = (f'<div class="lgmrec-warning"><b>{capped} of {len(frame)} runs ended at the epoch cap</b> '
                f"without {escape('patience + 1')} stale epochs after their best: their models may not have "
                f"converged, and their numbers understate what the protocol would give.</div>")
    early = frame[frame["early best"]]
    if not early.empty:
        where = ", ".join(f"{label} {n}" for label, n in early["label"].value_counts().items())
        text += (f"<p>{len(early)} runs had their best validation epoch within their first patience epochs "
                 f"({where}), so early stopping ended them at most 2 x patience + 1 epochs in. Either the "
                 f"model peaks that early, or its validation score stalled at the start (on a small validation "
                 f"split the first epochs' scores are noisy, and an epoch is only a few batches); compare such a "
                 f"run with the model's other seeds in the table below (its CSV lists every run).</p>")
    return Html(text)


def data_figure(ctx: BookContext):
    """Training interactions per test user, per dataset (from one LGMRec run's per-user file)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = ctx.runs("overall")
    runs = runs[runs["model"] == REFERENCE_MODEL].sort_values("seed").drop_duplicates("dataset")
    users = ctx.per_user(runs)
    figure, ax = plt.subplots(figsize=(7, 3))
    sns.histplot(data=users, x="n_train", hue="dataset", element="step", stat="density", common_norm=False,
                 discrete=True, ax=ax)
    ax.set(xlabel="training interactions of a test user", xlim=(0, float(users["n_train"].quantile(0.99)) + 1))
    ax.set_title(f"Users evaluated on test, by activity · {ctx.short_label()}", fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure


__all__ = ["code_versions", "data_figure", "protocol_table", "provenance_table", "reductions", "stopping_summary",
           "stopping_table"]
