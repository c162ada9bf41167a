"""The SLURM script of the README, run as far as one machine allows: a Ray head and a worker node
started with `ray start`, the grid pointed at the head, records equal to the in-process ones."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lgmrec.collect import collect
from lgmrec.results import ResultStore

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster" / "ray_grid.sbatch"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sbatch_script_runs_the_grid_on_a_head_and_a_worker_node(smoke_results, tmp_path):
    import tempfile

    pytest.importorskip("ray", reason="the cluster extra: pip install '.[cluster]'")
    results = tmp_path / "results"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "LGMREC_PROFILE": "smoke", "LGMREC_RESULTS_DIR": str(results), "RAY_PORT": str(free_port()),
           "CPUS_PER_RUN": "1", "GPUS_PER_RUN": "0", "LGMREC_GRID_ARGS": "--only sensitivity", "LGMREC_BOOK": "0",
           "RAY_TMPDIR": ray_tmp, "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("SLURM_JOB_ID", None)
    completed = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count(" node_") >= 2, completed.stdout[-2000:]  # `ray status`: head + worker
    assert "8 runs in 2 units, 8 run now" in completed.stdout
    ours = collect("smoke", "sensitivity", ResultStore(results))
    reference = collect("smoke", "sensitivity", smoke_results)
    key = ["variant", "seed"]
    assert (ours.sort_values(key)[["variant", "recall@20", "ndcg@20"]].to_numpy().tolist()
            == reference.sort_values(key)[["variant", "recall@20", "ndcg@20"]].to_numpy().tolist())
