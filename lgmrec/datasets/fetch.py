"""Download the released Amazon datasets (MMRec format), verify them, and keep them in a cache.

Where the files come from
    The LGMRec authors link one Google Drive folder holding Baby, Sports and Clothing
    (README of github.com/georgeguo-cn/LGMRec); the MMRec project links another holding Baby,
    Sports and Elec (data/README.md of github.com/enoche/MMRec), tried second. Each Drive folder
    holds one sub-folder per dataset (``baby/``: ``baby.inter``, ``image_feat.npy``,
    ``text_feat.npy``, usually also ``u_id_mapping.csv`` and ``i_id_mapping.csv``); a sub-folder
    packed as ``baby.zip`` / ``baby.tar.gz`` is unpacked too.

Where they are kept
    ``<root>/<name>/`` with ``root`` = ``--root`` if given, else ``$LGMREC_DATA_DIR``, else
    ``$XDG_CACHE_HOME/lgmrec/datasets`` (``~/.cache/lgmrec/datasets`` when XDG_CACHE_HOME is unset).

How they are verified
    1. Statistics: the folder must load with :func:`lgmrec.data.load_dataset` and match the
       published statistics (``lgmrec/reference/datasets.csv``: users, items, interactions, train /
       valid / test rows, image and text feature widths).
    2. Checksums: the real sha256 sums of the released files could not be obtained when this
       module was written (Google Drive is unreachable from the build machines), so
       ``KNOWN_CHECKSUMS`` is empty. Instead, right after the statistics check succeeds, the
       sha256 of every file is recorded in ``<root>/<name>/checksums.json``; every later use
       (a repeated ``fetch``, :func:`find_real_dataset`) re-hashes the files and compares, so a
       file changed or truncated after verification is detected. Sums added to
       ``KNOWN_CHECKSUMS`` are checked as well.

Downloads go to a temporary folder inside the root and are renamed into place only after
verification, so an interrupted or failed download (including Ctrl-C) never leaves a partial
dataset behind. The downloader is a parameter, so tests replace Google Drive with a fake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..data import SPLITS, InteractionData, load_dataset
from ..errors import DataError
from ..reference import read_reference

DATASET_NAMES = ("baby", "sports", "clothing")
CHECKSUM_FILE = "checksums.json"
FEATURE_FILES = ("image_feat.npy", "text_feat.npy")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

# name -> {file name -> sha256}. Empty: the released files could not be hashed here (see the
# module docstring); entries added here are enforced by every verification.
KNOWN_CHECKSUMS: dict[str, dict[str, str]] = {}

# (folder url, dataset name, destination folder) -> None; raises on any failure.
Downloader = Callable[[str, str, Path], None]


@dataclass(frozen=True)
class DriveSource:
    url: str
    published_in: str
    datasets: tuple[str, ...]


SOURCES = (
    DriveSource(
        url="https://drive.google.com/drive/folders/1BxObpWApHbGx9jCQGc8z52cV3t9_NE0f",
        published_in="https://github.com/georgeguo-cn/LGMRec (README, 'Data')",
        datasets=("baby", "sports", "clothing"),
    ),
    DriveSource(
        url="https://drive.google.com/drive/folders/13cBy1EA_saTUuXxVllKgtfci2A09jyaG",
        published_in="https://github.com/enoche/MMRec (data/README.md)",
        datasets=("baby", "sports"),  # also holds Elec, which the paper does not use
    ),
)


@dataclass(frozen=True)
class DatasetStats:
    """The statistics a released dataset must have (columns of ``lgmrec/reference/datasets.csv``)."""

    users: int
    items: int
    interactions: int
    train: int
    valid: int
    test: int
    visual_dim: int
    text_dim: int

    @classmethod
    def of(cls, data: InteractionData) -> "DatasetStats":
        counts = {s: int(len(data.splits[s])) for s in SPLITS}
        return cls(
            users=data.n_users, items=data.n_items, interactions=sum(counts.values()),
            **counts,
            visual_dim=int(data.features["image"].shape[1]),
            text_dim=int(data.features["text"].shape[1]),
        )

    def differences(self, expected: "DatasetStats") -> list[str]:
        return [
            f"{f.name} {getattr(self, f.name)} (expected {getattr(expected, f.name)})"
            for f in fields(self)
            if getattr(self, f.name) != getattr(expected, f.name)
        ]


def reference_stats(name: str) -> DatasetStats | None:
    """Published statistics of dataset ``name`` (None for a name not in the table)."""
    table = read_reference("datasets")
    rows = table[table["dataset"] == name]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return DatasetStats(**{f.name: int(row[f.name]) for f in fields(DatasetStats)})


def default_root() -> Path:
    """The cache root: ``$LGMREC_DATA_DIR``, else ``$XDG_CACHE_HOME/lgmrec/datasets``."""
    if os.environ.get("LGMREC_DATA_DIR"):
        return Path(os.environ["LGMREC_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "lgmrec" / "datasets"


def dataset_folder(name: str, root: str | Path | None = None) -> Path:
    """Where dataset ``name`` lives (or would live): ``<root>/<name>``."""
    return (Path(root).expanduser() if root is not None else default_root()) / name


def sources_for(name: str) -> list[DriveSource]:
    return [s for s in SOURCES if name in s.datasets]


def manual_instructions(name: str, folder: Path) -> str:
    """One line telling the user what to download by hand and where to put it."""
    urls = " or ".join(s.url for s in sources_for(name)) or "(no known source)"
    files = ", ".join((f"{name}.inter",) + FEATURE_FILES)
    return (
        f"download the '{name}' sub-folder of the Google Drive folder {urls} by hand and put "
        f"its files ({files}) into {folder}/, then run 'python -m lgmrec data fetch {name}"
        f"{'' if folder.parent == default_root() else f' --root {folder.parent}'}' to verify them"
    )


# ----------------------------------------------------------------------------- verification


def verify_statistics(folder: Path, name: str, expected: DatasetStats | None = None) -> DatasetStats:
    """Load ``folder`` and compare it with ``expected`` (default: the published statistics)."""
    expected = expected or reference_stats(name)
    if expected is None:
        raise DataError(f"{folder}: no reference statistics known for dataset '{name}'")
    data = load_dataset(folder, modalities=["image", "text"])
    actual = DatasetStats.of(data)
    problems = actual.differences(expected)
    if problems:
        raise DataError(
            f"{folder}: does not match the statistics of the released {name} data: "
            + "; ".join(problems)
        )
    return actual


def _sha256(path: Path, progress: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)


def _hash_files(folder: Path, quiet: bool = True) -> dict[str, dict[str, int | str]]:
    files = _data_files(folder)
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"sha256 {folder.name}",
              disable=quiet, leave=False) as progress:
        return {
            p.relative_to(folder).as_posix(): {"sha256": _sha256(p, progress), "bytes": p.stat().st_size}
            for p in files
        }


def record_checksums(folder: Path, stats: DatasetStats, quiet: bool = True) -> Path:
    """Write ``checksums.json`` (sha256 and size of every file + the verified statistics)."""
    record = {"algorithm": "sha256", "statistics": asdict(stats), "files": _hash_files(folder, quiet)}
    target = folder / CHECKSUM_FILE
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{CHECKSUM_FILE}.", delete=False) as tmp:
        json.dump(record, tmp, indent=1, sort_keys=True)
    os.replace(tmp.name, target)
    return target


def verify_checksums(
    folder: Path,
    name: str,
    expected: DatasetStats | None = None,
    known_checksums: Mapping[str, str] | None = None,
    quiet: bool = True,
) -> None:
    """Re-hash the files listed in ``checksums.json``; raise DataError naming the first mismatch."""
    record_path = folder / CHECKSUM_FILE
    try:
        record = json.loads(record_path.read_text())
        listed = record["files"]
        recorded_stats = DatasetStats(**record["statistics"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{record_path}: unreadable checksum record ({exc})".splitlines()[0])
    expected = expected or reference_stats(name)
    if expected is not None and recorded_stats != expected:
        raise DataError(
            f"{record_path}: recorded statistics differ from the expected ones: "
            + "; ".join(recorded_stats.differences(expected))
        )
    for file in (f"{name}.inter",) + FEATURE_FILES:
        if file not in listed:
            raise DataError(f"{record_path}: does not list the required file {file}")
    for relative, sha in (known_checksums or {}).items():
        if relative in listed and listed[relative]["sha256"] != sha:
            raise DataError(f"{folder / relative}: sha256 differs from the published checksum")
    listed_bytes = sum(int(entry["bytes"]) for entry in listed.values())
    with tqdm(total=listed_bytes, unit="B", unit_scale=True, desc=f"sha256 {folder.name}",
              disable=quiet, leave=False) as progress:
        for relative, entry in sorted(listed.items()):
            path = folder / relative
            if not path.is_file():
                raise DataError(f"{path}: file listed in {CHECKSUM_FILE} is missing")
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise DataError(
                    f"{path}: size changed since verification ({size} bytes, recorded {entry['bytes']})"
                )
            if _sha256(path, progress) != entry["sha256"]:
                raise DataError(f"{path}: sha256 changed since verification")


def check_cached(
    folder: Path,
    name: str,
    expected: DatasetStats | None = None,
    known_checksums: Mapping[str, str] | None = None,
    quiet: bool = True,
) -> bool:
    """False if ``folder`` holds no dataset; True if it holds a valid one; DataError otherwise.

    A folder with ``checksums.json`` is checked against it. A folder without one (files put
    there by hand) is verified by its statistics, and its checksums are then recorded.
    """
    if not (folder / f"{name}.inter").is_file():
        return False
    if known_checksums is None:
        known_checksums = KNOWN_CHECKSUMS.get(name, {})
    if (folder / CHECKSUM_FILE).is_file():
        verify_checksums(folder, name, expected, known_checksums, quiet)
        return True
    stats = verify_statistics(folder, name, expected)
    record_checksums(folder, stats, quiet)
    verify_checksums(folder, name, expected, known_checksums, quiet)
    return True


def find_real_dataset(
    name: str,
    root: str | Path | None = None,
    expected: DatasetStats | None = None,
) -> Path | None:
    """The folder of released dataset ``name`` if it is present and valid, else None.

    A present but invalid folder gives None and a warning saying why.
    """
    folder = dataset_folder(name, root)
    try:
        return folder if check_cached(folder, name, expected) else None
    except DataError as exc:
        warnings.warn(f"ignoring dataset '{name}': {exc}", stacklevel=2)
        return None


# ----------------------------------------------------------------------------- download


def gdown_downloader(url: str, name: str, destination: Path) -> None:
    """Download the files of dataset ``name`` from the Drive folder ``url`` into ``destination``.

    Lists the folder without downloading, keeps the files inside a ``<name>`` sub-folder (any
    letter case) or a ``<name>.zip``-style archive, and downloads those, keeping their paths.
    """
    import gdown  # imported here: only needed when actually downloading

    listing = gdown.download_folder(url=url, skip_download=True, quiet=True)
    if not listing:
        raise RuntimeError("the folder listing is empty or not accessible")
    wanted = [entry for entry in listing if _belongs_to(entry.path, name)]
    if not wanted:
        raise RuntimeError(f"the folder has no '{name}' sub-folder or archive")
    root = destination.resolve()
    for entry in wanted:
        target = (destination / entry.path).resolve()
        if root not in target.parents:
            raise RuntimeError(f"refusing a file path outside the download folder: {entry.path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if gdown.download(id=entry.id, output=str(target), quiet=False) is None:
            raise RuntimeError(f"download of {entry.path} failed")


def _belongs_to(path: str, name: str) -> bool:
    parts = [p.lower() for p in PurePosixPath(path).parts]
    if name in parts[:-1]:
        return True
    return bool(parts) and any(parts[-1] == name + suffix for suffix in ARCHIVE_SUFFIXES)


def _unpack_archives(folder: Path) -> None:
    for archive in sorted(folder.rglob("*")):
        lower = archive.name.lower()
        if not archive.is_file():
            continue
        if lower.endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:  # ZipFile strips absolute and '..' paths
                bundle.extractall(archive.parent)
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(archive) as bundle:
                if hasattr(tarfile, "data_filter"):
                    bundle.extractall(archive.parent, filter="data")
                else:  # older Pythons: check member paths ourselves
                    base = archive.parent.resolve()
                    for member in bundle.getmembers():
                        if base not in (base / member.name).resolve().parents or member.issym() or member.islnk():
                            raise RuntimeError(f"unsafe path in {archive.name}: {member.name}")
                    bundle.extractall(archive.parent)
        else:
            continue
        archive.unlink()


def _assemble(download: Path, name: str, staging: Path) -> Path:
    """Find the dataset in ``download`` and move its folder to ``staging/<name>``."""
    _unpack_archives(download)
    inter_files = [p for p in download.rglob("*") if p.is_file() and p.name.lower() == f"{name}.inter"]
    if not inter_files:
        raise DataError(f"the download holds no {name}.inter")
    if len(inter_files) > 1:
        listed = ", ".join(str(p.relative_to(download)) for p in inter_files)
        raise DataError(f"the download holds several {name}.inter files: {listed}")
    source = inter_files[0].parent
    missing = [f for f in FEATURE_FILES if not (source / f).is_file()]
    if missing:
        raise DataError(f"the download has {name}.inter but lacks {', '.join(missing)}")
    if inter_files[0].name != f"{name}.inter":
        inter_files[0].rename(source / f"{name}.inter")
    target = staging / name
    os.replace(source, target)
    return target


def fetch_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    downloader: Downloader | None = None,
    expected: DatasetStats | None = None,
    known_checksums: Mapping[str, str] | None = None,
    sources: list[DriveSource] | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Make sure released dataset ``name`` is in ``<root>/<name>`` and verified; return the folder.

    A no-op (no download) when the folder is already present and valid. Otherwise each source
    is tried in turn: download into a temporary folder inside the root, verify statistics,
    record checksums, rename into place. ``force`` replaces an existing (even valid) folder.
    On failure: DataError with the reasons and what to download by hand, and nothing left behind.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASET_NAMES)})")
    folder = dataset_folder(name, root)
    if not force:
        try:
            if check_cached(folder, name, expected, known_checksums, quiet):
                return folder
        except DataError as exc:
            raise DataError(f"{exc} (delete {folder} or rerun with --force to download again)")
        if folder.exists() and any(folder.iterdir()):
            raise DataError(
                f"{folder}: exists but holds no {name}.inter (move it away or rerun with --force)"
            )
    downloader = downloader or gdown_downloader
    sources = sources if sources is not None else sources_for(name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=folder.parent))
    failures = []
    try:
        for number, source in enumerate(sources):
            attempt = work / f"attempt{number}"
            try:
                (attempt / "download").mkdir(parents=True)
                if not quiet:
                    print(f"downloading {name} from {source.url}", file=sys.stderr, flush=True)
                downloader(source.url, name, attempt / "download")
                staged = _assemble(attempt / "download", name, attempt)
                stats = verify_statistics(staged, name, expected)
                record_checksums(staged, stats, quiet)
                verify_checksums(staged, name, expected,
                                 known_checksums if known_checksums is not None
                                 else KNOWN_CHECKSUMS.get(name, {}), quiet)
            except Exception as exc:  # any downloader / network / format failure: try the next source
                reason = " ".join(str(exc).split()) or type(exc).__name__
                if not isinstance(exc, DataError):
                    reason = f"{type(exc).__name__}: {reason}"
                # name files by their place in the download, not by the vanishing temp folder
                for temporary in (attempt / "download", attempt):
                    reason = reason.replace(f"{temporary}{os.sep}", "downloaded ")
                failures.append(f"{source.url}: {reason}")
                shutil.rmtree(attempt, ignore_errors=True)
                continue
            _move_into_place(staged, folder, work, force)
            return folder
        reasons = "; ".join(failures) or "no download source is known"
        raise DataError(
            f"could not fetch dataset '{name}' ({reasons}); {manual_instructions(name, folder)}"
        )
    finally:  # also on KeyboardInterrupt: nothing partial survives
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(staged: Path, folder: Path, work: Path, force: bool) -> None:
    try:
        if force and folder.exists():  # keep the old copy aside until the new one is in place
            os.replace(folder, work / "previous")
        os.replace(staged, folder)
    except OSError as exc:  # e.g. another fetch filled the folder meanwhile
        raise DataError(f"{folder}: cannot move the verified download into place ({exc})") from exc
