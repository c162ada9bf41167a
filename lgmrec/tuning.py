"""Choosing a tuned model's point: our rule (best validation Recall@20) and MMRec's (best test).

MMRec's ``quick_start`` trains every combination of a model's yaml lists and reports the one with
the best TEST Recall@20, so published baseline rows are test-selected maxima. This suite picks
the point with the best VALIDATION Recall@20 and records which point MMRec's rule would have
picked; the tuning chapter measures the difference ("selection optimism").

Ties go to the first point in grid order; failed runs (e.g. a diverged learning rate) are never
chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SELECTION_METRIC = "recall@20"


@dataclass(frozen=True)
class TuningChoice:
    validation_point: dict[str, Any]  # our rule: the overall table's point
    test_point: dict[str, Any]  # MMRec's rule
    points: int  # grid size
    finished: int  # points with a successful run


def choose(points: list[Mapping[str, Any]], records: list[Mapping[str, Any] | None]) -> TuningChoice | None:
    """The choice over ``points`` given each point's run record (None: not run yet).

    Returns None until every point has a record; raises nothing when all failed (the choice is
    then the first point, so the overall runs still happen and fail or succeed on their own).
    """
    if any(record is None for record in records):
        return None
    valid, test = [], []
    for record in records:
        ok = record.get("status") == "ok"
        valid.append((record.get("valid") or {}).get(SELECTION_METRIC) if ok else None)
        test.append((record.get("test") or {}).get(SELECTION_METRIC) if ok else None)
    finished = sum(v is not None for v in valid)
    return TuningChoice(dict(points[_argmax(valid)]), dict(points[_argmax(test)]), len(points), finished)


def _argmax(values: list[float | None]) -> int:
    best, index = None, 0
    for i, value in enumerate(values):
        if value is not None and (best is None or value > best):
            best, index = value, i
    return index


__all__ = ["SELECTION_METRIC", "TuningChoice", "choose"]
