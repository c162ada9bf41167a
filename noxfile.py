"""Sessions: ``nox -s tests`` (the test suite), ``nox -s reproduce`` (grid + book), ``nox -s check``
(CI's Recall@20/NDCG@20 check) and ``nox -s book`` (rebuild the book from existing results).

torch is installed first and pinned: an unpinned torch in a fresh environment pulls a multi-GB
CUDA build. Where a local wheel folder exists (/opt/wheels on the project's build machines) the
installer takes the CPU wheel from it.

Environments are made with uv where it is installed (``pip install 'nox[uv]'``, as the README says),
else with virtualenv and pip: on a 2-core machine uv installs the ``book`` environment in ~30 s, pip in
55-95 s, and that time counts against ``nox -s reproduce``'s 30 minutes.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"

TORCH = "torch==2.13.0"
LOCAL_WHEELS = "/opt/wheels"


def install(session: nox.Session, *extras: str) -> None:
    options = ["--find-links", LOCAL_WHEELS] if os.path.isdir(LOCAL_WHEELS) else []
    if session.venv_backend == "uv":
        # pip compiles .pyc files as it installs; uv only when asked. Without them every kernel of the
        # grid would compile torch's modules again where PYTHONDONTWRITEBYTECODE is set (~7 s, not ~3 s).
        options.append("--compile-bytecode")
    session.install(*options, TORCH)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install(*options, "-e", target)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest options after --)."""
    install(session, "test")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def reproduce(session: nox.Session) -> None:
    """Run a profile's experiment grid and build the book: ``nox -s reproduce [-- PROFILE]``.

    Default profile ``embedded``: the embedded synthetic data. ``full`` needs the released datasets
    (``python -m lgmrec data fetch baby`` etc.). Interrupt and rerun at will: finished runs are kept.
    """
    install(session, "book")
    profile = session.posargs[0] if session.posargs else "embedded"
    session.run("python", "-m", "lgmrec", "grid", "--profile", profile)
    session.run("python", "-m", "lgmrec", "book", "--profile", profile)


@nox.session
def book(session: nox.Session) -> None:
    """Rebuild the book from the results already in results/: ``nox -s book [-- PROFILE]``."""
    install(session, "book")
    profile = session.posargs[0] if session.posargs else "embedded"
    session.run("python", "-m", "lgmrec", "book", "--profile", profile)


@nox.session
def check(session: nox.Session) -> None:
    """Run the ``ci`` profile and compare its Recall@20/NDCG@20 with the committed expected values."""
    install(session)  # the core install: no papermill, so the units run as plain calls (same records)
    profile = session.posargs[0] if session.posargs else "ci"
    session.run("python", "-m", "lgmrec", "grid", "--profile", profile, "--no-notebooks")
    session.run("python", "-m", "lgmrec", "check", "--profile", profile)
