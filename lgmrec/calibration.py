"""Calibrating the embedded testbed to the published record (``python -m lgmrec calibrate``).

The generator's knobs (:class:`lgmrec.synthetic.SyntheticPreset`) are fitted per dataset family so
that the 13 baselines' Recall@20 relative to LightGCN on an 800-user preset match the published
ratios: per model, the registry's published value (:func:`lgmrec.literature.published_value`, the
median of the distinct independent values that are not secondary) over LightGCN's. LGMRec and its
ablations are not in the objective: they are the held-out check.

Two stages, both deterministic (fixed seeds, one torch thread per run, trials one after another):

1. search: Optuna's TPE sampler (seed 0) over :data:`SEARCH_SPACE` (or some of its knobs); a
   trial takes its knobs to the digits a preset keeps (:func:`knob_values`), generates the preset
   with its size and skew knobs fitted to the released dataset's degrees (:func:`fit_degrees`;
   knobs that cannot keep them are rejected untrained) and trains the :data:`SEARCH_MODELS` (the
   baselines without the two slowest) at their defaults with the given seeds (default one); its
   loss is :func:`fit_score`'s (a failed run rejects the trial). The 3 best trials, knobs to 3 digits, are
   measured again with two seeds and the best of them becomes the calibrated preset
   (``reference/calibrated_presets.csv``); every trial and candidate goes to
   ``reference/calibration_trials.csv``. With the "design" objective a trial is the measure itself
   (:func:`measure_design_ratios`) and the best trial is taken as measured; ``local`` searches
   around the committed preset.
2. measure: the embedded profile's own design (reduced tuning, then 5 seeds) on the uncalibrated
   presets (profile ``embedded-v1``) and on the calibrated ones (``embedded``), run through the
   grid; every model's ratio before and after (the 13 baselines, and LGMRec, held out) goes to
   ``reference/calibration_fit.csv``.

:func:`rule_recalls` says what a preset leaves the baselines to differ by: MostPop's Recall@20 and
the oracle's (the generator's own logits), next to MostPop on the released files.

The published values are each paper's best test numbers (test-selected maxima, see the Methods
chapter): the presets are fitted to what the literature reports, not to what the baselines would
score under this suite's protocol on the real files.
"""

from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import literature
from .errors import ConfigError
from .models.base import Embeddings, Recommender
from .synthetic import CALIBRATED_FILE, MINI_FEATURES, SyntheticPreset, generate

FAMILIES = ("baby", "sports", "clothing")
REFERENCE_MODEL = "lightgcn"
BASELINES = ("bpr", "lightgcn", "layergcn", "vbpr", "mmgcn", "grcn", "dualgnn", "lattice", "slmrec", "bm3",
             "micro", "freedom", "mgcn")
#: the cheap objective: every baseline but the two slowest per run on the -mini presets (MICRO, MMGCN)
SEARCH_MODELS = tuple(m for m in BASELINES if m not in ("micro", "mmgcn"))
SEARCH_SEEDS = (999,)
N_USERS = 800  # the -mini scale: the embedded grid's time budget
#: knob -> (low, high, log scale), integers where both bounds are; sizes and degree skew are fitted to
#: the real dataset (fit_degrees), the rest of SyntheticPreset stays at its default
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "sharpness": (0.3, 2.5, True),
    "cluster_spread": (0.2, 1.5, True),
    "image_noise": (0.05, 2.0, True),
    "text_noise": (0.05, 2.0, True),
    "feature_cluster": (0.0, 0.9, False),
    "feature_decoy": (0.0, 1.0, False),
    "n_clusters": (8, 96, True),
    "latent_dim": (8, 64, True),
    "max_interests": (1, 6, False),
    "modality_coverage": (0.34, 1.0, False),
}


def searched_knobs(trials: pd.DataFrame, family: str) -> list[str]:
    """The knobs a family's committed search varied (those of :data:`SEARCH_SPACE` its trials have)."""
    own = trials[trials["family"] == family]
    return [k for k in SEARCH_SPACE if k in own.columns and own[k].notna().any()]


def knob_values(row: Mapping[str, float], rounded: bool = True) -> dict[str, float | int]:
    """A trial's searched knobs as a preset takes them: integers as such, the others to 3 digits
    (what the committed files say exactly; ``rounded=False``: as they are). Knobs that a trial's
    row lacks (searched before they were in :data:`SEARCH_SPACE`) keep the preset's default."""
    present = {k: row[k] for k in SEARCH_SPACE if k in row and pd.notna(row[k])}
    return {k: int(round(v)) if isinstance(SEARCH_SPACE[k][0], int) else float(f"{v:.3g}" if rounded else v)
            for k, v in present.items()}


RANK_WEIGHT = 0.1  # loss = mean absolute ratio error + RANK_WEIGHT * (1 - Spearman)
TARGET_SPEARMAN, TARGET_MEDIAN_ERROR = 0.9, 0.05  # the target per dataset
REFERENCE = Path(__file__).parent / "reference"


# ---------------------------------------------------------------------------- targets and score


def published_lightgcn_recall(family: str) -> float:
    from .models import get_model_spec

    return literature.published_value(family, get_model_spec(REFERENCE_MODEL).label)


def published_ratios(family: str, models: Sequence[str] = BASELINES) -> pd.Series:
    """Published Recall@20 of each model over LightGCN's on the family's real dataset."""
    from .models import get_model_spec

    base = published_lightgcn_recall(family)
    values = {m: literature.published_value(family, get_model_spec(m).label) for m in models}
    missing = [m for m, v in values.items() if v is None]
    if base is None or missing:
        raise ConfigError(f"literature registry: no published Recall@20 on {family} for "
                          f"{', '.join(missing or [REFERENCE_MODEL])}")
    return pd.Series({m: v / base for m, v in values.items()}, name="published")


@dataclass(frozen=True)
class FitScore:
    spearman: float  # between reproduced and published ratios, LightGCN (1 = 1) left out
    median_error: float  # median absolute ratio error, LightGCN left out
    mean_error: float
    n_models: int

    @property
    def loss(self) -> float:
        return self.mean_error + RANK_WEIGHT * (1.0 - self.spearman)

    @property
    def meets_target(self) -> bool:
        return self.spearman >= TARGET_SPEARMAN and self.median_error <= TARGET_MEDIAN_ERROR


def fit_score(reproduced: Mapping[str, float], published: Mapping[str, float]) -> FitScore:
    """How well reproduced ratios match published ones, over the models both have but LightGCN."""
    models = [m for m in published if m in reproduced and m != REFERENCE_MODEL]
    if len(models) < 3:
        raise ValueError(f"a fit needs at least 3 models besides {REFERENCE_MODEL}, got {models}")
    ours = np.array([reproduced[m] for m in models], dtype=float)
    theirs = np.array([published[m] for m in models], dtype=float)
    errors = np.abs(ours - theirs)
    rho = stats.spearmanr(ours, theirs).statistic
    return FitScore(float(rho) if np.isfinite(rho) else -1.0, float(np.median(errors)), float(errors.mean()),
                    len(models))


@dataclass(frozen=True)
class FitNoise:
    """The fit a perfect preset would show through the measure's seed noise: 5th percentile,
    median and 95th percentile over the draws, and the share of draws that meet the target."""

    spearman: tuple[float, float, float]
    median_error: tuple[float, float, float]
    meets_target: float
    draws: int


def perfect_fit_noise(published: Mapping[str, float], relative_se: Mapping[str, float],
                      draws: int = 20_000, seed: int = 0) -> FitNoise:
    """What the measure can show: the fit of a preset whose true ratios ARE the published ones, when
    each model's mean Recall@20 (LightGCN's too) is off by a normal relative error with its
    ``relative_se`` (seed SD / mean / sqrt(seeds), as measured), models independent. Seed noise
    only: the data are one draw, as in the measure."""
    models = [m for m in published if m != REFERENCE_MODEL and m in relative_se]
    rng = np.random.default_rng(seed)
    truth = np.array([published[m] for m in models], dtype=float)
    spread = np.array([relative_se[m] for m in models], dtype=float)
    reproduced = (truth * (1 + rng.standard_normal((draws, len(models))) * spread)
                  / (1 + rng.standard_normal((draws, 1)) * relative_se[REFERENCE_MODEL]))
    median_error = np.median(np.abs(reproduced - truth), axis=1)
    ranks = stats.rankdata(reproduced, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    truth_ranks = stats.rankdata(truth) - (len(models) + 1) / 2
    spearman = ranks @ truth_ranks / np.sqrt((ranks ** 2).sum(axis=1) * (truth_ranks ** 2).sum())
    meets = (spearman >= TARGET_SPEARMAN) & (median_error <= TARGET_MEDIAN_ERROR)

    def spread_of(values: np.ndarray) -> tuple[float, float, float]:
        low, middle, high = np.percentile(values, [5, 50, 95])
        return float(low), float(middle), float(high)

    return FitNoise(spread_of(spearman), spread_of(median_error), float(meets.mean()), draws)


def fit_noise(fit: pd.DataFrame, family: str, stage: str = "after") -> FitNoise:
    """:func:`perfect_fit_noise` for a family of the committed fit, with the seed noise its measure saw."""
    part = fit[(fit["family"] == family) & ~fit["held_out"]].set_index("model")
    relative_se = part[f"{stage}_recall_sd"] / part[f"{stage}_recall"] / np.sqrt(part[f"{stage}_seeds"])
    return perfect_fit_noise(part["published"].to_dict(), relative_se.to_dict())


# ---------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Degrees:
    """What a preset keeps of the released dataset: interactions per user and per item, and the Gini
    coefficients of the user and item degrees (``reference/datasets.csv``)."""

    per_user: float
    per_item: float
    user_gini: float
    item_gini: float


@lru_cache(maxsize=None)  # read once per process: every trial's feasibility check asks for it
def real_degrees(family: str) -> Degrees:
    from .reference import read_reference

    row = read_reference("datasets").set_index("dataset").loc[family]
    return Degrees(row["interactions"] / row["users"], row["interactions"] / row["items"], row["user_gini"],
                   row["item_gini"])


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal)."""
    x = np.sort(np.asarray(counts, dtype=float))
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def preset_degrees(preset: SyntheticPreset) -> Degrees:
    """The degrees of a preset's data after 5-core filtering (its features play no part in them)."""
    data = generate(replace(preset, image_dim=8, text_dim=8))
    pairs = np.concatenate(list(data.splits.values()))
    n = len(pairs)
    return Degrees(n / data.n_users, n / data.n_items, gini(np.bincount(pairs[:, 0])), gini(np.bincount(pairs[:, 1])))


def fit_degrees(preset: SyntheticPreset, family: str, rounds: int = 8) -> SyntheticPreset:
    """The preset with its size and skew knobs moved so that its filtered data keep the released
    dataset's :class:`Degrees`: ``n_items`` and ``mean_interactions`` by proportion,
    ``popularity_exponent`` (item skew) and ``activity_dispersion`` (user skew) by bisection, in
    rounds until all four are within :data:`DEGREE_TOLERANCE`."""
    target = real_degrees(family)
    for _ in range(rounds):
        got = preset_degrees(preset)
        if degrees_close(got, target):
            break
        preset = replace(preset, n_items=max(20, round(preset.n_items * got.per_item / target.per_item)),
                         mean_interactions=round(max(5.05, preset.mean_interactions * target.per_user / got.per_user), 3))
        preset = _bisect(preset, "popularity_exponent", 0.0, 2.0, lambda d: d.item_gini - target.item_gini)
        # more dispersion (a larger negative-binomial shape): a less skewed activity
        preset = _bisect(preset, "activity_dispersion", 0.05, 50.0, lambda d: target.user_gini - d.user_gini, log=True)
    return preset


DEGREE_TOLERANCE = (0.02, 0.01)  # relative for interactions per user and per item, absolute for the Ginis


def degrees_close(got: Degrees, target: Degrees) -> bool:
    relative, absolute = DEGREE_TOLERANCE
    return (abs(got.per_user / target.per_user - 1) <= relative and abs(got.per_item / target.per_item - 1) <= relative
            and abs(got.user_gini - target.user_gini) <= absolute and abs(got.item_gini - target.item_gini) <= absolute)


def _bisect(preset: SyntheticPreset, knob: str, low: float, high: float, excess: Callable[[Degrees], float],
            steps: int = 10, log: bool = False) -> SyntheticPreset:
    """The knob's value in [low, high] where ``excess`` (increasing in the knob) crosses 0, to 3 digits."""
    for _ in range(steps):
        middle = math.sqrt(low * high) if log else (low + high) / 2
        if excess(preset_degrees(replace(preset, **{knob: middle}))) > 0:
            high = middle
        else:
            low = middle
    value = math.sqrt(low * high) if log else (low + high) / 2
    return replace(preset, **{knob: float(f"{value:.3g}")})


def preset_for(family: str, knobs: Mapping[str, float], n_users: int = N_USERS) -> SyntheticPreset:
    """A preset of the family (800 users: the -mini scale) with the given knobs, its degrees fitted
    to the real ones."""
    target = real_degrees(family)
    start = SyntheticPreset(n_users=n_users, n_items=round(n_users * target.per_user / target.per_item),
                            mean_interactions=round(target.per_user, 3), **MINI_FEATURES, **knobs)
    return fit_degrees(start, family)


# ---------------------------------------------------------------------------- measuring ratios


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@lru_cache(maxsize=2)
def _dataset(preset: SyntheticPreset, name: str):
    return generate(preset, name=name)


def _train(preset: SyntheticPreset, name: str, model: str, seed: int) -> float:
    from .training import train_model

    result = train_model(_dataset(preset, name), model, seed=seed)
    return result.test["recall@20"] if result.status == "ok" else math.nan


RUN_ORDER = ("micro", "mmgcn", "mgcn", "bm3", "freedom", "lattice")  # slowest first: the pool stays busy


def _run_order(models: Sequence[str]) -> list[str]:
    """``models`` and LightGCN, slowest first (:data:`RUN_ORDER`)."""
    return sorted(set(models) | {REFERENCE_MODEL}, key=lambda m: RUN_ORDER.index(m) if m in RUN_ORDER else 99)


def measure_recalls(preset: SyntheticPreset, family: str, models: Sequence[str], seeds: Sequence[int],
                    pool: ProcessPoolExecutor) -> pd.Series:
    """Mean test Recall@20 of each model and LightGCN (defaults, the given seeds)."""
    name = f"calibration-{family}"  # the family in the name picks each model's per-dataset preset
    order = _run_order(models)
    jobs = {(m, s): pool.submit(_train, preset, name, m, s) for m in order for s in seeds}
    return pd.Series({m: np.mean([jobs[m, s].result() for s in seeds]) for m in order})


def measure_ratios(preset: SyntheticPreset, family: str, models: Sequence[str], seeds: Sequence[int],
                   pool: ProcessPoolExecutor) -> pd.Series:
    """Mean test Recall@20 of each model (defaults, the given seeds) over LightGCN's."""
    recall = measure_recalls(preset, family, models, seeds, pool)
    return (recall / recall[REFERENCE_MODEL]).rename("reproduced")


DESIGN_PROFILE = "embedded"  # the measure's design (its tuning grids, tuning seed, seeds and training settings)


def design_seeds() -> tuple[int, ...]:
    from .grids import get_profile

    return get_profile(DESIGN_PROFILE).seeds


def _design_run(preset: SyntheticPreset, name: str, model: str, point: tuple, seed: int) -> dict:
    """One run as the measure's grid trains it (the profile's training settings, ``point``'s
    overrides): its status and validation and test metrics, what :func:`lgmrec.tuning.choose` reads."""
    from .grids import get_profile
    from .resolve import resolve_run
    from .training import train_model

    data = _dataset(preset, name)
    resolved = resolve_run(model, data.name, dict(point), get_profile(DESIGN_PROFILE).train)
    result = train_model(data, resolved.model, model_config=resolved.model_config,
                         train_config=resolved.train_config, seed=seed, preset=resolved.preset)
    return {"status": result.status, "valid": result.valid, "test": result.test}


def measure_design_ratios(preset: SyntheticPreset, family: str, pool: ProcessPoolExecutor,
                          models: Sequence[str] = BASELINES, seeds: Sequence[int] | None = None) -> pd.Series:
    """Mean test Recall@20 over LightGCN's as the measure stage computes it, in this process's pool:
    each tuned model's reduced grid on the tuning seed, the point with the best validation Recall@20
    (:func:`lgmrec.tuning.choose`), then the profile's seeds at that point (the tuning seed's run is
    the tuning run itself). A failed run at the chosen point gives NaN. ``seeds``: other seeds than
    the profile's (a check out of the sample a search selected on; the tuning seed stays)."""
    from .grids import get_profile, items
    from .tuning import choose

    profile = get_profile(DESIGN_PROFILE)
    seeds = tuple(seeds or profile.seeds)
    name = f"calibration-{family}"
    order = _run_order(models)
    runs: dict[tuple, Future] = {}

    def submit(model: str, point: tuple, seed: int) -> Future:
        if (model, point, seed) not in runs:
            runs[model, point, seed] = pool.submit(_design_run, preset, name, model, point, seed)
        return runs[model, point, seed]

    tuning = {m: [items(p) for p in profile.tuning_points(m)] for m in order if profile.is_tuned(m)}
    chosen = {m: () for m in order if m not in tuning}
    for model in order:  # the tuning runs first (slowest models first), the untuned models' seeds after
        for point in tuning.get(model, []):
            submit(model, point, profile.tuning_seed)
    for model, point in chosen.items():
        for seed in seeds:
            submit(model, point, seed)
    while len(chosen) < len(order):  # a tuned model's seeds as soon as its grid is done
        waiting = [runs[m, p, profile.tuning_seed] for m in tuning if m not in chosen for p in tuning[m]]
        wait(waiting, return_when=FIRST_COMPLETED)
        for model, points in tuning.items():
            if model not in chosen and all(runs[model, p, profile.tuning_seed].done() for p in points):
                choice = choose([dict(p) for p in points], [runs[model, p, profile.tuning_seed].result() for p in points])
                chosen[model] = items(choice.validation_point)
                for seed in seeds:
                    submit(model, chosen[model], seed)

    def recall(model: str) -> float:
        results = [runs[model, chosen[model], seed].result() for seed in seeds]
        return float(np.mean([r["test"]["recall@20"] if r["status"] == "ok" else math.nan for r in results]))

    recalls = pd.Series({m: recall(m) for m in order})
    return (recalls / recalls[REFERENCE_MODEL]).rename("reproduced")


# ---------------------------------------------------------------------------- what a preset allows


class _FixedScores(Recommender):
    """A ranking rule as a model: the scores ``users @ items.T`` of two fixed tables."""

    pure_eval_forward = True

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        self.register_buffer("user_table", users)
        self.register_buffer("item_table", items)

    def forward(self) -> Embeddings:
        return Embeddings(self.user_table, self.item_table)


def mostpop_metrics(data, topk: tuple[int, ...] = (20,)) -> dict[str, float]:
    """Test metrics of MostPop, evaluated as every model is (the protocol's split, training items
    masked): items by their number of training interactions, ties to the lower id. Also what
    scripts/real_mostpop.py computes on the released files."""
    from .evaluation import evaluate

    counts = np.bincount(data.splits["train"][:, 1], minlength=data.n_items).astype(np.float64)
    order = counts * (data.n_items + 1) + (data.n_items - np.arange(data.n_items))  # exact in float64: ties by id
    rule = _FixedScores(torch.ones(data.n_users, 1, dtype=torch.float64), torch.from_numpy(order[:, None]))
    return evaluate(rule, data, "test", topk).means


def rule_recalls(data, truth) -> dict[str, float]:
    """Test Recall@20 of two ranking rules on generated data (:func:`lgmrec.synthetic.generate_with_truth`):
    ``oracle``, the generator's own logits (the best any model can do: no ratio to LightGCN can
    exceed oracle / LightGCN), and ``mostpop`` (:func:`mostpop_metrics`: what popularity alone earns;
    comparable with MostPop on the released data, ``reference/mostpop_released.csv``)."""
    from .evaluation import evaluate

    oracle = _FixedScores(torch.from_numpy(np.concatenate([truth.users, np.ones((data.n_users, 1))], axis=1)),
                          torch.from_numpy(np.concatenate([truth.items, truth.log_popularity[:, None]], axis=1)))
    return {"oracle": evaluate(oracle, data, "test", (20,)).means["recall@20"],
            "mostpop": mostpop_metrics(data)["recall@20"]}


def top_share(data, k: int = 20) -> float:
    """The share of a dataset's interactions (every split) held by its ``k`` most popular items."""
    degrees = np.bincount(np.concatenate(list(data.splits.values()))[:, 1], minlength=data.n_items)
    return float(np.sort(degrees)[::-1][:k].sum() / degrees.sum())


RELEASED_MOSTPOP_FILE = "mostpop_released.csv"


def read_released_mostpop(path: Path = REFERENCE / RELEASED_MOSTPOP_FILE) -> pd.DataFrame:
    """MostPop on the released datasets (scripts/real_mostpop.py): family, split, recall@20, ...;
    empty where not computed."""
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["family", "split", "recall@20"])


# ---------------------------------------------------------------------------- search


INFEASIBLE_LOSS = 1.0  # a trial whose preset cannot keep the real degrees (nothing is trained)


def score_row(label, knobs: Mapping[str, float], ratios: pd.Series | None, target: pd.Series) -> dict:
    """A trial's row: its knobs, loss and fit, and every measured ratio. None ratios (degrees not
    kept) or a NaN ratio (a failed run: diverged) make it infeasible."""
    if ratios is None or ratios.isna().any():
        return {"trial": label, **knobs, "loss": INFEASIBLE_LOSS,
                "failed": "" if ratios is None else " ".join(ratios.index[ratios.isna()])}
    score = fit_score(ratios.to_dict(), target.to_dict())
    return {"trial": label, **knobs, "loss": score.loss, "spearman": score.spearman,
            "median_error": score.median_error, "mean_error": score.mean_error,
            **{f"ratio_{m}": ratios[m] for m in ratios.index}}


def optimise(measure: Callable[[dict[str, float]], pd.Series | None], target: pd.Series, n_trials: int,
             space: Mapping[str, tuple[float, float, bool]] = SEARCH_SPACE, seed: int = 0,
             on_trial: Callable[[dict], None] | None = None,
             exact: Callable[[dict[str, float]], dict[str, float]] = dict,
             start: Mapping[str, float] | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """Minimise :func:`fit_score`'s loss of ``measure(knobs)`` against ``target`` with Optuna's TPE
    sampler (seeded; trials one after another, so the same measure gives the same search). A
    ``measure`` returning None (or a NaN ratio: a failed run) marks knobs as infeasible: loss
    :data:`INFEASIBLE_LOSS`. ``exact`` maps the sampler's values to the knobs measured and recorded
    (the search's: :func:`knob_values`, the digits a committed preset keeps). ``start``: knobs
    measured as the first trial (e.g. the committed preset's), the point to improve on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[dict] = []

    def objective(trial: "optuna.Trial") -> float:
        knobs = {k: trial.suggest_int(k, lo, hi, log=log) if isinstance(lo, int) and isinstance(hi, int)
                 else trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in space.items()}
        knobs = exact(knobs)
        row = score_row(trial.number, knobs, measure(knobs), target)
        rows.append(row)
        if on_trial:
            on_trial(row)
        return row["loss"]

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, n_trials), multivariate=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    if start is not None:
        study.enqueue_trial(dict(start))
    study.optimize(objective, n_trials=n_trials)
    return dict(study.best_params), pd.DataFrame(rows)


OBJECTIVES = ("quick", "design")  # SEARCH_MODELS at their defaults with the search seeds | measure_design_ratios


def local_space(center: Mapping[str, float], radius: float,
                space: Mapping[str, tuple[float, float, bool]] = SEARCH_SPACE) -> dict[str, tuple[float, float, bool]]:
    """``space`` narrowed around ``center``: each knob within ``radius`` times its range (on its
    sampler's scale, log or linear) of the centre, inside its bounds; integers stay integers."""
    narrowed = {}
    for knob, (low, high, log) in space.items():
        to, back = (math.log, math.exp) if log else (float, float)
        half = radius * (to(high) - to(low))
        a = max(low, back(to(center[knob]) - half))
        b = min(high, back(to(center[knob]) + half))
        if isinstance(low, int) and isinstance(high, int):
            a, b = math.floor(a), math.ceil(b)
        narrowed[knob] = (a, b, log)
    return narrowed


def committed_knobs(family: str, reference: Path = REFERENCE) -> dict[str, float | int]:
    """The committed calibrated preset's value of every :data:`SEARCH_SPACE` knob, exactly (a default
    such as ``modality_coverage`` 2/3 is not rounded: to 3 digits it would be other data)."""
    from .synthetic import read_calibrated_presets

    preset = read_calibrated_presets(reference / CALIBRATED_FILE).get(calibrated_name(family))
    if preset is None:
        raise ConfigError(f"{reference / CALIBRATED_FILE}: no committed preset {calibrated_name(family)} to start from")
    return {k: getattr(preset, k) for k in SEARCH_SPACE}


def search(family: str, n_trials: int, pool: ProcessPoolExecutor,
           on_trial: Callable[[dict], None] | None = None, seeds: Sequence[int] = SEARCH_SEEDS,
           knobs: Sequence[str] | None = None, objective: str = "quick", local: float | None = None,
           reference: Path = REFERENCE) -> pd.DataFrame:
    """Stage 1's search for one family over ``knobs`` (default: all of :data:`SEARCH_SPACE`): every
    trial's row, with the seeds, knobs and objective it searched. ``objective``: "quick" trains
    :data:`SEARCH_MODELS` at their defaults with ``seeds``; "design" is the measure itself
    (:func:`measure_design_ratios`: all 13 baselines, tuned, the profile's seeds). ``local``: search
    within this share of each knob's range around the committed preset (:func:`local_space`), whose
    knobs are the first trial."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"calibration objective {objective!r}: choose from {', '.join(OBJECTIVES)}")

    def measure(knobs: dict[str, float]) -> pd.Series | None:
        preset = preset_for(family, knobs)
        if not degrees_close(preset_degrees(preset), real_degrees(family)):
            return None
        if objective == "design":
            return measure_design_ratios(preset, family, pool)
        return measure_ratios(preset, family, SEARCH_MODELS, seeds, pool)

    space = {k: SEARCH_SPACE[k] for k in knobs or SEARCH_SPACE}
    start = None
    if local is not None:
        centre = committed_knobs(family, reference)
        space, start = local_space(centre, local, space), {k: centre[k] for k in space}
    # a trial measures its knobs as a preset would keep them: any other digit is another data draw
    # (the committed preset's, the first trial of a local search, are kept exactly)
    def exact(knobs: dict[str, float]) -> dict[str, float]:
        return dict(knobs) if knobs == start else knob_values(knobs)

    _, rows = optimise(measure, published_ratios(family), n_trials, space=space, on_trial=on_trial,
                       exact=exact, start=start)
    used_seeds = design_seeds() if objective == "design" else seeds
    return rows.assign(family=family, search_seeds=" ".join(map(str, used_seeds)), search_knobs=" ".join(space),
                       objective=objective, search_radius=local if local is not None else math.nan)


CANDIDATES = 3  # the best trials measured again before one is chosen
SELECTION_SEEDS = (999, 1)


def select(family: str, trials: pd.DataFrame, pool: ProcessPoolExecutor) -> tuple[SyntheticPreset, pd.DataFrame]:
    """The calibrated preset: of the :data:`CANDIDATES` best feasible trials, each with its knobs to
    3 digits (what the committed file says exactly) measured again with :data:`SELECTION_SEEDS`
    (one seed picks lucky trials; a rounded knob is new data), the one with the lowest loss that
    keeps the degrees and has no failed run. Returns it and the candidates' rows (``selected``).

    Trials of the "design" objective were measured as the measure stage measures: the best one is
    the only candidate, its row as measured (measuring it again would give the same numbers)."""
    target = published_ratios(family)
    feasible = trials[(trials["family"] == family) & (trials["loss"] < INFEASIBLE_LOSS)
                      & pd.to_numeric(trials["trial"], errors="coerce").notna()]
    ranked = feasible.sort_values("loss", kind="stable")
    if len(ranked) and ranked.get("objective", pd.Series(["quick"])).iloc[0] == "design":
        trial = ranked.iloc[0]
        row = {**trial.drop("family").to_dict(), "trial": f"candidate {int(float(trial['trial']))}"}
        measured = knob_values(trial, rounded=False)  # the trial's knobs, exactly
        return preset_for(family, measured), pd.DataFrame([row]).assign(family=family, selected=True)
    rows, presets = [], []
    for _, trial in ranked.head(CANDIDATES).iterrows():
        knobs = knob_values(trial)
        preset = preset_for(family, knobs)
        keeps = degrees_close(preset_degrees(preset), real_degrees(family))
        ratios = measure_ratios(preset, family, SEARCH_MODELS, SELECTION_SEEDS, pool) if keeps else None
        rows.append(score_row(f"candidate {int(float(trial['trial']))}", knobs, ratios, target))
        presets.append(preset)
    if not rows or min(r["loss"] for r in rows) >= INFEASIBLE_LOSS:
        raise ConfigError(f"calibration of {family}: no candidate kept the released degrees without a failed run")
    best = min(range(len(rows)), key=lambda i: rows[i]["loss"])
    frame = pd.DataFrame(rows).assign(family=family, selected=[i == best for i in range(len(rows))])
    return presets[best], frame


def calibrated_name(family: str) -> str:
    return f"synth-{family}-mini-cal"


TRIALS_FILE = "calibration_trials.csv"


def run_search(families: Sequence[str] = FAMILIES, n_trials: int = 40, workers: int = 2,
               reuse_trials: bool = False, reference: Path = REFERENCE,
               echo: Callable[[str], None] = print, seeds: Sequence[int] = SEARCH_SEEDS,
               knobs: Sequence[str] | None = None, objective: str = "quick",
               local: float | None = None) -> dict[str, SyntheticPreset]:
    """Stage 1 for the families: search ``knobs`` with ``seeds`` per trial (or, with ``reuse_trials``, take the
    committed trials of a family that has ``n_trials`` of them: the search is deterministic), select,
    then write the calibrated presets (other families' rows kept) and every trial and candidate."""
    from .files import write_atomic
    from .synthetic import read_calibrated_presets

    from .models import dataset_family

    presets = {name: (dataset_family(name), p) for name, p in read_calibrated_presets(reference / CALIBRATED_FILE).items()}
    trials_path = reference / TRIALS_FILE
    trials = read_trials(trials_path)
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        for family in families:
            def line(row: dict) -> None:
                fit = (f"Spearman {row['spearman']:.2f}, median error {row['median_error']:.3f}" if "spearman" in row
                       else f"failed runs: {row['failed']}" if row["failed"]
                       else "infeasible (the released degrees cannot be kept)")
                echo(f"{family} trial {row['trial'] + 1}/{n_trials}: loss {row['loss']:.3f}, {fit}")

            own = trials[(trials["family"] == family) & pd.to_numeric(trials["trial"], errors="coerce").notna()]
            if reuse_trials and len(own) == n_trials:
                echo(f"{family}: reusing the {n_trials} committed trials")
                searched = own
            else:
                searched = search(family, n_trials, pool, on_trial=line, seeds=seeds, knobs=knobs,
                                  objective=objective, local=local, reference=reference)
            preset, candidates = select(family, searched, pool)
            presets[calibrated_name(family)] = (family, preset)
            write_presets(presets, reference / CALIBRATED_FILE)
            trials = pd.concat([trials[trials["family"] != family], searched, candidates], ignore_index=True)
            # shortest exact floats: a trial's knobs (the committed 2/3 too) read back as measured
            write_atomic(trials_path, lambda tmp: trials.to_csv(tmp, index=False))
            chosen = candidates[candidates["selected"]].iloc[0]
            seeds_used = (chosen["search_seeds"] if chosen.get("objective") == "design"  # measured as searched
                          else ", ".join(map(str, SELECTION_SEEDS)))
            echo(f"{family}: {chosen['trial']} selected (seeds {seeds_used}): loss "
                 f"{chosen['loss']:.3f}, Spearman {chosen['spearman']:.2f}, median error {chosen['median_error']:.3f}; "
                 f"written {reference / CALIBRATED_FILE}")
    return {name: p for name, (_, p) in presets.items()}


# ---------------------------------------------------------------------------- measure


FIT_FILE = "calibration_fit.csv"
#: the stage of the measured fit -> the profile whose design and presets measure it
MEASURE_PROFILES = {"before": "embedded-v1", "after": "embedded"}
FOCAL_MODEL = "lgmrec"  # measured on the calibrated presets, held out of the fit


def run_measure(workers: int = 2, results: str | Path | None = None, reference: Path = REFERENCE) -> Path:
    """Stage 2: the overall experiment (tuning, then the profile's seeds) of both embedded profiles,
    run through the grid into the results store, and the ratios of every model before and after."""
    from .executors import GridOptions, run_grid
    from .files import write_atomic
    from .results import ResultStore

    store = ResultStore(results)
    for profile in MEASURE_PROFILES.values():
        summary = run_grid(profile, only="overall", store=store, executor="local",
                           options=GridOptions(notebooks=False, workers=workers, threads=1))
        print(summary.line())
        for failure in summary.failed:  # e.g. a tuning point that diverged: left out of the fit, said here
            print(f"note: {profile}: {failure}")
    table = fit_table(store)
    path = reference / FIT_FILE
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    return path


def measured_ratios(profile: str, store) -> pd.DataFrame:
    """Per dataset and model of a profile's overall runs: mean test Recall@20 over seeds, its ratio
    to LightGCN's, its standard deviation over seeds and the number of seeds."""
    from .collect import collect
    from .datasets.named import synthetic_fingerprints
    from .grids import PUBLISHED_VARIANT
    from .models import dataset_family

    # the records of the presets as they are now: a preset tried and reverted leaves newer records
    runs = collect(profile, "overall", store=store, fingerprints=synthetic_fingerprints(profile))
    runs = runs[runs["variant"] != PUBLISHED_VARIANT]
    means = runs.groupby(["dataset", "model"])["recall@20"].agg(["mean", "std", "count"]).reset_index()
    reference = means[means["model"] == REFERENCE_MODEL].set_index("dataset")["mean"]
    means["ratio"] = means["mean"] / means["dataset"].map(reference)
    means["family"] = means["dataset"].map(dataset_family)
    return means


def fit_table(store) -> pd.DataFrame:
    """One row per family and model (the 13 baselines, then LGMRec, held out): the published ratio
    and the reproduced ones before and after calibration (and the mean Recall@20 each is made of, its
    standard deviation over seeds), with their datasets and seeds."""
    rows = []
    measured = {stage: measured_ratios(profile, store).set_index(["family", "model"])
                for stage, profile in MEASURE_PROFILES.items()}
    for family in FAMILIES:
        published = published_ratios(family, BASELINES + (FOCAL_MODEL,))
        for model in BASELINES + (FOCAL_MODEL,):
            row = {"family": family, "model": model, "held_out": model == FOCAL_MODEL,
                   "published": published[model]}
            for stage, frame in measured.items():
                found = frame.loc[(family, model)] if (family, model) in frame.index else None
                row[stage] = found["ratio"] if found is not None else math.nan
                row[f"{stage}_recall"] = found["mean"] if found is not None else math.nan
                row[f"{stage}_recall_sd"] = found["std"] if found is not None else math.nan
                row[f"{stage}_dataset"] = found["dataset"] if found is not None else ""
                row[f"{stage}_seeds"] = int(found["count"]) if found is not None else 0
            rows.append(row)
    return pd.DataFrame(rows)


def read_trials(path: Path = REFERENCE / TRIALS_FILE) -> pd.DataFrame:
    """The committed search's trials and candidates (no rows before the first search)."""
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["family", "trial"])


def read_fit(path: Path = REFERENCE / FIT_FILE) -> pd.DataFrame:
    """The committed fit (empty before the first measure)."""
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def fit_summary(fit: pd.DataFrame) -> pd.DataFrame:
    """Per family and stage: the fit's Spearman, median and mean absolute error over the baselines
    (LightGCN left out) and whether the target is met."""
    rows = []
    for family, part in fit.groupby("family", sort=False):
        part = part[~part["held_out"]].set_index("model")
        for stage in MEASURE_PROFILES:
            score = fit_score(part[stage].dropna().to_dict(), part["published"].to_dict())
            rows.append({"family": family, "stage": stage, "spearman": score.spearman,
                         "median_error": score.median_error, "mean_error": score.mean_error,
                         "models": score.n_models, "meets_target": score.meets_target})
    return pd.DataFrame(rows)


def preset_row(name: str, family: str, preset: SyntheticPreset) -> dict:
    return {"preset": name, "family": family, **asdict(preset)}


def write_presets(presets: Mapping[str, tuple[str, SyntheticPreset]], path: Path = REFERENCE / CALIBRATED_FILE) -> Path:
    """The calibrated presets, one row each (every SyntheticPreset field), atomically."""
    from .files import write_atomic

    table = pd.DataFrame([preset_row(name, family, p) for name, (family, p) in sorted(presets.items())])
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    return path


__all__ = ["BASELINES", "FAMILIES", "FitNoise", "FitScore", "SEARCH_MODELS", "SEARCH_SPACE", "fit_degrees", "fit_noise",
           "fit_score", "fit_summary", "fit_table", "gini", "measure_ratios", "optimise", "perfect_fit_noise",
           "preset_for", "published_ratios", "read_fit", "run_measure", "run_search", "search", "select",
           "write_presets"]
