import numpy as np
import pandas as pd
import pytest

from lgmrec.data import load_dataset
from lgmrec.errors import DataError


def write_folder(root, rows, n_items=4, features=None):
    folder = root / "toy"
    folder.mkdir(exist_ok=True)
    header = "userID\titemID\trating\ttimestamp\tx_label\n"
    (folder / "toy.inter").write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    if features is None:
        features = {"image": np.ones((n_items, 3), np.float32), "text": np.ones((n_items, 2), np.float32)}
    for name, table in features.items():
        np.save(folder / f"{name}_feat.npy", table)
    return folder


GOOD = [(0, 0, 5, 1, 0), (0, 1, 5, 1, 0), (1, 2, 5, 1, 0), (1, 3, 5, 1, 1), (0, 3, 5, 1, 2), (2, 1, 5, 1, 2)]


def test_roundtrip_of_written_dataset(tiny_data, tiny_folder):
    loaded = load_dataset(tiny_folder)
    assert (loaded.n_users, loaded.n_items) == (tiny_data.n_users, tiny_data.n_items)
    assert loaded.modalities == ["image", "text"]
    for split in ("train", "valid", "test"):
        assert sorted(map(tuple, loaded.splits[split])) == sorted(map(tuple, tiny_data.splits[split]))
    np.testing.assert_array_equal(loaded.features["image"], tiny_data.features["image"])


def test_counts_and_heldout_of_users_without_training_rows_dropped(tmp_path):
    data = load_dataset(write_folder(tmp_path, GOOD))
    assert (data.n_users, data.n_items) == (3, 4)  # max id + 1 over the whole file
    assert len(data.splits["train"]) == 3
    assert data.splits["test"].tolist() == [[0, 3]]  # user 2 has no training row: dropped
    assert data.train_matrix.toarray().tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert data.train_items.tolist() == [0, 1, 2]


def test_modality_subset_and_order(tmp_path):
    folder = write_folder(tmp_path, GOOD, features={
        "text": np.ones((4, 2), np.float32), "audio": np.ones((4, 5), np.float32),
        "image": np.ones((4, 3), np.float32)})
    assert load_dataset(folder).modalities == ["image", "text", "audio"]
    assert load_dataset(folder, modalities=["text"]).modalities == ["text"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([(0, "x", 5, 1, 0)], "column itemID has a non-integer value 'x'"),
        ([(0, 1.5, 5, 1, 0)], "column itemID has a non-integer value '1.5'"),
        ([(-1, 0, 5, 1, 0)], "column userID has a negative id"),
        ([(0, 0, 5, 1, 3)], "x_label must be 0, 1 or 2, found 3"),
        ([(0, 0, 5, 1, 1), (0, 3, 5, 1, 2)], "the training split (x_label 0) is empty"),
    ],
)
def test_bad_interactions_name_file_and_problem(tmp_path, rows, message):
    folder = write_folder(tmp_path, rows)
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    text = str(info.value)
    assert message in text and "toy.inter" in text and "\n" not in text


def test_missing_column(tmp_path):
    folder = write_folder(tmp_path, GOOD)
    frame = pd.read_csv(folder / "toy.inter", sep="\t").drop(columns="x_label")
    frame.to_csv(folder / "toy.inter", sep="\t", index=False)
    with pytest.raises(DataError, match=r"toy.inter: missing column\(s\) x_label"):
        load_dataset(folder)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="dataset folder does not exist"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.inter: interaction file is missing"):
        load_dataset(tmp_path / "empty")
    folder = write_folder(tmp_path, GOOD)
    with pytest.raises(DataError, match="video_feat.npy: feature file is missing"):
        load_dataset(folder, modalities=["video"])


@pytest.mark.parametrize(
    "table, message",
    [
        (np.ones((3, 2), np.float32), "has 3 rows but the interaction file has 4 items"),
        (np.array([[1, 2], [np.nan, 0], [0, 0], [0, 0]], np.float32), "contains NaN or Inf (first in row 1)"),
        (np.array([[1, 2], [0, 0], [np.inf, 0], [0, 0]], np.float32), "contains NaN or Inf (first in row 2)"),
        (np.ones(4, np.float32), "expected a 2-d array"),
    ],
)
def test_bad_features(tmp_path, table, message):
    folder = write_folder(tmp_path, GOOD, features={"image": table})
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    assert "image_feat.npy" in str(info.value) and message in str(info.value)


def test_unreadable_feature_file(tmp_path):
    folder = write_folder(tmp_path, GOOD)
    (folder / "image_feat.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="image_feat.npy: not a readable .npy array"):
        load_dataset(folder)
