"""The calibration of the embedded testbed (lgmrec.calibration) and its committed result."""

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lgmrec import calibration as C
from lgmrec.cli import main
from lgmrec.errors import ConfigError
from lgmrec.synthetic import CALIBRATED_FILE, read_calibrated_presets

from .conftest import TINY


def test_fit_score_of_a_perfect_and_a_reversed_fit():
    published = {"lightgcn": 1.0, "a": 0.8, "b": 1.1, "c": 1.3, "d": 0.9}
    perfect = C.fit_score(published, published)
    assert perfect.spearman == pytest.approx(1.0) and perfect.median_error == 0 and perfect.meets_target
    reversed_ = {"lightgcn": 1.0, "a": 1.3, "b": 0.9, "c": 0.8, "d": 1.1}  # ranks of a-d reversed
    score = C.fit_score(reversed_, published)
    assert score.spearman == pytest.approx(-1.0) and not score.meets_target
    assert score.n_models == 4  # LightGCN (1 = 1 by construction) is left out
    assert score.median_error == pytest.approx(np.median([0.5, 0.2, 0.5, 0.2]))
    assert score.loss == pytest.approx(score.mean_error + C.RANK_WEIGHT * 2)


def test_the_fit_a_perfect_preset_shows_through_seed_noise():
    published = {"lightgcn": 1.0, **{f"m{i}": 0.8 + 0.05 * i for i in range(12)}}
    exact = C.perfect_fit_noise(published, dict.fromkeys(published, 0.0), draws=500)
    assert exact.spearman == (1.0, 1.0, 1.0) and exact.median_error == (0.0, 0.0, 0.0) and exact.meets_target == 1
    # noise on the models only: each |error| is a half-normal of scale ratio x SE, whose median is 0.6745 SE
    # at ratio 1; with the ratios 0.8-1.35 the median error sits near 0.6745 x 0.02 x ~1.07
    se = {**dict.fromkeys(published, 0.02), "lightgcn": 0.0}
    noisy = C.perfect_fit_noise(published, se)
    assert noisy.median_error[1] == pytest.approx(0.6745 * 0.02 * 1.07, rel=0.1)
    assert noisy.spearman[0] < 0.99 < noisy.spearman[2] + 1e-9 and noisy.meets_target > 0.99
    # ratios 0.05 apart, each known to 10 %: neither the ranks nor the errors can meet the target
    wide = C.perfect_fit_noise(published, dict.fromkeys(published, 0.10))
    assert wide.meets_target < 0.05 and wide.spearman[1] < 0.9
    assert C.perfect_fit_noise(published, se) == noisy  # seeded


def test_the_committed_fit_carries_the_seed_noise_its_measure_saw():
    fit = C.read_fit()
    assert (fit["after_recall_sd"] > 0).all() and (fit["before_recall_sd"] > 0).all()
    for family in C.FAMILIES:
        noise = C.fit_noise(fit, family)
        assert noise.spearman[0] <= noise.spearman[1] <= noise.spearman[2] <= 1.0


def test_optimise_finds_a_known_optimum_deterministically():
    """Ratios that match the target exactly at x = 0.3, y = 2 (and nowhere else)."""
    target = pd.Series({"lightgcn": 1.0, "a": 0.8, "b": 1.2, "c": 1.4, "d": 0.9})

    def measure(knobs):
        x, y = knobs["x"], knobs["y"]
        return pd.Series({"lightgcn": 1.0, "a": 0.8 + (x - 0.3), "b": 1.2 - 0.1 * abs(np.log(y / 2)),
                          "c": 1.4 + 0.5 * (x - 0.3), "d": 0.9 + 0.2 * np.log(y / 2)})

    space = {"x": (0.0, 1.0, False), "y": (0.5, 8.0, True)}
    best, rows = C.optimise(measure, target, 60, space=space)
    assert best["x"] == pytest.approx(0.3, abs=0.05) and best["y"] == pytest.approx(2.0, rel=0.15)
    assert rows["loss"].min() < 0.03 and len(rows) == 60
    again, rows_again = C.optimise(measure, target, 60, space=space)
    assert again == best
    pd.testing.assert_frame_equal(rows, rows_again)


def test_integer_knobs_are_searched_as_integers_and_kept_as_such():
    """An integer knob (both bounds int) is suggested as an int; knob_values rounds floats to 3
    digits, keeps ints, and leaves out knobs a trial's row lacks (an older search's)."""
    target = pd.Series({"lightgcn": 1.0, "a": 0.8, "b": 1.2, "c": 1.4})

    def measure(knobs):
        assert isinstance(knobs["n"], int)
        return pd.Series({"lightgcn": 1.0, "a": 0.8 + 0.05 * abs(knobs["n"] - 5), "b": 1.2, "c": 1.4})

    best, rows = C.optimise(measure, target, 25, space={"n": (1, 12, False)})
    assert best["n"] == 5 and rows["loss"].min() < 1e-9
    row = pd.Series({"sharpness": 1.23456, "n_clusters": 31.0, "trial": 3})
    assert C.knob_values(row) == {"sharpness": 1.23, "n_clusters": 31}
    assert isinstance(C.knob_values(row)["n_clusters"], int)


def test_the_real_objective_on_a_tiny_preset():
    """Real training (BPR, LightGCN; protocol defaults) through the search's measurement."""
    preset = replace(TINY, n_users=200)
    with ProcessPoolExecutor(1, initializer=C._init_worker) as pool:
        ratios = C.measure_ratios(preset, "baby", ("bpr",), (999,), pool)
    assert ratios["lightgcn"] == 1.0 and 0 < ratios["bpr"] < 3
    target = pd.Series({"lightgcn": 1.0, "bpr": ratios["bpr"], "x": 1.0, "y": 1.2})
    # a score needs 3 models besides LightGCN: bpr plus two the measure does not have are skipped
    with pytest.raises(ValueError, match="at least 3"):
        C.fit_score(ratios.to_dict(), target.to_dict())


def test_gini():
    assert C.gini(np.ones(10)) == pytest.approx(0.0)
    assert C.gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)


def test_fitted_sizes_and_skew_hit_the_released_degrees():
    preset = C.preset_for("clothing", {"sharpness": 1.0, "cluster_spread": 1.5})
    got, real = C.preset_degrees(preset), C.real_degrees("clothing")
    assert C.degrees_close(got, real)
    assert got.per_user == pytest.approx(real.per_user, rel=0.05)
    assert got.per_item == pytest.approx(real.per_item, rel=0.05)
    assert got.item_gini == pytest.approx(real.item_gini, abs=0.03)
    assert got.user_gini == pytest.approx(real.user_gini, abs=0.03)


def test_knobs_that_cannot_keep_the_released_degrees_are_detected():
    """Very sharp choices among tight clusters: no popularity skew gives Baby's item Gini."""
    preset = C.preset_for("baby", {"sharpness": 3.0, "cluster_spread": 0.2})
    assert not C.degrees_close(C.preset_degrees(preset), C.real_degrees("baby"))


COMMITTED = read_calibrated_presets()


def test_the_calibrated_presets_are_committed_for_every_family():
    assert sorted(COMMITTED) == sorted(C.calibrated_name(f) for f in C.FAMILIES)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_each_calibrated_preset_keeps_its_released_datasets_degrees(name):
    family = name.split("-")[1]
    got, real = C.preset_degrees(COMMITTED[name]), C.real_degrees(family)
    assert got.per_user == pytest.approx(real.per_user, rel=0.05)
    assert got.per_item == pytest.approx(real.per_item, rel=0.05)
    assert got.item_gini == pytest.approx(real.item_gini, abs=0.03)
    assert got.user_gini == pytest.approx(real.user_gini, abs=0.03)


def test_the_committed_knobs_reproduce_the_committed_selection():
    """Each calibrated preset, measured as its selection measured it, gives the ratios of its
    committed ``selected`` row (to 0.01: a CPU with other vector units may round differently): 11
    baselines at their defaults with seeds 999 and 1 (the "quick" objective), or all 13 as the
    measure stage trains them (a "design" search's trial: ~2 min for the Clothing-like preset).
    The measure stage's fit of every family is the embedded grid's own overall experiment, checked
    by `nox -s reproduce`'s records, not here."""
    trials = pd.read_csv(C.REFERENCE / C.TRIALS_FILE)
    with ProcessPoolExecutor(2, initializer=C._init_worker) as pool:
        for family in C.FAMILIES:
            chosen = trials[(trials["family"] == family) & (trials["selected"] == True)]  # noqa: E712
            assert len(chosen) == 1, family
            row, preset = chosen.iloc[0], COMMITTED[C.calibrated_name(family)]
            knobs = C.knob_values(row)
            assert {k: getattr(preset, k) for k in knobs} == pytest.approx(knobs, abs=1e-3)
            if row.get("objective") == "design":
                models, ratios = C.BASELINES, C.measure_design_ratios(preset, family, pool)
            else:
                models = C.SEARCH_MODELS
                ratios = C.measure_ratios(preset, family, C.SEARCH_MODELS, C.SELECTION_SEEDS, pool)
            for model in models:
                assert ratios[model] == pytest.approx(row[f"ratio_{model}"], abs=0.01), (family, model)


def test_the_committed_fit_covers_every_baseline_before_and_after():
    fit = C.read_fit()
    assert set(fit["family"]) == set(C.FAMILIES)
    for family, part in fit.groupby("family"):
        assert set(part["model"]) == set(C.BASELINES) | {C.FOCAL_MODEL}
        assert part["after"].notna().all() and part["before"].notna().all()
        assert (part["after_seeds"] == 5).all()
        assert part.loc[part["model"] == "lightgcn", ["before", "after"]].to_numpy() == pytest.approx(1.0)
        published = C.published_ratios(family, tuple(part["model"]))
        assert part.set_index("model")["published"].to_numpy() == pytest.approx(published[part["model"]].to_numpy(),
                                                                              abs=1e-4)
    summary = C.fit_summary(fit)
    assert len(summary) == 2 * len(C.FAMILIES) and (summary["models"] == 12).all()


def test_a_malformed_presets_file_is_one_error_naming_it(tmp_path):
    path = tmp_path / CALIBRATED_FILE
    path.write_text("preset,n_users\nx,10\n")
    with pytest.raises(ConfigError, match=f"{CALIBRATED_FILE}: missing columns"):
        read_calibrated_presets(path)


def test_calibrate_command_rejects_bad_options(capsys):
    assert main(["calibrate", "search", "--trials", "0"]) == 2
    assert "--trials" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "search", "--knobs", "no_such_knob"])
    assert "no_such_knob" in capsys.readouterr().err


def test_a_search_records_its_knobs_rounded_and_its_seeds(monkeypatch):
    """The knobs and seeds a family's trials were searched with go into its rows (the command that
    reproduces them); the measure is stubbed: this is about the bookkeeping."""
    seen = []

    def fake_ratios(preset, family, models, seeds, pool):
        seen.append((preset.sharpness, preset.n_clusters, tuple(seeds)))
        return pd.Series({m: 1.0 + i * preset.sharpness / 10 for i, m in enumerate((C.REFERENCE_MODEL, *models))})

    monkeypatch.setattr(C, "measure_ratios", fake_ratios)
    monkeypatch.setattr(C, "preset_for", lambda family, knobs: replace(TINY, **knobs))
    monkeypatch.setattr(C, "degrees_close", lambda got, target: True)
    monkeypatch.setattr(C, "preset_degrees", lambda preset: None)
    rows = C.search("baby", 3, pool=None, seeds=(999, 1), knobs=["sharpness"])
    assert set(rows["search_knobs"]) == {"sharpness"} and set(rows["search_seeds"]) == {"999 1"}
    # measured and recorded as a committed preset keeps them (3 digits): what is selected is what was measured
    assert all(float(f"{v:.3g}") == v for v in rows["sharpness"]) and {s for s, _, _ in seen} == set(rows["sharpness"])
    assert "n_clusters" not in rows.columns and len({s for s, _, _ in seen}) == 3
    assert {n for _, n, _ in seen} == {TINY.n_clusters} and {s for _, _, s in seen} == {(999, 1)}


def test_a_local_space_stays_inside_the_search_space_around_its_centre():
    centre = {"sharpness": 1.0, "feature_decoy": 0.95, "n_clusters": 24, "latent_dim": 64}
    space = {k: C.SEARCH_SPACE[k] for k in centre}
    local = C.local_space(centre, 0.1, space)
    for knob, (low, high, log) in local.items():
        full_low, full_high, full_log = C.SEARCH_SPACE[knob]
        assert full_low <= low <= centre[knob] <= high <= full_high and log == full_log, knob
    assert local["feature_decoy"] == pytest.approx((0.85, 1.0, False))  # linear, cut at the bound
    assert local["sharpness"][0] == pytest.approx((0.3 / 2.5) ** 0.1)  # log: 0.1 of the log range each way
    assert isinstance(local["n_clusters"][0], int) and isinstance(local["n_clusters"][1], int)
    assert local["latent_dim"][1] == 64


@pytest.mark.parametrize("family", C.FAMILIES)
def test_the_committed_knobs_exactly_give_back_each_committed_preset(family):
    """A local search starts from these: the first trial must be the committed data, not a rounding
    of it (``modality_coverage`` 2/3 to 3 digits would be another draw)."""
    assert C.preset_for(family, C.committed_knobs(family)) == COMMITTED[C.calibrated_name(family)]


def test_the_design_objective_is_the_measure_of_the_committed_fit():
    """measure_design_ratios trains as the measure stage's grid does (reduced tuning on seed 999,
    validation choice, the profile's 5 seeds): BPR on the Clothing-like preset gives the committed
    fit's ratio (written to 6 decimals)."""
    fit = C.read_fit().set_index(["family", "model"])
    with ProcessPoolExecutor(2, initializer=C._init_worker) as pool:
        ratios = C.measure_design_ratios(COMMITTED[C.calibrated_name("clothing")], "clothing", pool, models=("bpr",))
    assert set(ratios.index) == {"bpr", "lightgcn"} and ratios["lightgcn"] == 1.0
    assert ratios["bpr"] == pytest.approx(fit.loc[("clothing", "bpr"), "after"], abs=1e-6)


def test_a_local_design_search_starts_from_the_committed_preset_and_selects_as_measured(monkeypatch):
    """The committed knobs are the first trial, exactly; later trials are rounded as presets keep
    them; selection takes the best design trial as measured, without measuring again (the measure
    is stubbed: this is about the bookkeeping)."""
    measured = []

    def fake_design(preset, family, pool, models=C.BASELINES):
        measured.append(preset)
        others = [m for m in models if m != C.REFERENCE_MODEL]
        return pd.Series({C.REFERENCE_MODEL: 1.0, **{m: 1.0 + i * preset.sharpness / 20 for i, m in enumerate(others)}})

    monkeypatch.setattr(C, "measure_design_ratios", fake_design)
    monkeypatch.setattr(C, "preset_for", lambda family, knobs: replace(TINY, **knobs))
    monkeypatch.setattr(C, "degrees_close", lambda got, target: True)
    monkeypatch.setattr(C, "preset_degrees", lambda preset: None)
    rows = C.search("clothing", 4, pool=None, objective="design", local=0.2)
    start = C.committed_knobs("clothing")
    assert {k: rows.iloc[0][k] for k in start} == start and measured[0].modality_coverage == start["modality_coverage"]
    assert set(rows["objective"]) == {"design"} and set(rows["search_radius"]) == {0.2}
    assert set(rows["search_seeds"]) == {" ".join(map(str, C.design_seeds()))}
    n = len(measured)
    preset, frame = C.select("clothing", rows, pool=None)
    assert len(measured) == n and len(frame) == 1 and bool(frame["selected"].iloc[0])
    best = rows.loc[rows["loss"].idxmin()]
    assert frame["loss"].iloc[0] == best["loss"] and frame["trial"].iloc[0] == f"candidate {best['trial']}"
    assert preset.sharpness == best["sharpness"]
    with pytest.raises(ConfigError, match="objective"):
        C.search("clothing", 1, pool=None, objective="nope")


def test_calibrate_command_rejects_a_bad_local_radius(capsys):
    assert main(["calibrate", "search", "--local", "0"]) == 2
    assert "--local" in capsys.readouterr().err


def _direct_recall(data, scores: np.ndarray) -> float:
    """Test Recall@20 by plain numpy: per test user, training items out, the 20 best scores
    (stable order: ties to the lower id), hits over test items."""
    train, test = data.splits["train"], data.splits["test"]
    recalls = []
    for user in np.unique(test[:, 0]):
        row = scores[user].astype(np.float64).copy()
        row[train[train[:, 0] == user, 1]] = -np.inf
        top = np.argsort(-row, kind="stable")[:20]
        held = test[test[:, 0] == user, 1]
        recalls.append(np.isin(held, top).sum() / len(held))
    return float(np.mean(recalls))


def test_mostpop_and_the_oracle_are_what_a_direct_computation_gives():
    """rule_recalls through the evaluator equals plain numpy on the same generated data: MostPop
    from training counts (ties to the lower id), the oracle from the generator's own logits."""
    from lgmrec.synthetic import generate, generate_with_truth

    preset = replace(TINY, n_users=200)
    data, truth = generate_with_truth(preset, name="tiny")
    assert data.splits["train"].tolist() == generate(preset, name="tiny").splits["train"].tolist()
    counts = np.bincount(data.splits["train"][:, 1], minlength=data.n_items).astype(float)
    oracle = truth.users @ truth.items.T + truth.log_popularity
    rules = C.rule_recalls(data, truth)
    assert rules["mostpop"] == pytest.approx(_direct_recall(data, np.tile(counts, (data.n_users, 1))), abs=1e-12)
    assert rules["oracle"] == pytest.approx(_direct_recall(data, oracle), abs=1e-12)
    assert 0 < rules["mostpop"] < rules["oracle"] <= 1
    degrees = np.bincount(np.concatenate(list(data.splits.values()))[:, 1])
    assert C.top_share(data) == pytest.approx(np.sort(degrees)[-20:].sum() / degrees.sum())
    assert C.top_share(data, k=data.n_items) == 1.0
