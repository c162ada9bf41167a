"""Speed and memory of LGMRec (or another model) on synthetic presets: prints a table.

    python scripts/benchmark.py [--presets synth-baby-small synth-baby] [--epochs 3] [--model lgmrec]

Each preset runs in a fresh process so that peak memory is that run's own. Figures: median
training seconds per epoch, median seconds per evaluation pass (validation, all users), peak
resident memory (CPU) or peak allocated CUDA memory, and trainable parameters.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def run_one(preset: str, model: str, epochs: int, device: str, eval_mode: str, queue) -> None:
    from lgmrec.config import TrainConfig
    from lgmrec.synthetic import generate
    from lgmrec.training import resolve_device, train_model

    start = time.perf_counter()
    data = generate(preset, seed=0)
    generated = time.perf_counter() - start
    overrides = {"eval_mode": eval_mode} if model == "lgmrec" else {}
    # patience = epochs: every epoch runs, so the medians are over `epochs` passes
    config = TrainConfig(max_epochs=epochs, patience=epochs, device=device)
    result = train_model(data, model, train_config=config, seed=999, overrides=overrides)
    queue.put({
        "preset": preset, "users": data.n_users, "items": data.n_items,
        "train": len(data.splits["train"]), "generate_s": generated,
        "epoch_s": result.train_seconds_per_epoch, "eval_s": result.eval_seconds,
        "peak_mb": result.peak_memory_mb, "params": result.n_parameters,
        "device": str(resolve_device(device)) + (f" ({result.environment['gpu']})" if result.environment["gpu"] != "none" else ""),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["synth-baby-small", "synth-baby"])
    parser.add_argument("--model", default="lgmrec")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-mode", default="official", choices=["official", "deterministic"])
    args = parser.parse_args()
    context = mp.get_context("spawn")
    header = f"{'preset':<20}{'users':>8}{'items':>8}{'train':>9}{'params':>11}{'epoch s':>9}{'eval s':>8}{'peak MB':>9}  device"
    print(f"{args.model}, {args.epochs} epochs per preset, eval_mode={args.eval_mode}")
    print(header)
    for preset in args.presets:
        queue = context.Queue()
        process = context.Process(target=run_one, args=(preset, args.model, args.epochs, args.device, args.eval_mode, queue))
        process.start()
        row = queue.get()
        process.join()
        print(f"{row['preset']:<20}{row['users']:>8}{row['items']:>8}{row['train']:>9}{row['params']:>11,}"
              f"{row['epoch_s']:>9.3f}{row['eval_s']:>8.3f}{row['peak_mb']:>9.0f}  {row['device']}", flush=True)


if __name__ == "__main__":
    main()
