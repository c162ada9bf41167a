"""Reading a profile's results back: the store's records labelled with the experiments they serve.

Planned runs are matched to records by their resolved configuration (:func:`spec_setting_key`),
so no dataset is loaded. A tuned model's overall runs are matched once its tuning grid is
complete (its chosen point is then known from the tuning records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from .grids import Profile, RunSpec, WorkUnit, get_profile, plan, replication_specs, unit_specs, units
from .resolve import resolve_run
from .results import ResultStore, records_frame, setting_key
from .tuning import TuningChoice, choose


def spec_setting_key(profile: Profile, spec: RunSpec) -> str:
    """The setting key (resolved configuration without the data fingerprint) of a planned run."""
    resolved = resolve_run(spec.model, spec.dataset, spec.overrides_dict, profile.train)
    return setting_key(spec.dataset, resolved.model, resolved.model_params, resolved.train)


def planned_specs(profile: str | Profile, experiment: str | None = None,
                  records: pd.DataFrame | None = None) -> list[RunSpec]:
    """The profile's runs with tuned models at their chosen points (as far as the records know
    them), plus the replications of MMRec's test-chosen points."""
    profile = get_profile(profile)
    choices = tuning_choices(profile, records) if records is not None else {}
    specs = plan(profile, experiment, {key: c.validation_point for key, c in choices.items()})
    if experiment in (None, "tuning", "overall"):
        for unit in units(profile, "tuning"):
            choice = choices.get((unit.dataset, unit.model))
            if choice is not None:
                specs += replication_specs(profile, unit, choice.test_point, choice.validation_point)
    return specs


def collect(profile: str | Profile, experiment: str | None = None, store: ResultStore | None = None,
            include_failed: bool = False, records: pd.DataFrame | None = None,
            fingerprints: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Records of a profile labelled with the experiments they serve (one row per experiment and
    run): columns ``experiment``, ``variant``, ``parameter``, ``value`` plus the record's.
    ``records``: the profile's records when the caller has loaded them already. ``fingerprints``
    (dataset -> data fingerprint): only those data's records of the datasets named; without it the
    newest record of a setting wins (a reverted dataset's older records lose to the newer ones of
    the data it was reverted from)."""
    profile = get_profile(profile)
    if records is None:
        records = (store or ResultStore()).load(profile.name)
    if fingerprints and not records.empty:
        expected = records["dataset"].map(fingerprints)
        records = records[expected.isna() | (records["dataset_fingerprint"] == expected)]
    if records.empty:
        return records.assign(experiment=[], variant=[], parameter=[], value=[])
    rows = [{"experiment": s.experiment, "variant": s.variant, "parameter": s.parameter, "value": s.value,
             "setting_key": spec_setting_key(profile, s), "seed": s.seed}
            for s in planned_specs(profile, experiment, records)
            if experiment is None or s.experiment == experiment]
    if not rows:
        return records.iloc[:0].assign(experiment=[], variant=[], parameter=[], value=[])
    # one row per (experiment, variant): the sensitivity points at the preset values share one run
    planned = pd.DataFrame(rows).drop_duplicates(["experiment", "variant", "setting_key", "seed"])
    # a dataset whose content changed leaves older records of the same setting: newest wins
    records = records.sort_values("written_at").drop_duplicates(["setting_key", "seed"], keep="last")
    merged = planned.merge(records, on=["setting_key", "seed"], how="inner")
    if not include_failed:
        merged = merged[merged["status"] == "ok"]
    return merged.reset_index(drop=True)


def tuning_choices(profile: str | Profile, records: pd.DataFrame) -> dict[tuple[str, str], TuningChoice]:
    """(dataset, model) -> the tuning choice, for every tuned model whose grid is complete."""
    profile = get_profile(profile)
    by_key = _latest(records)
    result = {}
    for unit in units(profile, "tuning"):
        choice = _choice(profile, unit, by_key)
        if choice is not None:
            result[(unit.dataset, unit.model)] = choice
    return result


def _choice(profile: Profile, unit, by_key: dict) -> TuningChoice | None:
    tuning = [s for s in unit_specs(profile, unit) if s.experiment == "tuning"]
    found = [by_key.get((spec_setting_key(profile, s), s.seed)) for s in tuning]
    return choose([s.overrides_dict for s in tuning], found)


def unit_specs_known(profile: Profile, unit, records: pd.DataFrame) -> tuple[list[RunSpec], bool]:
    """The unit's runs as far as ``records`` determine them, and whether that is all of them
    (False while a tuned model's grid is incomplete: its seeds' point is not known yet)."""
    specs = unit_specs(profile, unit)
    if unit.experiment != "overall" or not profile.is_tuned(unit.model):
        return specs, True
    tuning = [s for s in specs if s.experiment == "tuning"]
    choice = _choice(profile, unit, _latest(records))
    if choice is None:
        return specs, False
    specs = tuning + [s for s in unit_specs(profile, unit, choice.validation_point) if s.experiment != "tuning"]
    return specs + replication_specs(profile, unit, choice.test_point, choice.validation_point), True


def unit_folder(profile: Profile, unit, store: ResultStore) -> Path:
    """The folder that holds a unit's records and claims (a dataset's, for ablation and sensitivity)."""
    return store.root / profile.name / unit.dataset / unit.model


def unit_pending(profile: Profile, unit, store: ResultStore) -> bool:
    """True while some run of the unit has no record (ok or failed) in the store."""
    records = records_frame(list(store.iter_records(folder=unit_folder(profile, unit, store))))
    specs, complete = unit_specs_known(profile, unit, records)
    by_key = _latest(records)
    return not complete or any((spec_setting_key(profile, s), s.seed) not in by_key for s in specs)


def _latest(records: pd.DataFrame) -> dict:
    """(setting_key, seed) -> the newest record of that run, as a dict shaped like a run record's
    status / valid / test as far as :func:`lgmrec.tuning.choose` reads them."""
    if records.empty:
        return {}
    latest = records.sort_values("written_at").drop_duplicates(["setting_key", "seed"], keep="last")
    return {(row["setting_key"], row["seed"]): {
        "status": row["status"], "valid": {"recall@20": row.get("valid_recall@20")},
        "test": {"recall@20": row.get("recall@20")}} for row in latest.to_dict("records")}


def planned_unit_runs(profile: Profile, unit: WorkUnit) -> int:
    """Runs of one unit, counting a tuned model's seeds before its point is known (its tuning-seed
    run is then one of the tuning runs)."""
    specs = unit_specs(profile, unit)
    if unit.experiment == "overall" and profile.is_tuned(unit.model):
        return len(specs) + len([s for s in profile.seeds if s != profile.tuning_seed])
    return len(specs)


def planned_run_count(profile: str | Profile, only=None) -> int:
    """Distinct runs of the profile (``only``: some experiments); see :func:`planned_unit_runs`."""
    profile = get_profile(profile)
    distinct, count = set(), 0
    for unit in units(profile, only):
        if unit.experiment == "overall" and profile.is_tuned(unit.model):
            count += planned_unit_runs(profile, unit)
            continue
        distinct |= {(spec_setting_key(profile, s), s.seed) for s in unit_specs(profile, unit)}
    return count + len(distinct)


def finished_runs(profile: str | Profile, only=None, records: pd.DataFrame | None = None,
                  store: ResultStore | None = None, fingerprints: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(ok, failed): distinct runs of the profile's experiments (``only``: some) with a record
    (``fingerprints``: of those data only, as in :func:`collect`)."""
    from .grids import select_experiments

    profile = get_profile(profile)
    if records is None:
        records = (store or ResultStore()).load(profile.name)
    done = collect(profile, store=store, include_failed=True, records=records, fingerprints=fingerprints)
    done = done[done["experiment"].isin(select_experiments(only))].drop_duplicates(["setting_key", "seed"])
    failed = int((done["status"] != "ok").sum())
    return len(done) - failed, failed


def progress_table(profile: str | Profile, store: ResultStore | None = None,
                   records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per experiment: planned runs, finished ok, failed, missing (a tuned model's overall runs
    count as planned from the start: one per seed)."""
    profile = get_profile(profile)
    if records is None:
        records = (store or ResultStore()).load(profile.name)
    done = collect(profile, store=store, include_failed=True, records=records)
    rows = []
    for experiment in profile.experiments:
        planned = {(s.experiment, s.variant, s.dataset, s.model, s.seed)
                   for unit in units(profile, experiment) for s in unit_specs(profile, unit, chosen={})
                   if s.experiment == experiment}
        part = done[done["experiment"] == experiment].drop_duplicates(["variant", "dataset", "model", "seed"])
        ok = int((part["status"] == "ok").sum())
        failed = int((part["status"] != "ok").sum())
        rows.append({"experiment": experiment, "planned": len(planned), "ok": ok, "failed": failed,
                     "missing": max(len(planned) - ok - failed, 0)})
    return pd.DataFrame(rows)


__all__ = ["collect", "finished_runs", "planned_run_count", "planned_specs", "progress_table", "spec_setting_key", "tuning_choices", "unit_pending"]
