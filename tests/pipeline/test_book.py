"""The Jupyter Book: built offline from the smoke profile's results, rendered in headless Chromium.

Chromium (Debian package ``chromium``) is installed by ``.ci/run``; on a machine without it the
rendering test is skipped with that reason, except under CI, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from lgmrec.book import BookBuildError, build_book

CHAPTERS = ("overall", "ablation", "sensitivity", "sparsity", "efficiency", "reported_vs_reproduced", "methods")


@pytest.fixture(scope="module")
def built_book(smoke_results, tmp_path_factory):
    return build_book("smoke", results_root=smoke_results.root, output=tmp_path_factory.mktemp("book"), quiet=True)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


def rendered_dom(page) -> str:
    """The page's DOM after its scripts ran (MathJax included), from headless Chromium."""
    profile_dir = page.parent.parent / f".chromium-{page.stem}"
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile_dir}", "--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_every_chapter_is_built_with_its_tables_and_figures(built_book):
    for chapter in CHAPTERS:
        assert (built_book / f"{chapter}.html").is_file(), chapter
    overall = (built_book / "overall.html").read_text()
    assert overall.count("<table") >= 2  # mean +- std table and the significance tests
    assert "LGMRec" in overall and "LightGCN" in overall
    for chapter in ("overall", "ablation", "sensitivity", "sparsity", "efficiency"):
        html = (built_book / f"{chapter}.html").read_text()
        assert re.search(r'<img [^>]*src="[^"]+\.png"', html), f"{chapter}: no figure"
    methods = (built_book / "methods.html").read_text()
    assert "SYNTHETIC" in methods  # says which data every number came from


def test_book_renders_in_headless_chromium_with_local_mathjax(built_book):
    assert (built_book / "_static" / "mathjax" / "tex-svg-full.js").is_file()
    overall = rendered_dom(built_book / "overall.html")
    assert overall.count("<table") >= 2
    images = re.findall(r'<img [^>]*src="([^"]+\.png)"', overall)
    assert images and all((built_book / src).is_file() for src in images)
    methods = rendered_dom(built_book / "methods.html")
    assert "<mjx-container" in methods  # MathJax ran from the book's own copy, without internet
    assert "cdn.jsdelivr" not in (built_book / "methods.html").read_text()


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
    with pytest.raises(BookBuildError, match="exit code"):
        build_book("smoke", results_root=smoke_results.root, output=tmp_path / "out", source=source, quiet=True)
