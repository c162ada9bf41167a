"""The protocol's per-user random split (how the released MMRec files were made)."""

from __future__ import annotations

import numpy as np

SMALL_USER_LIMIT = 10  # users with fewer interactions get exactly one validation and one test row
HELD_OUT_SHARE = 0.2


def protocol_split(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x_label per interaction (0 train, 1 validation, 2 test), given each row's user id.

    Per user, rows are shuffled; a user with n < 10 rows holds out one validation and one test
    row; otherwise floor(0.2 n) rows are held out, floor of half of them for validation and the
    rest for test. Everything is vectorised: a random key orders rows within each user.
    """
    users = np.asarray(users)
    order = np.lexsort((rng.random(len(users)), users))
    sorted_users = users[order]
    counts = np.bincount(users)
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(users)) - first_row[sorted_users]  # position within the user's shuffle
    n = counts[sorted_users]
    held_out = np.where(n < SMALL_USER_LIMIT, 2, np.floor(HELD_OUT_SHARE * n).astype(np.int64))
    n_valid = held_out // 2
    sorted_labels = np.where(rank < n_valid, 1, np.where(rank < held_out, 2, 0))
    labels = np.empty(len(users), dtype=np.int64)
    labels[order] = sorted_labels
    return labels
