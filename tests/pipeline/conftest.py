"""Fixtures of the pipeline tests: tiny profiles over tiny synthetic data, results in tmp_path."""

from __future__ import annotations

import pytest

from lgmrec.executors import GridOptions, run_grid
from lgmrec.grids import PROFILES, SMOKE_PRESETS, Profile
from lgmrec.results import ResultStore



def tiny_profile(name: str = "tiny", **changes) -> Profile:
    """One tiny dataset, BPR + LGMRec, one seed, two epochs, no tuning; override any field."""
    values = dict(
        name=name, description="test profile", data="synthetic", datasets=("smoke-baby",),
        seeds=(999,), train={"max_epochs": 2, "patience": 2}, models=("lgmrec", "bpr"),
        sensitivity={}, synthetic_presets=SMOKE_PRESETS,
    )
    values.update(changes)
    return Profile(**values)


def grid(profile, store, only=None, **options):
    """run_grid in this process, without notebooks (fast); ``options``: GridOptions fields."""
    return run_grid(profile, only, store, "inprocess", GridOptions(notebooks=False, **options), progress=False)


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "results")


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """The whole smoke profile, run once per test session (read-only for the tests)."""
    store = ResultStore(tmp_path_factory.mktemp("smoke") / "results")
    summary = grid(PROFILES["smoke"], store)
    assert summary.failed == [] and summary.ran == summary.planned
    return store
