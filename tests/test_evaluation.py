import math

import numpy as np
import pytest
import torch

from lgmrec.data import InteractionData
from lgmrec.evaluation import evaluate, ranking_metrics
from lgmrec.models.base import Embeddings, Recommender


def test_ranking_metrics_by_hand():
    # ranked list of 5 with hits at ranks 1 and 3; the user has 4 relevant items
    hits = torch.tensor([[1, 0, 1, 0, 0]])
    m = ranking_metrics(hits, torch.tensor([4]), (1, 5))
    assert m["recall@5"].item() == 0.5 and m["precision@5"].item() == 0.4
    dcg = 1 + 1 / math.log2(4)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 5))
    assert math.isclose(m["ndcg@5"].item(), dcg / idcg, rel_tol=1e-6)
    assert math.isclose(m["map@5"].item(), (1 / 1 + 2 / 3) / 4, rel_tol=1e-6)
    assert m["recall@1"].item() == 0.25 and m["ndcg@1"].item() == 1.0 and m["map@1"].item() == 1.0


class FixedScores(Recommender):
    """Scores item i for every user as -i (item 0 ranked first)."""

    def __init__(self, n_users, n_items):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self):
        return Embeddings(torch.ones(self.n_users, 1), -torch.arange(self.n_items, dtype=torch.float32)[:, None])


def test_evaluate_masks_training_items_and_keeps_per_user_vectors():
    splits = {
        "train": np.array([[0, 0], [1, 1], [2, 0]]),
        "valid": np.array([[0, 2]]),
        "test": np.array([[0, 1], [1, 0], [1, 5]]),
    }
    data = InteractionData("toy", 3, 6, splits)
    result = evaluate(FixedScores(3, 6), data, "test", topk=(1, 2))
    # user 0: train item 0 masked -> ranking 1,2,...: hit at rank 1; user 1: item 1 masked -> 0,2,..
    assert result.per_user["user"].tolist() == [0, 1]
    assert result.per_user["recall@1"].tolist() == [1.0, 0.5]
    assert result.per_user["precision@2"].tolist() == [0.5, 0.5]
    assert math.isclose(result.means["recall@1"], 0.75)
    # validation items are not masked when testing: user 0's valid item 2 can occupy rank 2
    assert result.per_user["recall@2"].tolist() == [1.0, 0.5]


class RandomScores(Recommender):
    """Random scores (a fresh draw per forward pass, as LGMRec's official evaluation), optionally
    rounded to a few levels so that many items tie, across rank k as well."""

    forward_per_eval_batch = True

    def __init__(self, n_users, n_items, levels=0):
        super().__init__()
        self.n_users, self.n_items, self.levels = n_users, n_items, levels
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self):
        items = torch.rand(self.n_items, 1)
        if self.levels:
            items = torch.round(items * self.levels)
        return Embeddings(torch.ones(self.n_users, 1), items)


@pytest.mark.parametrize("levels", [0, 3, 200])
@pytest.mark.parametrize("batch_users", [4096, 7])
def test_validate_is_evaluate_bit_for_bit_and_draws_the_same_random_numbers(tiny_data, levels, batch_users):
    """validate(): Recall@20 without a top-K where no tie crosses rank 20, every other metric later
    from the kept scores; the same numbers as evaluate(), and the random stream left as it leaves it."""
    from lgmrec import evaluation

    model = RandomScores(tiny_data.n_users, tiny_data.n_items, levels)
    for metric in ("recall@20", "recall@5", "ndcg@10"):
        torch.manual_seed(0)
        expected = evaluate(model, tiny_data, "valid", (5, 10, 20, 50), batch_users)
        after_evaluate = torch.rand(3)
        torch.manual_seed(0)
        valid = evaluation.validate(model, tiny_data, metric, (5, 10, 20, 50), batch_users)
        assert torch.equal(torch.rand(3), after_evaluate)
        assert valid.score == expected.means[metric]
        result = valid.result()
        assert result.means == expected.means
        assert set(result.per_user) == set(expected.per_user)
        assert all(np.array_equal(result.per_user[n], expected.per_user[n]) for n in expected.per_user)


def test_recall_without_top_k_declines_ties_across_rank_k_and_nan():
    from lgmrec.evaluation import recall_at_k_if_unambiguous, split_batches

    splits = {"train": np.array([[0, 0]]), "valid": np.array([[0, 1], [1, 2]]), "test": np.array([[0, 2]])}
    data = InteractionData("toy", 2, 5, splits)
    batch = split_batches(data, "valid", 10, torch.device("cpu"))[0]
    scores = torch.tensor([[-torch.inf, 0.9, 0.5, 0.5, 0.1], [0.3, 0.2, 0.4, 0.1, 0.0]])
    assert recall_at_k_if_unambiguous(batch, scores, 5, 1).tolist() == [1.0, 1.0]
    tied = torch.tensor([[-torch.inf, 0.9, 0.5, 0.5, 0.1], [0.4, 0.2, 0.4, 0.1, 0.0]])
    assert recall_at_k_if_unambiguous(batch, tied, 5, 1) is None  # user 1's item 2 ties item 0 at rank 1
    assert recall_at_k_if_unambiguous(batch, tied, 5, 2).tolist() == [1.0, 1.0]  # both tied items fit in the top 2
    with_nan = scores.clone()
    with_nan[1, 4] = torch.nan
    assert recall_at_k_if_unambiguous(batch, with_nan, 5, 1) is None


@pytest.mark.parametrize("levels", [0, 4, 40, 1000])
def test_counted_ranks_give_the_top_k_hits_or_decline(tiny_data, levels):
    """ranked_hits (no top-K) is topk_hits element for element wherever it answers; with ties that
    touch a held-out item within the top K, or NaN, it declines (and the top-K decides)."""
    from lgmrec.evaluation import ranked_hits, split_batches, topk_hits

    generator = torch.Generator().manual_seed(levels)
    answered = declined = 0
    for batch_users in (4096, 13):
        for batch in split_batches(tiny_data, "test", batch_users, torch.device("cpu")):
            for trial in range(5):
                scores = torch.rand(len(batch.users), tiny_data.n_items, generator=generator)
                if levels:
                    scores = torch.round(scores * levels)
                scores[batch.mask_rows, batch.mask_items] = -torch.inf
                if trial == 4:
                    scores[0, 0] = torch.nan
                for width in (1, 20, 50):
                    hits = ranked_hits(batch, scores, tiny_data.n_items, width)
                    if hits is None:
                        declined += 1
                    else:
                        answered += 1
                        assert torch.equal(hits, topk_hits(batch, scores, tiny_data.n_items, width))
    assert answered > 0 and (declined > 0 or levels in (0, 1000))
    assert ranked_hits(batch, scores, tiny_data.n_items, tiny_data.n_items + 1) is None


def test_held_out_ranks_from_signs_are_the_counted_comparisons():
    """The counts of higher and equal scores taken from the signs of differences are those of the
    comparisons, with ties, masked (-inf) and infinite scores; a non-finite own score compares."""
    from lgmrec.evaluation import _heldout_ranks, split_batches

    splits = {"train": np.array([[0, 0], [1, 1], [2, 2]]), "valid": np.array([[0, 3], [0, 4], [1, 2], [2, 5]]),
              "test": np.array([[0, 1]])}
    data = InteractionData("toy", 3, 8, splits)
    batch = split_batches(data, "valid", 10, torch.device("cpu"))[0]
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        scores = torch.round(torch.randn(3, 8, generator=generator) * (trial % 5 + 1))  # many ties
        scores[batch.mask_rows, batch.mask_items] = -torch.inf
        if trial % 7 == 0:
            scores[1, 7] = torch.inf
        if trial % 11 == 0:
            scores[2, 5] = -torch.inf  # a held-out item's own score not finite: compared
        if trial % 13 == 0:
            scores[0, 0] = 1e-45  # the smallest subnormal against 0
            scores[0, 3] = 0.0
        rows, higher, tied = _heldout_ranks(batch, scores.clone(), 8)
        own = scores[rows, batch.heldout_keys % 8]
        assert torch.equal(higher, (scores[rows] > own[:, None]).sum(dim=1))
        assert torch.equal(tied, (scores[rows] == own[:, None]).sum(dim=1))
