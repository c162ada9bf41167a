"""Model registry: every model the CLI and the experiment grids can name.

Each model module defines ``SPEC``, a :class:`ModelSpec` that says how to build the model from a
loaded dataset and a typed hyperparameter dataclass, plus its presets and search grid.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..config import build_dataclass
from ..data import InteractionData
from ..errors import ConfigError
from .base import Embeddings, Recommender

# CLI name -> module in this package. Order is the order of rows in the book's tables.
MODEL_MODULES: dict[str, str] = {
    # general recommenders
    "bpr": "bpr",
    "lightgcn": "lightgcn",
    "layergcn": "layergcn",
    # multimodal recommenders
    "vbpr": "vbpr",
    "mmgcn": "mmgcn",
    "grcn": "grcn",
    "dualgnn": "dualgnn",
    "lattice": "lattice",
    "slmrec": "slmrec",
    "bm3": "bm3",
    "micro": "micro",
    "freedom": "freedom",
    "mgcn": "mgcn",
    "lgmrec": "lgmrec",
}

DATASET_FAMILIES = ("baby", "sports", "clothing")
ANY_DATASET = "*"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # CLI and grid key
    label: str  # name in tables, as spelled in shared/reference/reported.csv
    config_class: type  # dataclass of the model's hyperparameters
    build: Callable[[InteractionData, Any], Recommender]
    multimodal: bool
    #: preset name -> dataset family (or "*") -> hyperparameter overrides
    presets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    default_preset: str | None = None
    #: TrainConfig values this model's reference configuration changes (e.g. a learning-rate decay)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the lists MMRec's yaml searches (``hyper_parameters``), in yaml order: hyperparameter or
    #: training setting (e.g. ``learning_rate``) -> values. Empty: one point, the preset.
    tuning_grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    #: the subset of ``tuning_grid`` the embedded default searches (every value is in tuning_grid)
    reduced_grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    #: the reference implementation followed, e.g. "MMRec src/models/bpr.py + src/configs/model/BPR.yaml"
    reference: str = ""
    #: named options where this suite deliberately differs (or may differ) from the reference:
    #: config field -> what the reference does and what the option changes
    deviations: Mapping[str, str] = field(default_factory=dict)


def available_models() -> list[str]:
    return list(MODEL_MODULES)


def get_model_spec(name: str) -> ModelSpec:
    key = name.lower()
    if key not in MODEL_MODULES:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODEL_MODULES)}")
    module = importlib.import_module(f"{__name__}.{MODEL_MODULES[key]}")
    return module.SPEC


def dataset_family(dataset_name: str) -> str | None:
    """'baby', 'sports' or 'clothing' when the dataset's name contains it (e.g. 'synth-baby-small')."""
    lowered = dataset_name.lower()
    for family in DATASET_FAMILIES:
        if family in lowered:
            return family
    return None


def resolve_model_config(
    spec: ModelSpec,
    dataset_name: str,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
):
    """Defaults, then the preset's values for the dataset's family, then explicit overrides."""
    preset = preset or spec.default_preset
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in spec.presets:
            raise ConfigError(
                f"unknown preset {preset!r} for {spec.name}; choose from "
                f"{', '.join(spec.presets) or 'none'}"
            )
        by_family = spec.presets[preset]
        family = dataset_family(dataset_name)
        values.update(by_family.get(ANY_DATASET, {}))
        values.update(by_family.get(family, {}) if family else {})
    values.update(overrides or {})
    return build_dataclass(spec.config_class, values)


__all__ = [
    "Embeddings",
    "ModelSpec",
    "Recommender",
    "available_models",
    "dataset_family",
    "get_model_spec",
    "resolve_model_config",
]
