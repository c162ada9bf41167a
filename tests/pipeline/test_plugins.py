"""Plug-in models (lgmrec.models.plugins): a package of one's own, built into a wheel and installed
into a site folder of its own (examples/toymf, the package of the book's tutorial: ToyMF under the
entry point group ``lgmrec.models``; tests/fixtures/broken_plugin: plug-ins that break the contract),
goes through the grid (local executor, papermill notebooks) and the book like a built-in model; a
malformed plug-in stops with one line naming it and the problem, exit code 2.

The site folder reaches the grid's worker processes and notebook kernels through ``PYTHONPATH``,
as an installation into the environment would; in this process it is put on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

import lgmrec.models as registry
from lgmrec.collect import collect
from lgmrec.grids import get_profile
from lgmrec.models import get_model_spec, installed_models, resolve_model_config
from lgmrec.models.plugins import PluginError, check_plugin
from lgmrec.resolve import resolve_run
from lgmrec.results import ResultStore

ROOT = Path(__file__).resolve().parent.parent.parent
TUTORIAL = ROOT / "examples" / "toymf"  # the package of the book's page "Benchmark your model"
BROKEN = ROOT / "tests" / "fixtures" / "broken_plugin"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The tutorial's package and the broken plug-ins, each built into a wheel (setuptools' PEP 517
    backend, from a copy: the build writes into its source folder) and installed, i.e. unpacked,
    into one site folder."""
    root = tmp_path_factory.mktemp("plugin")
    site = root / "site"
    for package in (TUTORIAL, BROKEN):
        source = shutil.copytree(package, root / package.name)
        build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
        proc = subprocess.run([sys.executable, "-c", build, str(root / "wheel")], cwd=source, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with zipfile.ZipFile(root / "wheel" / proc.stdout.strip().splitlines()[-1]) as archive:
            archive.extractall(site)
    assert (site / "lgmrec_toy_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


def with_path(*folders: Path) -> dict[str, str]:
    """This environment with ``folders`` in front of PYTHONPATH (the grid's workers inherit it)."""
    parts = [str(f) for f in folders] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(parts)}


@pytest.fixture
def installed(plugin_site, monkeypatch) -> Path:
    """The plug-in visible to this process: its site folder on sys.path, the registry's view of the
    entry points and plug-ins fresh (and restored afterwards)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setattr(registry, "_ENTRY_POINTS", None)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    return plugin_site


def lgmrec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lgmrec", *args], capture_output=True, text=True, env=env)


def write_profile(folder: Path, name: str, models: list[str], **keys) -> Path:
    lines = [f'name = "{name}"', 'datasets = ["smoke-baby"]', f"models = {models!r}".replace("'", '"')]
    lines += [f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false")
              for key, value in keys.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n[train]\nmax_epochs = 2\npatience = 2\n")
    return path


# ---------------------------------------------------------------------------- registry


def test_an_installed_plugin_is_listed_checked_and_resolved_like_a_builtin(installed):
    assert {"toymf", "toy-bad-shape"} <= set(installed_models())
    spec = get_model_spec("toymf")
    assert spec.label == "ToyMF" and registry.loaded_plugins() == {"toymf": "entry point 'toymf'"}
    assert get_model_spec("toymf") is spec  # loaded once
    resolved = resolve_run("toymf", "smoke-baby", {"reg_weight": 1e-2, "max_epochs": 2})
    assert resolved.model == "toymf" and resolved.model_params == {"embedding_dim": 32, "reg_weight": 1e-2}
    assert resolved.train["max_epochs"] == 2
    # the same spec named by module:attribute is the entry point's, not a second model
    assert registry.register_reference("lgmrec_toy_plugin:SPEC") == "toymf"


def test_the_check_builds_the_model_and_keeps_the_callers_random_state(installed):
    import torch

    from lgmrec_toy_plugin import SPEC
    from lgmrec_broken_plugin import BAD_SHAPE

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert check_plugin("test", SPEC) is SPEC
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(PluginError, match=r"^plug-in test: score\(\) gave shape \(3, 5\) for 3 users x 4 items"):
        check_plugin("test", BAD_SHAPE)
    assert resolve_model_config(SPEC, "smoke-baby").embedding_dim == 32


# ---------------------------------------------------------------------------- grid and book


def table_labels(html: Path, page: str, name: str) -> set[str]:
    soup = BeautifulSoup((html / f"{page}.html").read_text(), "html.parser")
    boxes = soup.select(f'div.lgmrec-table[data-table="{name}"]')
    assert boxes, f"{page}: no table {name}"
    return {tr.find("th").get_text(" ", strip=True) for tr in boxes[0].select("table tbody tr") if tr.find("th")}


def test_a_plugin_goes_through_the_grid_with_notebooks_and_into_the_book(installed, tmp_path):
    """ToyMF, installed, against BPR and LGMRec on the smoke data: its tuning grid (its spec's reduced
    grid), its seeds at the validation-chosen point and its error-rate runs, each unit a notebook
    executed by a local worker; then the book, with ToyMF in its tables and the experiments the
    profile leaves out (LGMRec's ablation and sensitivity) marked as not run."""
    path = write_profile(tmp_path, "mine", ["bpr", "lgmrec", "toymf"], focal_model="toymf", seeds=[999, 1],
                         experiments=["tuning", "overall", "error_rates"], tuning="reduced",
                         error_rate_models=["toymf"], error_rate_seeds=[5, 6, 7, 8],
                         reductions=["one tiny synthetic dataset, 2 seeds, 2 epochs: a test"])
    results, env = tmp_path / "results", with_path(installed)
    proc = lgmrec("grid", "--profile", str(path), "--results", str(results), "--workers", "2", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed" in proc.stdout
    profile = get_profile(path)
    assert profile.focal_model == "toymf" and profile.plugins == ()
    store = ResultStore(results)
    tuning = collect(profile, "tuning", store=store)
    assert sorted(tuning[tuning["model"] == "toymf"]["variant"]) == ["reg_weight=0.0001", "reg_weight=0.01"]
    overall = collect(profile, "overall", store=store)
    toymf = overall[overall["model"] == "toymf"]
    assert sorted(toymf["seed"]) == [1, 999] and set(toymf["variant"]) == {"ToyMF"}
    assert (toymf["status"] == "ok").all() and (toymf["recall@20"] > 0).all()
    assert len(collect(profile, "error_rates", store=store)) == 4
    for unit in ("overall", "error_rates"):  # executed by papermill, kept beside the records
        assert (results / "mine" / "smoke-baby" / "toymf" / f"{unit}.ipynb").is_file()

    proc = lgmrec("book", "--profile", str(path), "--results", str(results), "--out", str(tmp_path / "book"), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = tmp_path / "book" / "_build" / "html"
    assert table_labels(html, "overall", "overall-smoke-baby") == {"BPR", "LGMRec", "ToyMF"}
    assert "ToyMF" in table_labels(html, "tuning", "tuning-choice-smoke-baby")
    assert table_labels(html, "runs/smoke-baby", "runs-smoke-baby-error_rates") == {"ToyMF"}
    assert (html / "runs" / "smoke-baby" / "toymf-overall.html").is_file()
    assert "ModelSpec" in (html / "plugins.html").read_text()  # the contract's page
    tutorial = BeautifulSoup((html / "benchmark_your_model.html").read_text(), "html.parser").get_text()
    # the tutorial shows this very package's files (included when the book is built, not copied)
    assert "class ToyMF(Recommender)" in tutorial and 'toymf = "lgmrec_toy_plugin:SPEC"' in tutorial
    assert 'focal_model = "toymf"' in tutorial
    for chapter in ("ablation", "sensitivity"):
        text = BeautifulSoup((html / f"{chapter}.html").read_text(), "html.parser").get_text(" ", strip=True)
        assert f"Not run : profile mine does not include the {chapter} experiment" in text, chapter
    # the claims are the focal model's: C1 and C4 against the baselines (LGMRec among them), C2, C3 and
    # C5 (LGMRec's ablation and published numbers) not run for it
    claims = BeautifulSoup((html / "claims.html").read_text(), "html.parser")
    text = claims.get_text(" ", strip=True)
    assert "ToyMF's Recall@10/20 and NDCG@10/20 exceed every baseline's" in text
    assert "ToyMF − strongest" in text and "beats: baselines whose every interval of ToyMF − baseline" in text
    assert "the focal model ToyMF defines none" in text and "the published numbers are LGMRec's" in text
    rows = [[cell.get_text(" ", strip=True) for cell in tr.find_all(["th", "td"])]
            for tr in claims.select('div[data-table="claims-verdicts"] table tbody tr')]
    c1 = next(row for row in rows if row[0].startswith("C1"))
    assert c1[2] in ("supported", "contradicted", "inconclusive") and "over " in c1[3]
    c1_table = claims.select_one('div[data-table="claim-c1-smoke-baby"]').get_text(" ", strip=True)
    assert "LGMRec" in c1_table or "BPR" in c1_table  # the strongest baseline is one of the others


def test_a_module_attribute_plugin_runs_in_notebook_workers_where_it_is_importable(tmp_path):
    """Not installed: named by module:attribute in the profile, importable through PYTHONPATH."""
    path = write_profile(tmp_path, "by-reference", ["lgmrec_toy_plugin:SPEC"], focal_model="lgmrec_toy_plugin:SPEC",
                         seeds=[999], experiments=["overall"])
    results = tmp_path / "results"
    proc = lgmrec("grid", "--profile", str(path), "--results", str(results), env=with_path(TUTORIAL))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (results / "by-reference" / "smoke-baby" / "toymf" / "overall.ipynb").is_file()
    assert len(list((results / "by-reference" / "smoke-baby" / "toymf").glob("*-seed999.json"))) == 1
    # without notebooks the workers get the Profile object itself, and load its plug-in from it
    plain = tmp_path / "plain"
    proc = lgmrec("grid", "--profile", str(path), "--results", str(plain), "--no-notebooks", env=with_path(TUTORIAL))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in (plain / "by-reference" / "smoke-baby" / "toymf").glob("*-seed999.json")] == \
        [p.name for p in (results / "by-reference" / "smoke-baby" / "toymf").glob("*-seed999.json")]
    # where it is not importable, the profile stops before any run, naming the plug-in
    proc = lgmrec("grid", "--profile", str(path), "--results", str(results), "--force", env=with_path())
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "plug-in lgmrec_toy_plugin:SPEC: cannot import lgmrec_toy_plugin: ModuleNotFoundError" in proc.stderr


# ---------------------------------------------------------------------------- malformed plug-ins


@pytest.mark.parametrize("reference, problem", [
    ("lgmrec_broken_plugin:NO_LOSS", "NoLoss does not implement loss()"),
    ("lgmrec_broken_plugin:BAD_SHAPE", "score() gave shape (3, 5) for 3 users x 4 items, expected (users, items)"),
    ("lgmrec_broken_plugin:NOT_A_SPEC", "is a dict, not an lgmrec.models.ModelSpec"),
    ("lgmrec_broken_plugin.broken_import:SPEC", "cannot import lgmrec_broken_plugin.broken_import: "
                                                "ModuleNotFoundError: No module named "
                                                "'lgmrec_toy_plugin_missing_dependency'"),
    ("lgmrec_toy_plugin:NO_SUCH_SPEC", "module lgmrec_toy_plugin has no attribute 'NO_SUCH_SPEC'"),
])
def test_a_malformed_plugin_in_a_profile_is_one_line_and_exit_2(plugin_site, tmp_path, reference, problem):
    path = write_profile(tmp_path, "broken", ["bpr", reference], focal_model="bpr", seeds=[999])
    proc = lgmrec("grid", "--profile", str(path), "--results", str(tmp_path / "results"), env=with_path(plugin_site))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{path}: key 'models': plug-in {reference}: {problem}" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_malformed_installed_plugin_is_one_line_and_exit_2(plugin_site, tmp_path):
    output = tmp_path / "run.json"
    proc = lgmrec("train", "--model", "toy-bad-shape", "--data", "smoke-baby", "--profile", "smoke",
                  "--output", str(output), "--quiet", env=with_path(plugin_site))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ("error: plug-in entry point 'toy-bad-shape' (lgmrec_broken_plugin:BAD_SHAPE): score() gave shape "
            "(3, 5)") in proc.stderr
    assert not output.exists()
    # the good one next to it trains
    proc = lgmrec("train", "--model", "toymf", "--data", "smoke-baby", "--profile", "smoke", "--output", str(output),
                  "--quiet", env=with_path(plugin_site))
    assert proc.returncode == 0, proc.stderr
    assert "toymf on smoke-baby seed 999" in proc.stdout and output.is_file()
