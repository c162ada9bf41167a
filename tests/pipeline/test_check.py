"""The Recall@20/NDCG@20 check: comparison with tolerances, expected-value files, the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from lgmrec.check import compare, published_expected, read_expected, reproduced_means
from lgmrec.cli import main
from lgmrec.errors import DataError
from lgmrec.grids import PROFILES


def test_compare_applies_the_larger_of_absolute_and_relative_tolerance():
    reproduced = pd.DataFrame({"dataset": ["d"] * 3, "model": ["a", "b", "c"], "metric": ["recall@20"] * 3,
                               "reproduced": [0.1040, 0.1060, 0.0101], "seeds": [2, 2, 2]})
    expected = pd.DataFrame({"dataset": ["d"] * 4, "model": ["a", "b", "c", "missing"],
                             "metric": ["recall@20"] * 4, "expected": [0.1, 0.1, 0.01, 0.2],
                             "abs_tol": [0.0, 0.0, 0.001, 0.1], "rel_tol": [0.05, 0.05, 0.0, 0.5], "source": "t"})
    table = compare(reproduced, expected).set_index("model")
    assert table.loc["a", "ok"]  # 4 % off, 5 % allowed
    assert not table.loc["b", "ok"]  # 6 % off
    assert table.loc["c", "ok"]  # 0.0001 off, 0.001 absolute allowed
    assert not table.loc["missing", "ok"]  # expected but never run
    assert table.loc["b", "allowed"] == pytest.approx(0.005)


def test_published_expectations_of_the_full_profile_name_their_sources():
    expected = published_expected(PROFILES["full"])
    lgmrec = expected[(expected["model"] == "lgmrec") & (expected["dataset"] == "baby")].set_index("metric")
    assert lgmrec.loc["recall@20", "expected"] == pytest.approx(0.1002)  # the paper's Table 2
    assert lgmrec.loc["recall@20", "source"] == "paper-table2"
    assert set(expected["source"]) <= {"paper-table2", "official-log-2023-08-12", "mmrec-evaluation-readme"}
    assert len(expected[expected["model"] == "bpr"]) > 0  # MMRec's baseline rows


def test_expected_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "expected.csv"
    bad.write_text("dataset,model,metric\nd,m,recall@20\n")
    with pytest.raises(DataError, match="expected.csv: missing column"):
        read_expected(bad)
    bad.write_text("dataset,model,metric,expected\nd,m,recall@20,high\n")
    with pytest.raises(DataError, match="expected.csv: column expected"):
        read_expected(bad)
    with pytest.raises(DataError, match="nope.csv: expected-values file not found"):
        read_expected(tmp_path / "nope.csv")


def test_check_passes_on_its_own_values_and_fails_when_they_move(smoke_results, tmp_path, capsys):
    root = str(smoke_results.root)
    expected = tmp_path / "smoke.csv"
    assert main(["check", "--profile", "smoke", "--results", root, "--write-expected", str(expected)]) == 0
    written = pd.read_csv(expected)
    means = reproduced_means(PROFILES["smoke"], smoke_results)
    assert len(written) == len(means) == 2 * 3 * 2  # datasets x models x (recall@20, ndcg@20)
    capsys.readouterr()
    assert main(["check", "--profile", "smoke", "--results", root, "--expected", str(expected)]) == 0
    assert "12 of 12 within tolerance" in capsys.readouterr().out
    written.loc[0, "expected"] *= 1.05  # outside the relative 2 %
    written.to_csv(expected, index=False)
    assert main(["check", "--profile", "smoke", "--results", root, "--expected", str(expected)]) == 1
    out = capsys.readouterr().out
    assert "MISS" in out and "1 MISSED" in out
    # a wider tolerance from the command line lets it pass
    assert main(["check", "--profile", "smoke", "--results", root, "--expected", str(expected),
                 "--tolerance", "recall@20:rel=0.1", "--tolerance", "ndcg@20:rel=0.1"]) == 0


def test_committed_expected_values_cover_the_ci_profile():
    from lgmrec.check import expected_path

    expected = read_expected(expected_path(PROFILES["ci"]))
    ci = PROFILES["ci"]
    assert set(expected["dataset"]) == set(ci.datasets)
    assert set(expected["model"]) == set(ci.models)
    assert set(expected["metric"]) == {"recall@20", "ndcg@20"}
    assert (expected["expected"] > 0).all()


def _committed_row(tmp_path, dataset: str, model: str):
    """The committed ci expectations of one (dataset, model), with their tolerances, as a CSV."""
    from lgmrec.check import expected_path

    expected = read_expected(expected_path(PROFILES["ci"]))
    rows = expected[(expected["dataset"] == dataset) & (expected["model"] == model)]
    assert len(rows) == 2
    path = tmp_path / "expected.csv"
    rows.to_csv(path, index=False)
    return path


def _check_one(tmp_path, dataset: str, model: str) -> tuple[int, str]:
    """Run ``model`` on ``dataset`` as the ci profile does (in this process), then the check."""
    import dataclasses
    import io
    from contextlib import redirect_stdout

    from lgmrec.results import ResultStore

    from .conftest import grid

    profile = dataclasses.replace(PROFILES["ci"], datasets=(dataset,), models=(model,))
    store = ResultStore(tmp_path / "results")
    assert grid(profile, store).failed == []
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["check", "--profile", "ci", "--results", str(store.root),
                     "--expected", str(_committed_row(tmp_path, dataset, model))])
    return code, out.getvalue()


@pytest.mark.parametrize("model, break_it", [
    # A squared regulariser is NOT caught: at BPR's reg_weight 1e-4 on the uncalibrated Baby-like data it moves
    # Recall@20 by 0.6 % (0.2030 -> 0.2017), inside the 2 % tolerance; the loss re-derivation in
    # tests/models/test_bpr.py catches it instead. Dropping the log of the BPR loss is caught on the
    # Clothing-like preset, not on the Baby- and Sports-like ones (-0.7 % and -0.9 %, 2026-12-06:
    # their strong popularity skew leaves BPR little to lose).
    ("bpr", "sigmoid instead of log-sigmoid"),
    ("lgmrec", "no modality graph embedding"),
])
def test_a_real_regression_falls_outside_the_committed_tolerances(tmp_path, monkeypatch, model, break_it):
    import torch

    import lgmrec.models.bpr as bpr
    import lgmrec.models.lgmrec as lgmrec_module

    dataset = "synth-clothing-mini-cal"
    code, out = _check_one(tmp_path / "intact", dataset, model)
    assert code == 0, out  # the model as committed reproduces its committed values
    if break_it == "sigmoid instead of log-sigmoid":
        monkeypatch.setattr(bpr, "bpr_loss", lambda u, p, n: -torch.sigmoid((u * p).sum(1) - (u * n).sum(1)).mean())
    else:
        monkeypatch.setattr(lgmrec_module.LGMRec, "modality_graph", lambda self, f_i, f_u, rows=None: torch.zeros(
            self.n_users + self.n_items if rows is None else len(rows.rows), self.config.embedding_dim))
    code, out = _check_one(tmp_path / "broken", dataset, model)
    assert code == 1 and "MISS" in out, out
