"""scripts/grid_time.py --against: a grid's time change split into speed per epoch and epochs."""

from __future__ import annotations

import pandas as pd
import pytest


def runs(rows):
    return pd.DataFrame(rows, columns=["experiment", "model", "wall", "epochs"])


def test_the_comparison_gives_time_epochs_and_per_epoch_ratios_per_group_and_in_all(load_script):
    new = runs([("overall", "bpr", 30.0, 300), ("overall", "lgmrec", 120.0, 2000), ("error_rates", "lgmrec", 60.0, 1000)])
    old = runs([("overall", "bpr", 60.0, 200), ("overall", "lgmrec", 180.0, 1800)])
    table = load_script("grid_time").comparison(new, old, ["model"])
    columns = ["min new", "min old", "epochs new", "epochs old", "ms/ep new", "ms/ep old", "time x", "epochs x", "ms/ep x"]
    # bpr: 0.5 min against 1.0; 300 epochs against 200; 100 ms per epoch against 300
    assert list(table.loc["bpr", columns]) == pytest.approx([0.5, 1.0, 300, 200, 100, 300, 0.5, 1.5, 1 / 3])
    # all: 3.5 against 4.0 min, 3300 against 2000 epochs, 63.6 against 120 ms per epoch
    assert list(table.loc["all", columns]) == pytest.approx([3.5, 4.0, 3300, 2000, 210e3 / 3300, 120, 0.875, 1.65, 210e3 / 3300 / 120])
    by_experiment = load_script("grid_time").comparison(new, old, ["experiment"])
    assert by_experiment.loc["error_rates", "min new"] == 1.0 and pd.isna(by_experiment.loc["error_rates", "time x"])
