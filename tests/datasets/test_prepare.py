"""Rebuilding a dataset from raw Amazon 2014 files, on tiny fixtures written in the original formats."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from lgmrec.cli import main
from lgmrec.data import load_dataset
from lgmrec.datasets import prepare as prep
from lgmrec.datasets.prepare import (
    IMAGE_DIM,
    five_core,
    item_sentence,
    minilm_encoder,
    prepare_dataset,
    read_ratings,
)
from lgmrec.errors import DataError

# Core: 10 users, user k rates items 0..n_k-1, so every item keeps >= 5 raters.
CORE_COUNTS = [25, 25, 25, 25, 25, 15, 12, 10, 9, 6]
N_CORE_ITEMS = max(CORE_COUNTS)
USERS = [f"A{k:02d}USER" for k in range(len(CORE_COUNTS))]
ITEMS = [f"B{j:09d}" for j in range(N_CORE_ITEMS)]
Q, R = "B900000000", "B900000001"  # items removed in the 1st and (by cascade) 3rd round
X, Y = "AXUSER", "AYUSER"  # users removed in the 1st and (by cascade) 2nd round
NO_IMAGE = {3, 7}  # core items absent from the image binary
NO_META = {5}  # core item absent from the metadata


def _raw_ratings() -> list[tuple[str, str, float, int]]:
    rows = [(USERS[k], ITEMS[j], float(1 + (j + k) % 5), 1_300_000_000 + 1000 * k + j)
            for k, n in enumerate(CORE_COUNTS) for j in range(n)]
    rows += [(X, ITEMS[j], 5.0, 1_400_000_000 + j) for j in range(4)]  # X has only 4
    rows += [(USERS[k], Q, 3.0, 1_410_000_000 + k) for k in (6, 7, 8)]  # Q: 3 + Y = 4
    rows += [(Y, it, 4.0, 1_420_000_000 + i) for i, it in enumerate([ITEMS[0], ITEMS[1], ITEMS[2], Q, R])]
    rows += [(USERS[k], R, 2.0, 1_430_000_000 + k) for k in (6, 7, 8, 9)]  # R: 4 + Y
    return rows


def _image_vector(asin: str) -> np.ndarray:
    seed = int(hashlib.sha256(asin.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).random(IMAGE_DIM, dtype=np.float32)


def _meta_record(j: int) -> dict:
    return {
        "asin": ITEMS[j], "title": f"Title {j}", "brand": f"Brand{j % 3}", "price": 9.99,
        "categories": [["Baby", f"Strollers {j}"], ["Other path"]],
        "description": f"Description of item {j}\nsecond line",
        "related": {"also_bought": [ITEMS[(j + 1) % N_CORE_ITEMS]]},
    }


def write_raw(folder, shuffle_seed: int = 5, gzip_meta: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    rows = _raw_ratings()
    order = np.random.default_rng(shuffle_seed).permutation(len(rows))
    rows = [rows[i] for i in order]
    rows.append(rows[0])  # an exact duplicate row, dropped before filtering
    ratings = folder / "ratings_Baby.csv"
    ratings.write_text("".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))

    lines = []
    for j in range(N_CORE_ITEMS):
        if j in NO_META:
            continue
        record = _meta_record(j)
        if j == 2:  # one strict JSON line (true/null are not Python literals)
            record.update({"in_stock": True, "brand": None})
            lines.append(json.dumps(record))
        else:
            lines.append(repr(record))  # the 2014 dump: Python dict literals
    lines.insert(4, repr({"asin": Q, "title": "filtered out"}))
    lines.insert(1, repr({"asin": "B999999999", "title": "never rated"}))
    text = "\n".join(lines) + "\n"
    meta = folder / ("meta_Baby.json.gz" if gzip_meta else "meta_Baby.json")
    if gzip_meta:
        with gzip.open(meta, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        meta.write_text(text)

    asins = [a for j, a in enumerate(ITEMS) if j not in NO_IMAGE] + [Q, "B999999999"]
    asins = [asins[i] for i in np.random.default_rng(1).permutation(len(asins))]
    images = folder / "image_features_Baby.b"
    with images.open("wb") as handle:
        for asin in asins:
            handle.write(asin.encode("ascii"))
            handle.write(_image_vector(asin).astype("<f4").tobytes())
    return ratings, meta, images


def fake_encoder(sentences: list[str]) -> np.ndarray:
    """Deterministic 8-d 'embedding' of each sentence (a hash), so alignment can be checked."""
    return np.stack([
        np.frombuffer(hashlib.sha256(s.encode()).digest()[:32], dtype=np.uint8)[:8].astype(np.float32)
        for s in sentences
    ])


@pytest.fixture()
def raw(tmp_path):
    return write_raw(tmp_path / "raw")


def _prepare(raw, out, **kwargs):
    ratings, meta, images = raw
    kwargs.setdefault("encoder", fake_encoder)
    return prepare_dataset(ratings, meta, images, "baby", out, quiet=True, **kwargs)


def _read_inter(folder):
    return pd.read_csv(folder / "baby.inter", sep="\t")


def _mapping(folder, which):
    frame = pd.read_csv(folder / f"{which}_id_mapping.csv", sep="\t", dtype={"user_id": str, "asin": str})
    key = "user_id" if which == "u" else "asin"
    return dict(zip(frame[key], frame["userID" if which == "u" else "itemID"]))


# ----------------------------------------------------------------------------- steps


def test_five_core_iterates_until_stable():
    ratings = pd.DataFrame(_raw_ratings(), columns=["user", "item", "rating", "timestamp"])
    kept = five_core(ratings)
    assert set(kept["user"]) == set(USERS)  # X (4 ratings) and Y (cascade after Q) removed
    assert set(kept["item"]) == set(ITEMS)  # Q (4 raters) and R (cascade after Y) removed
    assert len(kept) == sum(CORE_COUNTS)
    assert kept.groupby("user").size().min() >= 5 and kept.groupby("item").size().min() >= 5
    # a single round would not be enough: Y still has 5 ratings before Q is removed
    one_round = ratings.groupby("user")["item"].transform("size") >= 5
    assert Y in set(ratings[one_round]["user"])


def test_prepared_folder_reindexes_and_loads(raw, tmp_path):
    result = _prepare(raw, tmp_path / "out")
    folder = tmp_path / "out" / "baby"
    assert result.folder == folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["baby"]  # no temp leftovers

    data = load_dataset(folder)
    assert (data.n_users, data.n_items) == (len(USERS), N_CORE_ITEMS)
    assert data.features["image"].shape == (N_CORE_ITEMS, IMAGE_DIM)
    assert data.features["image"].dtype == np.float32 and data.features["text"].dtype == np.float32
    assert np.load(folder / "text_feat.npy").dtype == np.float32
    assert result.stats.interactions == sum(CORE_COUNTS)

    inter = _read_inter(folder)
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    users, items = _mapping(folder, "u"), _mapping(folder, "i")
    assert sorted(users.values()) == list(range(len(USERS))) and set(users) == set(USERS)
    assert sorted(items.values()) == list(range(N_CORE_ITEMS)) and set(items) == set(ITEMS)
    # ids follow first appearance in the (shuffled) ratings file, after filtering
    ratings = pd.read_csv(raw[0], header=None, names=["user", "item", "rating", "timestamp"])
    ratings = ratings[ratings["user"].isin(USERS) & ratings["item"].isin(ITEMS)]
    assert list(pd.unique(ratings["user"])) == sorted(users, key=users.get)
    assert list(pd.unique(ratings["item"])) == sorted(items, key=items.get)
    # every surviving raw rating is in the file under its new ids, with its rating and timestamp
    expected = {(users[u], items[i], float(r), int(t)) for u, i, r, t in _raw_ratings()
                if u in users and i in items}
    written = set(zip(inter["userID"], inter["itemID"], inter["rating"].astype(float), inter["timestamp"]))
    assert written == expected and len(inter) == len(expected)


def test_split_sizes_follow_the_protocol(raw, tmp_path):
    _prepare(raw, tmp_path / "out")
    inter = _read_inter(tmp_path / "out" / "baby")
    users = _mapping(tmp_path / "out" / "baby", "u")
    seen_rules = set()
    for k, n in enumerate(CORE_COUNTS):
        labels = inter.loc[inter["userID"] == users[USERS[k]], "x_label"].to_numpy()
        assert len(labels) == n
        if n < 10:
            valid, test = 1, 1
        else:
            held_out = int(np.floor(0.2 * n))
            valid, test = held_out // 2, held_out - held_out // 2
        seen_rules.add((valid, test))
        assert (labels == 1).sum() == valid and (labels == 2).sum() == test
        assert (labels == 0).sum() == n - valid - test
    assert {(1, 1), (1, 2), (2, 3)} <= seen_rules  # n=6..12, n=15 and n=25 are all exercised


def test_features_align_with_item_ids(raw, tmp_path):
    result = _prepare(raw, tmp_path / "out")
    folder = result.folder
    items = _mapping(folder, "i")
    image = np.load(folder / "image_feat.npy")
    with_image = [j for j in range(N_CORE_ITEMS) if j not in NO_IMAGE]
    for j in with_image:
        np.testing.assert_array_equal(image[items[ITEMS[j]]], _image_vector(ITEMS[j]))
    # missing items get the mean over the dataset's items that have an image (not over Q etc.)
    mean = np.mean([_image_vector(ITEMS[j]).astype(np.float64) for j in with_image], axis=0)
    for j in NO_IMAGE:
        np.testing.assert_allclose(image[items[ITEMS[j]]], mean, rtol=1e-6)
    assert result.items_without_image == len(NO_IMAGE)
    assert result.items_without_metadata == len(NO_META)

    text = np.load(folder / "text_feat.npy")
    for j in range(N_CORE_ITEMS):
        record = None if j in NO_META else _meta_record(j)
        if j == 2:
            record = {**record, "brand": None}
        np.testing.assert_array_equal(text[items[ITEMS[j]]], fake_encoder([item_sentence(record)])[0])


def test_item_sentence_uses_title_brand_first_category_path_and_description():
    sentence = item_sentence(_meta_record(4))
    assert sentence == "Title 4 Brand1 Baby Strollers 4 Description of item 4 second line"
    assert item_sentence({"asin": "x", "title": "Only title", "brand": None}) == "Only title"
    assert item_sentence(None) == ""


def test_same_seed_same_files_other_seed_other_split(raw, tmp_path):
    first = _prepare(raw, tmp_path / "a", seed=7).folder
    again = _prepare(raw, tmp_path / "b", seed=7).folder
    other = _prepare(raw, tmp_path / "c", seed=8).folder
    for name in ("baby.inter", "image_feat.npy", "text_feat.npy", "u_id_mapping.csv", "i_id_mapping.csv"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    a, c = _read_inter(first), _read_inter(other)
    assert not np.array_equal(a["x_label"], c["x_label"])
    assert np.array_equal(a[["userID", "itemID"]], c[["userID", "itemID"]])
    assert np.array_equal(np.bincount(a["x_label"]), np.bincount(c["x_label"]))


def test_gzipped_metadata_gives_the_same_result(tmp_path):
    plain = _prepare(write_raw(tmp_path / "raw1"), tmp_path / "a").folder
    zipped = _prepare(write_raw(tmp_path / "raw2", gzip_meta=True), tmp_path / "b").folder
    assert (plain / "text_feat.npy").read_bytes() == (zipped / "text_feat.npy").read_bytes()


def test_existing_output_needs_force(raw, tmp_path):
    _prepare(raw, tmp_path / "out", seed=1)
    with pytest.raises(DataError, match="already exists"):
        _prepare(raw, tmp_path / "out", seed=2)
    before = _read_inter(tmp_path / "out" / "baby")
    _prepare(raw, tmp_path / "out", seed=2, force=True)
    after = _read_inter(tmp_path / "out" / "baby")
    assert not np.array_equal(before["x_label"], after["x_label"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["baby"]


def test_failure_leaves_nothing_behind(raw, tmp_path):
    def broken_encoder(sentences):
        return np.zeros((len(sentences) - 1, 8))

    with pytest.raises(Exception, match="text encoder returned shape"):
        _prepare(raw, tmp_path / "out", encoder=broken_encoder)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- bad inputs


def _error(raw, out, **replace) -> str:
    ratings, meta, images = raw
    paths = {"ratings": ratings, "meta": meta, "images": images, **replace}
    with pytest.raises(DataError) as info:
        prepare_dataset(paths["ratings"], paths["meta"], paths["images"], "baby", out,
                        encoder=fake_encoder, quiet=True)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("which", ["ratings", "meta", "images"])
def test_missing_input_file(raw, tmp_path, which):
    missing = tmp_path / f"no_{which}.file"
    message = _error(raw, tmp_path / "out", **{which: missing})
    assert str(missing) in message and "not found" in message


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("A01USER,B000000001,5.0,1300000000,extra", "Expected 4 fields"),
        ("A01USER,B000000001", "expected 4 comma-separated fields"),
        ("A01USER,B000000001,five,1300000000", "rating is not a number"),
        ("A01USER,B000000001,5.0,12.5", "timestamp is not an integer"),
    ],
)
def test_malformed_ratings_line(raw, tmp_path, bad_line, problem):
    lines = raw[0].read_text().splitlines()
    lines.insert(6, bad_line)  # becomes line 7
    bad = tmp_path / "bad_ratings.csv"
    bad.write_text("\n".join(lines) + "\n")
    message = _error(raw, tmp_path / "out", ratings=bad)
    assert str(bad) in message and problem in message and "line 7" in message


def test_ratings_that_do_not_survive_filtering(raw, tmp_path):
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("u1,i1,5.0,1\nu1,i2,4.0,2\nu2,i1,3.0,3\n")
    message = _error(raw, tmp_path / "out", ratings=sparse)
    assert str(sparse) in message and "5-core" in message


def test_truncated_image_binary(raw, tmp_path):
    truncated = tmp_path / "truncated.b"
    truncated.write_bytes(raw[2].read_bytes()[:-7])
    message = _error(raw, tmp_path / "out", images=truncated)
    assert str(truncated) in message and "truncated" in message


def test_empty_image_binary(raw, tmp_path):
    empty = tmp_path / "empty.b"
    empty.write_bytes(b"")
    assert "empty" in _error(raw, tmp_path / "out", images=empty)


def test_image_binary_of_another_category(raw, tmp_path):
    other = tmp_path / "other.b"
    other.write_bytes(b"C123456789" + np.zeros(IMAGE_DIM, "<f4").tobytes())
    message = _error(raw, tmp_path / "out", images=other)
    assert str(other) in message and "none of the" in message


def test_non_ascii_asin_in_image_binary(raw, tmp_path):
    garbage = tmp_path / "garbage.b"
    garbage.write_bytes("é".encode() * 5 + np.zeros(IMAGE_DIM, "<f4").tobytes())
    message = _error(raw, tmp_path / "out", images=garbage)
    assert str(garbage) in message and "non-ASCII" in message


def test_malformed_metadata_line(raw, tmp_path):
    lines = raw[1].read_text().splitlines()
    lines[3] = lines[3][:-5]  # cut off the end of a dict of a rated item
    bad = tmp_path / "bad_meta.json"
    bad.write_text("\n".join(lines) + "\n")
    message = _error(raw, tmp_path / "out", meta=bad)
    assert str(bad) in message and "line 4" in message


def test_corrupt_gzip_metadata(raw, tmp_path):
    bad = tmp_path / "meta.json.gz"
    bad.write_bytes(gzip.compress(raw[1].read_bytes())[:60])
    message = _error(raw, tmp_path / "out", meta=bad)
    assert str(bad) in message


def test_read_ratings_accepts_a_clean_file(raw):
    frame = read_ratings(raw[0])
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["timestamp"].dtype == np.int64 and frame["rating"].dtype == np.float64
    assert len(frame) == len(_raw_ratings()) + 1


# ----------------------------------------------------------------------------- command line


def test_cli_prepare(raw, tmp_path, monkeypatch, capsys):
    # the real model is exercised in test_packaged_minilm_encoder_offline; here a fake one
    monkeypatch.setattr(prep, "minilm_encoder", lambda *args, **kwargs: fake_encoder)
    ratings, meta, images = raw
    argv = ["data", "prepare", "--ratings", str(ratings), "--meta", str(meta), "--images", str(images),
            "--name", "baby", "--out", str(tmp_path / "out"), "--seed", "3", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "out" / "baby")
    assert "differs from the published statistics of baby" in captured.err  # tiny fixture, of course
    info = json.loads((tmp_path / "out" / "baby" / "prepare_info.json").read_text())
    assert info["seed"] == 3 and info["items_without_image"] == len(NO_IMAGE)

    assert main(argv) == 2  # exists already: one-line error, exit code 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "already exists" in err and "\n" not in err


# ----------------------------------------------------------------------------- real text model


def test_packaged_minilm_encoder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    encode = minilm_encoder(device="cpu", quiet=True)
    sentences = [
        "Baby stroller with a sun canopy and a large basket",
        "Lightweight pushchair for infants, foldable, with storage basket",
        "Stainless steel fishing knife with a rubber grip",
    ]
    table = encode(sentences)
    assert table.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    similarity = table @ table.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # strollers are closer to each other
