import numpy as np
import pytest
import torch

from lgmrec.config import TrainConfig
from lgmrec.training import FusedAdam, NegativeSampler, learning_rate, train_model


def test_negatives_come_from_the_training_pool_and_avoid_positives(tiny_data):
    sampler = NegativeSampler(tiny_data)
    users = torch.from_numpy(tiny_data.splits["train"][:, 0]).repeat(5)
    negatives = sampler.sample(users, torch.Generator().manual_seed(0)).numpy()
    positives = set(map(tuple, tiny_data.splits["train"]))
    assert not any((u, i) in positives for u, i in zip(users.numpy(), negatives))
    assert set(negatives) <= set(tiny_data.train_items)
    assert len(set(negatives)) > 0.8 * len(tiny_data.train_items)  # uniform, not a few items


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "lgmrec"])
def test_same_seed_same_metrics_and_training_helps(tiny_data, model):
    config = TrainConfig(max_epochs=6, patience=2, batch_size=512, device="cpu")
    first = train_model(tiny_data, model, train_config=config, seed=5)
    second = train_model(tiny_data, model, train_config=config, seed=5)
    assert first.status == "ok" and first.test == second.test and first.history == second.history
    assert set(first.test) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)}
    assert len(first.per_user["recall@20"]) == len(np.unique(tiny_data.splits["test"][:, 0]))
    assert np.isclose(first.per_user["recall@20"].mean(), first.test["recall@20"])
    losses = [h["loss"] for h in first.history]
    assert losses[-1] < losses[0]


def test_early_stopping_and_best_epoch_test_metrics(tiny_data, monkeypatch):
    import lgmrec.training as training

    calls = []  # (split, pass) of every evaluation pass, in order

    def spy(model, data, split, *args, **kwargs):
        result = real_score_split(model, data, split, *args, **kwargs)
        calls.append((split, result))
        return result

    def spy_validate(model, data, *args, **kwargs):
        result = real_validate(model, data, *args, **kwargs)
        calls.append(("valid", result))
        return result

    real_score_split, real_validate = training.score_split, training.validate
    monkeypatch.setattr(training, "score_split", spy)
    monkeypatch.setattr(training, "validate", spy_validate)
    config = TrainConfig(max_epochs=200, patience=3, batch_size=512, device="cpu")
    result = train_model(tiny_data, "bpr", train_config=config, seed=1, overrides={"embedding_dim": 8})
    scores = [round(h["recall@20"], 4) for h in result.history]
    best = max(range(len(scores)), key=lambda e: (scores[e], -e))  # first epoch of the max
    assert result.best_epoch == best + 1
    assert result.valid["recall@20"] == result.history[best]["recall@20"]
    # stopped on the (patience + 1)-th epoch without a strict improvement, long before the cap
    assert result.epochs_run == result.best_epoch + config.patience + 1 < config.max_epochs
    assert all(score <= scores[best] for score in scores[best + 1:])
    # the reported test metrics are those of the test pass right after the best epoch's validation
    valid_calls = [i for i, (split, _) in enumerate(calls) if split == "valid"]
    assert calls[valid_calls[best]][1].result().means == result.valid  # the best epoch's every metric
    after_best = calls[valid_calls[best] + 1]
    assert after_best[0] == "test" and after_best[1].result().means == result.test
    assert np.array_equal(after_best[1].result().per_user["recall@20"], result.per_user["recall@20"])
    later_tests = [r for split, r in calls[valid_calls[best] + 2:] if split == "test"]
    assert later_tests == []  # no test pass after the best epoch: nothing else to report
    # one test pass per improving epoch; BPR's evaluation forward is pure: it scored the validation's embeddings
    tests = [(i, r) for i, (split, r) in enumerate(calls) if split == "test"]
    assert len(tests) == sum(s > max(scores[:e], default=-1.0) for e, s in enumerate(scores))
    assert all(r.embeddings is calls[i - 1][1].embeddings is not None for i, r in tests)


def test_deferred_metrics_are_those_computed_at_once(tiny_data):
    """Metrics of a pass computed when asked for (the trainer asks at the end of the run) are
    evaluate()'s at that moment, bit for bit, with or without the validation's embeddings."""
    from lgmrec.evaluation import evaluate, score_split, validate
    from lgmrec.models import get_model_spec

    for name in ("bpr", "lgmrec"):
        spec = get_model_spec(name)
        model = spec.build(tiny_data, spec.config_class(embedding_dim=8))
        torch.manual_seed(3)
        expected = evaluate(model, tiny_data, "test")
        torch.manual_seed(3)
        valid = validate(model, tiny_data)
        torch.manual_seed(3)
        pending = score_split(model, tiny_data, "test", embeddings=valid.embeddings)
        torch.manual_seed(4)
        model.user_embedding.data.add_(1.0)  # later training changes nothing in what was scored
        got = pending.result()
        assert got.means == expected.means
        assert all(np.array_equal(got.per_user[k], expected.per_user[k]) for k in expected.per_user)
        assert (valid.embeddings is not None) == (name == "bpr")  # LGMRec's official evaluation draws noise


def test_model_training_defaults_and_learning_rate_decay(tiny_data):
    from lgmrec.resolve import resolve_run

    assert resolve_run("lgmrec", "x").train_config.lr_decay == 1.0  # the protocol: a constant learning rate
    assert resolve_run("lattice", "x").train_config.lr_decay == 0.96
    assert resolve_run("lattice", "x", {"lr_decay": 1.0}).train_config.lr_decay == 1.0  # explicit values win
    config = TrainConfig(max_epochs=3, patience=5, lr_decay=0.5, lr_decay_epochs=1, device="cpu")
    result = train_model(tiny_data, "bpr", train_config=config, seed=0)
    assert [h["learning_rate"] for h in result.history] == [1e-3, 5e-4, 2.5e-4]


def test_the_optimizer_updates_as_torch_fused_adam_and_the_rate_decays_as_lambda_lr():
    """FusedAdam (no torch._dynamo import) against torch.optim.Adam(fused=True) + LambdaLR: the same
    bits over steps where the rate changes, one parameter gets no gradient at first, weight decay."""
    generator = torch.Generator().manual_seed(0)
    initial = [torch.randn(7, 3, generator=generator), torch.randn(5, generator=generator)]
    ours = [torch.nn.Parameter(t.clone()) for t in initial]
    theirs = [torch.nn.Parameter(t.clone()) for t in initial]
    config = TrainConfig(learning_rate=0.01, weight_decay=0.1, lr_decay=0.5, lr_decay_epochs=2, device="cpu")
    optimizer = FusedAdam(ours, lr=config.learning_rate, weight_decay=config.weight_decay)
    reference = torch.optim.Adam(theirs, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(reference, lambda e: config.lr_decay ** (e / config.lr_decay_epochs))
    for epoch in range(1, 6):
        optimizer.lr = learning_rate(config, epoch)
        assert optimizer.lr == reference.param_groups[0]["lr"]
        grads = [torch.randn(t.shape, generator=generator) for t in initial]
        for params in (ours, theirs):
            for p, g in zip(params, grads):
                p.grad = g.clone() if epoch > 1 or p.dim() == 2 else None
        optimizer.step()
        reference.step()
        schedule.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert not torch.equal(ours[1], initial[1]) and optimizer.state[ours[1]][0].item() == 4  # 4 updates
    optimizer.zero_grad()
    assert all(p.grad is None for p in ours)


def test_a_diverging_run_is_reported_as_failed(tiny_data, monkeypatch):
    from lgmrec.models.bpr import BPR

    monkeypatch.setattr(BPR, "loss", lambda self, u, p, n: self.user_embedding.sum() * float("nan"))
    result = train_model(tiny_data, "bpr", train_config=TrainConfig(max_epochs=3, device="cpu"))
    assert result.status == "failed" and "nan" in result.error and result.test == {}
    assert result.to_record()["status"] == "failed"
