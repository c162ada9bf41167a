"""LGMRec presets from ``reference/hyperparameters.csv`` (three public sources that disagree)."""

from __future__ import annotations

from typing import Any

from ..reference import read_reference

PRESET_KEYS = (
    "n_ui_layers", "n_mm_layers", "n_hyper_layer", "hyper_num", "keep_rate", "alpha",
    "cl_weight", "reg_weight",
)


def lgmrec_presets() -> dict[str, dict[str, dict[str, Any]]]:
    """preset -> dataset family -> hyperparameters; 'official-log' produced the released numbers."""
    table = read_reference("hyperparameters")
    presets: dict[str, dict[str, dict[str, Any]]] = {}
    for row in table.to_dict("records"):
        values = {key: row[key] for key in PRESET_KEYS}
        values = {k: (int(v) if k.startswith(("n_", "hyper")) else float(v)) for k, v in values.items()}
        presets.setdefault(row["preset"], {})[row["dataset"]] = values
    return presets
