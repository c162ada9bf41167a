"""Profiles from TOML files (lgmrec.profiles): the same Profile a built-in gives, dataset folders,
and one line naming the file, the key and the problem for every malformed file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from lgmrec.cli import main
from lgmrec.collect import collect
from lgmrec.grids import PROFILES, get_profile, plan, units
from lgmrec.results import ResultStore

from .conftest import grid

CI_AS_FILE = """
name = "ci-file"
description = "the ci profile, written as a file"
datasets = ["synth-baby-mini-cal", "synth-sports-mini-cal", "synth-clothing-mini-cal"]
seeds = [999]
models = ["bpr", "lightgcn", "freedom", "lgmrec"]
experiments = ["overall"]
"""

SMOKE_AS_FILE = """
name = "smoke-file"
datasets = ["smoke-baby", "smoke-sports"]
seeds = [999, 1]
models = ["bpr", "lightgcn", "lgmrec"]
tuning = "reduced"
ablation_datasets = ["smoke-baby"]
sensitivity_datasets = ["smoke-baby"]
error_rate_models = ["lightgcn"]
error_rate_seeds = [5, 6, 7, 8]

[train]
max_epochs = 3
patience = 3

[sensitivity]
alpha = [0.0, 0.6]
hyper_num = [2, 8]
"""


def write(tmp_path, text: str, name: str = "profile.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("builtin, text", [("ci", CI_AS_FILE), ("smoke", SMOKE_AS_FILE)])
def test_a_profile_file_gives_the_profile_its_builtin_twin_gives(tmp_path, builtin, text):
    path = write(tmp_path, text)
    profile = get_profile(str(path))
    assert profile.source == str(path.resolve()) and profile.reference == str(path.resolve())
    twin = PROFILES[builtin]
    assert dataclasses.replace(profile, name=twin.name, description=twin.description, source=None) == twin
    assert units(profile) == units(twin) and plan(profile) == plan(twin)
    assert get_profile(path) is profile  # read once while the file is unchanged


def test_a_dataset_folder_named_in_a_profile_file_runs_and_is_collected(tmp_path, tiny_folder):
    relative = os.path.relpath(tiny_folder, tmp_path)  # folders are relative to the file
    path = write(tmp_path, f"""
        name = "my-folder"
        datasets = ["{relative}"]
        models = ["bpr"]
        focal_model = "bpr"
        seeds = [999]
        experiments = ["overall"]
        [train]
        max_epochs = 1
        """)
    profile = get_profile(path)
    assert profile.datasets == ("tiny-baby",) and profile.data == "folder"
    assert profile.dataset_folders == {"tiny-baby": str(tiny_folder.resolve())}
    store = ResultStore(tmp_path / "results")
    summary = grid(profile, store)
    assert summary.failed == [] and summary.ran == 1
    runs = collect(str(path), "overall", store=store)
    assert list(runs["dataset"]) == ["tiny-baby"] and list(runs["model"]) == ["bpr"]
    assert list(runs["data_kind"]) == ["folder"] and list(runs["status"]) == ["ok"]


BASE = 'datasets = ["smoke-baby"]\nseeds = [999, 1]\nmodels = ["bpr", "lgmrec"]\n'


@pytest.mark.parametrize("text, key, problem", [
    (BASE.replace("[999, 1]", '[999, "1"]'), "seeds", "expected a list of integers, got [999, '1']"),
    (BASE + "seed = 3\n", "seed", "unknown key; the keys are"),
    ('datasets = ["smoke-baby"]\n', "seeds", "missing"),
    (BASE.replace('"lgmrec"]', '"lgmrec", "nosuch"]'), "models", "unknown model 'nosuch'"),
    (BASE + 'experiments = ["overall", "ablations"]\n', "experiments", "unknown experiment 'ablations'"),
    (BASE.replace('"smoke-baby"', '"no/such/folder"'), "datasets", "is neither a synthetic preset"),
    (BASE + 'focal_model = "vbpr"\n', "focal_model", "'vbpr' is not among the profile's models"),
    (BASE + 'tuning = "some"\n', "tuning", "expected none, reduced or full, got 'some'"),
    (BASE + 'name = "smoke"\n', "name", "is a built-in profile's name"),
    (BASE + "[train]\nmax_epochs = 0\n", "train", "max_epochs must be > 0"),
    (BASE + "[train]\nepochs = 3\n", "train", "unknown TrainConfig key(s): epochs"),
    (BASE + "[sensitivity]\nbeta = [1, 2]\n", "sensitivity.beta", "no sensitivity curve for it"),
    (BASE + "[sensitivity]\nalpha = 0.5\n", "sensitivity.alpha", "expected a non-empty list of numbers"),
    (BASE + "[synthetic_presets.mine]\nn_users = 10.5\n", "synthetic_presets.mine.n_users", "expected an integer"),
    (BASE + 'ablation_datasets = ["smoke-sports"]\n', "ablation_datasets", "is not one of the datasets"),
    (BASE + "replicate_test_choice = 1\n", "replicate_test_choice", "expected true or false, got 1"),
])
def test_a_malformed_profile_file_is_one_line_naming_file_key_and_problem(tmp_path, capsys, text, key, problem):
    path = write(tmp_path, text, "my.toml")
    assert main(["grid", "--profile", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path.resolve()}: key '{key}': ") and problem in err, err
    assert not (tmp_path / "results").exists()


def test_profile_files_exit_2_from_the_command_line_for_syntax_and_rules_across_keys(tmp_path):
    cases = {
        "syntax.toml": ('datasets = ["smoke-baby"\nseeds = [1]\n', "not valid TOML"),
        "seeds.toml": (BASE + "error_rate_models = ['bpr']\nerror_rate_seeds = [1, 5, 6, 7]\n",
                       "error_rate_seeds must differ from seeds and tuning_seed"),
        "missing.toml": (None, "profile file not found"),
    }
    for name, (text, problem) in cases.items():
        path = write(tmp_path, text, name) if text is not None else tmp_path / name
        for command in ("grid", "book") if name == "syntax.toml" else ("grid",):
            proc = subprocess.run([sys.executable, "-m", "lgmrec", command, "--profile", str(path),
                                   "--results", str(tmp_path / "results")], capture_output=True, text=True)
            assert proc.returncode == 2, (name, command, proc.stderr)
            assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
            assert name in proc.stderr and problem in proc.stderr, proc.stderr


def test_an_unknown_profile_name_lists_the_builtins_and_the_file_form(capsys):
    assert main(["grid", "--profile", "embeded", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'embeded'" in err and "embedded" in err and ".toml" in err
