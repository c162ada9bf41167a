"""The embedded default data: deterministic synthetic datasets in the MMRec folder format.

These are NOT the Amazon datasets. They mimic their statistics (``lgmrec/reference/datasets.csv``)
with planted structure, so that the whole pipeline can run anywhere without downloads:

- every item has a latent vector drawn around one of a few interest clusters; every user mixes a
  few interests; a user's interactions are drawn without replacement with probability
  ``softmax(sharpness * <user, item> + log popularity)`` (Gumbel top-k), popularity following a
  long-tailed Zipf law, activity a negative-binomial tail above 5;
- the image features see one part of the latent dimensions, the text features an overlapping
  other part, each through a random linear map plus noise, so each modality carries part of the
  preference signal and neither carries all of it; what they see mixes the item's own latent (what
  users choose by), its cluster's centre (what its kind of item shares) and a decoy attribute that
  no user cares about (so feature-space neighbourhoods can differ from co-interaction ones);
- users and items are 5-core filtered and the split follows the protocol exactly.

Every knob is a field of :class:`SyntheticPreset` (its comments say what each one decides). The
``-cal`` presets' knobs were fitted by :mod:`lgmrec.calibration` to the published baselines' ratios.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .data import InteractionData, SPLIT_LABELS
from .errors import ConfigError
from .files import write_atomic
from .split import protocol_split


@dataclass(frozen=True)
class SyntheticPreset:
    """The generator's knobs. The defaults are those of the original presets (their data are
    unchanged); the calibrated ``-cal`` presets set the rest."""

    n_users: int
    n_items: int
    mean_interactions: float  # per user, before 5-core filtering
    # -- what the interactions carry
    n_clusters: int = 24  # interest clusters (kinds of item)
    latent_dim: int = 24
    cluster_spread: float = 0.6  # spread of an item's latent around its cluster's centre
    max_interests: int = 3  # a user mixes 1..max_interests clusters
    sharpness: float = 1.15  # how strongly latent affinity drives choices (vs popularity and chance)
    # -- degree distributions
    popularity_exponent: float = 0.3  # Zipf exponent of item popularity (item degree skew)
    activity_dispersion: float = 1.0  # negative-binomial shape of activity above 5 (1: geometric; smaller: more skewed)
    # -- what the features carry
    image_dim: int = 4096
    text_dim: int = 384
    image_noise: float = 1.0  # noise of each modality's table, relative to its signal
    text_noise: float = 0.7
    modality_coverage: float = 2 / 3  # share of the latent dimensions each modality sees (image first, text last)
    feature_cluster: float = 0.0  # weight of the item's cluster centre against its own latent in what the features see
    feature_decoy: float = 0.0  # weight of a preference-free item attribute in what the features see

    def __post_init__(self) -> None:
        problems = [f"{name} must be positive" for name in ("n_users", "n_items", "n_clusters", "latent_dim",
                                                             "max_interests", "image_dim", "text_dim",
                                                             "activity_dispersion")
                    if getattr(self, name) <= 0]
        if self.mean_interactions < 5:
            problems.append("mean_interactions must be at least 5 (the 5-core)")
        if not 0 < self.modality_coverage <= 1:
            problems.append("modality_coverage must be in (0, 1]")
        if not 0 <= self.feature_cluster <= 1:
            problems.append("feature_cluster must be in [0, 1]")
        problems += [f"{name} must not be negative" for name in ("cluster_spread", "sharpness", "popularity_exponent",
                                                                 "image_noise", "text_noise", "feature_decoy")
                     if getattr(self, name) < 0]
        if problems:
            raise ConfigError(f"synthetic preset: {'; '.join(problems)}")


MINI_FEATURES = dict(image_dim=512, text_dim=48)  # the -mini presets' feature widths (real 4096 : 384)
CALIBRATED_FILE = "calibrated_presets.csv"  # lgmrec/reference/: the -cal presets' knobs (lgmrec.calibration)

# Full-scale presets match the released datasets' users / items / interactions after filtering
# (within a few percent). The smaller presets keep the interactions per user but not the density
# (a small catalogue seen by few users per item is too sparse to learn from), and use narrower
# feature tables (the real files: 4096-d image, 384-d text) so the grids stay fast on a CPU.
PRESETS: dict[str, SyntheticPreset] = {
    "synth-baby": SyntheticPreset(n_users=19_450, n_items=7_050, mean_interactions=8.25),
    "synth-sports": SyntheticPreset(n_users=35_650, n_items=18_500, mean_interactions=8.32),
    "synth-clothing": SyntheticPreset(n_users=40_070, n_items=24_040, mean_interactions=7.10),
    "synth-baby-small": SyntheticPreset(image_dim=1024, n_users=2_000, n_items=1_000, mean_interactions=8.4),
    "synth-sports-small": SyntheticPreset(image_dim=1024, n_users=2_200, n_items=1_300, mean_interactions=8.5),
    "synth-clothing-small": SyntheticPreset(image_dim=1024, n_users=2_400, n_items=1_500, mean_interactions=7.2),
    # the embedded default (``nox -s reproduce``): small enough for the whole protocol-faithful
    # experiment in about 30 minutes on 2 CPU cores; items per user as in the real sets, features
    # in the real 4096 : 384 ratio (README, "The embedded default data is synthetic")
    "synth-baby-mini": SyntheticPreset(**MINI_FEATURES, n_users=800, n_items=400, mean_interactions=8.4),
    "synth-sports-mini": SyntheticPreset(**MINI_FEATURES, n_users=800, n_items=420, mean_interactions=8.5),
    "synth-clothing-mini": SyntheticPreset(**MINI_FEATURES, n_users=800, n_items=470, mean_interactions=7.2),
}


def read_calibrated_presets(path: str | Path | None = None) -> dict[str, SyntheticPreset]:
    """The calibrated presets (``synth-<family>-mini-cal``), one row of knobs each; {} before any
    calibration. A malformed file is an error naming it."""
    path = Path(path) if path else Path(__file__).parent / "reference" / CALIBRATED_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    names = {f.name: f.type for f in fields(SyntheticPreset)}
    missing = set(names) - set(table.columns)
    if "preset" not in table.columns or missing:
        raise ConfigError(f"{path}: missing columns {', '.join(sorted(missing | ({'preset'} - set(table.columns))))}")
    presets = {}
    for row in table.to_dict("records"):
        values = {k: (int(v) if names[k] == "int" else float(v)) for k, v in row.items() if k in names}
        presets[row["preset"]] = SyntheticPreset(**values)
    return presets


PRESETS.update(read_calibrated_presets())


#: a user's logit for an item is ``LOGIT_SCALE * sharpness * <user, item> + log popularity``
LOGIT_SCALE = 4.0


@dataclass(frozen=True)
class GroundTruth:
    """What drew a generated dataset's interactions, for its users and items (after the 5-core
    filter, in its ids): user u's logit for item i is ``users[u] @ items[i] + log_popularity[i]``.
    Ranking by it is the best any model can do on the data (the oracle)."""

    users: np.ndarray  # (n_users, latent_dim): LOGIT_SCALE * sharpness * the user's latent
    items: np.ndarray  # (n_items, latent_dim): the item's latent
    log_popularity: np.ndarray  # (n_items,)


def generate(preset: str | SyntheticPreset, seed: int = 0, name: str | None = None) -> InteractionData:
    """Generate a dataset from a named preset (or an explicit :class:`SyntheticPreset`)."""
    return generate_with_truth(preset, seed, name)[0]


def generate_with_truth(preset: str | SyntheticPreset, seed: int = 0,
                        name: str | None = None) -> tuple[InteractionData, GroundTruth]:
    """:func:`generate`'s dataset and the :class:`GroundTruth` that drew it."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown synthetic preset {preset!r}; choose from {', '.join(PRESETS)}")
        name, params = name or preset, PRESETS[preset]
    else:
        name, params = name or "synthetic", preset
    rng = np.random.default_rng(seed)

    centres = rng.normal(size=(params.n_clusters, params.latent_dim))
    item_cluster = rng.integers(params.n_clusters, size=params.n_items)
    spread = params.cluster_spread * rng.normal(size=(params.n_items, params.latent_dim))
    item_latent = _unit_rows(centres[item_cluster] + spread)
    # each user mixes 1..max_interests interests
    k = params.max_interests
    n_interests = rng.integers(1, k + 1, size=params.n_users)
    weights = rng.dirichlet(np.ones(k), size=params.n_users) * (np.arange(k) < n_interests[:, None])
    user_clusters = rng.integers(params.n_clusters, size=(params.n_users, k))
    user_latent = _unit_rows(np.einsum("uk,ukd->ud", weights, centres[user_clusters]))

    popularity = np.arange(1, params.n_items + 1, dtype=float) ** -params.popularity_exponent
    log_popularity = np.log(rng.permutation(popularity))
    counts = 5 + _activity_above_five(rng, params)
    counts = np.minimum(counts, params.n_items // 2)

    users, items = _sample_interactions(rng, user_latent, item_latent, log_popularity, counts, params.sharpness)
    users, items, kept_users, kept_items = _five_core(users, items)
    labels = protocol_split(users, rng)

    seen = _feature_source(params, item_latent, centres, item_cluster, seed)[kept_items]
    stop = round(params.modality_coverage * params.latent_dim)
    features = {
        "image": _modality_view(rng, seen, slice(0, stop), params.image_dim, params.image_noise, nonnegative=True),
        "text": _modality_view(rng, seen, slice(params.latent_dim - stop, params.latent_dim), params.text_dim,
                               params.text_noise, nonnegative=False),
    }
    splits = {
        split: np.stack([users[labels == v], items[labels == v]], axis=1)
        for split, v in SPLIT_LABELS.items()
    }
    data = InteractionData(name, len(kept_users), len(kept_items), splits, features, source=f"synthetic:{name}:seed={seed}")
    truth = GroundTruth(LOGIT_SCALE * params.sharpness * user_latent[kept_users], item_latent[kept_items],
                        log_popularity[kept_items])
    return data, truth


def _activity_above_five(rng, params: SyntheticPreset) -> np.ndarray:
    """Interactions per user beyond the 5-core's 5, with mean ``mean_interactions - 5``: geometric
    (the original presets' draw) or negative binomial of shape ``activity_dispersion``."""
    if params.activity_dispersion == 1.0:
        return rng.geometric(1.0 / max(params.mean_interactions - 4.0, 1.0), size=params.n_users) - 1
    shape, mean = params.activity_dispersion, params.mean_interactions - 5.0
    return rng.negative_binomial(shape, shape / (shape + mean), size=params.n_users)


def _feature_source(params: SyntheticPreset, item_latent, centres, item_cluster, seed: int) -> np.ndarray:
    """What the features see of each item: its own latent, pulled towards its cluster's centre by
    ``feature_cluster``, plus ``feature_decoy`` times an attribute no user chooses by. The decoy
    comes from a stream of its own, so presets without it draw exactly what they always drew."""
    source = item_latent
    if params.feature_cluster:
        source = _unit_rows((1 - params.feature_cluster) * item_latent
                            + params.feature_cluster * _unit_rows(centres)[item_cluster])
    if params.feature_decoy:
        decoy = _unit_rows(np.random.default_rng([seed, 1]).normal(size=item_latent.shape))
        source = _unit_rows(source + params.feature_decoy * decoy)
    return source


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)


def _sample_interactions(rng, user_latent, item_latent, log_popularity, counts, sharpness, chunk=2048):
    """Per user, ``counts[u]`` distinct items by Gumbel top-k over preference + popularity logits."""
    users, items = [], []
    max_count = int(counts.max())
    for start in range(0, len(user_latent), chunk):
        stop = min(start + chunk, len(user_latent))
        logits = sharpness * LOGIT_SCALE * (user_latent[start:stop] @ item_latent.T) + log_popularity
        logits += rng.gumbel(size=logits.shape)
        top = np.argpartition(-logits, max_count - 1, axis=1)[:, :max_count]
        order = np.take_along_axis(logits, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        keep = np.arange(max_count) < counts[start:stop, None]
        users.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        items.append(top[keep])
    return np.concatenate(users), np.concatenate(items)


def _five_core(users: np.ndarray, items: np.ndarray, k: int = 5):
    """Drop users and items with fewer than k interactions until none is left; re-index both."""
    while True:
        user_count = np.bincount(users)[users]
        item_count = np.bincount(items)[items]
        keep = (user_count >= k) & (item_count >= k)
        if keep.all():
            break
        users, items = users[keep], items[keep]
    kept_users, users = np.unique(users, return_inverse=True)
    kept_items, items = np.unique(items, return_inverse=True)
    return users, items, kept_users, kept_items


def _modality_view(rng, latent, dims: slice, out_dim: int, noise: float, nonnegative: bool) -> np.ndarray:
    """Features that see only ``latent[:, dims]`` through a random linear map, plus noise."""
    part = latent[:, dims]
    projection = rng.normal(size=(part.shape[1], out_dim)) / np.sqrt(part.shape[1])
    table = part @ projection + noise * rng.normal(size=(len(latent), out_dim)) / np.sqrt(3.0)
    if nonnegative:  # CNN features after ReLU are non-negative, like VGG's fc7
        table = np.maximum(table, 0.0)
    else:  # sentence-transformers embeddings are unit-normalised
        table = _unit_rows(table)
    return table.astype(np.float32)


def write_dataset(data: InteractionData, folder: str | Path) -> Path:
    """Write ``data`` in the MMRec folder format (``<folder>/<folder name>.inter`` + features).

    Files are written to temporary names and renamed into place, so an interrupted write never
    leaves a truncated file under a final name.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for split, label in SPLIT_LABELS.items():
        pairs = data.splits[split]
        frames.append(pd.DataFrame({"userID": pairs[:, 0], "itemID": pairs[:, 1], "rating": 5,
                                    "timestamp": 0, "x_label": label}))
    inter = pd.concat(frames).sort_values(["userID", "x_label", "itemID"], kind="stable")
    for modality, table in data.features.items():
        write_atomic(folder / f"{modality}_feat.npy", lambda tmp, t=table: _save_npy(tmp, t))
    # the interaction file last: its presence marks a complete folder (see ensure_dataset)
    write_atomic(folder / f"{folder.name}.inter", lambda tmp: inter.to_csv(tmp, sep="\t", index=False))
    return folder


def _save_npy(path: Path, table: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to a path
        np.save(handle, table)


def ensure_dataset(preset: str, root: str | Path, seed: int = 0) -> Path:
    """The folder of a synthetic preset under ``root``, generating it once if absent."""
    folder = Path(root) / preset
    if not (folder / f"{preset}.inter").is_file():
        write_dataset(generate(preset, seed=seed), folder)
    return folder


__all__ = ["GroundTruth", "PRESETS", "SyntheticPreset", "generate", "generate_with_truth", "write_dataset", "ensure_dataset"]
