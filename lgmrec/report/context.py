"""What every chapter reads: the profile, its records, the runs of each experiment and their
per-user metrics, and the statement of which data the numbers came from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

import pandas as pd

from ..errors import DataError
from ..grids import PUBLISHED_VARIANT, REFERENCE_MODEL, Profile, get_profile
from ..results import ResultStore, read_per_user_file

PROFILE_ENV = "LGMREC_PROFILE"
MAIN_METRICS = ("recall@20", "ndcg@20")
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")  # the paper's table columns
METRIC_LABELS = {"recall@10": "Recall@10", "recall@20": "Recall@20", "ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20",
                 "recall@50": "Recall@50", "ndcg@50": "NDCG@50"}
DATA_LABELS = {
    "synthetic": "SYNTHETIC data (lgmrec.synthetic; not the Amazon datasets, not comparable with the paper)",
    "real": "the released Amazon datasets (verified against the published statistics)",
    "folder": "a user-supplied dataset folder (unverified)",
}
REFERENCE_LABEL = "LGMRec"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def model_labels() -> dict[str, str]:
    """Model name -> label in tables: the built-ins and the plug-ins loaded in this process (a
    profile's plug-ins are loaded with it)."""
    from ..models import available_models, get_model_spec, loaded_plugins

    return {name: get_model_spec(name).label for name in [*available_models(), *loaded_plugins()]}


def model_order() -> dict[str, int]:
    from ..models import MODEL_MODULES

    return {name: i for i, name in enumerate(MODEL_MODULES)}


def order_rows(frame: pd.DataFrame, model: str = "model", variant: str | None = "variant") -> pd.DataFrame:
    """Rows in the book's model order (the paper's), LGMRec (as published) after LGMRec."""
    order = model_order()
    key = frame[model].map(order).fillna(len(order)).astype(float)
    if variant and variant in frame:
        key = key + (frame[variant] == PUBLISHED_VARIANT) * 0.5
    return frame.assign(_order=key.to_numpy()).sort_values("_order", kind="stable").drop(columns="_order")


@dataclass
class BookContext:
    """The profile and results a chapter reads (``None``: ``$LGMREC_PROFILE`` / ``$LGMREC_RESULTS_DIR``)."""

    profile: Profile
    store: ResultStore
    _per_user: dict = field(default_factory=dict, repr=False)
    _runs: dict = field(default_factory=dict, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # computed results shared by a page's cells

    @classmethod
    def create(cls, profile: str | Profile | None = None, results: str | None = None) -> "BookContext":
        """``profile``: a Profile, a built-in's name or a profile file (None: ``$LGMREC_PROFILE``)."""
        from .display import setup_display

        setup_display()  # a page never shows a truncated frame
        context = cls(get_profile(profile or os.environ.get(PROFILE_ENV) or "embedded"), ResultStore(results))
        if context.records.empty:
            name = context.profile.name
            raise DataError(
                f"{context.store.root / name}: no results for profile '{name}'; run "
                f"`python -m lgmrec grid --profile {context.profile.reference}` first"
            )
        return context

    @property
    def focal(self) -> str:
        """The model the book's claims are about (``Profile.focal_model``: LGMRec unless a profile says)."""
        return self.profile.focal_model

    @property
    def focal_label(self) -> str:
        return model_labels().get(self.focal, self.focal)

    @cached_property
    def records(self) -> pd.DataFrame:
        return self.store.load(self.profile.name)

    def runs(self, experiment: str | None, include_failed: bool = False) -> pd.DataFrame:
        """The collected runs of an experiment (None: all), with a ``label`` column (model label)."""
        key = (experiment, include_failed)
        if key not in self._runs:
            from ..collect import collect

            runs = collect(self.profile, experiment, include_failed=include_failed, records=self.records)
            runs["label"] = runs["model"].map(model_labels())
            self._runs[key] = runs
        return self._runs[key].copy()

    # ------------------------------------------------------------------ per-user metrics
    def per_user_file(self, path: str, sha256: str | None) -> pd.DataFrame:
        if path not in self._per_user:
            self._per_user[path] = read_per_user_file(path, sha256)
        return self._per_user[path]

    def per_user(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Per-user rows of the given runs, with dataset, model, variant and seed columns."""
        frames = []
        keep = [c for c in ("path", "per_user_sha256", "dataset", "model", "seed", "variant") if c in runs]
        for row in runs[keep].drop_duplicates(["path", "variant"] if "variant" in runs else "path").to_dict("records"):
            frame = self.per_user_file(row["path"], row["per_user_sha256"])
            frames.append(frame.assign(dataset=row["dataset"], model=row["model"], seed=row["seed"],
                                       variant=row.get("variant", row["model"])))
        if not frames:
            return pd.DataFrame(columns=["dataset", "model", "variant", "seed", "user", "n_train"])
        return pd.concat(frames, ignore_index=True)

    def user_matrix(self, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
        """One metric of some runs (one dataset and configuration, several seeds) as users x seeds."""
        columns = {}
        for row in runs[["seed", "path", "per_user_sha256"]].drop_duplicates("seed").to_dict("records"):
            frame = self.per_user_file(row["path"], row["per_user_sha256"])
            columns[row["seed"]] = frame.set_index("user")[metric]
        if not columns:
            return pd.DataFrame()
        return pd.DataFrame(columns).sort_index(axis=1)

    def n_train(self, dataset: str) -> pd.Series:
        """Training interactions per test user of a dataset (from any run's per-user file)."""
        runs = self.runs("overall")
        runs = runs[runs["dataset"] == dataset]
        if runs.empty:
            return pd.Series(dtype=float)
        row = runs.iloc[0]
        return self.per_user_file(row["path"], row["per_user_sha256"]).set_index("user")["n_train"]

    # ------------------------------------------------------------------ provenance
    @property
    def data_kinds(self) -> list[str]:
        return sorted(self.records["data_kind"].dropna().unique())

    @property
    def synthetic(self) -> bool:
        return "synthetic" in self.data_kinds or self.profile.data == "synthetic"

    def data_line(self) -> str:
        """One line: profile and data kind (with the SYNTHETIC label where it applies)."""
        kinds = self.data_kinds or [self.profile.data]
        what = "; ".join(DATA_LABELS.get(k, k) for k in kinds)
        return f"Profile {self.profile.name}: {what}"

    def short_label(self) -> str:
        """For figure titles: the profile and, on synthetic data, the SYNTHETIC warning."""
        if self.synthetic:
            return f"profile {self.profile.name} · SYNTHETIC data, not comparable with the paper"
        if self.data_kinds == ["real"]:
            return f"profile {self.profile.name} · released Amazon data"
        return f"profile {self.profile.name} · {', '.join(self.data_kinds) or self.profile.data} data"

    def data_statement(self) -> str:
        kinds = self.data_kinds
        datasets = ", ".join(sorted(self.records["dataset"].unique()))
        lines = [f"**Profile `{self.profile.name}`** ({self.profile.description}). Datasets: {datasets}."]
        lines += [f"Every number on this page comes from {DATA_LABELS.get(k, k)}." for k in kinds]
        return "\n\n".join(lines)

    def banner(self):
        """The page's provenance box (profile, datasets, data kind) as displayable HTML."""
        from .display import Html, escape

        kinds = self.data_kinds or [self.profile.data]
        present = set(self.records["dataset"])
        datasets = ", ".join([d for d in self.profile.datasets if d in present] + sorted(present - set(self.profile.datasets)))
        data = "; ".join(DATA_LABELS.get(k, k) for k in kinds)
        css = "lgmrec-banner lgmrec-synthetic" if self.synthetic else "lgmrec-banner"
        return Html(
            f'<div class="{css}"><b>Profile <code>{escape(self.profile.name)}</code></b> '
            f'({escape(self.profile.description)}). Datasets: {escape(datasets)}.<br>'
            f'Every number on this page comes from <b>{escape(data)}</b>.</div>')

    def progress(self) -> pd.DataFrame:
        from ..collect import progress_table

        return progress_table(self.profile, records=self.records)


def metrics_present(frame: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    return [m for m in metrics if m in frame.columns]


def is_reference(frame: pd.DataFrame, model: str = REFERENCE_MODEL) -> pd.Series:
    """Rows of the focal model's own configuration (LGMRec's by default), not LGMRec's as-published variant."""
    return (frame["model"] == model) & (frame.get("variant", REFERENCE_LABEL) != PUBLISHED_VARIANT)


__all__ = ["BookContext", "DATA_LABELS", "MAIN_METRICS", "METRIC_LABELS", "PROFILE_ENV", "TABLE_METRICS",
           "is_reference", "metric_label", "model_labels", "order_rows"]
