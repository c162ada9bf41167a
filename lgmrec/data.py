"""Loading and validating a dataset folder in the MMRec format.

A dataset is a folder ``<name>/`` holding ``<name>.inter`` (tab-separated, header
``userID itemID rating timestamp x_label``; x_label 0 = train, 1 = validation, 2 = test) and one
``<modality>_feat.npy`` table per modality (row i = item i), e.g. ``image_feat.npy`` and
``text_feat.npy``. See ``shared/spec/protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DataError

SPLITS = ("train", "valid", "test")
SPLIT_LABELS = {"train": 0, "valid": 1, "test": 2}
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
# The official code treats image as the anchor and text as the positive of the contrastive loss,
# so these two come first (in this order); any other modality follows alphabetically.
PREFERRED_MODALITY_ORDER = ("image", "text")


def order_modalities(names) -> list[str]:
    names = list(names)
    first = [m for m in PREFERRED_MODALITY_ORDER if m in names]
    return first + sorted(m for m in names if m not in PREFERRED_MODALITY_ORDER)


@dataclass(frozen=True, eq=False)
class InteractionData:
    """A loaded, validated dataset.

    ``splits[s]`` is an ``(n, 2)`` int64 array of (user, item) pairs; ``features[m]`` is a float32
    ``(n_items, dim_m)`` array, in the order of :func:`order_modalities`.
    """

    name: str
    n_users: int
    n_items: int
    splits: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def interaction_matrix(self, split: str) -> sp.csr_matrix:
        """Binary n_users x n_items CSR matrix of one split (duplicate pairs collapse to 1)."""
        pairs = self.splits[split]
        values = np.ones(len(pairs), dtype=np.float32)
        matrix = sp.csr_matrix(
            (values, (pairs[:, 0], pairs[:, 1])), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    @cached_property
    def train_matrix(self) -> sp.csr_matrix:
        return self.interaction_matrix("train")

    @cached_property
    def train_items(self) -> np.ndarray:
        """Sorted ids of the items that occur in the training split (the negative pool)."""
        return np.unique(self.splits["train"][:, 1])

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            **{s: int(len(self.splits[s])) for s in SPLITS},
            **{f"{m}_dim": int(f.shape[1]) for m, f in self.features.items()},
        }


def load_dataset(folder: str | Path, modalities: list[str] | None = None) -> InteractionData:
    """Load and validate ``folder`` (named ``<name>``, holding ``<name>.inter`` and features).

    ``modalities`` restricts which ``*_feat.npy`` tables are read (default: all present).
    Raises :class:`DataError` with a one-line message naming the file and the problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder does not exist")
    inter_path = folder / f"{folder.name}.inter"
    if not inter_path.is_file():
        raise DataError(f"{inter_path}: interaction file is missing")
    n_users, n_items, splits = _read_interactions(inter_path)

    available = {p.name[: -len("_feat.npy")]: p for p in folder.glob("*_feat.npy")}
    wanted = order_modalities(available) if modalities is None else list(modalities)
    if not wanted:
        raise DataError(f"{folder}: no feature file (*_feat.npy) found")
    features = {}
    for modality in wanted:
        path = available.get(modality, folder / f"{modality}_feat.npy")
        features[modality] = _read_features(path, n_items)
    return InteractionData(folder.name, n_users, n_items, splits, features, str(folder))


def _read_interactions(path: Path) -> tuple[int, int, dict[str, np.ndarray]]:
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as tab-separated text ({exc})".splitlines()[0])
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{path}: no interactions")
    columns = {}
    for name in REQUIRED_COLUMNS:
        values = pd.to_numeric(frame[name].str.strip(), errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {name} has a non-integer value {frame[name].iloc[row]!r} "
                f"(data row {row + 1})"
            )
        columns[name] = values.to_numpy(dtype=np.int64)
        if name != "x_label" and (columns[name] < 0).any():
            row = int(np.flatnonzero(columns[name] < 0)[0])
            raise DataError(f"{path}: column {name} has a negative id (data row {row + 1})")
    labels = columns["x_label"]
    outside = ~np.isin(labels, list(SPLIT_LABELS.values()))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"{path}: x_label must be 0, 1 or 2, found {labels[row]} (data row {row + 1})"
        )
    users, items = columns["userID"], columns["itemID"]
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    pair = users * n_items + items
    order = np.argsort(pair, kind="stable")
    repeated = np.flatnonzero(pair[order][1:] == pair[order][:-1])
    if len(repeated):  # the released files hold each (user, item) once; a repeat is a broken file
        first, second = sorted(order[repeated[0]: repeated[0] + 2])
        raise DataError(f"{path}: duplicate interaction (user {users[first]}, item {items[first]}) "
                        f"in data rows {first + 1} and {second + 1}")
    splits = {
        s: np.stack([users[labels == v], items[labels == v]], axis=1)
        for s, v in SPLIT_LABELS.items()
    }
    if len(splits["train"]) == 0:
        raise DataError(f"{path}: the training split (x_label 0) is empty")
    # Protocol: held-out rows of users absent from train are dropped.
    has_train = np.zeros(n_users, dtype=bool)
    has_train[splits["train"][:, 0]] = True
    for s in ("valid", "test"):
        splits[s] = splits[s][has_train[splits[s][:, 0]]]
    return n_users, n_items, splits


def _read_features(path: Path, n_items: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: feature file is missing")
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})".splitlines()[0])
    if table.ndim != 2:
        raise DataError(f"{path}: expected a 2-d array, got shape {table.shape}")
    if table.shape[0] != n_items:
        raise DataError(
            f"{path}: has {table.shape[0]} rows but the interaction file has {n_items} items"
        )
    if not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: features must be numeric, got dtype {table.dtype}")
    table = np.ascontiguousarray(table, dtype=np.float32)
    finite = np.isfinite(table)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise DataError(f"{path}: contains NaN or Inf (first in row {row})")
    return table
