"""Side-by-side timings of two commits from the logs of ``scripts/fresh_clone_reproduce.sh``.

    python scripts/ab_timings.py LOG [LOG ...] [--new COMMIT]

Each LOG is a ``reproduce.log`` (or the folder holding it) of one fresh-clone ``nox -s reproduce``,
given in the order they ran. Prints one line per run (commit, start, the whole reproduce, the
grid's own minutes from its summary line, its runs, and, where the log holds the machine's CPU
counters, the share of CPU time busy and the seconds the hypervisor stole over the whole run) and,
for two commits, the grid ratio new / old over all runs (mean over mean), and the ratio of every two
adjacent runs of different commits, so a drifting machine shows. ``--new``: the commit under test
(default: the first log's). Issue 25's notes and docs/performance.md quote these figures.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

HEAD = re.compile(r"^commit (\S+) start (\S+)")
GRID = re.compile(r"profile \S+: (\d+) runs in \d+ units, .*?, ([\d.]+) min\s*$")
END = re.compile(r"^rc=(\d+) seconds=(\d+)")
PROC_STAT = re.compile(r"^proc-stat (start|end) cpu\s+([\d ]+)$")
USER_HZ = 100  # /proc/stat counts in these ticks per second (Linux's USER_HZ)


def cpu_use(start: list[int], end: list[int]) -> dict:
    """Busy share of all CPU time and stolen seconds between two /proc/stat cpu lines (user nice
    system idle iowait irq softirq steal ...; guest time is already counted in user)."""
    delta = [b - a for a, b in zip(start, end)]
    total = sum(delta[:8])
    idle = delta[3] + delta[4]
    return {"busy": (total - idle) / total if total else float("nan"), "steal_s": delta[7] / USER_HZ}


def read_log(path: Path) -> dict:
    path = path / "reproduce.log" if path.is_dir() else path
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read ({exc.strerror})")
    run = {"log": str(path)}
    for line in text.splitlines():
        line = line.rsplit("\r", 1)[-1]  # the last state of a progress-bar line
        if m := HEAD.match(line):
            run["commit"], run["start"] = m.groups()
        elif m := GRID.search(line):
            run["runs"], run["grid_min"] = int(m.group(1)), float(m.group(2))
        elif m := END.match(line):
            run["rc"], run["seconds"] = int(m.group(1)), int(m.group(2))
        elif m := PROC_STAT.match(line):
            run[f"cpu_{m.group(1)}"] = [int(v) for v in m.group(2).split()]
    missing = [k for k in ("commit", "grid_min", "seconds") if k not in run]
    if missing:
        raise SystemExit(f"{path}: not a finished fresh-clone reproduce log (no {', '.join(missing)})")
    if "cpu_start" in run and "cpu_end" in run:
        run.update(cpu_use(run["cpu_start"], run["cpu_end"]))
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--new", help="the commit under test (a prefix; default: the first log's)")
    args = parser.parse_args(argv)
    runs = [read_log(p) for p in args.logs]
    for run in runs:
        minutes, seconds = divmod(run["seconds"], 60)
        machine = f"  cpu busy {run['busy']:.0%}, steal {run['steal_s']:.1f} s" if "busy" in run else ""
        print(f"{run['commit']:>10}  {run['start']}  reproduce {minutes:2d} min {seconds:02d} s  "
              f"grid {run['grid_min']:5.1f} min  {run['runs']} runs  rc={run['rc']}{machine}")
    commits = list(dict.fromkeys(r["commit"] for r in runs))
    if len(commits) != 2:
        return
    new = next((c for c in commits if args.new and c.startswith(args.new)), commits[0])
    old = commits[1] if new == commits[0] else commits[0]
    grids = {c: [r["grid_min"] for r in runs if r["commit"] == c] for c in commits}
    mean = {c: statistics.mean(minutes) for c, minutes in grids.items()}
    pairs = [f"{a['grid_min'] / b['grid_min']:.3f}" if a["commit"] == new else f"{b['grid_min'] / a['grid_min']:.3f}"
             for a, b in zip(runs, runs[1:]) if a["commit"] != b["commit"]]
    print(f"grid {new} / {old}: {mean[new]:.2f} / {mean[old]:.2f} min = {mean[new] / mean[old]:.3f} "
          f"({len(grids[new])} and {len(grids[old])} runs); adjacent pairs {', '.join(pairs)}")


if __name__ == "__main__":
    sys.exit(main())
