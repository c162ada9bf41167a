"""Command line: ``python -m lgmrec <command> ...``.

Commands: ``train`` (one run, metrics to JSON), ``generate`` (write a synthetic dataset), plus the
data and experiment-grid commands registered by their own modules. User errors (bad files, bad
options) print one line and exit with code 2; a diverged run exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import TrainConfig, field_names, parse_assignments
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
    parser = argparse.ArgumentParser(prog="python -m lgmrec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_generate(commands)
    for register in _command_registrars():
        register(commands)
    return parser


def _command_registrars():
    """Parsers contributed by the data and pipeline modules."""
    from .datasets.cli import add_data_parser
    from .pipeline import add_grid_parsers

    return [add_data_parser, add_grid_parsers]


def _add_train(commands) -> None:
    from .models import available_models

    train = commands.add_parser("train", help="train and evaluate one model on one dataset")
    train.add_argument("--data", required=True, help="dataset folder in the MMRec format")
    train.add_argument("--model", default="lgmrec", choices=available_models())
    train.add_argument("--seed", type=int, default=999)
    train.add_argument("--preset", default=None, help="named hyperparameter preset (LGMRec default: official-log)")
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


def split_overrides(assignments: dict) -> tuple[dict, dict]:
    """Split ``--set`` values into (training settings, model hyperparameters)."""
    train_keys = field_names(TrainConfig)
    return (
        {k: v for k, v in assignments.items() if k in train_keys},
        {k: v for k, v in assignments.items() if k not in train_keys},
    )


def run_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .training import train_config_for, train_model

    train_values, model_values = split_overrides(parse_assignments(args.assignments))
    if args.max_epochs is not None:
        train_values["max_epochs"] = args.max_epochs
    if args.device is not None:
        train_values["device"] = args.device
    train_config = train_config_for(args.model, train_values)
    output = Path(args.output)
    if not output.parent.is_dir():
        raise ConfigError(f"{output}: output folder does not exist")
    data = load_dataset(args.data)
    result = train_model(
        data, args.model, train_config=train_config, seed=args.seed, preset=args.preset,
        overrides=model_values, quiet=args.quiet,
    )
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
