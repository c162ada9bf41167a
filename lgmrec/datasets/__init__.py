"""The paper's real datasets: download and cache (:mod:`.fetch`), rebuild from raw Amazon files
(:mod:`.prepare`), and the ``python -m lgmrec data`` command (:mod:`.cli`).

The text encoder used by :mod:`.prepare` is imported only when needed.
"""

from .fetch import (
    DATASET_NAMES,
    SOURCES,
    DatasetStats,
    dataset_folder,
    default_root,
    fetch_dataset,
    find_real_dataset,
    reference_stats,
)

__all__ = [
    "DATASET_NAMES",
    "SOURCES",
    "DatasetStats",
    "dataset_folder",
    "default_root",
    "fetch_dataset",
    "find_real_dataset",
    "reference_stats",
]
