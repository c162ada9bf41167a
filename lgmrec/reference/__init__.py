"""Published facts bundled with the package (copied from the project's shared/reference/).

- ``reported.csv``: published numbers, one row per (dataset, model, metric, source);
- ``datasets.csv``: statistics of the released Amazon files;
- ``hyperparameters.csv``: per-dataset LGMRec settings from three public sources.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd


def read_reference(name: str) -> pd.DataFrame:
    """One of 'reported', 'datasets', 'hyperparameters' as a DataFrame."""
    with resources.files(__name__).joinpath(f"{name}.csv").open() as handle:
        return pd.read_csv(handle)
