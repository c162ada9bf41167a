"""Published facts bundled with the package (copied from the project's shared/reference/).

- ``reported.csv``: published numbers, one row per (dataset, model, metric, source);
- ``datasets.csv``: statistics of the released Amazon files; ``item_gini`` and ``user_gini`` (Gini
  coefficients of the item and user degrees) were computed from public copies of the same files,
  checked against MMRec's counts (``docs/degree_skew_sources.md``), not copied from shared/;
- ``hyperparameters.csv``: per-dataset LGMRec settings from three public sources;
- ``literature.csv`` and ``literature_sources.csv``: the published record (every Recall@20 /
  NDCG@20 later papers print for the 14 models), read through :mod:`lgmrec.literature`.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd


def read_reference(name: str) -> pd.DataFrame:
    """One of 'reported', 'datasets', 'hyperparameters' as a DataFrame."""
    with resources.files(__name__).joinpath(f"{name}.csv").open() as handle:
        return pd.read_csv(handle)
