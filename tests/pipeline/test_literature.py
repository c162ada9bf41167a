"""The published record: lineage, transcription flags, published values and the noise floor on a
small registry whose answers are known by construction; validation of the bundled registry."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lgmrec import literature
from lgmrec.errors import DataError

SOURCES = """order,source_id,label,published,date_basis
1,first,First,2023-01,test
2,second,Second,2023-06,test
3,blocky,Blocky,2024-01,test
4,third,Third,2025-01,test
5,lgmrec-paper-2023,Paper,2025-06,test
"""

# (source, dataset, model, recall@20, ndcg@20, read_from, verified)
CELLS = [
    # M1 on Baby: second and third copy first's pair; blocky prints another pair (an independent run)
    ("first", "Baby", "M1", "0.1000", "0.0500", "text", "yes"),
    ("second", "Baby", "M1", "0.1000", "0.0500", "image", "no"),
    ("blocky", "Baby", "M1", "0.1100", "0.0500", "image", "no"),
    ("third", "Baby", "M1", "0.1000", "0.0500", "secondary", "no"),
    # M2 on Baby: the same Recall@20 with another NDCG@20 is not a copy
    ("first", "Baby", "M2", "0.2000", "0.0800", "text", "yes"),
    ("second", "Baby", "M2", "0.2000", "0.0810", "image", "no"),
    ("blocky", "Baby", "M2", "0.2000", "0.0800", "image", "no"),
    # M3 only from blocky on Baby, and from a secondary source
    ("blocky", "Baby", "M3", "0.3000", "0.1200", "image", "no"),
    ("third", "Baby", "M3", "0.3300", "0.1300", "secondary", "no"),
    # blocky's Clothing cells repeat its Baby cells for M1-M3 (the transcription block)
    ("blocky", "Clothing", "M1", "0.1100", "0.0500", "image", "no"),
    ("blocky", "Clothing", "M2", "0.2000", "0.0800", "image", "no"),
    ("blocky", "Clothing", "M3", "0.3000", "0.1200", "image", "no"),
    ("first", "Clothing", "M1", "0.0700", "0.0300", "text", "yes"),
    ("first", "Clothing", "M2", "0.1500", "0.0600", "text", "yes"),
    # the paper's LGMRec row
    ("lgmrec-paper-2023", "Baby", "LGMRec", "0.2100", "0.0900", "text", "no"),
]


def write_registry(folder, cells=CELLS, sources=SOURCES):
    rows = []
    for source, dataset, model, recall, ndcg, read_from, verified in cells:
        for metric, value in (("recall@20", recall), ("ndcg@20", ndcg)):
            rows.append({"source_id": source, "source": f"document {source}", "location": "Table 1",
                         "model": model, "dataset": dataset, "metric": metric, "value": value,
                         "read_from": read_from, "note": "", "verified": verified,
                         "verified_how": "opened it" if verified == "yes" else ""})
    registry, sources_file = folder / "literature.csv", folder / "sources.csv"
    pd.DataFrame(rows).to_csv(registry, index=False)
    sources_file.write_text(sources)
    return registry, sources_file


@pytest.fixture
def registry(tmp_path):
    return literature.read_registry(*write_registry(tmp_path))


def cell(table, family, model, source):
    found = table[(table["family"] == family) & (table["model"] == model) & (table["source_id"] == source)]
    assert len(found) == 1
    return found.iloc[0]


def test_lineage_copies_point_to_the_earliest_source_with_the_same_pair(registry):
    table = literature.lineage(registry)
    assert cell(table, "baby", "M1", "first")["copy_of"] == ""
    assert cell(table, "baby", "M1", "second")["copy_of"] == "first"
    assert cell(table, "baby", "M1", "third")["copy_of"] == "first"  # not "second": the earliest
    assert cell(table, "baby", "M1", "blocky")["independent"]
    assert cell(table, "baby", "M2", "second")["independent"]  # same recall, other NDCG
    assert cell(table, "baby", "M2", "blocky")["copy_of"] == "first"
    assert table["independent"].sum() == len(table) - 3  # the three copies above


def test_transcription_block_is_flagged_on_the_uncorroborated_side(registry):
    flags = literature.transcription_flags(registry)
    assert set(zip(flags["family"], flags["model"], flags["source_id"])) == {
        ("clothing", "M1", "blocky"), ("clothing", "M2", "blocky"), ("clothing", "M3", "blocky")}
    assert set(flags["repeats"]) == {"baby"} and set(flags["block"]) == {3}
    # a block of 4 is not reached with 3 identical models
    assert literature.transcription_flags(registry, block=4).empty
    assert literature.lineage(registry)["flagged"].sum() == 3


def test_transcription_block_without_corroboration_flags_both_sides(tmp_path):
    cells = [c for c in CELLS if c[0] == "blocky"]
    flags = literature.transcription_flags(literature.read_registry(*write_registry(tmp_path, cells)))
    assert sorted(set(flags["family"])) == ["baby", "clothing"] and len(flags) == 6


def test_published_value_prefers_verified_independent_values(registry):
    # M1 Baby: independent values 0.10 (first, verified) and 0.11 (blocky): verified first
    found = literature.published("baby", "M1", "recall@20", registry)
    assert found.value == pytest.approx(0.10) and found.verified and found.n_values == 1
    assert found.sources == ("first", "second", "third")  # every source printing 0.10
    # M3 Baby: blocky (unverified image) counts, the secondary 0.33 does not
    assert literature.published_value("baby", "M3", "recall@20", registry) == pytest.approx(0.30)
    # M3 Clothing: the only cell is flagged
    assert literature.published_value("clothing", "M3", "recall@20", registry) is None
    # M2 Baby NDCG: first (verified) 0.080, second 0.081: verified only
    assert literature.published_value("baby", "M2", "ndcg@20", registry) == pytest.approx(0.080)


def test_median_of_unverified_independent_values(tmp_path):
    cells = [(s, d, m, r, n, rf, "no") for s, d, m, r, n, rf, _ in CELLS]
    registry = literature.read_registry(*write_registry(tmp_path, cells))
    assert literature.published_value("baby", "M1", "recall@20", registry) == pytest.approx(0.105)


def test_noise_floor_is_the_relative_range_of_independent_values(registry):
    floor = literature.noise_floor("baby", "recall@20", registry)
    # M1: 0.10 and 0.11 (the secondary copy adds nothing); M2: one recall value; M3: one non-secondary
    assert floor.n_models == 1
    assert floor.median == pytest.approx(0.01 / 0.105) and floor.max == pytest.approx(0.01 / 0.105)
    assert math.isnan(literature.noise_floor("clothing", "recall@20", registry).median)


def test_claimed_margin_and_strongest_baseline(registry):
    assert literature.strongest_published_baseline("baby", registry=registry) == "m3"  # 0.30 > 0.20 > 0.10
    assert literature.claimed_margin("baby", "m2", registry=registry) == pytest.approx(0.21 / 0.20 - 1)
    assert literature.claimed_margin("clothing", "m2", registry=registry) is None  # no paper number
    assert literature.claimed_margin("baby", "nosuch", registry=registry) is None


def test_model_record_counts_every_source(registry):
    record = literature.model_record("baby", "M1", "recall@20", registry)
    assert (record.low, record.high) == (0.10, 0.11)
    assert record.n_sources == 4 and record.n_values == 2 and record.n_independent == 2
    assert record.n_others == 2 and record.n_others_secondary == 0  # none of the fixture's sources is an author
    # M3: blocky's 0.30 and the secondary third's 0.33, both independent
    record = literature.model_record("baby", "M3", "recall@20", registry)
    assert (record.n_independent, record.n_others, record.n_others_secondary) == (2, 2, 1)


@pytest.mark.parametrize("change, message", [
    (("metric", "recall@10"), "row 2: metric 'recall@10'"),
    (("value", "0,1"), "row 2: value '0,1' is not a number"),
    (("source_id", "nowhere"), "row 2: source_id 'nowhere'"),
    (("verified_how", ""), "row 2: verified yes without verified_how"),
])
def test_a_bad_row_names_the_file_and_the_row(tmp_path, change, message):
    path, sources = write_registry(tmp_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[0, change[0]] = change[1]
    table.to_csv(path, index=False)
    with pytest.raises(DataError) as error:
        literature.read_registry(path, sources)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_bundled_registry_reads_and_matches_the_hand_reading():
    registry = literature.read_registry()
    assert len(registry) == 526 and set(registry["family"]) == {"baby", "sports", "clothing"}
    # every verified row says what was opened
    assert (registry.loc[registry["verified"] == "yes", "verified_how"] != "").all()
    table = literature.lineage()
    # the MMRec leaderboard's Baby/Sports baselines are copied digit for digit by MGCN, MENTOR, GUME, PGL,
    # COHESION and DANCE (where they print the model)
    copies = table[(table["copy_of"] == "mmrec-readme-leaderboard")]
    assert {"mgcn-2023", "mentor-2024", "gume-2024", "pgl-2025", "cohesion-2025", "dance-2025"} <= set(copies["source_id"])
    # the one transcription block: GUME's Clothing VBPR, MMGCN, SLMRec repeat its Baby rows
    flags = literature.transcription_flags()
    assert set(zip(flags["source_id"], flags["family"], flags["model"])) == {
        ("gume-2024", "clothing", "VBPR"), ("gume-2024", "clothing", "MMGCN"), ("gume-2024", "clothing", "SLMRec")}
    # LGMRec Recall@20 ranges of the reading
    for family, low, high in (("baby", 0.0989, 0.1002), ("sports", 0.1067, 0.1091), ("clothing", 0.0825, 0.0830)):
        record = literature.model_record(family)
        assert (record.low, record.high) == (low, high)
    assert literature.rerun_value("sports") == 0.1085
    # independent LGMRec values from other groups than the authors: COHESION and MSCA (secondary) on Baby
    # and Sports, none on Clothing (every other source copies the paper there)
    assert [(literature.model_record(f).n_others, literature.model_record(f).n_others_secondary)
            for f in ("baby", "sports", "clothing")] == [(2, 1), (2, 1), (0, 0)]
