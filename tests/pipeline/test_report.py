"""lgmrec.report's building blocks: full tables with CSV downloads, number formats, the Runs
appendix tables and the downloadable run tables, how runs ended."""

from __future__ import annotations

import pandas as pd
import pytest

from lgmrec.grids import ABLATIONS, PROFILES, point_label
from lgmrec.report import BookContext, Table, overall_tables, runs_tables, tidy_runs
from lgmrec.report.display import fmt_ci, fmt_num, fmt_p, fmt_short, fmt_value, integer_columns
from lgmrec.report.methods import ended_by, stopping_frame
from lgmrec.report.runs import sparkline
from lgmrec.stats import mean_std


@pytest.fixture(scope="module")
def ctx(smoke_results):
    return BookContext.create("smoke", str(smoke_results.root))


def test_formats():
    assert fmt_value(64) == "64" and fmt_value(0.5) == "0.5" and fmt_value(1e-05) == "1e-05"
    assert fmt_value(("image",)) == "image" and fmt_value(None) == "–" and fmt_value(True) == "True"
    assert fmt_p(0.0625) == "0.062" and fmt_p(3.2e-7) == "3.2e−07"
    assert fmt_ci(-0.01, 0.02) == "[−0.0100,\u00a0+0.0200]"
    frame = integer_columns(pd.DataFrame({"hyper_num": [64.0, 2.0, None], "alpha": [0.5, 1.0, 0.0]}))
    assert str(frame["hyper_num"].dtype) == "Int64" and frame["alpha"].dtype == float


def test_a_value_that_rounds_to_zero_prints_without_a_sign():
    # the Efficiency table's "MB above start" of a run that ended below its start read "-0"
    assert fmt_short(-0.3, 0) == "0" and fmt_short(-0.0, 0) == "0" and fmt_short(-0.04, 1) == "0"
    assert fmt_num(-0.00001, 4) == "0.0000" and fmt_num(-0.0, 2) == "0.00"
    assert fmt_short(-0.6, 0) == "-1" and fmt_short(0.125, 3) == "0.125" and fmt_short(13.50, 1) == "13.5"
    assert fmt_short(1024.0, 0) == "1024" and fmt_short(2.0, 3) == "2" and fmt_short(None) == "–"


def test_a_table_shows_every_row_and_writes_its_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("LGMREC_BOOK_DOWNLOADS", str(tmp_path))
    frame = pd.DataFrame({"value": range(200), "hyper_num": [64.0] * 200}, index=[f"row {i}" for i in range(200)])
    html = Table(frame, "long table", caption="c").html()
    assert html.count("<th>row ") == 200 and "row 199" in html and "..." not in html
    assert "lgmrec-scroll" in html and 'data-table="long-table"' in html and 'data-rows="200"' in html
    assert ">64<" in html and "64.0" not in html
    written = pd.read_csv(tmp_path / "long-table.csv", dtype=str)
    assert len(written) == 200 and set(written["hyper_num"]) == {"64"}


def test_overall_tables_hold_the_means_over_seeds(ctx):
    runs = ctx.runs("overall")
    expected = mean_std(runs, ["dataset", "variant"], ["recall@20"]).set_index(["dataset", "variant"])
    for table in overall_tables(ctx):
        dataset = table.name.removeprefix("overall-")
        for variant, cell in table.frame["Recall@20"].items():
            mean, sd = (float(x) for x in cell.replace("\u00a0", " ").split("±"))
            assert mean == pytest.approx(expected.loc[(dataset, variant), "recall@20 mean"], abs=5e-5)
            assert sd == pytest.approx(expected.loc[(dataset, variant), "recall@20 std"], abs=5e-5)


def test_runs_tables_list_every_planned_variant_with_its_curve(ctx):
    tables = {t.name: t for t in runs_tables(ctx, "smoke-baby")}
    assert set(tables) == {f"runs-smoke-baby-{e}" for e in ("tuning", "overall", "ablation", "sensitivity",
                                                                        "error_rates")}
    ablation = tables["runs-smoke-baby-ablation"].frame
    assert list(ablation.index) == list(ABLATIONS)  # in the design's order
    tuning = tables["runs-smoke-baby-tuning"].frame
    profile = PROFILES["smoke"]
    assert list(tuning["variant"]) == [point_label(p) for m in ("bpr", "lightgcn") for p in profile.tuning_points(m)]
    overall = tables["runs-smoke-baby-overall"].frame
    assert (overall["seeds"] == "999, 1").all() and (overall["status"] == "ok 2").all()
    assert all(cell.count("<polyline") == 2 for cell in overall["validation R@20 per epoch"])
    assert all(cell == "not executed" for cell in overall["notebook"])  # the in-process grid keeps no notebooks


def test_sparkline_draws_one_line_per_seed_and_marks_the_best_epochs():
    svg = sparkline([([1, 2, 3], [0.1, 0.2, 0.15], 2), ([1, 2], [0.05, 0.07], 2)])
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and svg.count("<circle") == 2
    assert sparkline([([], [], None)]) == "–"


def test_tidy_runs_hold_every_run_with_its_hyperparameters(ctx):
    table = tidy_runs(ctx, "sensitivity")
    smoke = PROFILES["smoke"]
    seeds = smoke.sensitivity_seeds or smoke.seeds
    assert len(table) == sum(len(v) for v in smoke.sensitivity.values()) * len(seeds)
    assert set(table.loc[table["parameter"] == "hyper_num", "value"]) == {"2", "8"}
    assert set(table.loc[table["parameter"] == "alpha", "value"]) == {"0.0", "0.6"}
    assert {"config_hash", "seed", "variant", "param: alpha", "train: max_epochs", "recall@20"} <= set(table.columns)
    overall = tidy_runs(ctx, "overall")
    assert len(overall) == 2 * 3 * 2 and overall["config_hash"].str.len().eq(64).all()


def test_how_runs_ended():
    assert ended_by(epochs_run=30, best_epoch=30, max_epochs=30, patience=10) == "epoch cap"
    assert ended_by(epochs_run=30, best_epoch=25, max_epochs=30, patience=10) == "epoch cap"
    assert ended_by(epochs_run=30, best_epoch=19, max_epochs=30, patience=10) == "early stopping"  # 11 stale
    assert ended_by(epochs_run=21, best_epoch=10, max_epochs=30, patience=10) == "early stopping"


def test_stopping_frame_counts_every_run_of_every_experiment(ctx):
    frame = stopping_frame(ctx)
    assert set(frame["experiment"]) == {"tuning", "overall", "ablation", "sensitivity", "error_rates"}
    assert (frame["ended by"] == "epoch cap").all()  # the smoke profile's 3 epochs and patience 3


# ---------------------------------------------------------------------------- a fake real-data store

import numpy as np  # noqa: E402

from lgmrec.collect import planned_specs  # noqa: E402
from lgmrec.grids import PUBLISHED_VARIANT, Profile, plan  # noqa: E402
from lgmrec.report import compute_claims, optimism_tables, overall_tables, replication_tables, reported_tables  # noqa: E402
from lgmrec.resolve import resolve_run  # noqa: E402
from lgmrec.results import ResultStore, RunKey, config_hash  # noqa: E402
from lgmrec import literature, stats  # noqa: E402

#: the paper's LGMRec row on Baby (lgmrec/reference/reported.csv, paper-table2)
PAPER_BABY = {"recall@10": 0.0644, "recall@20": 0.1002, "ndcg@10": 0.0349, "ndcg@20": 0.0440}


def fake_real_store(root, scale: dict[str, float]) -> tuple[Profile, ResultStore]:
    """Records as a real-data profile with MMRec's test-chosen point replicated and the
    as-published LGMRec row would write them, without training: the configurations are resolved
    as the grid resolves them, the metrics are made up (per model: ``scale`` x the paper's row)."""
    profile = Profile(name="fake-real", description="made-up records on the Baby name", data="real",
                      datasets=("baby",), seeds=(999, 1, 2), models=("bpr", "lightgcn", "lgmrec"),
                      experiments=("tuning", "overall"), tuning="reduced", replicate_test_choice=True,
                      published_lgmrec_row=True)
    store = ResultStore(root)
    users = 400
    rng = np.random.default_rng(0)
    difficulty = rng.beta(0.6, 2.0, users)

    def write(spec):
        resolved = resolve_run(spec.model, spec.dataset, spec.overrides_dict, profile.train)
        digest = config_hash(spec.dataset, "fake", spec.model, resolved.model_params, resolved.train)
        key = RunKey(profile.name, spec.dataset, spec.model, digest, spec.seed)
        if store.has_run(key):
            return
        r = np.random.default_rng(abs(hash((spec.variant, spec.seed, spec.model))) % 2 ** 32)
        factor = scale[spec.variant if spec.variant in scale else spec.model] * (1 + r.normal(0, 0.005))
        if spec.experiment == "tuning" and not spec.variant.startswith("test-chosen"):
            factor *= 1 + 0.05 * r.random()  # the points differ
        per_user = pd.DataFrame({"user": np.arange(users), "n_train": (3 + 10 * difficulty).astype("int32")})
        for metric, value in PAPER_BABY.items():
            per_user[metric] = value * factor * difficulty / difficulty.mean()
        test = {m: float(per_user[m].mean()) for m in PAPER_BABY}
        record = {"config": {"dataset": spec.dataset, "model": spec.model, "model_params": resolved.model_params,
                             "train": resolved.train, "preset": resolved.preset},
                  "status": "ok", "data_kind": "real", "dataset_source": "fake", "test": test,
                  # validation disagrees with test on the grid (the lower test score validates better):
                  # the two rules choose different points
                  "valid": {m: 0.2 - v for m, v in test.items()}, "best_epoch": 5,
                  "epochs_run": 26, "history": [{"epoch": e, "loss": 1.0, "recall@20": 0.1} for e in range(1, 27)],
                  "experiment": spec.experiment, "variant": spec.variant}
        store.write_run(key, record, per_user)

    for spec in plan(profile):
        write(spec)
    for spec in planned_specs(profile, None, store.load(profile.name)):
        write(spec)
    return profile, store


@pytest.fixture(scope="module")
def real_ctx(tmp_path_factory):
    scale = {"bpr": 0.6, "lightgcn": 0.75, "LGMRec": 0.90, PUBLISHED_VARIANT: 1.0}
    profile, store = fake_real_store(tmp_path_factory.mktemp("fake-real"), scale)
    return BookContext(profile, store)


def test_the_overall_table_shows_both_lgmrec_rows(real_ctx):
    table = overall_tables(real_ctx)[0]
    assert list(table.frame.index) == ["BPR", "LightGCN", "LGMRec", PUBLISHED_VARIANT]


def test_the_paper_row_is_compared_with_the_as_published_row_on_real_data(real_ctx):
    table = reported_tables(real_ctx)[0].data
    paper = table[table["source id"] == "paper-table2"]
    assert set(paper["model"]) == {PUBLISHED_VARIANT}  # not the fixed LGMRec
    fixed = table[table["model"] == "LGMRec"]
    assert set(fixed["source id"]) == {"author-rerun-after-fix"}
    row = paper[paper["metric"] == "Recall@20"].iloc[0]
    assert abs(row["delta %"]) < 2  # scale 1.0: the made-up runs sit on the paper's numbers
    bpr = table[table["model"] == "BPR"]
    assert set(bpr["source id"]) == {"mmrec-evaluation-readme", "published-record"} and bpr["delta %"].notna().all()
    # the published record's row: the median of BPR's independent Baby values, with the sources behind it
    record = bpr[(bpr["source id"] == "published-record") & (bpr["metric"] == "Recall@20")].iloc[0]
    found = literature.published("baby", "BPR", "recall@20")
    assert record["reported"] == found.value and record["sources behind it"].startswith(f"{found.n_sources} sources")
    readme = bpr[(bpr["source id"] == "mmrec-evaluation-readme") & (bpr["metric"] == "Recall@20")].iloc[0]
    printers = literature.lineage().query("family == 'baby' and model == 'BPR'")
    assert readme["sources behind it"].startswith(f"{int((printers['recall@20'] == readme['reported']).sum())} sources")


def test_c5_is_tested_on_real_data_with_the_as_published_row(real_ctx):
    result = next(r for r in compute_claims(real_ctx) if r.claim == "C5")
    assert result.verdict == stats.SUPPORTED
    assert set(result.details["variant"]) == {PUBLISHED_VARIANT} and (result.details["seeds"] == 3).all()


def test_c5_is_contradicted_when_the_numbers_are_off(tmp_path):
    scale = {"bpr": 0.6, "lightgcn": 0.75, "LGMRec": 0.90, PUBLISHED_VARIANT: 0.8}
    profile, store = fake_real_store(tmp_path, scale)
    result = next(r for r in compute_claims(BookContext(profile, store)) if r.claim == "C5")
    assert result.verdict == stats.CONTRADICTED


def test_tuning_optimism_across_users_and_fresh_seeds(real_ctx):
    optimism = optimism_tables(real_ctx)[0]
    assert set(optimism.frame.index.get_level_values(0)) == {"BPR", "LightGCN"}
    frame = optimism.data
    differing = frame[~frame["same point"]]
    assert len(differing) and (differing["tuning seed: difference"] > 0).all()  # test-chosen is the test maximum
    replicated = replication_tables(real_ctx)
    tables = [t for t in replicated if hasattr(t, "frame")]
    assert tables and (tables[0].data["fresh seeds: seeds"] == 2).all()  # the seeds other than 999


def test_c5_places_the_reproduced_mean_in_the_published_range(real_ctx):
    result = next(r for r in compute_claims(real_ctx) if r.claim == "C5")
    runs = real_ctx.runs("overall").query("variant == @PUBLISHED_VARIANT")
    mean = runs["recall@20"].mean()
    record = literature.model_record("baby")
    where = "below" if mean < record.low else "above" if mean > record.high else "inside"
    assert f"reproduced Recall@20 {mean:.4f} [" in result.effect
    assert f"is {where} the published range {record.low:.4f}–{record.high:.4f}" in result.effect
    assert f"{record.n_independent} independent values" in result.effect and "post-fix rerun 0.0992" in result.effect


# ---------------------------------------------------------------------------- the published record chapter


def _registry_values(family: str, model: str | None = None) -> set[str]:
    registry = literature.read_registry()
    rows = registry[(registry["family"] == family) & ((registry["model"] == model) if model else True)]
    return {f"{v:.4f}" for v in rows["value"]}


def test_every_number_of_the_published_record_chapter_traces_to_a_registry_row():
    import re

    from lgmrec.report import published

    registry = literature.read_registry()
    for family in published.FAMILIES:
        # each distinct value is printed, in the registry, by every source the chapter names for it
        frame = published.values_frame(family)
        for _, row in frame.iterrows():
            for source in row["source ids"].split():
                printed = registry.query("family == @family and model == @row.model and metric == @row.metric "
                                         "and source_id == @source")["value"]
                assert list(printed.round(6)) == [round(row["value"], 6)], (family, row["model"], source)
    tables = published.values_tables() + published.lineage_tables() + [published.flags_table()]
    for table in tables:
        family = next(f for f in published.FAMILIES if f in table.name or f in table.frame.to_string())
        shown = set(re.findall(r"\b0\.\d{4}\b", table.frame.to_string()))
        assert shown and shown <= _registry_values(family), (table.name, shown - _registry_values(family))
    # the margin: the paper's number is its registry row, the baseline's value the median of the distinct
    # registry values printed by the sources the table names, and the margin their ratio
    for _, row in published.margin_frame().iterrows():
        family, label = row["dataset"], row["strongest baseline"]
        paper = registry.query("family == @family and source_id == 'lgmrec-paper-2023' and metric == 'recall@20'")
        assert row["LGMRec (paper)"] == paper["value"].item()
        found = literature.published(family, label, "recall@20")
        values = registry.query("family == @family and model == @label and metric == 'recall@20' "
                                "and source_id in @found.sources")["value"].round(6).unique()
        assert row["baseline published value"] == pytest.approx(float(np.median(values)))
        assert row["claimed margin"] == pytest.approx(row["LGMRec (paper)"] / row["baseline published value"] - 1)
    # and the table shows those numbers, not dashes
    shown = published.margin_tables()[0].frame
    for _, row in published.margin_frame().iterrows():
        cells = shown.loc[row["dataset"]]
        assert cells["LGMRec (paper)"] == f"{row['LGMRec (paper)']:.4f}"
        assert cells["its published value"] == f"{row['baseline published value']:.4f}"
        assert cells["strongest published baseline"] == row["strongest baseline"]


def test_the_margin_is_compared_with_the_noise_floor_in_words():
    from lgmrec.report import published

    frame = published.margin_frame()
    for _, row in frame.iterrows():
        sentence = published.margin_sentence(row)
        if row["claimed margin"] <= 0:
            assert "not above the strongest published baseline" in sentence
        elif row["claimed margin"] <= row["noise floor (median)"]:
            assert "does not exceed what independent runs of one model differ by" in sentence
        else:
            assert "exceeds" in sentence


def test_c5_carries_the_record_on_synthetic_data():
    from lgmrec.report.published import lgmrec_record_text

    text = lgmrec_record_text("sports")
    record = literature.model_record("sports")
    assert f"{record.low:.4f}–{record.high:.4f} in {record.n_sources} sources" in text
    assert "post-fix rerun 0.1085" in text and "paper 0.1068" in text
