"""Where a finished grid's time went, from its records: worker-minutes per experiment and model.

    python scripts/grid_time.py RESULTS [--profile embedded] [--by experiment model [variant]]
                               [--against OLD_RESULTS]

Reads every record of ``RESULTS/<profile>/`` once (each run counted under the experiment that
first ran it, as its record says) and prints, per group: runs, worker-minutes (the runs'
``wall_seconds``), share of the total, milliseconds per epoch (run wall over epochs run, set-up,
evaluation and test passes included) and epochs per run; then the runs' span from the first start to
the last record and how many workers were busy on average over it. ``--against``: another grid's
results root (an older commit's, the same machine and evening), each group's worker-minutes, epochs
and milliseconds per epoch side by side with the ratios new / old, and the totals, so a change of the
grid's time splits into speed per epoch and number of epochs. The figures quoted in
docs/performance.md and the issue-25 notes ("LGMRec 41 % of the run time", "busy 1.94 of 2")
come from this.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

import pandas as pd  # noqa: E402

from lgmrec.results import ResultStore  # noqa: E402


def run_table(results: Path, profile: str) -> pd.DataFrame:
    rows = []
    for record in ResultStore(results).iter_records(profile):
        end = datetime.fromisoformat(record["written_at"]).timestamp()
        rows.append({"experiment": record.get("experiment", "?"), "model": record["model"],
                     "variant": record.get("variant", ""), "wall": record["wall_seconds"] or 0.0,
                     "epochs": record["epochs_run"] or 0, "end": end})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results root (the folder holding <profile>/)")
    parser.add_argument("--profile", default="embedded")
    parser.add_argument("--by", nargs="+", default=["experiment", "model"], choices=["experiment", "model", "variant"])
    parser.add_argument("--against", type=Path, help="an older grid's results root: compare per group")
    args = parser.parse_args(argv)
    runs = run_table(args.results, args.profile)
    if runs.empty:
        raise SystemExit(f"{args.results / args.profile}: no records")
    if args.against is not None:
        old = run_table(args.against, args.profile)
        if old.empty:
            raise SystemExit(f"{args.against / args.profile}: no records")
        print(comparison(runs, old, args.by).round(2).to_string())
        return
    groups = runs.groupby(args.by).agg(runs=("wall", "size"), wall=("wall", "sum"), epochs=("epochs", "sum"))
    total = groups["wall"].sum()
    table = pd.DataFrame({"runs": groups["runs"], "worker-min": groups["wall"] / 60,
                          "share %": 100 * groups["wall"] / total, "ms/epoch": 1000 * groups["wall"] / groups["epochs"],
                          "epochs/run": groups["epochs"] / groups["runs"]}).sort_values("worker-min", ascending=False)
    print(table.round(2).to_string())
    span = runs["end"].max() - (runs["end"] - runs["wall"]).min()
    print(f"\n{len(runs)} runs, {total / 60:.2f} worker-minutes over {span / 60:.2f} minutes "
          f"(record times to the second): {total / span:.2f} workers busy on average")


def comparison(new: pd.DataFrame, old: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group and in all: worker-minutes, epochs and ms per epoch of both grids, ratios new / old."""
    def sums(runs):
        return runs.groupby(by).agg(wall=("wall", "sum"), epochs=("epochs", "sum"))
    table = sums(new).add_suffix("_new").join(sums(old).add_suffix("_old"), how="outer")
    table.loc[("all",) * len(by) if len(by) > 1 else "all", :] = table.sum()
    result = pd.DataFrame({"min new": table["wall_new"] / 60, "min old": table["wall_old"] / 60,
                           "epochs new": table["epochs_new"], "epochs old": table["epochs_old"],
                           "ms/ep new": 1000 * table["wall_new"] / table["epochs_new"],
                           "ms/ep old": 1000 * table["wall_old"] / table["epochs_old"]})
    result["time x"] = result["min new"] / result["min old"]
    result["epochs x"] = result["epochs new"] / result["epochs old"]
    result["ms/ep x"] = result["ms/ep new"] / result["ms/ep old"]
    return result.sort_values("min old", ascending=False)


if __name__ == "__main__":
    main()
