"""The experiment grids, defined in this one place, and the named profiles that size them.

Experiments (mirroring the paper):

- ``overall``: every available model x every dataset x the profile's seeds (the main table);
- ``ablation``: LGMRec without each component, with one modality, with the MF backbone, and
  with the authors' pre-fix hyperedge behaviour;
- ``sensitivity``: LGMRec with one hyperparameter moved over the authors' search range, the
  others at the dataset's preset values;
- ``sparsity`` and ``efficiency`` need no runs of their own: they are computed from the overall
  runs (per-user vectors; run records).

Profiles: ``quick`` (the default of ``nox -s reproduce``: the three small synthetic presets,
fewer seeds, epochs and sensitivity points), ``full`` (the paper's scale on the real datasets),
``ci`` (the overall runs of LGMRec and three baselines on the small presets, one seed: what CI
checks against the committed expected values) and ``smoke`` (tiny synthetic data, for tests and
the book test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping

from .errors import ConfigError
from .models import available_models
from .synthetic import SyntheticPreset

EXPERIMENTS = ("overall", "ablation", "sensitivity")
# analyses computed from the runs of an experiment above
DERIVED = {"sparsity": "overall", "efficiency": "overall"}
REFERENCE_MODEL = "lgmrec"

#: ablation variant label -> LGMRec overrides (the full model first)
ABLATIONS: dict[str, dict[str, Any]] = {
    "LGMRec": {},
    "w/o CGE": {"use_cge": False},
    "w/o MGE": {"use_mge": False},
    "w/o GHE": {"use_ghe": False},
    "w/o HCL": {"use_hcl": False},
    "image only": {"modalities": ("image",)},
    "text only": {"modalities": ("text",)},
    "MF backbone": {"cf_model": "mf"},
    "pre-fix hyperedges": {"hyperedge_bug": True},
}

#: symbols of the paper for the sensitivity parameters
SENSITIVITY_SYMBOLS = {
    "hyper_num": "A (hyperedges)",
    "alpha": "alpha (global weight)",
    "keep_rate": "rho (keep rate)",
    "n_ui_layers": "L (CGE layers)",
    "n_mm_layers": "K (MGE layers)",
    "n_hyper_layer": "H (hypergraph layers)",
    "cl_weight": "lambda_cl (HCL weight)",
}


def _search_grid() -> dict[str, tuple]:
    from .models.lgmrec import SEARCH_RANGES

    return {name: tuple(SEARCH_RANGES[name]) for name in SENSITIVITY_SYMBOLS}


TINY = dict(image_dim=32, text_dim=16, n_clusters=6, mean_interactions=9.0)
SMOKE_PRESETS = {
    "smoke-baby": SyntheticPreset(n_users=200, n_items=120, **TINY),
    "smoke-sports": SyntheticPreset(n_users=220, n_items=130, **TINY),
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: Literal["synthetic", "real"]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    train: Mapping[str, Any]  # TrainConfig overrides for every run (max_epochs, patience, ...)
    models: tuple[str, ...] | None = None  # None: every model whose module imports
    experiments: tuple[str, ...] = EXPERIMENTS  # which experiments the profile runs
    ablation_datasets: tuple[str, ...] | None = None  # None: all datasets
    ablation_seeds: tuple[int, ...] | None = None  # None: the profile's seeds
    sensitivity: Mapping[str, tuple] = field(default_factory=dict)  # parameter -> values
    sensitivity_datasets: tuple[str, ...] | None = None
    sensitivity_seeds: tuple[int, ...] | None = None
    #: extra synthetic presets this profile's datasets refer to (tests; not in lgmrec.synthetic)
    synthetic_presets: Mapping[str, SyntheticPreset] = field(default_factory=dict)
    data_seed: int = 0  # seed of the synthetic generator

    def __post_init__(self) -> None:
        if not self.datasets or not self.seeds:
            raise ConfigError(f"profile {self.name}: needs datasets and seeds")
        for name in (self.ablation_datasets or ()) + (self.sensitivity_datasets or ()):
            if name not in self.datasets:
                raise ConfigError(f"profile {self.name}: {name} is not one of its datasets")
        if not set(self.experiments) <= set(EXPERIMENTS):
            raise ConfigError(f"profile {self.name}: experiments must be among {', '.join(EXPERIMENTS)}")
        unknown = set(self.sensitivity) - set(SENSITIVITY_SYMBOLS)
        if unknown:
            raise ConfigError(f"profile {self.name}: no sensitivity grid for {', '.join(sorted(unknown))}")


#: training of the quick and ci profiles: the protocol, shortened to fit minutes on 2 CPU cores
QUICK_TRAIN = {"max_epochs": 30, "patience": 10}
PAPER_SEEDS = (999, 1, 2, 3, 4)  # 999: the authors' seed


def _quick_sensitivity() -> dict[str, tuple]:
    return {
        # the Baby preset's value (shared with the overall run) and one point on each side
        "hyper_num": (2, 4, 16),
        "alpha": (0.0, 0.3, 1.0),
        "keep_rate": (0.2, 0.5, 0.8),
        "n_ui_layers": (1, 2, 3),
        "n_mm_layers": (1, 2, 3),
        "n_hyper_layer": (1, 2),
        "cl_weight": (0.0, 1e-4, 1e-2),
    }


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="three small synthetic presets, reduced seeds/epochs/points (minutes on 2 CPU cores)",
        data="synthetic",
        datasets=("synth-baby-small", "synth-sports-small", "synth-clothing-small"),
        seeds=(999, 1, 2),
        train=QUICK_TRAIN,
        ablation_datasets=("synth-baby-small", "synth-sports-small"),
        ablation_seeds=(999,),
        sensitivity=_quick_sensitivity(),
        sensitivity_datasets=("synth-baby-small",),
        sensitivity_seeds=(999,),
    ),
    "full": Profile(
        name="full",
        description="the paper's scale: real Amazon Baby/Sports/Clothing, 5 seeds, up to 1000 epochs",
        data="real",
        datasets=("baby", "sports", "clothing"),
        seeds=PAPER_SEEDS,
        train={"max_epochs": 1000, "patience": 20},
        sensitivity=_search_grid(),
        sensitivity_seeds=(999,),
    ),
    "ci": Profile(
        name="ci",
        description="LGMRec, BPR, LightGCN, FREEDOM on the three small synthetic presets, seed 999 (CI's metric check)",
        data="synthetic",
        datasets=("synth-baby-small", "synth-sports-small", "synth-clothing-small"),
        seeds=(999,),
        train=QUICK_TRAIN,
        models=("bpr", "lightgcn", "freedom", "lgmrec"),
        experiments=("overall",),
    ),
    "smoke": Profile(
        name="smoke",
        description="tiny synthetic data, 2 seeds, 3 epochs: for tests",
        data="synthetic",
        datasets=("smoke-baby", "smoke-sports"),
        seeds=(999, 1),
        train={"max_epochs": 3, "patience": 3},
        models=("bpr", "lightgcn", "lgmrec"),
        ablation_datasets=("smoke-baby",),
        ablation_seeds=(999,),
        sensitivity={"alpha": (0.0, 0.6), "hyper_num": (2, 8)},
        sensitivity_datasets=("smoke-baby",),
        sensitivity_seeds=(999,),
        synthetic_presets=SMOKE_PRESETS,
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[profile]


@dataclass(frozen=True)
class RunSpec:
    """One planned run: which experiment and variant it serves and what to train."""

    experiment: str
    variant: str  # row label: model label, ablation name, or "param=value"
    dataset: str
    model: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()  # model hyperparameters
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides
    parameter: str | None = None  # sensitivity: the moved hyperparameter
    value: Any = None  # sensitivity: its value

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def train_dict(self) -> dict[str, Any]:
        return dict(self.train)

    def describe(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.model}{'[' + extra + ']' if extra else ''} on {self.dataset} seed {self.seed}"


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in mapping.items()))


def _model_label(model: str) -> str:
    from .models import get_model_spec

    return get_model_spec(model).label


def plan(profile: str | Profile, only: str | list[str] | None = None) -> list[RunSpec]:
    """Every run of the profile's experiments (``only``: a subset of them), in run order.

    The same configuration may serve several experiments (the full LGMRec of the ablation is the
    overall LGMRec run); it appears once per experiment here and runs once, since the store is
    keyed by the resolved configuration.
    """
    profile = get_profile(profile)
    experiments = [name for name in _select(only) if name in profile.experiments]
    train = _items(profile.train)
    specs: list[RunSpec] = []
    if "overall" in experiments:
        models = list(profile.models) if profile.models is not None else available_models()
        # LGMRec first, so its runs exist early for every comparison
        models.sort(key=lambda m: m != REFERENCE_MODEL)
        for dataset in profile.datasets:
            for model in models:
                for seed in profile.seeds:
                    specs.append(RunSpec("overall", _model_label(model), dataset, model, seed, train=train))
    if "ablation" in experiments:
        for dataset in profile.ablation_datasets or profile.datasets:
            for label, overrides in ABLATIONS.items():
                for seed in profile.ablation_seeds or profile.seeds:
                    specs.append(RunSpec("ablation", label, dataset, REFERENCE_MODEL, seed, _items(overrides), train))
    if "sensitivity" in experiments:
        for dataset in profile.sensitivity_datasets or profile.datasets:
            for parameter, values in profile.sensitivity.items():
                for value in values:
                    for seed in profile.sensitivity_seeds or profile.seeds:
                        specs.append(RunSpec(
                            "sensitivity", f"{parameter}={value}", dataset, REFERENCE_MODEL, seed,
                            _items({parameter: value}), train, parameter=parameter, value=value,
                        ))
    return specs


def _select(only: str | list[str] | None) -> list[str]:
    if only is None:
        return list(EXPERIMENTS)
    names = [only] if isinstance(only, str) else list(only)
    selected = []
    for name in names:
        base = DERIVED.get(name, name)
        if base not in EXPERIMENTS:
            raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS + tuple(DERIVED))}")
        if base not in selected:
            selected.append(base)
    return selected


def iter_profiles() -> Iterator[Profile]:
    yield from PROFILES.values()


__all__ = [
    "ABLATIONS", "EXPERIMENTS", "PROFILES", "PAPER_SEEDS", "Profile", "RunSpec", "SENSITIVITY_SYMBOLS",
    "available_models", "get_profile", "plan",
]
