"""Two checks of a calibrated preset quoted in docs/design.md ("Calibration").

    python scripts/preset_checks.py other-seeds --family clothing [--presets FILE] [--seeds 20 21 22 23 24]
    python scripts/preset_checks.py scale --family clothing [--presets FILE] [--users 800 1600 3200 6400]

``other-seeds``: the family's preset (from ``--presets``, default the committed
``lgmrec/reference/calibrated_presets.csv``; an older version of it for the preset it replaced)
measured as the measure stage trains the baselines, but with other seeds than the profile's
(:func:`lgmrec.calibration.measure_design_ratios`; the tuning seed stays): the fit out of the sample
a design search selected on. ``scale``: the preset's knobs at other user counts, sizes and
skew refitted to the released degrees (:func:`lgmrec.calibration.fit_degrees`), with the top-20
items' share, MostPop's and the oracle's Recall@20 (:func:`lgmrec.calibration.rule_recalls`): does a
larger preset weaken popularity relative to what any model can reach? Nothing is trained there.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from lgmrec import calibration as C  # noqa: E402
from lgmrec.synthetic import generate_with_truth, read_calibrated_presets  # noqa: E402


def other_seeds(family: str, presets: Path, seeds: list[int], workers: int) -> None:
    preset = read_calibrated_presets(presets)[C.calibrated_name(family)]
    with ProcessPoolExecutor(workers, initializer=C._init_worker) as pool:
        begin = time.perf_counter()
        ratios = C.measure_design_ratios(preset, family, pool, seeds=seeds)
    fit = C.fit_score(ratios.to_dict(), C.published_ratios(family).to_dict())
    print(f"{family} ({presets}), seeds {seeds}: Spearman {fit.spearman:.2f}, median error {fit.median_error:.3f}, "
          f"mean error {fit.mean_error:.3f} ({time.perf_counter() - begin:.0f} s)")
    print("  " + ", ".join(f"{m} {r:.3f}" for m, r in ratios.items()))


def scale(family: str, presets: Path, users: list[int]) -> None:
    preset = read_calibrated_presets(presets)[C.calibrated_name(family)]
    knobs, target = {k: getattr(preset, k) for k in C.SEARCH_SPACE}, C.real_degrees(family)
    for n in users:
        preset = C.preset_for(family, knobs, n_users=n)
        data, truth = generate_with_truth(preset)
        rules = C.rule_recalls(data, truth)
        print(f"{family} {n} users: {data.n_items} items, degrees kept "
              f"{C.degrees_close(C.preset_degrees(preset), target)}, top-20 share {C.top_share(data):.3f}, MostPop "
              f"{rules['mostpop']:.3f}, oracle {rules['oracle']:.3f}, MostPop / oracle "
              f"{rules['mostpop'] / rules['oracle']:.3f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("other-seeds", "scale"))
    parser.add_argument("--family", default="clothing", choices=C.FAMILIES)
    parser.add_argument("--presets", type=Path, default=C.REFERENCE / C.CALIBRATED_FILE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22, 23, 24])
    parser.add_argument("--users", type=int, nargs="+", default=[800, 1600, 3200, 6400])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.check == "other-seeds":
        other_seeds(args.family, args.presets, args.seeds, args.workers)
    else:
        scale(args.family, args.presets, args.users)


if __name__ == "__main__":
    main()
