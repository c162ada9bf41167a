"""Every model on the device named by ``pytest --device`` against the same model on the CPU.

    pytest tests/models --device cuda

Without ``--device`` these tests are skipped, and the summary says why: a machine without a GPU has
nothing to compare with. ``--device cpu`` runs them CPU against CPU, which checks the tests.

CPU and CUDA draw random numbers from different generators. The comparison therefore turns off the
random parts that eval mode keeps (LGMRec's official evaluation noise, BM3's target dropout); the
training runs on the device keep everything, and DualGNN's sampled user graph is drawn on the CPU
and copied.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lgmrec.config import TrainConfig
from lgmrec.models import available_models, get_model_spec
from lgmrec.training import train_model

from .mm_baseline_checks import training_batch

WITHOUT_RANDOMNESS = {"lgmrec": {"eval_mode": "deterministic"}, "bm3": {"dropout": 0.0}}


def built_on(device, name: str, data):
    spec = get_model_spec(name)
    config = dataclasses.replace(spec.config_class(), **WITHOUT_RANDOMNESS.get(name, {}))
    torch.manual_seed(0)
    return spec.build(data, config).to(device).eval()


def share_drawn_state(reference, moved, device) -> None:
    """State a model draws for itself outside its parameters and buffers (DualGNN's user graph)
    is copied from the CPU model, so both use the same draw."""
    for name, value in vars(reference).items():
        if isinstance(value, torch.Tensor):
            setattr(moved, name, value.to(device))


def loss_and_gradients(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model.loss(*batch)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_close_to(expected: torch.Tensor, actual: torch.Tensor, what: str, scale: float | None = None) -> None:
    """Float32 agreement up to summation order: relative 1e-4, absolute 1e-5 of ``scale`` (default:
    the largest entry of ``expected``)."""
    if scale is None:
        scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-4, atol=1e-5 * (scale or 1.0),
                               msg=lambda message: f"{what}: {message}")


@pytest.mark.parametrize("name", available_models())
def test_embeddings_scores_loss_and_gradients_match_the_cpu(name, tiny_data, device):
    reference, moved = built_on("cpu", name, tiny_data), built_on(device, name, tiny_data)
    users = torch.arange(0, tiny_data.n_users, 7)
    with torch.no_grad():
        expected = reference()
        share_drawn_state(reference, moved, device)
        actual = moved()
        assert_close_to(expected.users, actual.users, "user embeddings")
        assert_close_to(expected.items, actual.items, "item embeddings")
        assert_close_to(reference.score(users, expected), moved.score(users.to(device), actual), "scores")
    batch = training_batch(tiny_data)
    expected_loss, expected_grads = loss_and_gradients(reference, batch)
    actual_loss, actual_grads = loss_and_gradients(moved, tuple(t.to(device) for t in batch))
    assert_close_to(expected_loss, actual_loss, "loss")
    assert actual_grads.keys() == expected_grads.keys()
    # Scale: the model's largest gradient entry. Some biases (of FREEDOM's and SLMRec's projections,
    # MGCN's and MICRO's attention queries) get gradients that are only the rounding left over from
    # terms that cancel, 1e-9 to 1e-13 against 1e-3 elsewhere; those digits differ between devices.
    largest = max(grad.abs().max().item() for grad in expected_grads.values())
    for parameter, grad in expected_grads.items():
        assert_close_to(grad, actual_grads[parameter], f"gradient of {parameter}", scale=largest)


def short_run(name: str, data, device, seed: int = 5):
    config = TrainConfig(max_epochs=3, patience=3, batch_size=512, device=str(device))
    return train_model(data, name, train_config=config, seed=seed)


@pytest.mark.parametrize("name", available_models())
def test_training_on_the_device_runs_and_stays_finite(name, tiny_data, device):
    result = short_run(name, tiny_data, device)
    assert result.status == "ok", result.error
    assert result.config["train"]["device"] == str(device)
    assert result.epochs_run == 3
    values = list(result.valid.values()) + list(result.test.values())
    assert values and all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("name", available_models())
def test_same_seed_same_run_on_the_device(name, tiny_data, device):
    first, second = short_run(name, tiny_data, device), short_run(name, tiny_data, device)
    assert first.history == second.history
    assert first.test == second.test


def test_a_runs_peak_device_memory_is_its_own(tiny_data, device):
    if device.type != "cuda":
        pytest.skip("peak device memory is a CUDA allocator figure; the CPU's is the process's resident peak")
    torch.empty(2**28, device=device)  # 1 GiB, freed at once: an earlier, larger peak in this process
    result = short_run("bpr", tiny_data, device)
    assert 0 < result.peak_memory_mb < 1024
