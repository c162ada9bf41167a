"""Speed and memory of every model on the synthetic presets, with each training step's dense-product floor.

    python scripts/benchmark.py [--models lgmrec bpr ...] [--presets synth-baby-small synth-baby]
                                [--device cpu|cuda|auto] [--threads N] [--epochs 3] [--steps 10]
                                [--converge | --no-converge] [--eval-mode official|deterministic]

Prints ONE table, a row per (model, preset) as soon as it is measured. Every (model, preset) runs in
a fresh (spawned) process, so peak memory is that run's own. Columns:

- ``params``: trainable parameters;
- ``epoch s``: median seconds of one training epoch (shuffle, negatives, every batch's loss,
  backward and Adam step), ``eval s``: median seconds of one validation pass (all users, full
  ranking), both from the protocol's trainer (:func:`lgmrec.training.train_model`);
- ``conv``: epochs to converge, ``best epoch / epochs run`` under the protocol (early stopping on
  validation Recall@20, patience 20, at most 1000 epochs). By default only ``*-small`` presets
  converge; the others run ``--epochs`` timed epochs and print ``-`` (``--converge`` forces it
  everywhere, ``--no-converge`` nowhere);
- ``step ms``: median wall time of one training step (``loss``, ``backward``, Adam ``step``) on a
  full batch (the protocol's 2048), after warm-up steps, for ``--steps`` steps; CUDA synchronised;
- ``floor ms``, ``ratio``, ``spmm ms``, ``ratio2``: see below;
- ``peak MB``: peak resident memory of the process (CPU) or ``torch.cuda.max_memory_allocated``
  (CUDA), taken right after training, before the step measurements.

The floor. A model's training step has to do the dense matrix products its math is made of
(projections of the feature tables, (batch x all) similarity matrices, their gradients); the rest
(element-wise work, reductions, indexing, memory traffic, the optimiser, Python and dispatch
overhead) is overhead on top. ``floor ms`` is the in-situ time of the step's DENSE MATRIX
PRODUCTS: each timed step is followed by one more step on the same batch under a
``TorchDispatchMode`` that times every call of ``aten.mm``, ``addmm`` (and ``addmm_``), ``bmm``, ``baddbmm``,
``addbmm``, ``_addmm_activation``, ``mv``, ``addmv``, ``dot`` and ``vdot`` whose tensor operands
are ALL dense (strided) - forward, backward and custom autograd functions alike - with a wall
clock on CPU (the call, its output's allocation included, as in a profiler's self time) and CUDA
events on the GPU; the floor is the median over those steps of the per-step sum. Timed and
instrumented steps alternate, so a machine whose load drifts affects both alike.
``ratio = step ms / floor ms``: 1.0 would mean the step is nothing but its dense products.

This is the profiler's "self time of the GEMM ops" taken exactly: torch.profiler names sparse x
dense products ``aten::addmm``/``aten::mm`` as well, so summing those names would count graph
propagation as dense arithmetic. Sparse products are timed apart instead: ``spmm ms`` is the
per-step time of the products with a sparse operand (LightGCN-style propagation; arithmetic the
graph models' math also requires, but not dense; off the CPU, the calls of
``lgmrec.graph.row_sums_of_gathered``), and ``ratio2 = step ms / (floor ms + spmm ms)``
the overhead over ALL matrix products. The floor is what the step as implemented multiplies: a
model that multiplies more than its math needs has a higher floor, so compare ``step ms`` across
models and read ``ratio`` as overhead per model. ``-``: no such products.

Threads. On a machine shared with other jobs, OpenMP's default busy-waiting makes every parallel
region wait for a descheduled thread: with one other busy process on a 2-core machine, an LGMRec
step took ~5x as long with 2 threads as with ``OMP_WAIT_POLICY=PASSIVE``. Benchmark on an idle
machine, or set ``OMP_WAIT_POLICY=PASSIVE`` (the header line prints the value in effect).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

DEFAULT_PRESETS = ["synth-baby-small", "synth-baby"]
WARMUP_STEPS = 3


def product_timer(device):
    """A dispatch mode that adds up the in-situ time of the matrix products it sees: those whose
    tensor operands are all dense, and (apart) those with a sparse operand."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from lgmrec import graph

    aten = torch.ops.aten
    dense_products = {aten.mm, aten.addmm, aten.addmm_, aten.bmm, aten.baddbmm, aten.addbmm,
                      aten._addmm_activation, aten.mv, aten.addmv, aten.dot, aten.vdot}
    sparse_products = dense_products | {aten._sparse_addmm, aten._sparse_mm, aten.sspaddmm, aten.hspmm,
                                        aten.smm, aten._sparse_sparse_matmul}
    on_cuda = device.type == "cuda"

    class ProductTimer(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seconds = {"dense": 0.0, "sparse": 0.0}
            self.calls = {"dense": 0, "sparse": 0}
            self._events = []

        def __enter__(self):
            # Off the CPU a sparse product is graph.row_sums_of_gathered (a gather, a product and a
            # segmented sum: no aten product), so it is timed as one sparse product here.
            self._gathered = gathered = graph.row_sums_of_gathered
            graph.row_sums_of_gathered = lambda matrix, dense: self._timed("sparse", gathered, matrix, dense)
            return super().__enter__()

        def __exit__(self, *exc_info):
            graph.row_sums_of_gathered = self._gathered
            return super().__exit__(*exc_info)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket not in sparse_products:
                return func(*args, **kwargs)
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            kind = "sparse" if any(t.layout != torch.strided for t in tensors) else "dense"
            if kind == "dense" and func.overloadpacket not in dense_products:
                return func(*args, **kwargs)
            return self._timed(kind, func, *args, **kwargs)

        def _timed(self, kind: str, func, *args, **kwargs):
            self.calls[kind] += 1
            if on_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = func(*args, **kwargs)
                end.record()
                self._events.append((kind, start, end))
                return out
            begin = time.perf_counter()
            out = func(*args, **kwargs)
            self.seconds[kind] += time.perf_counter() - begin
            return out

        def totals(self) -> dict[str, float]:
            if on_cuda:
                torch.cuda.synchronize()
                for kind, start, end in self._events:
                    self.seconds[kind] += start.elapsed_time(end) / 1000
                self._events.clear()
            return dict(self.seconds)

    return ProductTimer


def time_steps(data, model_name: str, model_config, train_config, device, n_steps: int) -> dict:
    """Median step time, dense-product floor and sparse-product time of ``n_steps`` training steps."""
    import torch
    from lgmrec.models import get_model_spec
    from lgmrec.training import NegativeSampler, make_optimizer, seed_everything

    generator = seed_everything(1)
    model = get_model_spec(model_name).build(data, model_config).to(device)
    optimizer = make_optimizer(model, train_config)  # the trainer's own
    model.train()
    model.on_epoch_start(1)
    pairs = torch.from_numpy(data.splits["train"])
    pairs = pairs[torch.randperm(len(pairs), generator=generator)]
    size = train_config.batch_size
    n_batches = max(1, min(WARMUP_STEPS + n_steps, len(pairs) // size))
    sampler = NegativeSampler(data)
    batches = []
    for i in range(n_batches):
        chunk = pairs[i * size: (i + 1) * size]
        batches.append(tuple(t.to(device) for t in (chunk[:, 0], chunk[:, 1], sampler.sample(chunk[:, 0], generator))))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(i: int) -> None:
        loss = model.loss(*batches[i % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(WARMUP_STEPS):
        step(i)
    timer_class = product_timer(device)
    step_seconds, dense, sparse = [], [], []
    for i in range(n_steps):  # plain and instrumented steps alternate: both see the same machine
        sync()
        begin = time.perf_counter()
        step(i)
        sync()
        step_seconds.append(time.perf_counter() - begin)
        with timer_class() as timer:
            step(i)
        totals = timer.totals()
        dense.append(totals["dense"])
        sparse.append(totals["sparse"])
    return {"step_s": statistics.median(step_seconds), "floor_s": statistics.median(dense),
            "sparse_s": statistics.median(sparse), "products": timer.calls}


def measure(model_name: str, preset: str, device_name: str, threads: int | None, epochs: int,
            converge: bool, n_steps: int, eval_mode: str, out) -> None:
    """One (model, preset), in its own process: train (epochs, memory), then time steps."""
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        from lgmrec.resolve import resolve_run
        from lgmrec.synthetic import generate
        from lgmrec.training import resolve_device, train_model

        device = resolve_device(device_name)
        data = generate(preset, seed=0)
        overrides = {"eval_mode": eval_mode} if model_name == "lgmrec" else {}
        overrides["device"] = str(device)
        if not converge:  # patience = epochs: every epoch runs, the medians are over `epochs` passes
            overrides.update(max_epochs=epochs, patience=epochs)
        run = resolve_run(model_name, data.name, overrides)  # the protocol plus the model's own defaults
        result = train_model(data, model_name, run.model_config, run.train_config, seed=999)
        if result.status != "ok" and result.error:
            raise RuntimeError(result.error)
        row = {
            "users": data.n_users, "items": data.n_items, "params": result.n_parameters,
            "epoch_s": result.train_seconds_per_epoch, "eval_s": result.eval_seconds,
            "peak_mb": result.peak_memory_mb,
            "conv": f"{result.best_epoch}/{result.epochs_run}" if converge else "-",
        }
        row.update(time_steps(data, model_name, run.model_config, run.train_config, device, n_steps))
        out.put(row)
    except BaseException as exc:  # noqa: BLE001 - reported in the table, the next row still runs
        out.put({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:120]})


COLUMNS = [("model", "<10"), ("preset", "<18"), ("users", ">7"), ("items", ">7"), ("params", ">11"),
           ("epoch s", ">9"), ("eval s", ">8"), ("step ms", ">9"), ("floor ms", ">9"), ("ratio", ">7"),
           ("spmm ms", ">9"), ("ratio2", ">7"), ("conv", ">9"), ("peak MB", ">8")]


def format_row(model: str, preset: str, row: dict) -> str:
    if "error" in row:
        return f"{model:<10}{preset:<18}  FAILED: {row['error']}"
    step_ms, floor_ms, sparse_ms = row["step_s"] * 1000, row["floor_s"] * 1000, row["sparse_s"] * 1000
    cells = [model, preset, row["users"], row["items"], f"{row['params']:,}", f"{row['epoch_s']:.3f}",
             f"{row['eval_s']:.3f}", f"{step_ms:.1f}", f"{floor_ms:.1f}",
             f"{step_ms / floor_ms:.2f}" if floor_ms > 0 else "-", f"{sparse_ms:.1f}",
             f"{step_ms / (floor_ms + sparse_ms):.2f}" if floor_ms + sparse_ms > 0 else "-", row["conv"],
             f"{row['peak_mb']:.0f}"]
    return "".join(f"{cell:{fmt}}" for cell, (_, fmt) in zip(cells, COLUMNS))


def run_isolated(context, args, model: str, preset: str, converge: bool) -> dict:
    results = context.Queue()
    process = context.Process(target=measure, args=(model, preset, args.device, args.threads, args.epochs,
                                                    converge, args.steps, args.eval_mode, results))
    process.start()
    while True:
        try:
            row = results.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                try:
                    row = results.get(timeout=1)
                except queue_module.Empty:
                    row = {"error": f"process died with exit code {process.exitcode}"}
                break
    process.join()
    return row


def main(argv: list[str] | None = None) -> None:
    from lgmrec.models import available_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    parser.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs where a run does not converge")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (and floor steps)")
    parser.add_argument("--converge", action=argparse.BooleanOptionalAction, default=None,
                        help="train to convergence (default: only on *-small presets)")
    parser.add_argument("--eval-mode", default="official", choices=["official", "deterministic"],
                        help="LGMRec's evaluation (official: Gumbel noise, a forward pass per user batch)")
    args = parser.parse_args(argv)

    import torch

    context = mp.get_context("spawn")
    threads = args.threads or torch.get_num_threads()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, threads={threads}"
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"torch {torch.__version__} on {device} ({where}, OMP_WAIT_POLICY={wait_policy}); {args.steps} timed "
          f"steps; floor = in-situ time of the step's all-dense matrix products (see the docstring)", flush=True)
    print("".join(f"{name:{fmt}}" for name, fmt in COLUMNS), flush=True)
    for preset in args.presets:
        converge = args.converge if args.converge is not None else preset.endswith("-small")
        for model in args.models:
            print(format_row(model, preset, run_isolated(context, args, model, preset, converge)), flush=True)


if __name__ == "__main__":
    main()
