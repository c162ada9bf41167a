"""What an executed unit notebook (and the book's Runs appendix) shows of a unit's runs: a summary
table, the learning curves (validation Recall@20 per epoch) and the resolved configurations."""

from __future__ import annotations

import pandas as pd


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: experiment, variant, seed, status, epochs, test metrics, timings."""
    rows = []
    for record in records:
        test = record.get("test") or {}
        rows.append({
            "experiment": record.get("experiment"), "variant": record.get("variant"), "seed": record["seed"],
            "status": record["status"], "best epoch": record.get("best_epoch"), "epochs": record.get("epochs_run"),
            "Recall@20": test.get("recall@20"), "NDCG@20": test.get("ndcg@20"),
            "valid Recall@20": (record.get("valid") or {}).get("recall@20"),
            "s / epoch": record.get("train_seconds_per_epoch"), "s / run": record.get("wall_seconds"),
            "error": record.get("error") or "",
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.round(4).set_index(["experiment", "variant", "seed"])


def learning_curves(records: list[dict], metric: str = "recall@20"):
    """Validation ``metric`` per epoch, one line per run; a dot marks each run's best epoch."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 3.4))
    for record in records:
        history = pd.DataFrame(record.get("history") or [])
        if history.empty or metric not in history:
            continue
        label = f"{record.get('variant', record['model'])}, seed {record['seed']}"
        line, = ax.plot(history["epoch"], history[metric], linewidth=1, label=label)
        best = history[history["epoch"] == record.get("best_epoch")]
        ax.plot(best["epoch"], best[metric], "o", color=line.get_color(), markersize=4)
    ax.set(xlabel="epoch", ylabel=f"validation {metric}", title="Learning curves (dots: best epochs)")
    if len(records) <= 12:
        ax.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    plt.close(figure)
    return figure


def config_tables(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The resolved configurations of the runs as two narrow tables: the settings they share
    (setting, value) and, one row per distinct configuration (its variant), those that differ."""
    rows = {}
    for record in records:
        config = record.get("config") or {}
        values = {**{k: v for k, v in (config.get("model_params") or {}).items()},
                  **{f"train.{k}": v for k, v in (config.get("train") or {}).items()},
                  "preset": config.get("preset"), "config hash": (record.get("config_hash") or "")[:12]}
        rows.setdefault(record.get("variant") or record["model"], {k: str(v) for k, v in values.items()})
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table, table
    differ = [c for c in table.columns if table[c].nunique() > 1 or c == "config hash"]
    shared = table.drop(columns=differ).iloc[0].rename("value").rename_axis("setting").to_frame()
    return shared, table[differ].rename_axis("variant")


__all__ = ["config_tables", "learning_curves", "runs_table"]
