import json
import subprocess
import sys

import pytest

from lgmrec.cli import main

METRIC_KEYS = {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)}


def test_train_writes_a_complete_record(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(["train", "--data", str(tiny_folder), "--model", "lgmrec", "--seed", "999", "--max-epochs", "2",
                 "--set", "alpha=0.5", "--set", "patience=1", "--device", "cpu", "--output", str(out), "--quiet",
                 "--per-user", str(tmp_path / "users.npz")])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["seed"] == 999 and record["status"] == "ok"
    assert record["config"]["model_params"]["alpha"] == 0.5
    assert record["config"]["train"]["patience"] == 1 and record["config"]["preset"] == "official-log"
    assert set(record["valid"]) == set(record["test"]) == METRIC_KEYS
    assert 1 <= record["best_epoch"] <= record["epochs_run"] <= 2
    assert record["train_seconds_per_epoch"] > 0 and record["eval_seconds"] > 0
    assert record["code_version"] and record["environment"]["torch"]
    assert "recall@20" in capsys.readouterr().out
    assert (tmp_path / "users.npz").is_file()


def test_same_seed_gives_identical_metrics(tiny_folder, tmp_path):
    records = []
    for name in ("a.json", "b.json"):
        main(["train", "--data", str(tiny_folder), "--model", "lightgcn", "--max-epochs", "3", "--device", "cpu",
              "--output", str(tmp_path / name), "--quiet"])
        records.append(json.loads((tmp_path / name).read_text()))
    assert records[0]["test"] == records[1]["test"] and records[0]["valid"] == records[1]["valid"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/folder"], "dataset folder does not exist"),
        (["--set", "nonsense=1"], "unknown LGMRecConfig key(s): nonsense"),
        (["--set", "alpha"], "--set expects key=value"),
        (["--set", "keep_rate=2"], "0 < keep_rate <= 1"),
        (["--set", "n_ui_layers=two"], "n_ui_layers must be a number"),
        (["--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tiny_folder, tmp_path, args, message):
    base = {"--data": str(tiny_folder)}
    argv = ["train", "--output", str(tmp_path / "x.json"), "--quiet"]
    argv += args if "--data" in args else ["--data", base["--data"], *args]
    proc = subprocess.run([sys.executable, "-m", "lgmrec", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_generate_writes_a_loadable_folder(tmp_path):
    from lgmrec.data import load_dataset

    assert main(["generate", "--preset", "synth-baby-small", "--out", str(tmp_path)]) == 0
    data = load_dataset(tmp_path / "synth-baby-small")
    assert data.n_users > 1500 and data.modalities == ["image", "text"]


def _dataset_folder(tmp_path, inter_text=None, features=True):
    import numpy as np

    folder = tmp_path / "toy"
    folder.mkdir()
    rows = "userID\titemID\trating\ttimestamp\tx_label\n0\t0\t5\t1\t0\n0\t1\t5\t1\t2\n1\t1\t5\t1\t0\n1\t0\t5\t1\t1\n"
    (folder / "toy.inter").write_text(rows if inter_text is None else inter_text)
    if features:
        np.save(folder / "image_feat.npy", np.ones((2, 3), np.float32))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("zero-byte .inter", "toy.inter: cannot parse as tab-separated text"),
        ("header-only .inter", "toy.inter: no interactions"),
        ("no feature files", "toy: no feature file (*_feat.npy) found"),
        ("text features", "image_feat.npy: features must be numeric"),
        ("object features", "image_feat.npy: not a readable .npy array"),
        ("duplicate interactions", "toy.inter: duplicate interaction (user 0, item 1) in data rows 2 and 5"),
    ],
)
def test_malformed_dataset_is_one_line_naming_the_file_and_exit_code_2(tmp_path, case, message):
    import numpy as np

    header = "userID\titemID\trating\ttimestamp\tx_label\n"
    folder = {
        "zero-byte .inter": lambda: _dataset_folder(tmp_path, inter_text=""),
        "header-only .inter": lambda: _dataset_folder(tmp_path, inter_text=header),
        "no feature files": lambda: _dataset_folder(tmp_path, features=False),
        "text features": lambda: _dataset_folder(tmp_path),
        "object features": lambda: _dataset_folder(tmp_path),
        "duplicate interactions": lambda: _dataset_folder(
            tmp_path, inter_text=header + "0\t0\t5\t1\t0\n0\t1\t5\t1\t0\n1\t1\t5\t1\t0\n1\t0\t5\t1\t1\n0\t1\t4\t2\t2\n"),
    }[case]()
    if case == "text features":
        np.save(folder / "image_feat.npy", np.array([["a", "b", "c"], ["d", "e", "f"]]))
    if case == "object features":
        np.save(folder / "image_feat.npy", np.array([[1, None, 3], [4, 5, "x"]], dtype=object), allow_pickle=True)
    proc = subprocess.run([sys.executable, "-m", "lgmrec", "train", "--data", str(folder), "--output",
                           str(tmp_path / "x.json"), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
