"""Command line: ``python -m lgmrec <command> ...``.

Commands: ``train`` (one run, metrics to JSON), ``generate`` (write a synthetic dataset), ``grid``
(run a profile's experiments), ``check`` (Recall@20/NDCG@20 against expected values), ``power``
(what each claim's design could detect, and the design that would detect the paper's margin),
``calibrate`` (fit the embedded testbed to the published baselines' ratios),
``book`` (build the Jupyter Book) and ``data`` (the real datasets). User errors (bad files, bad options)
print one line and exit with code 2; a diverged run and a missed check exit with code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import parse_assignments
from .errors import ConfigError, LGMRecError
from .files import write_atomic

EXIT_FAILED_RUN = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LGMRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing partial was written", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from .datasets.cli import add_data_parser

    parser = argparse.ArgumentParser(prog="python -m lgmrec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_generate(commands)
    _add_grid(commands)
    _add_check(commands)
    _add_power(commands)
    _add_calibrate(commands)
    _add_book(commands)
    add_data_parser(commands)
    return parser


# ----------------------------------------------------------------------------- train, generate


PROFILE_HELP = ("a built-in profile (embedded, embedded-v1, full, ci, smoke) or a profile file (.toml, see lgmrec.profiles); "
                "default: %(default)s")


def _add_train(commands) -> None:
    from .models import installed_models

    train = commands.add_parser("train", help="train and evaluate one model on one dataset",
                                description="One run; the configuration is resolved as everywhere else "
                                            "(lgmrec.resolve: model defaults, preset, the model's training "
                                            "defaults, --profile's training settings, --set).")
    train.add_argument("--data", required=True, help="dataset folder in the MMRec format, or a dataset name")
    train.add_argument("--model", default="lgmrec", metavar="MODEL",
                       help=f"{', '.join(installed_models())}, or a plug-in as module:attribute (default: lgmrec)")
    train.add_argument("--seed", type=int, default=999)
    train.add_argument("--preset", default=None, help="named hyperparameter preset (LGMRec default: official-log)")
    train.add_argument("--profile", default=None, metavar="NAME|FILE.toml",
                       help="take a profile's training settings, synthetic presets and plug-ins (default: the "
                            "protocol unchanged): a built-in profile or a profile file (.toml)")
    train.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
        help="override a model hyperparameter or a training setting (repeatable), e.g. alpha=0.5",
    )
    train.add_argument("--max-epochs", type=int, default=None)
    train.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--output", required=True, help="JSON file for the run record")
    train.add_argument("--per-user", default=None, help="optional .npz file for per-user test metrics")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)


def _add_generate(commands) -> None:
    from .synthetic import PRESETS

    generate = commands.add_parser("generate", help="write a synthetic dataset (the embedded default data)")
    generate.add_argument("--preset", required=True, choices=list(PRESETS))
    generate.add_argument("--out", required=True, help="parent folder; the dataset goes to OUT/<preset>/")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(func=run_generate)


def run_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .datasets.named import load_named_dataset
    from .grids import get_profile
    from .resolve import resolve_run
    from .training import train_model

    overrides = parse_assignments(args.assignments)
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    if args.device is not None:
        overrides["device"] = args.device
    output = Path(args.output)
    if not output.parent.is_dir():
        raise ConfigError(f"{output}: output folder does not exist")
    profile = get_profile(args.profile) if args.profile else None
    is_path = Path(args.data).is_dir() or os.sep in args.data
    data = load_dataset(args.data) if is_path else load_named_dataset(args.data, profile)
    resolved = resolve_run(args.model, data.name, overrides, profile.train if profile else None, args.preset)
    result = train_model(data, resolved.model, model_config=resolved.model_config, train_config=resolved.train_config,
                         seed=args.seed, preset=resolved.preset, quiet=args.quiet)
    write_atomic(output, lambda tmp: tmp.write_text(json.dumps(result.to_record(), indent=2, sort_keys=True)))
    if args.per_user and result.per_user:
        import numpy as np

        np.savez_compressed(args.per_user, **result.per_user)
    if result.status != "ok":
        print(f"error: run failed: {result.error}", file=sys.stderr)
        return EXIT_FAILED_RUN
    summary = ", ".join(f"{k}={result.test[k]:.4f}" for k in ("recall@20", "ndcg@20"))
    print(f"{args.model} on {data.name} seed {args.seed}: best epoch {result.best_epoch}/"
          f"{result.epochs_run}, test {summary} -> {output}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from .synthetic import generate, write_dataset

    folder = write_dataset(generate(args.preset, seed=args.seed), Path(args.out) / args.preset)
    print(f"wrote synthetic dataset {args.preset} (seed {args.seed}) to {folder}")
    return 0


# ----------------------------------------------------------------------------- grid, check, book


def _add_grid(commands) -> None:
    from .executors import EXECUTORS
    from .grids import DEFAULT_PROFILE, DERIVED, EXPERIMENTS, PROFILES

    grid = commands.add_parser(
        "grid", help="run the experiment grid of a profile into results/",
        description="Run every run of a profile that has no record yet (one JSON + one Parquet file "
                    "per run under <results>/<profile>/). Interrupt and rerun at will: finished runs "
                    "are kept. Profiles: " + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
    )
    grid.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE.toml", help=PROFILE_HELP)
    grid.add_argument("--only", action="append", choices=list(EXPERIMENTS) + list(DERIVED),
                      help="run only these experiments (repeatable; overall includes its tuning)")
    grid.add_argument("--results", default=None, help="results root (default: $LGMREC_RESULTS_DIR or ./results)")
    grid.add_argument("--force", action="store_true", help="rerun runs that have a record")
    grid.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    grid.add_argument("--dry-run", action="store_true", help="print the units and runs, run nothing")
    grid.add_argument("--executor", default="local", choices=EXECUTORS,
                      help="local (default): worker processes on this machine; ray: Ray tasks on a cluster "
                           "(pip install '.[cluster]'); inprocess: one after another in this process")
    grid.add_argument("--workers", type=int, default=None, help="local: parallel workers (default: the cores)")
    grid.add_argument("--threads", type=int, default=None,
                      help="torch threads per run, every executor (default: local and inprocess: cores / workers; "
                           "ray: --cpus-per-run); the records state it")
    grid.add_argument("--no-notebooks", dest="notebooks", action="store_false",
                      help="run units as function calls instead of papermill-executed notebooks")
    grid.add_argument("--max-attempts", type=int, default=3, help="attempts per unit when workers die (default 3)")
    grid.add_argument("--address", default=None, help="ray: cluster address ('auto', 'ray://host:10001'); "
                                                      "default: start a local Ray instance")
    grid.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs each unit declares (default 1)")
    grid.add_argument("--gpus-per-run", type=float, default=0.0,
                      help="ray: GPUs each unit declares, fractions share a GPU (e.g. 0.25; default 0)")
    grid.set_defaults(func=run_grid_command)


def run_grid_command(args: argparse.Namespace) -> int:
    from .executors import GridOptions, run_grid
    from .grids import get_profile, unit_specs, units
    from .results import ResultStore

    store = ResultStore(args.results)
    profile = get_profile(args.profile)
    if args.dry_run:
        work = units(profile, args.only)
        print(f"profile {profile.name}: {len(work)} units ({profile.description})")
        for unit in work:
            specs = unit_specs(profile, unit)
            tuned = unit.experiment == "overall" and profile.is_tuned(unit.model)
            print(f"  {unit.key}: {len(specs)} runs" + (f" + {len(profile.seeds)} seeds at the chosen point" if tuned else ""))
            for spec in specs:
                print(f"    {spec.experiment:<12}{spec.variant:<40}{spec.describe()}")
        return 0
    if args.workers is not None and args.workers < 1 or args.threads is not None and args.threads < 1 \
            or args.max_attempts < 1:
        raise ConfigError("--workers, --threads and --max-attempts must be >= 1")
    options = GridOptions(force=args.force, retry_failed=args.retry_failed, notebooks=args.notebooks,
                          max_attempts=args.max_attempts, workers=args.workers, threads=args.threads,
                          address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run)
    summary = run_grid(profile, args.only, store, args.executor, options)
    print(summary.line())
    for line in summary.failed:
        print(f"  failed: {line}")
    print(f"results in {store.root / profile.name}")
    return EXIT_FAILED_RUN if summary.gave_up else 0


def _add_check(commands) -> None:
    from .check import run_check_command
    from .grids import DEFAULT_PROFILE

    check = commands.add_parser(
        "check", help="compare reproduced Recall@20/NDCG@20 with expected values (exit 1 on a miss)",
        description="Mean test Recall@20 and NDCG@20 over seeds of the overall experiment, compared "
                    "with an expected-values CSV (for synthetic data: one produced by this suite) or, "
                    "for real data, with the published numbers. A row passes when "
                    "|reproduced - expected| <= max(abs_tol, rel_tol * |expected|).",
    )
    check.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE.toml", help=PROFILE_HELP)
    check.add_argument("--expected", default=None,
                       help="CSV with dataset,model,metric,expected[,abs_tol,rel_tol] (default: "
                            "lgmrec/reference/expected/<profile>.csv for synthetic profiles, the published "
                            "numbers for real ones)")
    check.add_argument("--results", default=None)
    check.add_argument("--tolerance", action="append", default=[], metavar="METRIC:abs=A,rel=R",
                       help="override a metric's tolerance, e.g. recall@20:abs=0.01,rel=0.1 (repeatable)")
    check.add_argument("--write-expected", default=None, metavar="CSV",
                       help="instead of checking, write the current means as expected values to CSV")
    check.set_defaults(func=run_check_command)


def _add_power(commands) -> None:
    from .grids import DEFAULT_PROFILE

    command = commands.add_parser(
        "power", help="what each claim's design could detect, and the seeds and users the paper's margin needs",
        description="Per claim and dataset: the headline comparison's minimum detectable effect (80 %% power at "
                    "the verdict's level) from the results' variances over users and seeds, the paper's margin "
                    "(the published record), and the seeds and test users that would detect it; also what the "
                    "real dataset's test users would give. A profile without results (e.g. full before its runs) "
                    "is extrapolated from the embedded profile's results, and says so.",
    )
    command.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE.toml", help=PROFILE_HELP)
    command.add_argument("--results", default=None)
    command.add_argument("--csv", default=None, metavar="FILE", help="also write the numbers as CSV ('-': stdout only)")
    command.set_defaults(func=run_power_command)


def run_power_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from .grids import DEFAULT_PROFILE, get_profile
    from .report import BookContext
    from .report.design import design_frame, design_table
    from .results import ResultStore

    profile = get_profile(args.profile)
    if ResultStore(args.results).load(profile.name).empty and profile.name != DEFAULT_PROFILE:
        print(f"profile {profile.name}: no results yet; extrapolating from the {DEFAULT_PROFILE} profile's results "
              f"(synthetic variances) to its datasets' test users")
        profile = get_profile(DEFAULT_PROFILE)
    ctx = BookContext.create(profile, args.results)
    if args.csv == "-":
        design_frame(ctx).to_csv(sys.stdout, index=False)
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 40):
        print(f"{ctx.data_line()}\n")
        print(design_table(ctx).frame.to_string())
    if args.csv:
        frame = design_frame(ctx)
        write_atomic(Path(args.csv), lambda temporary: frame.to_csv(temporary, index=False))
        print(f"\nwritten: {args.csv}")
    return 0


def _add_calibrate(commands) -> None:
    from .calibration import FAMILIES, OBJECTIVES, SEARCH_SPACE

    command = commands.add_parser(
        "calibrate", help="fit the embedded testbed's generator to the published baselines' ratios",
        description="Stage 'search': per dataset family, Optuna (TPE, seed 0) over the generator's knobs so that "
                    "the baselines' Recall@20 relative to LightGCN on an 800-user preset match the published "
                    "ratios; writes lgmrec/reference/calibrated_presets.csv and calibration_trials.csv. Stage "
                    "'measure': the embedded design on the uncalibrated (embedded-v1) and calibrated (embedded) "
                    "presets; writes lgmrec/reference/calibration_fit.csv. Deterministic; see lgmrec.calibration.",
    )
    command.add_argument("stage", choices=("search", "measure", "all"), nargs="?", default="all")
    command.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    command.add_argument("--trials", type=int, default=40, help="search trials per family (default %(default)s)")
    command.add_argument("--reuse-trials", action="store_true",
                         help="take a family's committed trials where there are --trials of them (the search is "
                              "deterministic) and only select and measure its preset again")
    command.add_argument("--knobs", nargs="+", choices=list(SEARCH_SPACE), default=None,
                         help="the knobs to search (default: all of lgmrec.calibration.SEARCH_SPACE)")
    command.add_argument("--search-seeds", type=int, nargs="+", default=[999],
                         help="seeds each search trial trains with (default %(default)s; more: a less noisy "
                              "objective, proportionally slower)")
    command.add_argument("--objective", choices=OBJECTIVES, default="quick",
                         help="quick (default): 11 baselines at their defaults with --search-seeds; design: the "
                              "measure itself (13 baselines, reduced tuning, the embedded profile's seeds; ~2-4 min "
                              "a trial on 2 cores)")
    command.add_argument("--local", type=float, default=None, metavar="RADIUS",
                         help="search within RADIUS (a share of each knob's range) around the committed preset, "
                              "whose knobs are the first trial")
    command.add_argument("--workers", type=int, default=2, help="parallel runs (default %(default)s)")
    command.add_argument("--results", default=None, help="results folder of the measure stage")
    command.set_defaults(func=run_calibrate_command)


def run_calibrate_command(args: argparse.Namespace) -> int:
    from . import calibration

    if args.trials < 1 or args.workers < 1:
        raise ConfigError("--trials and --workers must be at least 1")
    if args.local is not None and not 0 < args.local <= 1:
        raise ConfigError("--local must be in (0, 1]")
    if args.stage in ("search", "all"):
        calibration.run_search(args.families, args.trials, args.workers, args.reuse_trials, seeds=args.search_seeds,
                               knobs=args.knobs, objective=args.objective, local=args.local)
    if args.stage in ("measure", "all"):
        path = calibration.run_measure(args.workers, args.results)
        print(f"written: {path}")
    return 0


def _add_book(commands) -> None:
    from .grids import DEFAULT_PROFILE

    book = commands.add_parser(
        "book", help="build the Jupyter Book from the results of a profile",
        description="Execute the analysis notebooks against <results>/<profile>/ and build HTML "
                    "(fails if any notebook fails).",
    )
    book.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE.toml", help=PROFILE_HELP)
    book.add_argument("--results", default=None)
    book.add_argument("--out", default=None, help="output folder (default: book/_build)")
    book.set_defaults(func=run_book_command)


def run_book_command(args: argparse.Namespace) -> int:
    from .book import build_book

    out = build_book(args.profile, results_root=args.results, output=args.out)
    print(f"book built: {out / 'index.html'}")
    return 0
