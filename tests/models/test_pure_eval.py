"""``Recommender.pure_eval_forward``: the models that say so give the same embeddings from every
evaluation forward pass at one state and draw no random numbers in it, so the trainer's test pass
may score the validation pass's embeddings (the same bits as a second forward pass)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lgmrec.evaluation import evaluate, score_split, validate
from lgmrec.models import available_models, get_model_spec
from lgmrec.training import make_optimizer, seed_everything
from lgmrec.config import TrainConfig

from .mm_baseline_checks import training_batch

#: configurations whose evaluation forward pass is pure where the default's is not
PURE_CONFIG = {"lgmrec": {"eval_mode": "deterministic"}}


def trained_a_step(name: str, data, **changes):
    """A model as the trainer leaves it after an epoch's first batch (per-epoch state drawn,
    kept last-batch embeddings set), in eval mode."""
    spec = get_model_spec(name)
    seed_everything(0)
    model = spec.build(data, dataclasses.replace(spec.config_class(), **changes))
    optimizer = make_optimizer(model, TrainConfig())
    model.train()
    model.on_epoch_start(1)
    loss = model.loss(*training_batch(data))
    loss.backward()
    optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name", available_models())
def test_a_pure_evaluation_forward_pass_gives_the_same_bits_and_draws_nothing(name, tiny_data):
    model = trained_a_step(name, tiny_data, **PURE_CONFIG.get(name, {}))
    assert model.pure_eval_forward, f"{name}: every built-in model's evaluation forward pass is pure"
    with torch.no_grad():
        before = torch.get_rng_state()
        first = model()
        assert torch.equal(torch.get_rng_state(), before), f"{name}: drew random numbers"
        second = model()
    assert torch.equal(first.users, second.users) and torch.equal(first.items, second.items)
    # and the trainer's test pass with the validation's embeddings is evaluate()'s, bit for bit
    valid = validate(model, tiny_data)
    assert valid.embeddings is not None
    reused = score_split(model, tiny_data, "test", embeddings=valid.embeddings).result()
    fresh = evaluate(model, tiny_data, "test")
    assert reused.means == fresh.means


def test_lgmrec_official_evaluation_is_not_pure_and_runs_its_own_forward_passes(tiny_data):
    model = trained_a_step("lgmrec", tiny_data)
    assert model.forward_per_eval_batch and not model.pure_eval_forward
    torch.manual_seed(5)
    valid = validate(model, tiny_data)
    assert valid.embeddings is None
    state = torch.get_rng_state()
    score_split(model, tiny_data, "test", embeddings=None)
    assert not torch.equal(torch.get_rng_state(), state)  # its own noise, drawn at the test pass
