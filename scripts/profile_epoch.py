"""Where one epoch's time goes, per model, on a ``-mini`` preset: phases, kernels and overhead.

    python scripts/profile_epoch.py [--models lgmrec bpr ...] [--dataset synth-baby-mini]
                                    [--epochs 15] [--warmup 3] [--threads 1]
                                    [--results results --profile embedded] [--startup]

On the ``-mini`` presets an epoch is 3 training batches and one validation pass over ~800 users, so
a run's time is per-epoch overhead rather than arithmetic. For each model (the grid's configuration:
``lgmrec.resolve.resolve_run`` with the profile's training settings, seed 999) this script trains
``--warmup`` epochs and then alternates ``--epochs`` training epochs and validation passes (the
trainer's own code paths: :func:`lgmrec.training.train_model`'s epoch body, replicated step for step,
and :func:`lgmrec.evaluation.evaluate` itself), at ``--threads`` torch threads (the grid's workers
use 1). Everything is a median over those epochs, with ``±`` half the inter-quartile range.

Table 1, phases (wall clock, instrumented):

- ``epoch``: one training epoch; ``host`` = shuffle + negative sampling + the per-batch host work
  (``isfinite``, ``loss.item()``, slicing), ``fwd`` = ``model.loss`` (forward), ``bwd`` =
  ``loss.backward()``, ``adam`` = ``zero_grad`` + the fused Adam step;
- ``eval``: one validation pass as the trainer runs it (:func:`~lgmrec.evaluation.validate`: the
  early-stopping metric only; in code before it, :func:`~lgmrec.evaluation.evaluate`), of which ``e.fwd`` = the
  model's forward passes (``model()``; LGMRec's official evaluation runs one per user batch),
  ``e.score`` = ``model.score``, ``e.metric`` = :func:`~lgmrec.evaluation.ranking_metrics` and what
  follows (per-user arrays, means), ``e.rest`` = masking, top-K or rank counting, hit lookup;
- ``rec epoch`` / ``rec eval``: the medians of ``train_seconds_per_epoch`` / ``eval_seconds`` over
  the records of this (dataset, model) under ``--results`` (``-`` without), for comparison.

Table 2, arithmetic vs overhead (``torch.profiler``, CPU activities, ``--profiled`` more epochs and
passes, medians): ``wall`` is the profiled epoch's (or pass's) wall time, then the self time of the
aten kernels, summed by kind - ``mm`` (dense and sparse matrix products:
``mm``, ``addmm``, ``bmm``, ``matmul``'s kernels, ``_sparse_*``, ``mv``, ``dot``), ``alloc``
(``empty*``, ``resize_``), ``kern`` (every other aten kernel: element-wise, reductions, indexing,
copies, top-K, the fused Adam kernel) - and ``outside``: that wall time minus all aten self time,
i.e. Python (module calls, the trainer's loop, autograd's engine and nodes, hooks), the dispatcher
and host work outside aten. ``ops`` is the number of aten calls (nested ones included) and
``modules`` the number of ``nn.Module`` calls in one epoch / pass; ``us/op`` = outside / ops. The
profiler adds its own cost per op (it records every call: a few us), which lands in ``outside``:
compare ``wall`` with table 1's unprofiled ``epoch`` / ``eval`` for its size.

``--startup`` adds table 3, a run's start-up in this process (after the first, warm): dataset
load (:func:`lgmrec.datasets.named.load_named_dataset`), configuration, model build
(``spec.build``: kNN and other graphs, with the on-disk kNN cache warm), and the first
evaluation's split preparation (:func:`~lgmrec.evaluation.split_batches`), each the median of 5
repetitions; and, once per process, the import of torch and of lgmrec's model modules. Table 4,
a unit's start-up in fresh processes (each unit of the grid is one papermill kernel): the
interpreter's start (``python``), ``import torch`` (``torch``), the unit notebook's other imports
(``imports``), the dataset's load (``dataset``), and a Jupyter kernel's start, one cell and stop
(``kernel``: the interpreter and ipykernel, before any of the above).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

MATMUL = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mv",
          "aten::addmv", "aten::dot", "aten::vdot", "aten::_addmm_activation", "aten::_sparse_mm",
          "aten::_sparse_addmm", "aten::_sparse_sparse_matmul", "aten::sspaddmm", "aten::hspmm", "aten::smm",
          "aten::_sparse_mm_reduce_impl", "aten::_sparse_csr_mm", "aten::addmm_out")
ALLOC = ("aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::new_empty",
         "aten::new_empty_strided", "aten::_empty_affine_quantized")


def median_spread(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return statistics.median(values), 0.0
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), (q[2] - q[0]) / 2


class Timer:
    """Adds up the wall time of wrapped calls, by name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begin
        return timed

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, {}
        return seconds


def prepare(model_name: str, dataset: str, profile_name: str, seed: int = 999):
    from lgmrec.datasets.named import load_named_dataset
    from lgmrec.grids import get_profile
    from lgmrec.models import get_model_spec
    from lgmrec.resolve import resolve_run
    from lgmrec.training import seed_everything

    profile = get_profile(profile_name)
    data = load_named_dataset(dataset, profile)
    run = resolve_run(model_name, data.name, {}, profile.train)
    generator = seed_everything(seed)
    model = get_model_spec(model_name).build(data, run.model_config)
    return data, run, model, generator


def epoch_runner(model, data, cfg, generator, timer: Timer):
    """The trainer's epoch body (:func:`lgmrec.training._fit`), with its phases timed."""
    import torch

    from lgmrec.training import NegativeSampler, TrainingDiverged, learning_rate, make_optimizer

    optimizer = make_optimizer(model, cfg)
    sampler = NegativeSampler(data)
    train_pairs = torch.from_numpy(data.splits["train"])
    state = {"epoch": 0}
    loss_fn = timer.wrap("fwd", model.loss)

    def run_epoch() -> float:
        state["epoch"] += 1
        epoch = state["epoch"]
        start = time.perf_counter()
        model.train()
        model.on_epoch_start(epoch)
        pairs = train_pairs[torch.randperm(len(train_pairs), generator=generator)]
        negatives = sampler.sample(pairs[:, 0], generator)
        total_loss = 0.0
        optimizer.lr = learning_rate(cfg, epoch)
        for begin in range(0, len(pairs), cfg.batch_size):
            users = pairs[begin: begin + cfg.batch_size, 0]
            positives = pairs[begin: begin + cfg.batch_size, 1]
            loss = loss_fn(users, positives, negatives[begin: begin + cfg.batch_size])
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training loss is {loss.item()} at epoch {epoch}")
            t0 = time.perf_counter()
            optimizer.zero_grad()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            total_loss += loss.item()
            timer.seconds["bwd"] = timer.seconds.get("bwd", 0.0) + t2 - t1
            timer.seconds["adam"] = timer.seconds.get("adam", 0.0) + (t1 - t0) + (t3 - t2)
        return time.perf_counter() - start

    return run_epoch


def eval_runner(model, data, cfg, timer: Timer):
    """The trainer's validation pass (:func:`lgmrec.evaluation.validate`, or ``evaluate`` where the
    code has no ``validate``), with the model's forward and score and the metric computation timed
    (wrapped, not replicated: the evaluator's own code runs)."""
    from lgmrec import evaluation

    forward, score = model.forward, model.score
    metrics = getattr(evaluation, "ranking_metrics")

    def run_eval() -> float:
        model.forward, model.score = timer.wrap("e.fwd", forward), timer.wrap("e.score", score)
        evaluation.ranking_metrics = timer.wrap("e.metric", metrics)
        try:
            begin = time.perf_counter()
            if hasattr(evaluation, "validate"):  # the trainer's per-epoch validation (issue 25)
                evaluation.validate(model, data, cfg.valid_metric, cfg.topk, cfg.eval_batch_users)
            else:  # older code: every metric in every pass
                evaluation.evaluate(model, data, "valid", cfg.topk, cfg.eval_batch_users)
            return time.perf_counter() - begin
        finally:
            del model.forward, model.score
            evaluation.ranking_metrics = metrics

    return run_eval


def kernel_split(function) -> dict[str, float]:
    """Run ``function`` under torch.profiler (CPU) and module-call counting: aten self time by kind."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    calls = [0]

    def count(module, inputs):
        calls[0] += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall = function()
    finally:
        handle.remove()
    split = {"wall": wall, "mm": 0.0, "alloc": 0.0, "kern": 0.0, "ops": 0, "modules": calls[0]}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        kind = "mm" if event.key in MATMUL else "alloc" if event.key in ALLOC else "kern"
        split[kind] += event.self_cpu_time_total / 1e6
        split["ops"] += event.count
    return split


def recorded(results: str | None, profile: str, dataset: str, model: str) -> tuple[float, float, int]:
    if not results:
        return math.nan, math.nan, 0
    epoch, evals = [], []
    for path in glob.glob(str(Path(results) / profile / dataset / model / "*.json")):
        record = json.loads(Path(path).read_text())
        if record.get("status") == "ok" and record.get("train_seconds_per_epoch"):
            epoch.append(record["train_seconds_per_epoch"])
            evals.append(record["eval_seconds"])
    if not epoch:
        return math.nan, math.nan, 0
    return statistics.median(epoch), statistics.median(evals), len(epoch)


def startup(model_name: str, dataset: str, profile_name: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds of a run's start-up steps, repeated in this (warm) process."""
    import torch

    from lgmrec import evaluation
    from lgmrec.datasets.named import load_named_dataset
    from lgmrec.grids import get_profile
    from lgmrec.models import get_model_spec
    from lgmrec.resolve import resolve_run
    from lgmrec.training import seed_everything

    profile = get_profile(profile_name)
    spec = get_model_spec(model_name)
    steps: dict[str, list[float]] = {"load": [], "config": [], "build": [], "batches": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = load_named_dataset(dataset, profile)
        t1 = time.perf_counter()
        run = resolve_run(model_name, data.name, {}, profile.train)
        seed_everything(999)
        t2 = time.perf_counter()
        spec.build(data, run.model_config)
        t3 = time.perf_counter()
        for split in ("valid", "test"):
            evaluation.split_batches(data, split, run.train_config.eval_batch_users, torch.device("cpu"))
        t4 = time.perf_counter()
        for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds and steps[name].append(seconds)
    return {name: statistics.median(values) for name, values in steps.items()}


UNIT_STEPS = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
torch.set_num_threads(1)
from lgmrec.results import ResultStore
from lgmrec.runner import run_notebook
from lgmrec.unitview import config_tables, learning_curves, runs_table
import lgmrec.training
t2 = time.perf_counter()
from lgmrec.datasets.named import load_named_dataset
load_named_dataset(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def unit_startup(dataset: str, profile: str, repeats: int = 3) -> dict[str, float]:
    """Median seconds of a unit's start-up in fresh processes: the interpreter, ``import torch``,
    the unit notebook's imports (lgmrec's runner, training and unit view, with pandas), the
    dataset's load; and a Jupyter kernel's start and stop (what papermill adds per unit)."""
    import subprocess

    steps: dict[str, list[float]] = {"python": [], "torch": [], "imports": [], "dataset": [], "kernel": []}
    for _ in range(repeats):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        steps["python"].append(time.perf_counter() - begin)
        out = subprocess.run([sys.executable, "-c", UNIT_STEPS, dataset, profile], check=True, capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
        for name, value in zip(("torch", "imports", "dataset"), out[-3:]):
            steps[name].append(float(value))
        try:
            from jupyter_client.manager import start_new_kernel
        except ImportError:
            continue
        begin = time.perf_counter()
        manager, client = start_new_kernel(kernel_name="python3")
        client.execute_interactive("pass", timeout=60)
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        steps["kernel"].append(time.perf_counter() - begin)
    return {name: statistics.median(values) if values else math.nan for name, values in steps.items()}


def main(argv: list[str] | None = None) -> None:
    t_start = time.perf_counter()
    import torch

    t_torch = time.perf_counter()
    from lgmrec.models import available_models, get_model_spec

    for name in available_models():
        get_model_spec(name)
    t_lgmrec = time.perf_counter()

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    parser.add_argument("--dataset", default="synth-baby-mini")
    parser.add_argument("--profile", default="embedded", help="the grid profile whose settings and records to use")
    parser.add_argument("--results", default=None, help="results root whose records give `rec epoch` / `rec eval`")
    parser.add_argument("--epochs", type=int, default=15, help="timed epochs (and validation passes)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profiled", type=int, default=5, help="profiled epochs (and passes) for table 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grid's workers: 1)")
    parser.add_argument("--startup", action="store_true", help="also table 3: a run's start-up steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.dataset}, profile {args.profile}; "
          f"medians of {args.epochs} epochs ± half the IQR, in ms")
    head1 = (f"{'model':<9}{'rec epoch':>10}{'rec eval':>9}{'epoch':>14}{'host':>7}{'fwd':>7}{'bwd':>7}{'adam':>7}"
             f"{'eval':>14}{'e.fwd':>7}{'e.score':>8}{'e.metric':>9}{'e.rest':>7}")
    head2 = (f"{'model':<9}{'part':<6}{'wall':>8}{'mm':>8}{'kern':>8}{'alloc':>7}{'outside':>9}{'out %':>7}"
             f"{'ops':>7}{'us/op':>7}{'modules':>8}")
    rows1, rows2, rows3 = [], [], []
    for model_name in args.models:
        data, run, model, generator = prepare(model_name, args.dataset, args.profile)
        cfg = run.train_config
        timer = Timer()
        run_epoch, run_eval = epoch_runner(model, data, cfg, generator, timer), eval_runner(model, data, cfg, timer)
        for _ in range(args.warmup):
            run_epoch()
            run_eval()
        timer.take()
        phases: dict[str, list[float]] = {}
        for _ in range(args.epochs):
            epoch_s = run_epoch()
            parts = timer.take()
            eval_s = run_eval()
            parts.update(timer.take())
            parts["epoch"], parts["eval"] = epoch_s, eval_s
            parts["host"] = epoch_s - parts.get("fwd", 0) - parts.get("bwd", 0) - parts.get("adam", 0)
            parts["e.rest"] = eval_s - sum(parts.get(k, 0) for k in ("e.fwd", "e.score", "e.metric"))
            for name, value in parts.items():
                phases.setdefault(name, []).append(value)
        ms = {name: median_spread([v * 1000 for v in values]) for name, values in phases.items()}
        rec_epoch, rec_eval, n_records = recorded(args.results, args.profile, data.name, model_name)
        rec = lambda v: f"{v * 1000:.1f}" if not math.isnan(v) else "-"
        cell = lambda name: f"{ms[name][0]:.1f}" if name in ms else "0"
        rows1.append(f"{model_name:<9}{rec(rec_epoch):>10}{rec(rec_eval):>9}"
                     f"{ms['epoch'][0]:>8.1f}±{ms['epoch'][1]:<5.1f}{cell('host'):>7}{cell('fwd'):>7}{cell('bwd'):>7}"
                     f"{cell('adam'):>7}{ms['eval'][0]:>8.1f}±{ms['eval'][1]:<5.1f}{cell('e.fwd'):>7}"
                     f"{cell('e.score'):>8}{cell('e.metric'):>9}{cell('e.rest'):>7}")
        for part, function in (("train", run_epoch), ("eval", run_eval)):
            splits = [kernel_split(function) for _ in range(args.profiled)]
            timer.take()
            for one in splits:
                one["outside"] = one["wall"] - one["mm"] - one["kern"] - one["alloc"]
            split = {key: statistics.median(one[key] for one in splits) for key in splits[0]}
            wall, outside = split["wall"], split["outside"]
            rows2.append(f"{model_name:<9}{part:<6}{wall * 1000:>8.1f}{split['mm'] * 1000:>8.1f}"
                         f"{split['kern'] * 1000:>8.1f}{split['alloc'] * 1000:>7.1f}{outside * 1000:>9.1f}"
                         f"{100 * outside / wall:>6.0f}%{split['ops']:>7}{1e6 * outside / max(split['ops'], 1):>7.1f}"
                         f"{split['modules']:>8}")
        if args.startup:
            steps = startup(model_name, args.dataset, args.profile)
            rows3.append(f"{model_name:<9}" + "".join(f"{steps[k] * 1000:>9.1f}" for k in steps))
        print(rows1[-1], flush=True)
    print("\nTable 1: phases of one training epoch and one validation pass (wall ms)")
    print(head1)
    print("\n".join(rows1))
    print("\nTable 2: arithmetic (aten kernels' self time) vs overhead outside them (ms), torch.profiler")
    print(head2)
    print("\n".join(rows2))
    if args.startup:
        print(f"\nTable 3: a run's start-up in a warm process (ms, median of 5); once per process: "
              f"import torch {1000 * (t_torch - t_start):.0f} ms, lgmrec's models {1000 * (t_lgmrec - t_torch):.0f} ms")
        print(f"{'model':<9}{'load':>9}{'config':>9}{'build':>9}{'batches':>9}")
        print("\n".join(rows3))
        unit = unit_startup(args.dataset, args.profile)
        print(f"\nTable 4: a unit's start-up in fresh processes (s, median of 3): "
              + ", ".join(f"{name} {value:.2f}" for name, value in unit.items()))


if __name__ == "__main__":
    main()
