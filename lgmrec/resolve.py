"""The one place a run's full configuration is resolved.

The command line (``python -m lgmrec train``), the experiment grids and the per-run notebook all
call :func:`resolve_run`, so one (model, dataset, settings) gives one configuration and one
config hash whichever way the run is started. Values are applied in this order, later wins:

1. the model's config dataclass defaults and the protocol's :class:`~lgmrec.config.TrainConfig`
   defaults (``shared/spec/protocol.md``);
2. the model's preset (``preset``, else the spec's default preset), its values for the dataset's
   family (baby / sports / clothing, from the dataset name) over its ``"*"`` values;
3. the model's own training defaults (``ModelSpec.train_defaults``: what its reference yaml fixes,
   e.g. LATTICE's learning-rate decay, MICRO's learning rate and batch size);
4. the profile's training settings (``Profile.train``, e.g. the smoke profile's 3 epochs);
5. explicit overrides (``--set``, a tuning point, a grid variant, the notebook's ``overrides``),
   routed by name: TrainConfig fields go to training, everything else to the model;
6. derived values: a model whose reference divides its regulariser by the configured batch size
   (``reg_batch_size``: LATTICE, MICRO, MGCN) gets the resolved ``batch_size`` unless that
   hyperparameter was set explicitly (or is 0: each batch's own size).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from .config import TrainConfig, asdict, build_dataclass, field_names
from .models import get_model_spec, resolve_model_config


@dataclass(frozen=True)
class ResolvedRun:
    model: str  # registry name
    dataset: str
    preset: str | None
    model_config: Any  # the model's config dataclass
    train_config: TrainConfig

    @property
    def model_params(self) -> dict[str, Any]:
        return asdict(self.model_config)

    @property
    def train(self) -> dict[str, Any]:
        return asdict(self.train_config)


def split_overrides(overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``overrides`` as (training settings, model hyperparameters), by TrainConfig's field names."""
    train_keys = field_names(TrainConfig)
    overrides = dict(overrides or {})
    return ({k: v for k, v in overrides.items() if k in train_keys},
            {k: v for k, v in overrides.items() if k not in train_keys})


def resolve_run(
    model: str,
    dataset: str,
    overrides: Mapping[str, Any] | None = None,
    profile_train: Mapping[str, Any] | None = None,
    preset: str | None = None,
) -> ResolvedRun:
    """Resolve a run's model and training configuration (see the module docstring for the order)."""
    spec = get_model_spec(model)
    train_values, model_values = split_overrides(overrides)
    model_config = resolve_model_config(spec, dataset, preset, model_values)
    train_config = build_dataclass(TrainConfig, {**spec.train_defaults, **(profile_train or {}), **train_values})
    if getattr(model_config, "reg_batch_size", 0) and "reg_batch_size" not in model_values:
        model_config = replace(model_config, reg_batch_size=train_config.batch_size)
    return ResolvedRun(spec.name, dataset, preset or spec.default_preset, model_config, train_config)


__all__ = ["ResolvedRun", "resolve_run", "split_overrides"]
