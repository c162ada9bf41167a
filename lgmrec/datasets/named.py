"""Datasets by name, as the grids and the notebooks refer to them, and their identity.

A name is a synthetic preset (a profile's own, or :mod:`lgmrec.synthetic`'s), a released dataset
(baby, sports, clothing: verified, from the data cache) or a dataset folder.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ..data import InteractionData, load_dataset
from ..errors import DataError
from .fetch import DATASET_NAMES, dataset_folder, find_real_dataset


def load_named_dataset(name: str, profile=None) -> InteractionData:
    """The dataset called ``name``; ``profile`` (a Profile or its name) adds its synthetic presets
    and its generator seed."""
    from .. import synthetic
    from ..grids import get_profile

    profile = get_profile(profile) if profile is not None else None
    extra = profile.synthetic_presets if profile is not None else {}
    data_seed = profile.data_seed if profile is not None else 0
    folders = profile.dataset_folders if profile is not None else {}
    if name in folders:  # a profile file's dataset folder, named after the folder
        return load_dataset(folders[name])
    if name in extra:
        return synthetic.generate(extra[name], seed=data_seed, name=name)
    if name in synthetic.PRESETS:
        return synthetic.generate(name, seed=data_seed)
    if name in DATASET_NAMES:
        folder = find_real_dataset(name)
        if folder is None:
            raise DataError(
                f"{dataset_folder(name)}: released dataset '{name}' is not present or not valid; "
                f"get it with `python -m lgmrec data fetch {name}` (or set LGMREC_DATA_DIR)"
            )
        data = load_dataset(folder)
        return InteractionData(data.name, data.n_users, data.n_items, data.splits, data.features,
                               source=f"real:{name}:{folder}")
    if Path(name).is_dir():
        return load_dataset(name)
    raise DataError(
        f"{name}: not a synthetic preset ({', '.join(list(extra) + list(synthetic.PRESETS))}), "
        f"a released dataset ({', '.join(DATASET_NAMES)}) or a dataset folder"
    )


def check_datasets_available(profile) -> None:
    """Stop with one clear message when a real-data profile lacks a released dataset."""
    if profile.data != "real":
        return
    missing = [name for name in profile.datasets
               if name in DATASET_NAMES and name not in profile.dataset_folders and find_real_dataset(name) is None]
    if missing:
        where = ", ".join(str(dataset_folder(n)) for n in missing)
        raise DataError(
            f"profile '{profile.name}' runs on the released Amazon datasets, and {', '.join(missing)} "
            f"is not present ({where}); fetch with `python -m lgmrec data fetch NAME` "
            f"(set LGMREC_DATA_DIR for another place) or run the embedded default: --profile embedded"
        )


def data_kind(data: InteractionData) -> str:
    """'synthetic' (generated), 'real' (a verified released dataset) or 'folder' (anything else)."""
    if data.source.startswith("synthetic:"):
        return "synthetic"
    if data.source.startswith("real:"):
        return "real"
    return "folder"


_FINGERPRINTS: "weakref.WeakKeyDictionary[InteractionData, str]" = weakref.WeakKeyDictionary()


def synthetic_fingerprints(profile) -> dict[str, str]:
    """The fingerprint of each of a profile's synthetic datasets as its presets generate them now.
    A results folder may hold records of a preset as it was before (its knobs changed since): those
    are not runs of this profile's data."""
    from .. import synthetic
    from ..grids import get_profile

    profile = get_profile(profile)
    names = [n for n in profile.datasets
             if n not in profile.dataset_folders and (n in profile.synthetic_presets or n in synthetic.PRESETS)]
    return {name: dataset_fingerprint(load_named_dataset(name, profile)) for name in names}


def dataset_fingerprint(data: InteractionData) -> str:
    """Content hash of a dataset: sizes, the three splits and every feature table."""
    from ..cache import fingerprint

    if data not in _FINGERPRINTS:
        parts: list[Any] = [data.n_users, data.n_items]
        for split in ("train", "valid", "test"):
            parts.append(np.ascontiguousarray(data.splits[split]))
        for modality in sorted(data.features):
            parts += [modality, data.features[modality]]
        _FINGERPRINTS[data] = fingerprint(*parts)
    return _FINGERPRINTS[data]


__all__ = ["check_datasets_available", "data_kind", "dataset_fingerprint", "load_named_dataset",
           "synthetic_fingerprints"]
