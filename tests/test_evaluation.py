import math

import numpy as np
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
