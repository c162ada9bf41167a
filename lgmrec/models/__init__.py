"""Model registry: every model the CLI and the experiment grids can name.

Each model module defines ``SPEC``, a :class:`ModelSpec` that says how to build the model from a
loaded dataset and a typed hyperparameter dataclass, plus its presets and search grid.

Three kinds of name resolve here, in this order: the built-in models (:data:`MODEL_MODULES`),
plug-ins already loaded in this process, and the entry points of the group ``lgmrec.models``
(installed distributions); a ``module:attribute`` reference (a profile's plug-in) is loaded under
its spec's name. Plug-ins are loaded lazily, once, and checked (:mod:`lgmrec.models.plugins`).
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
    """The built-in models (a profile without a model list runs these; plug-ins run where named)."""
    return list(MODEL_MODULES)


#: plug-in name -> (where it came from, its checked spec); filled as plug-ins are loaded
_PLUGINS: dict[str, tuple[str, ModelSpec]] = {}
_ENTRY_POINTS: dict | None = None


def entry_point_models() -> dict:
    """Name -> entry point of the group ``lgmrec.models`` (read once per process, not loaded)."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        from importlib.metadata import entry_points

        from .plugins import ENTRY_POINT_GROUP

        _ENTRY_POINTS = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _ENTRY_POINTS


def installed_models() -> list[str]:
    """Every model name this environment offers without loading any: built-ins, then entry points."""
    return list(MODEL_MODULES) + [n for n in entry_point_models() if n not in MODEL_MODULES]


def loaded_plugins() -> dict[str, str]:
    """Plug-in name -> where it came from (entry point or module:attribute), for those loaded here."""
    return {name: origin for name, (origin, _) in _PLUGINS.items()}


def register_reference(reference: str) -> str:
    """Load the ``module:attribute`` plug-in (once), check it, and return its model name."""
    from .plugins import PluginError, check_plugin, load_reference

    for name, (origin, _) in _PLUGINS.items():
        if origin == reference:
            return name
    spec = check_plugin(reference, load_reference(reference))
    if spec.name in entry_point_models() and get_model_spec(spec.name) is spec:
        return spec.name  # the installed entry point's own spec, named by its module:attribute
    if spec.name in _PLUGINS or spec.name in entry_point_models():
        other = _PLUGINS[spec.name][0] if spec.name in _PLUGINS else f"entry point {spec.name!r}"
        raise PluginError(f"plug-in {reference}: name {spec.name!r} is already taken by {other}")
    _PLUGINS[spec.name] = (reference, spec)
    return spec.name


def get_model_spec(name: str) -> ModelSpec:
    if ":" in name:
        return _PLUGINS[register_reference(name)][1]
    key = name.lower()
    if key in MODEL_MODULES:
        module = importlib.import_module(f"{__name__}.{MODEL_MODULES[key]}")
        return module.SPEC
    if name in _PLUGINS:
        return _PLUGINS[name][1]
    entry_point = entry_point_models().get(name)
    if entry_point is None:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(installed_models())} "
                          f"(or a plug-in: an entry point of group lgmrec.models, or module:attribute)")
    from .plugins import check_plugin, load_entry_point

    spec = check_plugin(f"entry point {name!r} ({entry_point.value})", load_entry_point(entry_point), name)
    _PLUGINS[name] = (f"entry point {name!r}", spec)
    return spec


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
    "entry_point_models",
    "get_model_spec",
    "installed_models",
    "loaded_plugins",
    "register_reference",
    "resolve_model_config",
]
