"""Model tests build kNN and user-user graphs: keep their cache in a temporary folder per test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGMREC_CACHE_DIR", str(tmp_path / "cache"))
