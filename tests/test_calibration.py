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
    """Each calibrated preset, measured as the selection measured it (11 baselines at their
    defaults, seeds 999 and 1, one torch thread per run), gives the ratios of its committed
    ``selected`` row (to 0.01: a CPU with other vector units may round differently). The measure
    stage's fit (all 13, reduced tuning, 5 seeds) is the embedded grid's own overall experiment:
    ~25 min, so checked by `nox -s reproduce`'s records, not here."""
    trials = pd.read_csv(C.REFERENCE / C.TRIALS_FILE)
    with ProcessPoolExecutor(2, initializer=C._init_worker) as pool:
        for family in C.FAMILIES:
            chosen = trials[(trials["family"] == family) & (trials["selected"] == True)]  # noqa: E712
            assert len(chosen) == 1, family
            preset = COMMITTED[C.calibrated_name(family)]
            knobs = C.knob_values(chosen.iloc[0])
            assert {k: getattr(preset, k) for k in knobs} == pytest.approx(knobs)
            ratios = C.measure_ratios(preset, family, C.SEARCH_MODELS, C.SELECTION_SEEDS, pool)
            for model in C.SEARCH_MODELS:
                assert ratios[model] == pytest.approx(chosen.iloc[0][f"ratio_{model}"], abs=0.01), (family, model)


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
