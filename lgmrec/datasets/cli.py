"""``python -m lgmrec data fetch|prepare|path``: get, rebuild or locate the paper's datasets."""

from __future__ import annotations

import argparse
import sys

from .fetch import DATASET_NAMES, dataset_folder, default_root, fetch_dataset, find_real_dataset


def add_data_parser(subparsers) -> None:
    """Add the ``data`` command (with ``fetch``, ``prepare``, ``path``) to ``subparsers``."""
    data = subparsers.add_parser(
        "data", help="download, rebuild from raw Amazon files, or locate the paper's datasets",
        description=f"Datasets live in <root>/<name>/; default root: $LGMREC_DATA_DIR, else "
                    f"~/.cache/lgmrec/datasets (now: {default_root()}).",
    )
    commands = data.add_subparsers(dest="data_command", required=True)

    fetch = commands.add_parser(
        "fetch", help="download a released dataset (Google Drive), verify it, cache it",
        description="Download the MMRec-format files of the paper from the Google Drive folders "
                    "linked by the LGMRec and MMRec READMEs, check them against the published "
                    "statistics, record sha256 checksums, and keep them in <root>/<name>/. "
                    "A no-op when already present and valid.",
    )
    fetch.add_argument("name", choices=DATASET_NAMES)
    fetch.add_argument("--root", default=None, help="cache root (default: $LGMREC_DATA_DIR or ~/.cache/lgmrec/datasets)")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.add_argument("--quiet", action="store_true", help="no progress output")
    fetch.set_defaults(func=run_fetch)

    prepare = commands.add_parser(
        "prepare", help="rebuild a dataset from the raw Amazon 2014 files",
        description="5-core filter, re-index, split (seeded), and encode features from the raw "
                    "Amazon 2014 ratings, metadata and image-feature files; writes <out>/<name>/.",
    )
    prepare.add_argument("--ratings", required=True, help="ratings CSV (user,item,rating,timestamp; no header)")
    prepare.add_argument("--meta", required=True, help="metadata file, one dict per line (plain or .gz)")
    prepare.add_argument("--images", required=True, help="image-feature binary (image_features_<Category>.b)")
    prepare.add_argument("--name", required=True, help="dataset name, e.g. baby")
    prepare.add_argument("--out", required=True, help="output root: the dataset goes to OUT/NAME/")
    prepare.add_argument("--seed", type=int, default=999, help="seed of the split shuffle (default 999)")
    prepare.add_argument("--device", default=None, help="device of the text encoder (default: automatic)")
    prepare.add_argument("--batch-size", type=int, default=64, help="text-encoder batch size")
    prepare.add_argument("--force", action="store_true", help="replace an existing OUT/NAME/")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")
    prepare.set_defaults(func=run_prepare)

    path = commands.add_parser(
        "path", help="print where a released dataset lives (or would live)",
        description="Print <root>/<name> on stdout and its state on stderr. With --check, the "
                    "files are verified and the exit code is 1 unless present and valid.",
    )
    path.add_argument("name", choices=DATASET_NAMES)
    path.add_argument("--root", default=None)
    path.add_argument("--check", action="store_true", help="verify the files; exit 1 unless valid")
    path.set_defaults(func=run_path)


def run_fetch(args: argparse.Namespace) -> int:
    folder = fetch_dataset(args.name, args.root, force=args.force, quiet=args.quiet)
    print(folder)
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from .prepare import compare_with_reference, prepare_dataset

    result = prepare_dataset(
        args.ratings, args.meta, args.images, args.name, args.out, seed=args.seed,
        device=args.device, batch_size=args.batch_size, force=args.force, quiet=args.quiet,
    )
    stats = result.stats
    print(
        f"wrote {result.folder}: {stats.users} users, {stats.items} items, {stats.interactions} "
        f"interactions (train {stats.train}, valid {stats.valid}, test {stats.test}); "
        f"{result.items_without_image} items without image (mean vector), "
        f"{result.items_without_metadata} without metadata",
        file=sys.stderr,
    )
    print(compare_with_reference(args.name, stats), file=sys.stderr)
    print(result.folder)
    return 0


def run_path(args: argparse.Namespace) -> int:
    folder = dataset_folder(args.name, args.root)
    print(folder)
    if args.check:
        valid = find_real_dataset(args.name, args.root) is not None
        print("present and verified" if valid else f"not present or not valid: run "
              f"'python -m lgmrec data fetch {args.name}'", file=sys.stderr)
        return 0 if valid else 1
    present = (folder / f"{args.name}.inter").is_file()
    print("present (use --check to verify)" if present else
          f"not present: run 'python -m lgmrec data fetch {args.name}'", file=sys.stderr)
    return 0
