"""Shared fixtures: tiny synthetic datasets, generated in memory and on disk."""

from __future__ import annotations

import pytest

from lgmrec.synthetic import SyntheticPreset, generate, write_dataset

TINY = SyntheticPreset(n_users=240, n_items=120, mean_interactions=9.0, image_dim=48, text_dim=24, n_clusters=6)


@pytest.fixture(scope="session")
def tiny_data():
    return generate(TINY, seed=3, name="tiny-baby")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_data):
    return write_dataset(tiny_data, tmp_path_factory.mktemp("datasets") / "tiny-baby")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny models, where one thread is fastest and timings do not depend on the load."""
    import torch

    torch.set_num_threads(1)
