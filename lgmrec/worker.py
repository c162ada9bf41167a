"""Running units of work in a worker: ``python -m lgmrec.worker JOB_FILE UNIT_JSON`` (one unit) or
``python -m lgmrec.worker JOB_FILE --serve`` (units sent on stdin, one after another).

The ``local`` executor (:mod:`lgmrec.executors`) keeps a few ``--serve`` workers and sends each
unit attempt to an idle one; Ray tasks call :func:`run_unit_job` directly. By default a unit is
one papermill execution of ``notebooks/run_experiment.ipynb`` whose executed copy is kept beside
the unit's records. A serving worker executes its notebooks in one Jupyter kernel that it keeps
(:class:`KeptKernel`): the interpreter, ``import torch`` and the notebook's other imports (~4 s of
a fresh kernel) are paid once per worker instead of once per unit, and before each notebook the
kernel's namespace, history and execution count are reset, so every executed notebook reads as
if run in a fresh kernel (its cells numbered from 1). This module imports neither torch nor
pandas: the kernel does. Exit code 0: the unit ran, or (``--serve``) stdin ended (some runs may
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


class KeptKernel:
    """A Jupyter kernel that outlives the notebooks executed in it, one after another: started by
    the first notebook's client (as papermill starts one), reset before each later notebook
    (``InteractiveShell.reset(new_session=True)``: user namespace, history and execution count;
    imported modules stay), replaced when it died, stopped by :meth:`stop`."""

    def __init__(self):
        self.manager = None  # jupyter_client's AsyncKernelManager
        self.used = False  # a notebook ran in it: reset before the next

    def prepare(self):
        """The kernel manager for the next notebook (a new one where the kernel died)."""
        from jupyter_core.utils import run_sync

        if self.manager is not None and self.manager.has_kernel and not run_sync(self.manager.is_alive)():
            self.stop()
        if self.manager is None:
            from jupyter_client.manager import AsyncKernelManager

            self.manager, self.used = AsyncKernelManager(kernel_name="python3"), False
        return self.manager

    def stop(self) -> None:
        """Stop the kernel now (as a notebook's kernel is stopped: nothing is left to write)."""
        from jupyter_core.utils import run_sync

        manager, self.manager = self.manager, None
        if manager is not None and manager.has_kernel:
            try:
                run_sync(manager.shutdown_kernel)(now=True)
            except RuntimeError:  # already gone
                pass


KEPT_KERNEL_ENGINE = "lgmrec-kept-kernel"


def _register_kept_kernel_engine() -> None:
    """papermill's nbclient engine on a :class:`KeptKernel` (engine keyword ``kept``): the notebook's
    client does not own the kernel, so it leaves it running; its channels are closed after the
    notebook, and a kernel that ran a notebook before is reset first."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    if KEPT_KERNEL_ENGINE in papermill_engines._engines:
        return

    class Client(PapermillNotebookClient):
        def __init__(self, nb_man, reset: bool, **kwargs):
            super().__init__(nb_man, **kwargs)
            self.reset_first = reset

        def papermill_execute_cells(self):
            if self.reset_first:  # silent: no output, no execution count
                self.wait_for_reply(self.kc.execute("get_ipython().reset(new_session=True)", silent=True,
                                                    store_history=False))
            super().papermill_execute_cells()

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, kept=None,
                                     **_):
            from papermill.engines import logger

            client = Client(nb_man, reset=kept.used, km=kept.prepare(), timeout=execution_timeout,
                            startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                            log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            try:
                return client.execute()
            finally:
                kept.used = True
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(KEPT_KERNEL_ENGINE, Engine)


def execute_unit_notebook(profile: str, unit: dict, results_root: str, force: bool = False,
                          retry_failed: bool = False, threads: int | None = None,
                          profile_name: str | None = None, kept: KeptKernel | None = None) -> Path:
    """Execute the notebook for one unit of a profile given by name or TOML file (the kernel reads
    it again); the executed copy is written atomically. ``threads``: the kernel's torch threads (it
    inherits this process's environment); ``profile_name``: the profile's results folder (default:
    ``profile``, a built-in's name); ``kept``: execute in that kernel (else a fresh one, stopped
    after the last cell)."""
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
    if kept is not None:
        _register_kept_kernel_engine()
    engine = {"engine_name": KEPT_KERNEL_ENGINE, "kept": kept} if kept is not None else \
        {"shutdown_kernel": KERNEL_SHUTDOWN}
    try:
        with warnings.catch_warnings():  # the temporary name does not end in .ipynb, by design
            warnings.filterwarnings("ignore", message="The specified file", category=UserWarning)
            write_atomic(output, lambda tmp: papermill.execute_notebook(
                str(RUN_NOTEBOOK), str(tmp), parameters=parameters, progress_bar=False, log_output=False,
                kernel_name="python3", language="python", **engine))
    except papermill.PapermillExecutionError as exc:
        raise LGMRecError(f"{RUN_NOTEBOOK}: failed for unit {unit}: {exc.ename}: {exc.evalue}") from None
    return output


def run_unit_job(job: dict, unit: dict, kept: KeptKernel | None = None) -> None:
    """Run one unit in this process. ``job``: profile (a name or a TOML file's path, or a Profile
    object when not ``notebooks``), profile_name, results (root), notebooks, force, retry_failed,
    threads (torch threads). ``kept``: the kernel for notebook units (else a fresh one per unit)."""
    if job["notebooks"]:
        if not isinstance(job["profile"], str):
            from .errors import ConfigError

            raise ConfigError(f"profile {job['profile'].name}: notebooks need a named profile (use --no-notebooks)")
        execute_unit_notebook(job["profile"], unit, job["results"], job["force"], job["retry_failed"],
                              job.get("threads"), job.get("profile_name"), kept)
        return
    import torch

    from .grids import WorkUnit
    from .results import ResultStore
    from .runner import run_unit

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    run_unit(job["profile"], WorkUnit(**unit), ResultStore(job["results"]), force=job["force"],
             retry_failed=job["retry_failed"])


def serve(job: dict) -> int:
    """Run the units sent on stdin, one JSON line each (``{"unit": {...}, "log": path}``), one after
    another; after each, one line on stdout: ``ok``, or ``error: `` and what went wrong (the
    traceback goes to the unit's log). Notebook units share one kernel (:class:`KeptKernel`). Ends,
    stopping the kernel, when stdin does. Everything else this process and its kernel print goes
    to stderr (the worker's log)."""
    import traceback

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray output (the kernel's too) to the log
    kept = KeptKernel() if job["notebooks"] else None
    try:
        for line in sys.stdin:
            request = json.loads(line)
            with open(request["log"], "a") as log:
                print(f"unit {request['unit']}: {job.get('threads')} torch thread(s), notebooks={job['notebooks']}, "
                      f"worker {os.getpid()} (its kernel's output: its own log)", file=log, flush=True)
                try:
                    run_unit_job(job, request["unit"], kept)
                except Exception as exc:  # the unit failed; the worker (and a live kernel) go on
                    traceback.print_exc(file=log)
                    reply = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
                else:
                    print("unit finished", file=log, flush=True)
                    reply = "ok"
            replies.write(reply + "\n")
            replies.flush()
    finally:
        if kept is not None:
            kept.stop()
    return 0


def main(argv: list[str]) -> int:
    import pickle

    job = pickle.loads(Path(argv[0]).read_bytes())
    if argv[1:] == ["--serve"]:
        return serve(job)
    unit = json.loads(argv[1])
    print(f"unit {unit}: {job.get('threads')} torch thread(s), notebooks={job['notebooks']}", flush=True)
    run_unit_job(job, unit)
    print("unit finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
