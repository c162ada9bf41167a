"""Building the Jupyter Book (``book/``) from the results of one profile, offline.

1. The book's source folder is copied to a staging folder and MathJax 3 is copied into its
   ``_static/`` from the PyPI package ``django-static-mathjax`` (formulas render without internet).
2. The Runs appendix is added (when the table of contents has ``runs/index``): one page per
   dataset, made from ``_appendix/runs_dataset.ipynb``, and the executed notebook of every unit
   the grid ran (kept beside its records, :func:`lgmrec.worker.notebook_path`), copied under
   ``runs/<dataset>/<model>-<unit>.ipynb`` with a title and a provenance line. Those are shown as
   executed, never executed again.
3. Every other notebook of the table of contents is executed, several at a time (one kernel
   each, ``workers`` at once), with ``LGMREC_PROFILE`` / ``LGMREC_RESULTS_DIR`` and the folder
   for the tables' CSV files (``_static/downloads``) in their environment. A cell that raises
   fails the build.
4. ``jupyter-book build -W`` renders the executed notebooks (``execute_notebooks: off`` in the
   staged configuration): any Sphinx warning fails the build.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import ConfigError, LGMRecError
from .grids import get_profile
from .report.context import PROFILE_ENV
from .report.display import DOWNLOADS_ENV
from .results import RESULTS_ENV, ResultStore
from .worker import KERNEL_SHUTDOWN

CHECKOUT = Path(__file__).resolve().parent.parent
MATHJAX_FILE = "tex-svg-full.js"  # SVG output: one self-contained script, no web fonts to load
RUNS_INDEX = "runs/index"
DATASET_TEMPLATE = "_appendix/runs_dataset.ipynb"
NOTEBOOK_TIMEOUT_S = 1200


class BookBuildError(LGMRecError):
    """A notebook failed, or jupyter-book failed (Sphinx warned)."""


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
    """Copy the book sources (without build outputs) and vendor MathJax into ``_static/``; the
    checkout's ``examples/`` go to ``_examples/`` (the tutorial page includes their files; a folder
    whose name starts with "_" is not a page of the book)."""
    source = source or book_source()
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    examples = source.parent / "examples"
    if examples.is_dir():
        shutil.copytree(examples, destination / "_examples", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    static = destination / "_static" / "mathjax"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy2(mathjax_script(), static / MATHJAX_FILE)
    return destination


# ---------------------------------------------------------------------------- configuration files


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _write_yaml(path: Path, value: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))


def toc_files(toc: dict) -> list[str]:
    """Every file named in a jupyter-book table of contents, in order."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    if "root" in toc:
        found.append(str(toc["root"]))
    walk(toc)
    return found


def _find_entry(toc: dict, name: str) -> dict | None:
    stack = [toc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("file") == name:
                return node
            stack += [child for key in ("parts", "chapters", "sections") for child in node.get(key) or []]
    return None


# ---------------------------------------------------------------------------- the Runs appendix


def add_runs_appendix(staged: Path, profile, store: ResultStore) -> list[str]:
    """Dataset pages and copies of the executed unit notebooks; returns the pages added."""
    from .report.runs import executed_units, unit_page

    toc_path = staged / "_toc.yml"
    toc = _read_yaml(toc_path)
    entry = _find_entry(toc, RUNS_INDEX)
    template = staged / DATASET_TEMPLATE
    if entry is None or not template.is_file():
        return []
    records = store.load(profile.name)
    datasets = [d for d in profile.datasets if d in set(records["dataset"])]
    kinds = sorted(records["data_kind"].dropna().unique()) if "data_kind" in records else []
    executed = executed_units(profile, store.root)
    added, sections = [], []
    for dataset in datasets:
        page = f"runs/{dataset}"
        _write_dataset_page(template, staged / f"{page}.ipynb", dataset)
        units = []
        for unit, source in executed:
            if unit.dataset != dataset:
                continue
            target = staged / "runs" / f"{unit_page(unit)}.ipynb"
            _copy_unit_notebook(source, target, profile, unit, kinds)
            units.append({"file": f"runs/{unit_page(unit)}"})
            added.append(f"runs/{unit_page(unit)}")
        sections.append({"file": page, **({"sections": units} if units else {})})
        added.append(page)
    if sections:
        entry["sections"] = sections
        _write_yaml(toc_path, toc)
    return added


def _write_dataset_page(template: Path, target: Path, dataset: str) -> None:
    notebook = json.loads(template.read_text())
    for cell in notebook["cells"]:
        text = "".join(cell["source"]).replace("{{dataset}}", dataset)
        text = text.replace("dataset = None  # set by lgmrec.book", f"dataset = {dataset!r}  # set by lgmrec.book")
        cell["source"] = text
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, indent=1))


def _copy_unit_notebook(source: Path, target: Path, profile, unit, kinds: list[str]) -> None:
    """The executed notebook with a title naming the unit and a line saying where it came from."""
    from .report.context import DATA_LABELS

    notebook = json.loads(source.read_text())
    executed = _dt.datetime.fromtimestamp(source.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = {"overall": "overall runs (with its tuning grid, when tuned)", "tuning": "tuning grid",
            "ablation": "ablation", "sensitivity": f"sensitivity of {unit.part}",
            "error_rates": "error-rate runs (A/A and planted effects)"}[unit.experiment]
    data = "; ".join(DATA_LABELS.get(k, k) for k in kinds) or profile.data
    title = f"# {unit.dataset} · {unit.model}: {what}"
    intro = (f"{title}\n\n**Executed notebook** of this unit of profile `{profile.name}`, run by the grid with "
             f"papermill from `notebooks/run_experiment.ipynb` (file written {executed}); shown as it was executed, "
             f"not re-run by the book build. Every number on this page comes from {data}.\n\n")
    cells = notebook.get("cells", [])
    if cells and cells[0].get("cell_type") == "markdown" and "".join(cells[0]["source"]).lstrip().startswith("# "):
        text = "".join(cells[0]["source"]).lstrip()
        rest = text.split("\n", 1)[1] if "\n" in text else ""
        cells[0]["source"] = intro + rest.lstrip("\n")
    else:
        cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": intro, "id": "lgmrec-title"})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, indent=1))


# ---------------------------------------------------------------------------- executing the chapters


def notebooks_to_execute(staged: Path) -> list[Path]:
    """The table of contents' notebooks, less the configuration's ``execute.exclude_patterns``."""
    config = _read_yaml(staged / "_config.yml")
    excluded = list((config.get("execute") or {}).get("exclude_patterns") or [])
    found = []
    for name in toc_files(_read_yaml(staged / "_toc.yml")):
        path = staged / name
        path = path if path.suffix else path.with_suffix(".ipynb")
        if path.suffix != ".ipynb" or not path.is_file():
            continue
        relative = path.relative_to(staged).as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in excluded):
            continue
        found.append(path)
    return found


def kernel_transport(sockets: Path, index: int) -> dict:
    """The kernel manager's settings for one notebook's kernel: on POSIX, IPC transport (Unix
    sockets under ``sockets``, named by ``index``), so that the kernel, reachable by this user
    only, does not listen on TCP (and ipykernel does not warn, once per notebook, that TCP is
    unencrypted); elsewhere jupyter_client's default (TCP on localhost)."""
    if os.name != "posix":
        return {}
    return {"KernelManager": {"transport": "ipc", "ip": str(sockets / f"kernel-{index}")}}


def execute_notebooks(paths: list[Path], env: dict, workers: int = 2,
                      timeout: int = NOTEBOOK_TIMEOUT_S) -> dict[str, float]:
    """Execute notebooks in place, ``workers`` kernels at a time, each in its own folder;
    returns seconds per notebook. The first cell that raises stops the build."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from traitlets.config import Config

    sockets = Path(tempfile.mkdtemp(prefix="lgmrec-kernels-"))  # short: a socket path has ~100 bytes

    async def run_one(index: int, path: Path, semaphore: asyncio.Semaphore) -> tuple[str, float]:
        async with semaphore:
            notebook = nbformat.read(path, as_version=4)
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=False,
                                    shutdown_kernel=KERNEL_SHUTDOWN, resources={"metadata": {"path": str(path.parent)}},
                                    config=Config(kernel_transport(sockets, index)))
            start = time.perf_counter()
            try:
                await client.async_execute(env=env)
            except CellExecutionError as exc:
                message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # no terminal colours
                raise BookBuildError(f"{path.name}: a cell failed: {message[-3000:]}") from None
            nbformat.write(notebook, path)
            return path.name, time.perf_counter() - start

    async def run_all() -> list:
        semaphore = asyncio.Semaphore(max(1, workers))
        # every notebook runs to its end (no kernel is killed half-way); the first failure is raised
        return await asyncio.gather(*(run_one(i, p, semaphore) for i, p in enumerate(paths)),
                                    return_exceptions=True)

    try:
        results = asyncio.run(run_all())
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return dict(results)


def _execution_off(staged: Path) -> None:
    path = staged / "_config.yml"
    config = _read_yaml(path)
    execute = dict(config.get("execute") or {})
    execute["execute_notebooks"] = "off"  # executed above; jupyter-book only renders
    config["execute"] = execute
    _write_yaml(path, config)


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


# ---------------------------------------------------------------------------- build


def build_book(
    profile: str = "embedded",
    results_root: str | Path | None = None,
    output: str | Path | None = None,
    source: str | Path | None = None,
    quiet: bool = False,
    workers: int | None = None,
) -> Path:
    """Build the book for ``profile`` and return the folder holding ``index.html``."""
    profile_obj = get_profile(profile)
    store = ResultStore(results_root)
    if not (store.root / profile_obj.name).is_dir():
        raise ConfigError(
            f"{store.root / profile_obj.name}: no results for profile '{profile_obj.name}'; "
            f"run `python -m lgmrec grid --profile {profile_obj.reference}` first"
        )
    output = Path(output) if output is not None else CHECKOUT / "book" / "_build"
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lgmrec-book-") as tmp:
        staged = stage_book(Path(tmp) / "book", Path(source) if source else None)
        downloads = staged / "_static" / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            PROFILE_ENV: profile_obj.reference,  # the notebooks read the same profile: by name or file
            RESULTS_ENV: str(store.root.resolve()),
            DOWNLOADS_ENV: str(downloads),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        add_runs_appendix(staged, profile_obj, store)
        start = time.perf_counter()
        seconds = execute_notebooks(notebooks_to_execute(staged), env, workers or default_workers())
        if not quiet:
            for name, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
                print(f"executed {name} in {value:.1f} s", flush=True)
            print(f"executed {len(seconds)} notebooks in {time.perf_counter() - start:.1f} s", flush=True)
        _execution_off(staged)
        command = [
            sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
            "build", str(staged), "--path-output", str(output), "--builder", "html", "-W", "-n",
        ]
        # Sphinx's progress (hundreds of lines: its configuration, every page and image) is kept in a
        # log file, not printed: the console says what was built, or why it failed
        completed = subprocess.run(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = output / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(completed.stdout or "")
    if completed.returncode != 0:
        tail = (completed.stdout or "")[-4000:]
        raise BookBuildError(f"jupyter-book build failed with exit code {completed.returncode} (whole log: {log}): "
                             f"{tail}")
    html = output / "_build" / "html"
    if not (html / "index.html").is_file():
        raise BookBuildError(f"{html}: jupyter-book reported success but wrote no index.html")
    return html


__all__ = ["BookBuildError", "add_runs_appendix", "book_source", "build_book", "execute_notebooks",
           "kernel_transport", "mathjax_script", "notebooks_to_execute", "stage_book", "toc_files"]
