"""Building the Jupyter Book (``book/``) from the results of one profile, offline.

The book's source folder is copied to a staging folder, MathJax 3 is copied into its ``_static/``
from the PyPI package ``django-static-mathjax`` (so formulas render without internet), and
``jupyter-book build -W`` executes every notebook (``execute_notebooks: force``,
``allow_errors: false``): a notebook that fails, or any Sphinx warning, fails the build.
The notebooks read the profile and results root from ``LGMREC_PROFILE`` / ``LGMREC_RESULTS_DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import ConfigError, LGMRecError
from .grids import get_profile
from .report import PROFILE_ENV
from .results import RESULTS_ENV, ResultStore

CHECKOUT = Path(__file__).resolve().parent.parent
MATHJAX_FILE = "tex-svg-full.js"  # SVG output: one self-contained script, no web fonts to load


class BookBuildError(LGMRecError):
    """jupyter-book failed (a notebook raised, or Sphinx warned)."""


def book_source() -> Path:
    source = CHECKOUT / "book"
    if not (source / "_config.yml").is_file():
        raise ConfigError(f"{source}: book sources not found (the book builds from a source checkout)")
    return source


def mathjax_script() -> Path:
    """MathJax 3's ``tex-svg-full.js`` from the installed ``django-static-mathjax`` package."""
    try:
        import mathjax  # provided by the PyPI package django-static-mathjax
    except ImportError:
        raise ConfigError(
            "MathJax is not installed: pip install django-static-mathjax (the book serves MathJax "
            "itself so that it renders offline)"
        ) from None
    script = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / MATHJAX_FILE
    if not script.is_file():
        raise ConfigError(f"{script}: MathJax script missing from the installed package")
    return script


def stage_book(destination: Path, source: Path | None = None) -> Path:
    """Copy the book sources (without build outputs) and vendor MathJax into ``_static/``."""
    source = source or book_source()
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    static = destination / "_static" / "mathjax"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy2(mathjax_script(), static / MATHJAX_FILE)
    return destination


def build_book(
    profile: str = "embedded",
    results_root: str | Path | None = None,
    output: str | Path | None = None,
    source: str | Path | None = None,
    quiet: bool = False,
) -> Path:
    """Build the book for ``profile`` and return the folder holding ``index.html``."""
    profile_obj = get_profile(profile)
    store = ResultStore(results_root)
    if not (store.root / profile_obj.name).is_dir():
        raise ConfigError(
            f"{store.root / profile_obj.name}: no results for profile '{profile_obj.name}'; "
            f"run `python -m lgmrec grid --profile {profile_obj.name}` first"
        )
    output = Path(output) if output is not None else CHECKOUT / "book" / "_build"
    output.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        PROFILE_ENV: profile_obj.name,
        RESULTS_ENV: str(store.root.resolve()),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    with tempfile.TemporaryDirectory(prefix="lgmrec-book-") as tmp:
        staged = stage_book(Path(tmp) / "book", Path(source) if source else None)
        command = [
            sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
            "build", str(staged), "--path-output", str(output), "--builder", "html", "-W", "-n",
        ]
        completed = subprocess.run(command, env=env, text=True,
                                   stdout=subprocess.PIPE if quiet else None,
                                   stderr=subprocess.STDOUT if quiet else None)
    if completed.returncode != 0:
        tail = (completed.stdout or "")[-4000:] if quiet else "(see the output above)"
        raise BookBuildError(f"jupyter-book build failed with exit code {completed.returncode}: {tail}")
    html = output / "_build" / "html"
    if not (html / "index.html").is_file():
        raise BookBuildError(f"{html}: jupyter-book reported success but wrote no index.html")
    return html


__all__ = ["BookBuildError", "book_source", "build_book", "mathjax_script", "stage_book"]
