"""Compare two results folders record by record: are the runs the same, bit for bit?

    python scripts/compare_records.py RESULTS_A RESULTS_B [--profile ci] [--tolerance 0]

Every ``*.json`` record under RESULTS_A (or ``RESULTS_A/<profile>``) is matched by its relative path
with the one under RESULTS_B; records only on one side are differences. Every field is compared
exactly (floats by equality, lists and dicts element by element: metrics, best epoch, the per-epoch
loss / validation history, the configuration and its hash, the dataset's fingerprint and summary)
except those that measure the run rather than define it: timings (``wall_seconds``,
``train_seconds_per_epoch``, ``eval_seconds``), memory (``peak_memory_mb``,
``baseline_memory_mb``), ``written_at``, ``code_version``, the host's ``environment`` (but its
``torch_threads`` is compared), paths and the Parquet file's checksum. The per-user test metrics
are compared as frames read from the Parquet files (column by column, exactly), not by checksum.

``--tolerance T`` accepts float differences up to T (relative) and reports them as such (for
changes that reorder an exact sum); the default 0 asks for equal bits. Prints one line per
difference and a summary; exit status 0 when every record matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

IGNORED = {"wall_seconds", "train_seconds_per_epoch", "eval_seconds", "peak_memory_mb", "baseline_memory_mb",
           "written_at", "code_version", "per_user_sha256", "_path"}


def records(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.json"))
            if "logs" not in p.relative_to(root).parts and not p.name.startswith(".")}


def differences(a, b, where: str, tolerance: float, out: list[str], close: list[str]) -> None:
    """Append to ``out`` every place where ``a`` and ``b`` differ (``close``: within tolerance)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'B' if key not in a else 'A'}")
            else:
                differences(a[key], b[key], f"{where}.{key}", tolerance, out, close)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            differences(x, y, f"{where}[{i}]", tolerance, out, close)
    elif isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return
        if tolerance and abs(a - b) <= tolerance * max(abs(a), abs(b)):
            close.append(f"{where}: {a!r} vs {b!r}")
        else:
            out.append(f"{where}: {a!r} vs {b!r}")
    elif type(a) is not type(b) or a != b:
        out.append(f"{where}: {a!r} vs {b!r}")


def comparable(record: dict) -> dict:
    record = {k: v for k, v in record.items() if k not in IGNORED}
    environment = record.pop("environment", None) or {}
    record["torch_threads"] = environment.get("torch_threads")
    return record


def per_user(path: Path, record: dict):
    import pandas as pd

    name = record.get("per_user_file")
    return None if not name else pd.read_parquet(path.parent / name)


def compare_per_user(a, b, where: str, tolerance: float, out: list[str], close: list[str]) -> None:
    import numpy as np

    if a is None or b is None:
        if (a is None) != (b is None):
            out.append(f"{where}: per-user file only in {'A' if b is None else 'B'}")
        return
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        out.append(f"{where}: per-user columns/rows {list(a.columns)}x{len(a)} vs {list(b.columns)}x{len(b)}")
        return
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype != y.dtype:
            out.append(f"{where}.{column}: dtype {x.dtype} vs {y.dtype}")
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            if tolerance and x.dtype.kind == "f" and np.allclose(x, y, rtol=tolerance, atol=0, equal_nan=True):
                close.append(f"{where}.{column}: max |diff| {np.nanmax(np.abs(x - y)):.3g}")
            else:
                out.append(f"{where}.{column}: {int((x != y).sum())} of {len(x)} users differ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--profile", default=None, help="compare <a>/<profile> with <b>/<profile>")
    parser.add_argument("--tolerance", type=float, default=0.0, help="relative float tolerance (default: exact)")
    parser.add_argument("--max-lines", type=int, default=50, help="differences printed at most")
    args = parser.parse_args(argv)
    root_a, root_b = (args.a / args.profile, args.b / args.profile) if args.profile else (args.a, args.b)
    found_a, found_b = records(root_a), records(root_b)
    out: list[str] = []
    close: list[str] = []
    differing = 0
    for name in sorted(set(found_a) | set(found_b)):
        if name not in found_a or name not in found_b:
            out.append(f"{name}: only in {'A' if name in found_a else 'B'}")
            differing += 1
            continue
        record_a = json.loads(found_a[name].read_text())
        record_b = json.loads(found_b[name].read_text())
        before = len(out)
        differences(comparable(record_a), comparable(record_b), name, args.tolerance, out, close)
        compare_per_user(per_user(found_a[name], record_a), per_user(found_b[name], record_b), name + ":per_user",
                         args.tolerance, out, close)
        differing += len(out) > before
    for line in out[:args.max_lines]:
        print("DIFF", line)
    if len(out) > args.max_lines:
        print(f"... and {len(out) - args.max_lines} more differences")
    for line in close[:args.max_lines]:
        print("CLOSE", line)
    both = len(set(found_a) & set(found_b))
    print(f"{len(found_a)} records in A, {len(found_b)} in B, {both} in both; {differing} differ "
          f"({len(out)} differences" + (f", {len(close)} within tolerance {args.tolerance:g}" if close else "")
          + "); compared every field but " + ", ".join(sorted(IGNORED)) + " and the environment (but torch_threads)")
    if not found_a and not found_b:
        print("no records found")
        return 1
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
