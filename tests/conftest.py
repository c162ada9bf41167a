"""Shared fixtures: tiny synthetic datasets, generated in memory and on disk; the ``--device`` option;
the scripts of ``scripts/`` as modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from lgmrec.synthetic import SyntheticPreset, generate, write_dataset


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help="run tests/models/test_devices.py on this torch device (e.g. cuda), against the CPU")


def pytest_configure(config):
    name = config.getoption("--device")
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device {name}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA device")
    # deterministic cuBLAS (lgmrec.training.seed_everything) is read once, before the first product
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(scope="session")
def device(request):
    """The ``--device`` under test; tests that need one are skipped, with this reason, without it."""
    import torch

    name = request.config.getoption("--device")
    if name is None:
        pytest.skip("compares a model on another device with the CPU: run pytest --device cuda (or cpu)")
    return torch.device(name)


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


@pytest.fixture
def load_script():
    """``load_script("ab_timings")``: ``scripts/ab_timings.py`` imported as a module (the scripts are
    run by path, not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
