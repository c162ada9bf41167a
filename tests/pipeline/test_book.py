"""The Jupyter Book: built offline from the smoke profile's results (run with notebooks, so that the
Runs appendix has executed unit notebooks to show), its content checked against the results
store, and every page rendered in headless Chromium at a 1400-pixel-wide window.

The checks are functions of the built HTML; each is also run once on a deliberately broken copy
(a wide table, a missing row, a blank image, a pandas "..." cell) to show that it fails then.

Chromium (Debian package ``chromium``) is installed by ``.ci/run``; on a machine without it the
rendering tests are skipped with that reason, except under CI, where they fail.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from lgmrec import stats
from lgmrec.book import BookBuildError, build_book
from lgmrec.executors import GridOptions, run_grid
from lgmrec.grids import ABLATIONS, PROFILES, units
from lgmrec.report.display import fmt_value
from lgmrec.report.runs import unit_page
from lgmrec.results import ResultStore
from lgmrec.worker import notebook_path

PROFILE = PROFILES["smoke"]
CHAPTERS = ("intro", "claims", "overall", "tuning", "ablation", "sensitivity", "sparsity", "efficiency",
            "reported_vs_reproduced", "published_record", "methods", "runs/index")
DATASETS = PROFILE.datasets
MODELS = ("BPR", "LightGCN", "LGMRec")
MARKER = "STORED-OUTPUT-MARKER-7f3a"  # the output of a cell that raises if it is ever executed again


@pytest.fixture(scope="session")
def smoke_notebook_results(tmp_path_factory):
    """The smoke profile run by the local executor WITH notebooks (each unit's executed notebook
    is kept beside its records). One executed notebook gets an extra cell that would raise if
    run, with a stored output: the book must show that output and build."""
    store = ResultStore(tmp_path_factory.mktemp("smoke-notebooks") / "results")
    summary = run_grid("smoke", None, store, "local", GridOptions(workers=2), progress=False)
    assert summary.failed == [] and summary.ran == summary.planned
    path = notebook_path(store.root, "smoke", {"experiment": "ablation", "dataset": "smoke-baby", "part": ""})
    notebook = json.loads(path.read_text())
    notebook["cells"].append({
        "cell_type": "code", "execution_count": 99, "id": "marker", "metadata": {},
        "source": "raise RuntimeError('the book executed a notebook it must only render')",
        "outputs": [{"name": "stdout", "output_type": "stream", "text": MARKER + "\n"}]})
    path.write_text(json.dumps(notebook))
    return store


@pytest.fixture(scope="module")
def built_book(smoke_notebook_results, tmp_path_factory):
    return build_book("smoke", results_root=smoke_notebook_results.root, output=tmp_path_factory.mktemp("book"),
                      quiet=True)


def unit_pages() -> list[str]:
    return [f"runs/{unit_page(unit)}" for unit in units(PROFILE)]


def book_pages() -> list[str]:
    """Every page of the book built from the smoke profile, unit notebooks included."""
    return list(CHAPTERS) + [f"runs/{d}" for d in DATASETS] + unit_pages()


def soup(html_root: Path, page: str) -> BeautifulSoup:
    return BeautifulSoup((html_root / f"{page}.html").read_text(), "html.parser")


def table_rows(html_root: Path, page: str, name: str) -> list[tuple[str, ...]]:
    """The body rows of the table named ``name`` on ``page``: the row labels (index levels, with
    labels spanning several rows carried down) followed by the data cells."""
    boxes = soup(html_root, page).select(f'div.lgmrec-table[data-table="{name}"]')
    assert boxes, f"{page}: no table {name}"
    body = boxes[0].select("table tbody tr")
    levels = max((len(tr.find_all("th")) for tr in body), default=0)
    active: list[list] = [["", 0] for _ in range(levels)]
    rows = []
    for tr in body:
        heads = iter(tr.find_all("th"))
        labels = []
        for level in range(levels):
            if active[level][1] > 0:
                active[level][1] -= 1
            else:
                th = next(heads)
                active[level] = [th.get_text(" ", strip=True), int(th.get("rowspan", 1)) - 1]
            labels.append(active[level][0])
        rows.append(tuple(labels) + tuple(td.get_text(" ", strip=True) for td in tr.find_all("td")))
    return rows


def first_labels(rows) -> list[str]:
    return [row[0] for row in rows]


def check_rows(html_root: Path) -> list[str]:
    """Every table holds a body row for every model / variant / parameter value it should."""
    problems = []

    def expect(page, name, column, wanted):
        rows = table_rows(html_root, page, name)
        found = {row[column] for row in rows}
        missing = set(wanted) - found
        if missing:
            problems.append(f"{page}: table {name} lacks rows {sorted(missing)}")

    for dataset in DATASETS:
        expect("overall", f"overall-{dataset}", 0, MODELS)
        expect("overall", f"significance-{dataset}", 0, ("BPR", "LightGCN"))
        expect("efficiency", f"efficiency-{dataset}", 0, MODELS)
        expect("tuning", f"tuning-choice-{dataset}", 0, ("BPR", "LightGCN"))
        expect("tuning", f"tuning-optimism-{dataset}", 0, ("BPR", "LightGCN"))
        expect(f"runs/{dataset}", f"runs-{dataset}-overall", 0, MODELS)
        expect(f"runs/{dataset}", f"runs-{dataset}-tuning", 0, ("BPR", "LightGCN"))
    expect("ablation", "ablation-smoke-baby", 0, ABLATIONS)
    expect("runs/smoke-baby", "runs-smoke-baby-ablation", 0, ABLATIONS)
    for parameter, values in PROFILE.sensitivity.items():
        expect("sensitivity", f"sensitivity-smoke-baby-{parameter}", 0, [fmt_value(v) for v in values])
    expect("runs/smoke-baby", "runs-smoke-baby-sensitivity", 0,
           [f"{p}={v}" for p, values in PROFILE.sensitivity.items() for v in values])
    expect("tuning", "tuning-grids", 0, MODELS)
    for page in ("intro", "claims"):
        rows = table_rows(html_root, page, "claims-verdicts")
        keys = [(row[0].split()[0], row[1]) for row in rows]
        wanted = [(claim, dataset) for claim in ("C1", "C2", "C3", "C4", "C5") for dataset in DATASETS]
        if sorted(keys) != sorted(wanted):
            problems.append(f"{page}: claims-verdicts rows {keys}, wanted one per claim and dataset")
        if any(row[2] not in stats.VERDICTS for row in rows):
            problems.append(f"{page}: claims-verdicts has a row without a verdict")
    return problems


def check_images(html_root: Path, pages) -> list[str]:
    """Every <img> of every page exists and is not blank (more than one colour)."""
    from matplotlib import image

    problems = []
    for page in pages:
        for img in soup(html_root, page).select("article img"):
            path = (html_root / page).parent / img["src"]
            if not path.is_file():
                problems.append(f"{page}: image {img['src']} missing")
                continue
            pixels = image.imread(path)
            colours = np.unique(pixels.reshape(-1, pixels.shape[-1]) if pixels.ndim == 3 else pixels.ravel(), axis=0)
            if len(colours) < 2:
                problems.append(f"{page}: image {img['src']} is blank")
    return problems


# ---------------------------------------------------------------------------- built pages, content


def test_every_chapter_and_appendix_page_is_built(built_book):
    for page in book_pages():
        assert (built_book / f"{page}.html").is_file(), page
    index = (built_book / "index.html").read_text()
    assert "intro.html" in index  # the landing page


def test_the_landing_page_shows_the_verdicts_first_with_their_data(built_book):
    page = soup(built_book, "intro")
    article = page.select_one("article")
    first_table = article.select_one("div.lgmrec-table")
    assert first_table["data-table"] == "claims-verdicts"
    before = article.get_text(" ", strip=True).split(first_table.get_text(" ", strip=True)[:30])[0]
    assert "Profile smoke" in before and "SYNTHETIC" in before  # the data it came from, above it
    caption = first_table.select_one(".lgmrec-caption").get_text(" ", strip=True)
    assert "smoke" in caption and "SYNTHETIC" in caption


def test_the_landing_page_says_what_each_verdict_could_have_detected(built_book):
    rows = table_rows(built_book, "intro", "claims-verdicts")
    header = [th.get_text(" ", strip=True) for th in
              soup(built_book, "intro").select('div[data-table="claims-verdicts"] thead tr')[0].find_all("th")]
    assert header[-1] == "what this design could detect"
    tested = [row for row in rows if row[2] != stats.NOT_TESTED]
    assert tested and all("this design detects" in row[-1] or "was detectable" in row[-1] for row in tested)
    assert any("%" in row[-1] for row in tested)  # an MDE in % of the baseline mean
    text = soup(built_book, "intro").get_text(" ", strip=True)
    assert "How often the rule errs, measured on this build" in text and "false alarms of LightGCN" in text
    methods = soup(built_book, "methods")
    assert methods.select_one('div[data-table="error-rates"]') is not None
    assert methods.select_one("#verdict-error-rates") is not None  # the landing page's link target


def test_every_table_has_a_row_for_everything_it_should_hold(built_book):
    assert check_rows(built_book) == []


def test_claims_hold_one_verdict_per_claim_and_dataset(built_book):
    rows = table_rows(built_book, "claims", "claims-verdicts")
    verdicts = {(row[0].split()[0], row[1]): row[2] for row in rows}
    assert len(verdicts) == 5 * len(DATASETS)
    for dataset in DATASETS:
        assert verdicts[("C5", dataset)] == stats.NOT_TESTED  # synthetic data
        assert verdicts[("C1", dataset)] in (stats.SUPPORTED, stats.CONTRADICTED, stats.INCONCLUSIVE)
    assert verdicts[("C2", "smoke-sports")] == stats.NOT_TESTED  # no ablation on that dataset
    assert verdicts[("C2", "smoke-baby")] != stats.NOT_TESTED
    claims = soup(built_book, "claims").get_text(" ", strip=True)
    assert "not testable on synthetic data" in claims


def test_a_cell_equals_the_mean_computed_from_the_store(built_book, smoke_notebook_results):
    folder = smoke_notebook_results.root / "smoke" / "smoke-baby" / "lgmrec"
    records = [json.loads(Path(f).read_text()) for f in glob.glob(str(folder / "*.json"))]
    default = [r for r in records if r["requested"]["overrides"] == {} and r["status"] == "ok"]
    assert sorted(r["seed"] for r in default) == sorted(PROFILE.seeds)
    recall = [r["test"]["recall@20"] for r in default]
    rows = {row[0]: row for row in table_rows(built_book, "overall", "overall-smoke-baby")}
    header = [th.get_text(strip=True) for th in soup(built_book, "overall").select(
        'div[data-table="overall-smoke-baby"] thead tr')[0].find_all("th")]
    cell = rows["LGMRec"][header.index("Recall@20")]
    mean, sd = (float(x) for x in cell.split("±"))
    assert mean == pytest.approx(np.mean(recall), abs=5e-5)
    assert sd == pytest.approx(np.std(recall, ddof=1), abs=5e-5)


def test_every_image_exists_and_is_not_blank(built_book):
    pages = book_pages()
    assert check_images(built_book, pages) == []
    for page in ("overall", "tuning", "ablation", "sensitivity", "sparsity", "efficiency", "reported_vs_reproduced",
                 "published_record", "methods"):
        assert soup(built_book, page).select("article img"), f"{page}: no figure"


def test_every_table_offers_its_csv_and_the_runs_are_downloadable(built_book):
    for page in list(CHAPTERS) + [f"runs/{d}" for d in DATASETS]:
        for box in soup(built_book, page).select("div.lgmrec-table"):
            link = box.select_one("a.lgmrec-csv")
            assert link is not None, f"{page}: table {box['data-table']} has no CSV link"
            path = (built_book / page).parent / link["href"]
            assert path.is_file() and path.stat().st_size > 0, f"{page}: {link['href']}"
    methods = soup(built_book, "methods")
    links = {a.get_text(): a["href"] for a in methods.select("ul.lgmrec-downloads a")}
    assert any(text.startswith("overall:") for text in links), links
    overall = pd.read_csv(built_book / next(h for t, h in links.items() if t.startswith("overall:")), dtype=str)
    assert {"config_hash", "seed", "variant", "param: reg_weight", "recall@20", "valid_recall@20"} <= set(overall)
    assert len(overall) == len(PROFILE.datasets) * len(PROFILE.model_names) * len(PROFILE.seeds)
    sensitivity = pd.read_csv(built_book / next(h for t, h in links.items() if t.startswith("sensitivity:")), dtype=str)
    assert set(sensitivity.loc[sensitivity["parameter"] == "hyper_num", "param: hyper_num"]) == {"2", "8"}
    assert set(sensitivity.loc[sensitivity["parameter"] == "hyper_num", "value"]) == {"2", "8"}  # not 2.0


def test_integer_parameters_print_as_integers(built_book):
    rows = table_rows(built_book, "sensitivity", "sensitivity-smoke-baby-hyper_num")
    assert first_labels(rows) == ["2", "8"]
    for page in ("sensitivity", "tuning", "methods", "runs/smoke-baby"):
        text = soup(built_book, page).select_one("article").get_text(" ")
        assert not re.search(r"hyper_num\s*[=:]\s*\d+\.0\b", text), page


def test_every_page_names_its_profile_and_data(built_book):
    for page in list(CHAPTERS) + [f"runs/{d}" for d in DATASETS] + unit_pages():
        text = soup(built_book, page).select_one("article").get_text(" ", strip=True)
        assert "smoke" in text and "SYNTHETIC" in text, page


def test_methods_reports_how_runs_ended_and_the_reductions(built_book):
    rows = table_rows(built_book, "methods", "stopping")
    assert {(row[0], row[1]) for row in rows} >= {("overall", m) for m in MODELS} | {("ablation", "LGMRec")}
    text = soup(built_book, "methods").get_text(" ", strip=True)
    assert "epoch cap" in text and "Profile.reductions" in text
    # 3 epochs, patience 3 in the smoke profile: every run's best epoch is within its patience
    assert "best epoch <= patience" in text and "best validation epoch within their first patience epochs" in text


def test_executed_notebooks_are_rendered_not_executed_again(built_book):
    page = soup(built_book, "runs/smoke-baby/lgmrec-ablation").get_text(" ", strip=True)
    assert MARKER in page  # the stored output of a cell that raises when run: the build did not run it
    links = soup(built_book, "runs/smoke-baby").select('a[href$=".html"]')
    targets = {a["href"] for a in links if "/" in a["href"]}
    assert targets and all((built_book / "runs" / t).is_file() for t in targets)
    assert {f"{unit_page(u)}.html" for u in units(PROFILE) if u.dataset == "smoke-baby"} <= targets


def test_a_failing_notebook_fails_the_build(smoke_results, tmp_path):
    source = tmp_path / "book"
    source.mkdir()
    (source / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: force\n  allow_errors: false\n"
        "sphinx:\n  config:\n    mathjax_path: mathjax/tex-svg-full.js\n")
    (source / "_toc.yml").write_text("format: jb-book\nroot: broken\n")
    (source / "broken.ipynb").write_text(
        '{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", "metadata": {}, "outputs": [],'
        ' "source": ["raise RuntimeError(\\"boom\\")"]}], "metadata": {"kernelspec": {"display_name": "Python 3",'
        ' "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}')
    with pytest.raises(BookBuildError, match=r"(?s)broken.ipynb: a cell failed.*RuntimeError: boom"):
        build_book("smoke", results_root=smoke_results.root, output=tmp_path / "out", source=source, quiet=True)


# ---------------------------------------------------------------------------- headless Chromium


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


def rendered_dom(page: Path, budget_ms: int = 15000, script: str = "") -> str:
    """The page's DOM after its scripts ran (MathJax included), from headless Chromium at a
    1400 x 1000 window; ``script`` is injected at the end of the page's body (in a copy)."""
    target = page
    if script:
        target = page.with_name(f".measure-{page.name}")
        target.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    profile_dir = page.parent / f".chromium-{page.stem}"
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--window-size=1400,1000", f"--user-data-dir={profile_dir}", f"--virtual-time-budget={budget_ms}",
        "--dump-dom", target.as_uri(),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)
        if target != page:
            target.unlink(missing_ok=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


#: measures, once the page's stylesheets applied, every table of the article against the content
#: column (the article's box less its padding) and looks for pandas' "..." truncation cells
MEASURE = r"""(function () {
  var article = document.querySelector('article.bd-article');
  var style = getComputedStyle(article), box = article.getBoundingClientRect();
  var left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  var out = {column: right - left, window: window.innerWidth, tables: [], truncated: []};
  article.querySelectorAll('table').forEach(function (table, i) {
    var r = table.getBoundingClientRect(), named = table.closest('[data-table]');
    var name = named ? named.getAttribute('data-table') : 'table ' + i;
    out.tables.push({name: name, overflow: Math.max(r.right - right, left - r.left, table.scrollWidth - (right - left))});
    table.querySelectorAll('td, th').forEach(function (cell) {
      var text = cell.textContent.trim();
      if (text === '...' || text === '\u2026') { out.truncated.push(name); }
    });
  });
  var pre = document.createElement('pre'); pre.id = 'lgmrec-measure'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();"""


def measure(page: Path) -> dict:
    dom = rendered_dom(page, budget_ms=3000, script=MEASURE)
    found = re.search(r'<pre id="lgmrec-measure"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{page}: the measuring script did not run"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def layout_problems(html_root: Path, pages, widths: bool = True) -> list[str]:
    problems = []
    for page in pages:
        result = measure(html_root / f"{page}.html")
        assert result["window"] == 1400 and 600 < result["column"] < 1400, (page, result["column"])
        if widths:
            problems += [f"{page}: table {t['name']} is {t['overflow']:.0f} px wider than the content column"
                         for t in result["tables"] if t["overflow"] > 1]
        problems += [f"{page}: table {name} has a '...' cell (pandas truncation)" for name in result["truncated"]]
    return problems


def test_every_chapter_fits_the_content_column_at_1400_pixels(built_book):
    chromium()
    pages = list(CHAPTERS) + [f"runs/{d}" for d in DATASETS]
    assert layout_problems(built_book, pages) == []
    # the executed unit notebooks (tables by lgmrec.unitview, not by lgmrec.report): never truncated
    assert layout_problems(built_book, unit_pages(), widths=False) == []


def test_book_renders_in_headless_chromium_with_local_mathjax(built_book):
    chromium()
    assert (built_book / "_static" / "mathjax" / "tex-svg-full.js").is_file()
    methods = rendered_dom(built_book / "methods.html")
    assert "<mjx-container" in methods  # MathJax ran from the book's own copy, without internet
    assert "cdn.jsdelivr" not in (built_book / "methods.html").read_text()


# ---------------------------------------------------------------------------- the checks can fail


def _copy_book(built_book: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "html"
    shutil.copytree(built_book, copy)
    return copy


def test_the_checks_fail_on_a_broken_book(built_book, tmp_path):
    chromium()
    broken = _copy_book(built_book, tmp_path)
    # a wide table, and a pandas-truncated one, on the overall chapter
    page = broken / "overall.html"
    wide = "".join(f"<td>{'unbreakable_' * 4}{i}</td>" for i in range(12))
    page.write_text(page.read_text().replace(
        '<div class="lgmrec-table" data-table="overall-smoke-baby"',
        f'<div class="lgmrec-table" data-table="wide"><table><tbody><tr>{wide}</tr></tbody></table></div>'
        f'<div class="lgmrec-table" data-table="dots"><table><tbody><tr><td>...</td></tr></tbody></table></div>'
        '<div class="lgmrec-table" data-table="overall-smoke-baby"', 1))
    problems = layout_problems(broken, ["overall"])
    assert any("table wide is" in p for p in problems) and any("table dots has a '...' cell" in p for p in problems)
    # a model's row dropped from a table
    text = page.read_text()
    box = text.index('data-table="overall-smoke-sports"')
    row = text.index("<tr>", text.index("<tbody>", box))
    page.write_text(text[:row] + text[text.index("</tr>", row) + 5:])
    assert any("overall-smoke-sports lacks rows" in p for p in check_rows(broken))
    # a blank figure
    image = next(iter(soup(broken, "overall").select("article img")))["src"]
    from matplotlib import image as mpimg

    mpimg.imsave(broken / image, np.ones((20, 20, 3)))
    assert any("is blank" in p for p in check_images(broken, ["overall"]))


def test_the_published_record_chapter_and_c5_on_the_landing_page(built_book):
    page = soup(built_book, "published_record")
    assert len(page.select("article img")) == 3  # one figure per dataset
    for family in ("baby", "sports", "clothing"):
        rows = table_rows(built_book, "published_record", f"published-values-{family}-recall-20")
        assert "LGMRec" in first_labels(rows)
        assert table_rows(built_book, "published_record", f"published-lineage-{family}")
    margins = table_rows(built_book, "published_record", "published-margin-recall-20")
    assert first_labels(margins) == ["baby", "sports", "clothing"]
    flags = table_rows(built_book, "published_record", "published-transcription-flags")
    assert {row[2] for row in flags} == {"VBPR", "MMGCN", "SLMRec"}
    assert "independent runs of one model differ by" in page.get_text(" ", strip=True)
    for name in ("intro", "claims"):
        rows = table_rows(built_book, name, "claims-verdicts")
        c5 = [row for row in rows if row[0].startswith("C5")]
        assert c5 and all("published LGMRec Recall@20 on Amazon" in " ".join(row) and "post-fix rerun" in " ".join(row)
                          for row in c5), (name, c5)
