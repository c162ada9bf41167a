"""Sessions: ``nox -s tests`` (the test suite) and ``nox -s reproduce`` (grid + book).

torch is installed first and pinned: an unpinned torch in a fresh environment pulls a multi-GB
CUDA build. Where a local wheel folder exists (/opt/wheels on the project's build machines) pip
takes the CPU wheel from it.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
LOCAL_WHEELS = "/opt/wheels"


def install(session: nox.Session, *extras: str) -> None:
    find_links = ["--find-links", LOCAL_WHEELS] if os.path.isdir(LOCAL_WHEELS) else []
    session.install(*find_links, TORCH)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install(*find_links, "-e", target)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest options after --)."""
    install(session, "test")
    session.run("pytest", *(session.posargs or ["-q"]))
