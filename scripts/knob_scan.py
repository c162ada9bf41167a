"""How each generator knob moves the baselines' ratios to LightGCN: one knob at a time around a preset.

    python scripts/knob_scan.py [--family baby] [--seeds 999 1] [--workers 2]
                                [--knob n_clusters=8,64 --knob sharpness=0.7,2.5 ...]

Starts from the family's calibrated preset (``synth-<family>-mini-cal``), sets one knob to each listed
value (the size and skew knobs refitted to the released degrees, as the calibration does), and trains
the calibration's search models at their defaults with the given seeds
(:func:`lgmrec.calibration.measure_recalls`). Prints, per setting, every model's ratio, the fit to the
published ratios (Spearman, median and mean absolute error), what the data leave the baselines to
differ by (:func:`lgmrec.calibration.rule_recalls`: MostPop's and the oracle's Recall@20 over
LightGCN's, LightGCN's own, and the share of the interactions on the 20 most popular items:
:func:`lgmrec.calibration.top_share`) and the seconds it took; a knob whose value cannot keep the degrees
is reported as such. For choosing what the calibration searches over:
the search itself is ``python -m lgmrec calibrate search``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace

DEFAULT_KNOBS = ["n_clusters=8,64", "latent_dim=8,64", "max_interests=1,6", "modality_coverage=0.34,1.0",
                 "sharpness=0.7,2.5", "feature_cluster=0.0,0.8", "cluster_spread=0.1,0.8"]


def parse_knob(text: str, types: dict[str, type]) -> tuple[str, list]:
    name, _, values = text.partition("=")
    if name not in types or not values:
        raise SystemExit(f"--knob {text!r}: expected KNOB=V1,V2 with KNOB one of {', '.join(sorted(types))}")
    cast = int if types[name] == "int" else float
    return name, [cast(v) for v in values.split(",")]


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, os.getcwd())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="baby", choices=["baby", "sports", "clothing"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[999, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--knob", action="append", help=f"KNOB=V1,V2 (default: {' '.join(DEFAULT_KNOBS)})")
    args = parser.parse_args(argv)

    from lgmrec import calibration
    from lgmrec.synthetic import PRESETS, SyntheticPreset, generate_with_truth

    types = {f.name: f.type for f in fields(SyntheticPreset)}
    base = PRESETS[calibration.calibrated_name(args.family)]
    target = calibration.published_ratios(args.family)
    settings = [("base", {})] + [(f"{name}={value}", {name: value})
                                 for name, values in map(lambda t: parse_knob(t, types), args.knob or DEFAULT_KNOBS)
                                 for value in values]
    models = list(calibration.SEARCH_MODELS)
    print("setting".ljust(24) + "".join(m[:8].rjust(9) for m in models)
          + "  spearman median  mean  mostpop oracle lightgcn top20  sec")
    print("published".ljust(24) + "".join(f"{target[m]:9.3f}" for m in models))
    with ProcessPoolExecutor(args.workers, initializer=calibration._init_worker) as pool:
        for label, change in settings:
            begin = time.perf_counter()
            preset = calibration.fit_degrees(replace(base, **change), args.family)
            if not calibration.degrees_close(calibration.preset_degrees(preset), calibration.real_degrees(args.family)):
                print(label.ljust(24) + "  cannot keep the released degrees")
                continue
            recalls = calibration.measure_recalls(preset, args.family, models, args.seeds, pool)
            reference = recalls[calibration.REFERENCE_MODEL]
            ratios = recalls / reference
            fit = calibration.fit_score(ratios.to_dict(), target.to_dict())
            data, truth = generate_with_truth(preset, name=f"calibration-{args.family}")
            rules = calibration.rule_recalls(data, truth)
            print(label.ljust(24) + "".join(f"{ratios[m]:9.3f}" for m in models)
                  + f"  {fit.spearman:8.2f} {fit.median_error:6.3f} {fit.mean_error:5.3f}"
                  + f"  {rules['mostpop'] / reference:7.2f} {rules['oracle'] / reference:6.2f} {reference:8.3f}"
                  + f" {calibration.top_share(data):5.2f}"
                  + f" {time.perf_counter() - begin:5.0f}", flush=True)


if __name__ == "__main__":
    main()
