"""Running one unit of work in a worker: ``python -m lgmrec.worker JOB_FILE UNIT_JSON``.

The ``local`` executor (:mod:`lgmrec.executors`) starts one such process per unit attempt; Ray
tasks call :func:`run_unit_job` directly. By default a unit is one papermill execution of
``notebooks/run_experiment.ipynb`` whose executed copy is kept beside the unit's records. This
module imports neither torch nor pandas on that path: the kernel does, and every second a worker
spends starting is a second of the grid's budget. Exit code 0: the unit ran (some of its runs may
be claimed by another driver; the executor checks the store).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

RUN_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run_experiment.ipynb"
# The kernel is stopped, not asked to exit, once its last cell has run: everything it wrote is written
# atomically by then, and a graceful exit (interpreter teardown with torch loaded) cost ~1.1 s per unit.
KERNEL_SHUTDOWN = "immediate"


def unit_model(unit: dict) -> str:
    """The model a unit trains: LGMRec for ablation and sensitivity units (whose part is "" or a
    parameter), the unit's part for the others (overall, tuning, and any experiment of one model)."""
    return "lgmrec" if unit["experiment"] in ("ablation", "sensitivity") else unit["part"]


def notebook_path(results_root: str | os.PathLike, profile: str, unit: dict) -> Path:
    """Where a unit's executed notebook is kept: beside its records."""
    model = unit_model(unit)
    name = unit["experiment"] + (f"-{unit['part']}" if unit["experiment"] == "sensitivity" else "")
    return Path(results_root) / profile / unit["dataset"] / model / f"{name}.ipynb"


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch takes its thread count from these at start


def execute_unit_notebook(profile: str, unit: dict, results_root: str, force: bool = False,
                          retry_failed: bool = False, threads: int | None = None,
                          profile_name: str | None = None) -> Path:
    """Execute the notebook for one unit of a profile given by name or TOML file (the kernel reads
    it again); the executed copy is written atomically. ``threads``: the kernel's torch threads (it
    inherits this process's environment); ``profile_name``: the profile's results folder (default:
    ``profile``, a built-in's name)."""
    import papermill

    from .errors import LGMRecError
    from .files import write_atomic

    parameters = dict(profile=profile, experiment=unit["experiment"], dataset=unit["dataset"],
                      model=unit_model(unit),
                      parameter=unit["part"] if unit["experiment"] == "sensitivity" else "",
                      results=str(Path(results_root).resolve()), force=force, retry_failed=retry_failed)
    output = notebook_path(results_root, profile_name or profile, unit)
    if threads:  # set here, not left to the caller: a Ray worker's own default is its task's CPUs
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        with warnings.catch_warnings():  # the temporary name does not end in .ipynb, by design
            warnings.filterwarnings("ignore", message="The specified file", category=UserWarning)
            write_atomic(output, lambda tmp: papermill.execute_notebook(
                str(RUN_NOTEBOOK), str(tmp), parameters=parameters, progress_bar=False, log_output=False,
                kernel_name="python3", language="python", shutdown_kernel=KERNEL_SHUTDOWN))
    except papermill.PapermillExecutionError as exc:
        raise LGMRecError(f"{RUN_NOTEBOOK}: failed for unit {unit}: {exc.ename}: {exc.evalue}") from None
    return output


def run_unit_job(job: dict, unit: dict) -> None:
    """Run one unit in this process. ``job``: profile (a name or a TOML file's path, or a Profile
    object when not ``notebooks``), profile_name, results (root), notebooks, force, retry_failed,
    threads (torch threads)."""
    if job["notebooks"]:
        if not isinstance(job["profile"], str):
            from .errors import ConfigError

            raise ConfigError(f"profile {job['profile'].name}: notebooks need a named profile (use --no-notebooks)")
        execute_unit_notebook(job["profile"], unit, job["results"], job["force"], job["retry_failed"],
                              job.get("threads"), job.get("profile_name"))
        return
    import torch

    from .grids import WorkUnit
    from .results import ResultStore
    from .runner import run_unit

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    run_unit(job["profile"], WorkUnit(**unit), ResultStore(job["results"]), force=job["force"],
             retry_failed=job["retry_failed"])


def main(argv: list[str]) -> int:
    import pickle

    job = pickle.loads(Path(argv[0]).read_bytes())
    unit = json.loads(argv[1])
    print(f"unit {unit}: {job.get('threads')} torch thread(s), notebooks={job['notebooks']}", flush=True)
    run_unit_job(job, unit)
    print("unit finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
