"""Tables and figures of the book's chapters, computed from the results store.

The notebooks under ``book/`` only pick a profile and call these functions, so every number in
the book comes from here and can be recomputed outside a notebook. Modules: :mod:`.context`
(profile, records, per-user metrics, provenance), :mod:`.display` (full tables with CSV
downloads), :mod:`.contrasts` (paired comparisons), :mod:`.claims`, :mod:`.overall` (main table,
significance, sparsity, efficiency), :mod:`.variants` (ablation, sensitivity), :mod:`.tuning`,
:mod:`.reported`, :mod:`.calibration` (the calibrated testbed and its held-out check), :mod:`.methods`, :mod:`.errorrates` (the verdict rule's measured error rates) and
:mod:`.runs` (the Runs appendix, tidy downloads).
"""

from __future__ import annotations

from .calibration import (degrees_table, fit_tables, held_out_summary, held_out_table, honesty_note, knobs_table,
                          regime_table, trials_figure)
from .claims import (CLAIMS, claim_definitions, claim_tables, compute_claims, definitions_table, verdict_frame,
                     verdict_table)
from .context import (DATA_LABELS, MAIN_METRICS, METRIC_LABELS, PROFILE_ENV, TABLE_METRICS, BookContext,
                      model_labels)
from .design import design_frame, design_table
from .display import Html, Table, Tables, setup_display
from .errorrates import error_rate_summary, error_rate_table
from .methods import (code_versions, data_figure, protocol_table, provenance_table, reductions, stopping_summary,
                      stopping_table)
from .overall import (efficiency_figure, efficiency_tables, environment_table, overall_figure, overall_summary,
                      overall_tables, significance_tables, sparsity_figure, sparsity_tables)
from .reported import comparison_tables, published_reference_tables, ranking_tables, reported_figure, reported_tables
from .runs import runs_overview, runs_tables, tidy_downloads, tidy_runs
from .tuning import choice_tables, grids_table, optimism_figure, optimism_tables, replication_tables
from .variants import ablation_figure, ablation_tables, sensitivity_figure, sensitivity_tables


__all__ = [
    "BookContext", "CLAIMS", "DATA_LABELS", "Html", "MAIN_METRICS", "METRIC_LABELS", "PROFILE_ENV", "TABLE_METRICS",
    "Table", "Tables", "ablation_figure", "setup_display", "ablation_tables", "choice_tables", "claim_definitions", "claim_tables",
    "code_versions", "comparison_tables", "compute_claims", "data_figure", "degrees_table", "fit_tables",
    "held_out_summary", "held_out_table", "honesty_note", "knobs_table", "regime_table", "trials_figure", "definitions_table", "design_frame", "design_table", "efficiency_figure", "efficiency_tables",
    "environment_table", "error_rate_summary", "error_rate_table", "grids_table", "model_labels", "optimism_figure", "optimism_tables", "overall_figure",
    "overall_summary", "overall_tables", "protocol_table", "provenance_table", "published_reference_tables",
    "ranking_tables", "reductions", "replication_tables", "reported_figure", "reported_tables", "runs_overview",
    "runs_tables", "sensitivity_figure", "sensitivity_tables", "significance_tables", "sparsity_figure",
    "sparsity_tables", "stopping_summary", "stopping_table", "tidy_downloads", "tidy_runs", "verdict_frame",
    "verdict_table",
]
