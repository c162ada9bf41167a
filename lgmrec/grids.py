"""The experiment grids, defined in this one place, the named profiles that size them, and their
units of work.

Experiments (mirroring the paper):

- ``tuning``: every point of a baseline's search grid (MMRec's yaml lists, or a reduced subset),
  trained under the protocol with the tuning seed; the overall table uses the point with the best
  VALIDATION Recall@20 (:mod:`lgmrec.tuning`), and the record says which point MMRec's rule (best
  TEST Recall@20) would have picked;
- ``overall``: every model x every dataset x the profile's seeds, tuned models at their chosen
  point (the main table);
- ``ablation``: LGMRec without each component, with one modality, with the MF backbone, and
  with the authors' pre-fix hyperedge behaviour;
- ``sensitivity``: LGMRec with one hyperparameter moved over the authors' search range, the
  others at the dataset's preset values;
- ``error_rates``: the verdict rule's own error rates: a model (at its default configuration or
  preset) with twice the overall seeds, compared with itself on disjoint halves of them (A/A: its
  false alarms), and against versions of itself with a planted, known-sign loss (its power);
- ``sparsity``, ``efficiency`` and ``claims`` are computed from the runs above.

Profiles: ``embedded`` (the default of ``nox -s reproduce``: the protocol unchanged, on three
small synthetic presets calibrated to the published baselines, :mod:`lgmrec.calibration`),
``embedded-v1`` (the same design on the uncalibrated presets of earlier builds), ``full`` (the
paper's scale on the real datasets), ``ci`` (LGMRec and three baselines, one seed: what CI checks
against committed values) and ``smoke`` (tests); or a
TOML file (:mod:`lgmrec.profiles`). :func:`get_profile` resolves a name or a file into one
:class:`Profile`, which is then passed down; a file's profile travels to workers and notebook
kernels as its path (``Profile.source``) and is read again there.

A profile's runs are grouped into :class:`WorkUnit` s, the pieces an executor hands to a worker
(and papermill executes as one notebook): one (dataset, model) of the overall experiment with its
tuning and seeds, one dataset's ablation, one (dataset, parameter) of the sensitivity curves, one
(dataset, model) of the error rates.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Mapping, Sequence

from .errors import ConfigError
from .models import available_models, get_model_spec
from .synthetic import SyntheticPreset

EXPERIMENTS = ("tuning", "overall", "ablation", "sensitivity", "error_rates")
# analyses computed from the runs of an experiment above
DERIVED = {"sparsity": "overall", "efficiency": "overall", "claims": "overall"}
REFERENCE_MODEL = "lgmrec"
PUBLISHED_VARIANT = "LGMRec (as published)"  # the hyperedge-bug code behind the paper's numbers

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


def authors_search_ranges() -> dict[str, tuple]:
    """The authors' whole search range of every sensitivity parameter."""
    from .models.lgmrec import SEARCH_RANGES

    return {name: tuple(SEARCH_RANGES[name]) for name in SENSITIVITY_SYMBOLS}


TINY = dict(image_dim=32, text_dim=16, n_clusters=6, mean_interactions=9.0)
SMOKE_PRESETS = {
    "smoke-baby": SyntheticPreset(n_users=200, n_items=120, **TINY),
    "smoke-sports": SyntheticPreset(n_users=220, n_items=130, **TINY),
}

PAPER_SEEDS = (999, 1, 2, 3, 4)  # 999: the authors' seed
AA_VARIANT = "A/A"  # the error_rates experiment's model at its own configuration
#: planted effects of the error_rates experiment: model -> variant -> overrides whose loss is known in
#: sign by construction (a quarter of the embedding: less capacity for the same data; on the embedded
#: presets about -5 % Recall@20, near what 5 seeds and 800 users can detect)
PLANTED_EFFECTS: dict[str, dict[str, dict[str, Any]]] = {
    "lightgcn": {"planted: embedding 16": {"embedding_dim": 16}},
}
TuningMode = Literal["none", "reduced", "full"]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: Literal["synthetic", "real", "folder"]  # folder: user-supplied dataset folders
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig overrides ({}: the protocol)
    models: tuple[str, ...] | None = None  # None: every built-in model (a plug-in runs where a profile names it)
    experiments: tuple[str, ...] = EXPERIMENTS  # which experiments the profile runs
    #: which grid of each model's spec the tuning experiment searches: none (defaults/presets),
    #: reduced (``ModelSpec.reduced_grid``) or full (``ModelSpec.tuning_grid``, MMRec's yaml)
    tuning: TuningMode = "none"
    tuning_seed: int = 999  # MMRec tunes with its one seed, 999
    #: also train the point MMRec's rule picks (best test Recall@20) with every seed, where it
    #: differs from ours: measures how much of its advantage survives fresh seeds
    replicate_test_choice: bool = False
    #: the overall table also carries LGMRec as published (hyperedge_bug=True)
    published_lgmrec_row: bool = False
    ablation_datasets: tuple[str, ...] | None = None  # None: all datasets
    ablation_seeds: tuple[int, ...] | None = None  # None: the profile's seeds
    sensitivity: Mapping[str, tuple] = field(default_factory=dict)  # parameter -> values
    sensitivity_datasets: tuple[str, ...] | None = None
    sensitivity_seeds: tuple[int, ...] | None = None
    #: error_rates: the models compared with themselves (and with their planted effects), and the
    #: seeds, split into two disjoint halves in every way; disjoint from the profile's other seeds, so
    #: that these runs are their own (a tuned model's overall seeds run at a point chosen later)
    error_rate_models: tuple[str, ...] = ()
    error_rate_seeds: tuple[int, ...] = ()
    #: extra synthetic presets this profile's datasets refer to (tests; not in lgmrec.synthetic)
    synthetic_presets: Mapping[str, SyntheticPreset] = field(default_factory=dict)
    data_seed: int = 0  # seed of the synthetic generator
    #: what this profile leaves out of the paper's design, said in the README and the book
    reductions: tuple[str, ...] = ()
    #: the model the profile benchmarks, which the book's claims are to be about (the ablation and
    #: sensitivity experiments stay LGMRec's: they switch off its parts and move its hyperparameters)
    focal_model: str = REFERENCE_MODEL
    #: ``module:attribute`` references of the plug-in models among ``models`` (loaded with the profile)
    plugins: tuple[str, ...] = ()
    #: dataset name -> MMRec-format folder, for datasets that are neither presets nor released
    dataset_folders: Mapping[str, str] = field(default_factory=dict)
    #: the TOML file this profile was read from (absolute), None for a built-in one: workers and
    #: notebook kernels are given this path and read the same profile from it
    source: str | None = None

    def __post_init__(self) -> None:
        self.load_plugins()
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
        if self.tuning not in ("none", "reduced", "full"):
            raise ConfigError(f"profile {self.name}: tuning must be none, reduced or full")
        if self.error_rate_models and len(self.error_rate_seeds) < 4:
            raise ConfigError(f"profile {self.name}: error_rates needs at least 4 seeds (two halves of 2)")
        if set(self.error_rate_seeds) & {*self.seeds, self.tuning_seed}:
            raise ConfigError(f"profile {self.name}: error_rate_seeds must differ from seeds and tuning_seed")

    def load_plugins(self) -> None:
        """Register the profile's ``module:attribute`` plug-ins in this process (once; cheap after)."""
        if self.plugins:
            from .models import register_reference

            for reference in self.plugins:
                register_reference(reference)

    @property
    def reference(self) -> str:
        """What a worker or a notebook kernel is given to resolve this profile: its file or its name."""
        return self.source or self.name

    @property
    def model_names(self) -> list[str]:
        models = list(self.models) if self.models is not None else available_models()
        models.sort(key=lambda m: m != REFERENCE_MODEL)  # LGMRec first: its runs exist early
        return models

    def tuning_grid(self, model: str) -> dict[str, tuple]:
        """The grid this profile searches for ``model`` ({}: no tuning, the defaults)."""
        if self.tuning == "none" or "tuning" not in self.experiments:
            return {}
        spec = get_model_spec(model)
        grid = spec.reduced_grid if self.tuning == "reduced" else spec.tuning_grid
        return {name: tuple(values) for name, values in grid.items()}

    def tuning_points(self, model: str) -> list[dict[str, Any]]:
        """Every point of the model's grid, in grid order; one empty point when it is not tuned."""
        grid = self.tuning_grid(model)
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]

    def is_tuned(self, model: str) -> bool:
        return len(self.tuning_points(model)) > 1


def embedded_sensitivity() -> dict[str, tuple]:
    return authors_search_ranges()


CALIBRATED_MINI = ("synth-baby-mini-cal", "synth-sports-mini-cal", "synth-clothing-mini-cal")  # lgmrec.calibration
UNCALIBRATED_MINI = ("synth-baby-mini", "synth-sports-mini", "synth-clothing-mini")
#: the embedded profiles' design (everything but the datasets)
EMBEDDED_DESIGN: dict[str, Any] = dict(
    seeds=PAPER_SEEDS,
    tuning="reduced",
    ablation_seeds=PAPER_SEEDS[:3],
    sensitivity=embedded_sensitivity(),
    sensitivity_seeds=PAPER_SEEDS[:3],
    error_rate_models=("lightgcn", "lgmrec"),
    error_rate_seeds=tuple(range(5, 15)),
)
EMBEDDED_REDUCTIONS = (
    "tuning: each baseline's reduced grid (ModelSpec.reduced_grid) instead of MMRec's whole grid",
    "ablation: 3 seeds (999, 1, 2) instead of 5",
    "sensitivity: on the Baby-like preset only, 3 seeds",
)

PROFILES: dict[str, Profile] = {
    "embedded": Profile(
        name="embedded",
        description="the protocol unchanged on three small synthetic presets calibrated to the published baselines "
                    "(sized for about 30 minutes on 2 CPU cores)",
        data="synthetic",
        datasets=CALIBRATED_MINI,
        **EMBEDDED_DESIGN,
        sensitivity_datasets=CALIBRATED_MINI[:1],
        reductions=(
            "datasets: synthetic presets of 800 users with the real interactions per user and per item, their "
            "generator fitted to the published baselines' Recall@20 ratios to LightGCN (not the Amazon data; see "
            "the Methods chapter)",
            *EMBEDDED_REDUCTIONS,
        ),
    ),
    "embedded-v1": Profile(
        name="embedded-v1",
        description="the embedded design on the uncalibrated presets (the default until 2026-12-06)",
        data="synthetic",
        datasets=UNCALIBRATED_MINI,
        **EMBEDDED_DESIGN,
        sensitivity_datasets=UNCALIBRATED_MINI[:1],
        reductions=(
            "datasets: uncalibrated synthetic presets of about 800 users with the real interactions per user, "
            "1.5-2 % dense (not the Amazon data; see the Methods chapter)",
            *EMBEDDED_REDUCTIONS,
        ),
    ),
    "full": Profile(
        name="full",
        description="the paper's scale: real Amazon Baby/Sports/Clothing, MMRec's whole grids, 5 seeds",
        data="real",
        datasets=("baby", "sports", "clothing"),
        seeds=PAPER_SEEDS,
        tuning="full",
        replicate_test_choice=True,
        published_lgmrec_row=True,
        sensitivity=authors_search_ranges(),
    ),
    "ci": Profile(
        name="ci",
        description="LGMRec, BPR, LightGCN, FREEDOM on the embedded presets, seed 999 (CI's metric check)",
        data="synthetic",
        datasets=CALIBRATED_MINI,
        seeds=(999,),
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
        tuning="reduced",
        ablation_datasets=("smoke-baby",),
        sensitivity={"alpha": (0.0, 0.6), "hyper_num": (2, 8)},
        sensitivity_datasets=("smoke-baby",),
        error_rate_models=("lightgcn",),
        error_rate_seeds=(5, 6, 7, 8),
        synthetic_presets=SMOKE_PRESETS,
    ),
}
DEFAULT_PROFILE = "embedded"


def get_profile(profile: str | os.PathLike | Profile) -> Profile:
    """The profile a name (built-in), a path of a TOML file (:mod:`lgmrec.profiles`) or a Profile
    names. A Profile that crossed a process boundary (pickled) gets its plug-ins loaded here."""
    if isinstance(profile, Profile):
        profile.load_plugins()
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    if is_profile_file(profile):
        from .profiles import read_profile_file

        return read_profile_file(profile)
    raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)} or give a .toml file")


def is_profile_file(profile: str | os.PathLike) -> bool:
    """Whether ``profile`` means a file (``.toml``, or an existing file) rather than a built-in name."""
    return str(profile).endswith(".toml") or os.path.isfile(profile)


def iter_profiles() -> Iterator[Profile]:
    yield from PROFILES.values()


@dataclass(frozen=True)
class RunSpec:
    """One planned run: which experiment and variant it serves and what to train."""

    experiment: str
    variant: str  # row label: model label, tuning point, ablation name, or "param=value"
    dataset: str
    model: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()  # model hyperparameters and training settings
    parameter: str | None = None  # sensitivity: the moved hyperparameter
    value: Any = None  # sensitivity: its value

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    def describe(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.model}{'[' + extra + ']' if extra else ''} on {self.dataset} seed {self.seed}"


def items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A mapping as sorted, hashable (key, value) pairs (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in mapping.items()))


def point_label(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "default"


MODEL_UNITS = ("overall", "tuning", "error_rates")  # experiments whose units are one model's


@dataclass(frozen=True)
class WorkUnit:
    """A piece of a profile that one worker runs: ``experiment`` is overall (with the model's
    tuning first when it is tuned), tuning (the grid alone), ablation, sensitivity or error_rates.
    ``part``: the model (overall, tuning, error_rates), "" (ablation) or the parameter (sensitivity)."""

    experiment: str
    dataset: str
    part: str

    @property
    def key(self) -> str:
        return "/".join(filter(None, (self.experiment, self.dataset, self.part)))

    @property
    def model(self) -> str:
        return self.part if self.experiment in MODEL_UNITS else REFERENCE_MODEL


def units(profile: str | Profile, only: str | Sequence[str] | None = None) -> list[WorkUnit]:
    """The profile's units of work, in run order (LGMRec's overall runs first)."""
    profile = get_profile(profile)
    experiments = [name for name in select_experiments(only) if name in profile.experiments]
    result: list[WorkUnit] = []
    if "overall" in experiments or "tuning" in experiments:
        kind = "overall" if "overall" in experiments else "tuning"
        for dataset in profile.datasets:
            for model in profile.model_names:
                if kind == "overall" or profile.is_tuned(model):
                    result.append(WorkUnit(kind, dataset, model))
    if "ablation" in experiments:
        result += [WorkUnit("ablation", d, "") for d in profile.ablation_datasets or profile.datasets]
    if "sensitivity" in experiments:
        for dataset in profile.sensitivity_datasets or profile.datasets:
            result += [WorkUnit("sensitivity", dataset, p) for p in profile.sensitivity]
    if "error_rates" in experiments:
        result += [WorkUnit("error_rates", d, m) for d in profile.datasets for m in profile.error_rate_models]
    return result


def unit_specs(profile: str | Profile, unit: WorkUnit, chosen: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """The runs of one unit. For an overall unit of a tuned model: the tuning points first, then
    the seeds at ``chosen`` (the validation-chosen point; without it, only the tuning runs)."""
    profile = get_profile(profile)
    check_unit(profile, unit)
    label = get_model_spec(unit.model).label
    specs: list[RunSpec] = []
    if unit.experiment in ("overall", "tuning") and profile.is_tuned(unit.model):
        specs += [RunSpec("tuning", point_label(point), unit.dataset, unit.model, profile.tuning_seed, items(point))
                  for point in profile.tuning_points(unit.model)]
    if unit.experiment == "overall":
        point = {} if not profile.is_tuned(unit.model) else chosen
        if point is not None:
            specs += [RunSpec("overall", label, unit.dataset, unit.model, seed, items(point)) for seed in profile.seeds]
        if unit.model == REFERENCE_MODEL and profile.published_lgmrec_row:
            specs += [RunSpec("overall", PUBLISHED_VARIANT, unit.dataset, unit.model, seed, items({"hyperedge_bug": True}))
                      for seed in profile.seeds]
    elif unit.experiment == "ablation":
        for variant, overrides in ABLATIONS.items():
            specs += [RunSpec("ablation", variant, unit.dataset, REFERENCE_MODEL, seed, items(overrides))
                      for seed in profile.ablation_seeds or profile.seeds]
    elif unit.experiment == "sensitivity":
        for value in profile.sensitivity[unit.part]:
            specs += [RunSpec("sensitivity", f"{unit.part}={value}", unit.dataset, REFERENCE_MODEL, seed,
                              items({unit.part: value}), parameter=unit.part, value=value)
                      for seed in profile.sensitivity_seeds or profile.seeds]
    elif unit.experiment == "error_rates":
        variants = {AA_VARIANT: {}, **PLANTED_EFFECTS.get(unit.model, {})}
        specs += [RunSpec("error_rates", variant, unit.dataset, unit.model, seed, items(overrides))
                  for variant, overrides in variants.items() for seed in profile.error_rate_seeds]
    return specs


def check_unit(profile: Profile, unit: WorkUnit) -> None:
    """A clear error for a unit that is not part of the profile (e.g. a notebook's parameters)."""
    if unit.experiment not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {unit.experiment!r}; choose from {', '.join(EXPERIMENTS)} (or adhoc)")
    if unit.dataset not in profile.datasets:
        raise ConfigError(f"profile {profile.name}: no dataset {unit.dataset!r} ({', '.join(profile.datasets)})")
    if unit.experiment in ("overall", "tuning") and unit.part not in profile.model_names:
        raise ConfigError(f"profile {profile.name}: no model {unit.part!r} ({', '.join(profile.model_names)})")
    if unit.experiment == "error_rates" and unit.part not in profile.error_rate_models:
        raise ConfigError(f"profile {profile.name}: no error-rate runs of {unit.part!r} "
                          f"({', '.join(profile.error_rate_models) or 'none'})")
    if unit.experiment == "sensitivity" and unit.part not in profile.sensitivity:
        raise ConfigError(f"profile {profile.name}: no sensitivity curve for {unit.part!r} "
                          f"({', '.join(profile.sensitivity) or 'none'})")


def replication_specs(profile: Profile, unit: WorkUnit, test_point: Mapping[str, Any],
                      validation_point: Mapping[str, Any]) -> list[RunSpec]:
    """MMRec's (test-chosen) point with the profile's seeds, where it differs from ours."""
    if not profile.replicate_test_choice or dict(test_point) == dict(validation_point):
        return []
    return [RunSpec("tuning", f"test-chosen: {point_label(test_point)}", unit.dataset, unit.model, seed,
                    items(test_point)) for seed in profile.seeds if seed != profile.tuning_seed]


def plan(profile: str | Profile, only: str | Sequence[str] | None = None,
         chosen: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of the profile's experiments (``only``: some of them), in run order.

    ``chosen``: (dataset, model) -> validation-chosen tuning point; a tuned model's overall runs
    are planned only once its point is known. The same configuration may serve several
    experiments (the full LGMRec of the ablation is an overall run); it appears once per
    experiment here and runs once, since the store is keyed by the resolved configuration.
    """
    profile = get_profile(profile)
    wanted = select_experiments(only)
    specs: list[RunSpec] = []
    for unit in units(profile, wanted):
        point = (chosen or {}).get((unit.dataset, unit.model))
        specs += [s for s in unit_specs(profile, unit, point) if s.experiment in wanted]
    return specs


def select_experiments(only: str | Sequence[str] | None) -> list[str]:
    """Experiment names (derived analyses map to their base); ``None``: all of them."""
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
        if base == "overall" and "tuning" not in selected:  # the overall runs need the chosen points
            selected.append("tuning")
    return selected


def with_overrides(spec: RunSpec, extra: Mapping[str, Any]) -> RunSpec:
    return replace(spec, overrides=items({**spec.overrides_dict, **extra}))


__all__ = [
    "AA_VARIANT", "ABLATIONS", "DEFAULT_PROFILE", "MODEL_UNITS", "PLANTED_EFFECTS", "EXPERIMENTS", "PROFILES", "PAPER_SEEDS", "Profile", "RunSpec",
    "SENSITIVITY_SYMBOLS", "WorkUnit", "available_models", "get_profile", "plan", "point_label",
    "select_experiments", "unit_specs", "units",
]
