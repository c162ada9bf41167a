"""A few embedded-profile runs into a results folder, to compare two versions of the code record by record.

    LGMREC_RESULTS_DIR=/tmp/before python scripts/representative_runs.py [models ...] [--dataset D] [--seed S]

Trains each model (default: LGMRec, MICRO, MMGCN, BM3, BPR, LightGCN, MGCN, LATTICE) on
``synth-baby-mini`` with seed 999 at the embedded profile's settings, one torch thread (as the
grid's workers), through :func:`lgmrec.runner.run_experiment` (the grid's record path), forcing a
rerun. Run it with the code before and after a change into two folders, then
``python scripts/compare_records.py /tmp/before /tmp/after --profile embedded``. To run another
checkout's code, run this file from that checkout (``git worktree add /tmp/base <commit>``, then
``cd /tmp/base && python /path/to/representative_runs.py``): it imports the lgmrec of the current
directory first, and prints which one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_MODELS = ["lgmrec", "micro", "mmgcn", "bm3", "bpr", "lightgcn", "mgcn", "lattice"]
#: ``--lgmrec-variants``: LGMRec's other code paths, as the grid's ablation and sensitivity units run them
LGMREC_VARIANTS = ["hyperedge_bug=True", "cf_model=mf", "use_hcl=False", "use_mge=False", "use_ghe=False",
                   "modalities=image", "hyper_num=64", "hyper_num=256", "eval_mode=deterministic"]


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, os.getcwd())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--dataset", default="synth-baby-mini")
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--lgmrec-variants", action="store_true",
                        help="also LGMRec with each of: " + "; ".join(LGMREC_VARIANTS))
    args = parser.parse_args(argv)
    if not os.environ.get("LGMREC_RESULTS_DIR"):
        parser.error("set LGMREC_RESULTS_DIR to the folder to write (never the project's results/)")

    import torch

    torch.set_num_threads(1)
    import lgmrec
    from lgmrec.results import ResultStore
    from lgmrec.runner import run_experiment

    print(f"lgmrec from {lgmrec.__file__}; records under {os.environ['LGMREC_RESULTS_DIR']}", flush=True)
    store = ResultStore(os.environ["LGMREC_RESULTS_DIR"])
    runs = [(model, None) for model in args.models]
    runs += [("lgmrec", variant) for variant in LGMREC_VARIANTS] if args.lgmrec_variants else []
    for model, overrides in runs:
        begin = time.perf_counter()
        record = run_experiment(args.dataset, model, args.seed, overrides, "embedded", force=True, store=store)
        print(f"{model} {overrides or ''}: best epoch {record['best_epoch']}/{record['epochs_run']}, "
              f"{time.perf_counter() - begin:.1f} s", flush=True)


if __name__ == "__main__":
    main()
