import numpy as np
import pytest

from lgmrec.config import TrainConfig
from lgmrec.data import load_dataset
from lgmrec.reference import read_reference
from lgmrec.synthetic import PRESETS, ensure_dataset, generate
from lgmrec.training import train_model


def all_pairs(data):
    return np.concatenate([data.splits[s] for s in ("train", "valid", "test")])


def test_generation_is_deterministic_per_seed(tiny_data):
    from .conftest import TINY

    again, other = generate(TINY, seed=3), generate(TINY, seed=4)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(again.splits[split], tiny_data.splits[split])
    np.testing.assert_array_equal(again.features["text"], tiny_data.features["text"])
    assert not np.array_equal(other.splits["train"], tiny_data.splits["train"])


def test_five_core_contiguous_ids_and_protocol_split(tiny_data):
    pairs = all_pairs(tiny_data)
    assert np.bincount(pairs[:, 0]).min() >= 5 and np.bincount(pairs[:, 1]).min() >= 5
    assert pairs[:, 0].max() + 1 == tiny_data.n_users and pairs[:, 1].max() + 1 == tiny_data.n_items
    assert len(np.unique(pairs, axis=0)) == len(pairs)  # no duplicate interactions
    n = np.bincount(pairs[:, 0])
    held = np.where(n < 10, 2, np.floor(0.2 * n))
    np.testing.assert_array_equal(np.bincount(tiny_data.splits["valid"][:, 0], minlength=len(n)), held // 2)
    np.testing.assert_array_equal(np.bincount(tiny_data.splits["test"][:, 0], minlength=len(n)), held - held // 2)


def test_features_are_finite_float32_tables(tiny_data):
    image, text = tiny_data.features["image"], tiny_data.features["text"]
    assert image.dtype == text.dtype == np.float32
    assert image.shape == (tiny_data.n_items, 48) and text.shape == (tiny_data.n_items, 24)
    assert (image >= 0).all()  # ReLU-like CNN features
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)  # sentence embeddings


def test_full_scale_baby_matches_the_released_statistics():
    data = generate("synth-baby", seed=0)
    reference = read_reference("datasets").set_index("dataset").loc["baby"]
    assert data.n_users == pytest.approx(reference["users"], rel=0.03)
    assert data.n_items == pytest.approx(reference["items"], rel=0.03)
    assert len(all_pairs(data)) == pytest.approx(reference["interactions"], rel=0.03)
    assert data.features["image"].shape[1] == 4096 and data.features["text"].shape[1] == 384
    degrees = np.sort(np.bincount(all_pairs(data)[:, 1]))[::-1]
    assert degrees[: len(degrees) // 10].sum() > 0.2 * degrees.sum()  # a long tail of popularity


def popularity_recall_at_20(data):
    popularity = np.asarray(data.train_matrix.sum(axis=0)).ravel().astype(float)
    test = data.interaction_matrix("test")
    users = np.unique(data.splits["test"][:, 0])
    scores = np.tile(popularity, (len(users), 1))
    scores[data.train_matrix[users].nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :20]
    relevant = test[users].toarray() > 0
    return (np.take_along_axis(relevant, top, 1).sum(1) / relevant.sum(1)).mean()


def test_small_preset_is_hard_but_learnable(tmp_path):
    folder = ensure_dataset("synth-baby-small", tmp_path)
    data = load_dataset(folder)
    popularity = popularity_recall_at_20(data)
    trained = train_model(data, "lightgcn", train_config=TrainConfig(max_epochs=40, device="cpu"), seed=0)
    assert popularity < 0.1
    assert 2 * popularity < trained.test["recall@20"] < 0.5
    assert ensure_dataset("synth-baby-small", tmp_path) == folder  # second call reuses the folder


def test_presets_cover_the_three_datasets_at_two_scales():
    for name in ("baby", "sports", "clothing"):
        assert f"synth-{name}" in PRESETS and f"synth-{name}-small" in PRESETS


# the interactions of the original -mini presets, before the generator's knobs were made explicit
# (2026-12-06): the embedded-v1 profile's records depend on them
ORIGINAL_SPLITS = {"synth-baby-mini": "cff8042580d27cd2f257", "synth-sports-mini": "fedcb7e84a32973b87e4",
                   "synth-clothing-mini": "9dab91ccedfd5c1fad05"}


def splits_fingerprint(data):
    from lgmrec.cache import fingerprint

    return fingerprint(*[np.ascontiguousarray(data.splits[s]) for s in ("train", "valid", "test")])


@pytest.mark.parametrize("name", sorted(ORIGINAL_SPLITS))
def test_the_original_presets_draw_what_they_always_drew(name):
    assert splits_fingerprint(generate(name)) == ORIGINAL_SPLITS[name]


def test_feature_knobs_change_the_features_not_the_interactions():
    from dataclasses import replace

    from .conftest import TINY

    base = generate(TINY, seed=3)
    for knobs in ({"feature_decoy": 0.8}, {"feature_cluster": 0.5}, {"image_noise": 0.1, "text_noise": 0.1},
                  {"modality_coverage": 1.0}):
        other = generate(replace(TINY, **knobs), seed=3)
        assert splits_fingerprint(other) == splits_fingerprint(base)
        assert not np.array_equal(other.features["text"], base.features["text"]), knobs


def test_skew_knobs_move_the_degree_skew():
    from dataclasses import replace

    from lgmrec.calibration import gini

    def item_gini(preset):
        pairs = all_pairs(generate(preset))
        return gini(np.bincount(pairs[:, 1]))

    base = PRESETS["synth-baby-mini"]
    assert item_gini(replace(base, popularity_exponent=1.0)) > item_gini(base) + 0.1


@pytest.mark.parametrize("knobs, message", [({"feature_cluster": 1.5}, "feature_cluster"),
                                            ({"mean_interactions": 4.0}, "mean_interactions"),
                                            ({"image_noise": -1.0}, "image_noise must not be negative")])
def test_bad_knobs_are_one_error(knobs, message):
    from dataclasses import replace

    from lgmrec.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        replace(PRESETS["synth-baby-mini"], **knobs)
