"""Training with early stopping, exactly per ``shared/spec/protocol.md``.

One epoch is one pass over the shuffled training pairs in batches; each positive gets one negative
drawn uniformly from the items of the training split, redrawn while it is in the user's training
history. After every epoch the model is evaluated on validation; training stops on the
(patience + 1)-th consecutive epoch without a strict improvement of the validation metric
(rounded, as upstream) and the reported test metrics are those of the best-validation epoch.
Epochs are numbered from 1.
"""

from __future__ import annotations

import ctypes
import math
import os
import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.adam import adam as adam_kernel
from tqdm import tqdm

from .config import TrainConfig, asdict
from .data import InteractionData
from .evaluation import score_split, validate
from .errors import LGMRecError
from .models import get_model_spec
from .models.base import Recommender
from .provenance import code_version, environment


class TrainingDiverged(LGMRecError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    config: dict[str, Any]
    seed: int
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    best_epoch: int = 0
    epochs_run: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, np.ndarray] = field(default_factory=dict)  # test split, best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds_per_epoch: float = math.nan  # median
    eval_seconds: float = math.nan  # median per evaluation pass
    n_parameters: int = 0
    peak_memory_mb: float = math.nan
    code_version: str = field(default_factory=code_version)
    environment: dict[str, Any] = field(default_factory=environment)

    def to_record(self) -> dict[str, Any]:
        """JSON-able summary (everything but the per-user vectors)."""
        record = {k: v for k, v in self.__dict__.items() if k != "per_user"}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for shuffling and negatives.

    Also asks torch for deterministic kernels: on CPU, the backward of ``x[index]`` otherwise
    accumulates with several threads in a varying order, and metrics drift between equal runs.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    deterministic_algorithms()
    keep_freed_memory()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its side import of
    torch._inductor (seconds per process, paid by every worker and notebook kernel).

    Deterministic mode also fills every new tensor's memory with NaN by default, a debugging aid
    for kernels that read memory they never wrote. None of ours does (every model gives the same
    bits without it; tests/pipeline/test_results.py runs one config in two processes), and each
    fill is one more write of a fresh buffer: ~290 of them in a full-scale LGMRec step."""
    torch.utils.deterministic.fill_uninitialized_memory = False
    if torch.are_deterministic_algorithms_enabled():
        return
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public call
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Let glibc keep the memory that torch frees, for the next training step to reuse.

    torch's CPU allocator frees every tensor to malloc, and glibc hands large freed blocks back to
    the operating system (blocks above a threshold live in their own mmap; the heap's top is
    trimmed), so every step page-faults its fresh large tensors in again. Full-scale Baby-like
    steps: BM3 ~50,000 faults and 97 ms, ~16,000 and 68 ms with every block on the untrimmed heap;
    FREEDOM 155 -> 114 ms. The process keeps its peak memory until it ends (its peak grew by
    ~8 %). No-op without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


#: Most (user, item) cells for which :class:`NegativeSampler` keeps a dense table of the training
#: pairs (one byte each); above, it looks them up by binary search in the sorted pair keys.
POSITIVE_TABLE_MAX = 1 << 25


class NegativeSampler:
    """Vectorised uniform negatives from the training item pool, avoiding training positives."""

    def __init__(self, data: InteractionData, max_rounds: int = 100):
        train = data.splits["train"]
        self.n_items = data.n_items
        self.pool = torch.from_numpy(data.train_items)
        self.positive_keys = torch.from_numpy(np.unique(train[:, 0] * data.n_items + train[:, 1]))
        self.max_rounds = max_rounds
        # the same answers as the binary search, by one gather (800 x 400 cells: ~13 against ~230 us)
        self.positive_table = None
        if data.n_users * data.n_items <= POSITIVE_TABLE_MAX:
            self.positive_table = torch.zeros(data.n_users * data.n_items, dtype=torch.bool)
            self.positive_table[self.positive_keys] = True

    def _is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        if self.positive_table is not None:
            return self.positive_table.index_select(0, keys)
        index = torch.searchsorted(self.positive_keys, keys).clamp(max=len(self.positive_keys) - 1)
        return self.positive_keys[index] == keys

    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        negatives = self.pool.index_select(0, torch.randint(len(self.pool), users.shape, generator=generator))
        redraw = self._is_positive(users, negatives)
        for _ in range(self.max_rounds):  # a user who has every pool item keeps a positive
            if not redraw.any():
                break
            fresh = self.pool[torch.randint(len(self.pool), (int(redraw.sum()),), generator=generator)]
            negatives[redraw] = fresh
            redraw[redraw.clone()] = self._is_positive(users[redraw], fresh)
        return negatives


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_model(
    data: InteractionData,
    model_name: str,
    model_config: Any | None = None,
    train_config: TrainConfig | None = None,
    seed: int = 999,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    quiet: bool = True,
) -> RunResult:
    """Train one model on ``data`` with one seed and return its metrics.

    ``model_config`` / ``train_config`` (dataclasses) win over what :func:`lgmrec.resolve.resolve_run`
    makes of ``preset`` + ``overrides``; a NaN/Inf loss is returned as a run with
    ``status="failed"`` and the reason in ``error``.
    """
    from .resolve import resolve_run

    spec = get_model_spec(model_name)
    if model_config is None or train_config is None:
        resolved = resolve_run(model_name, data.name, overrides, preset=preset)
        model_config = model_config or resolved.model_config
        train_config = train_config or resolved.train_config
    result = RunResult(
        config={
            "dataset": data.name,
            "dataset_source": data.source,
            "model": spec.name,
            "preset": preset or spec.default_preset,
            "model_params": asdict(model_config),
            "train": asdict(train_config),
        },
        seed=seed,
    )
    generator = seed_everything(seed)
    device = resolve_device(train_config.device)
    if device.type == "cuda":  # this run's own peak: a grid unit trains several runs in one process
        torch.cuda.reset_peak_memory_stats(device)
    model = spec.build(data, model_config).to(device)
    result.n_parameters = model.trainable_parameter_count()
    try:
        _fit(model, data, train_config, generator, result, device, quiet)
    except TrainingDiverged as exc:
        result.status, result.error = "failed", str(exc)
    result.peak_memory_mb = _peak_memory_mb(device)
    return result


class FusedAdam:
    """``torch.optim.Adam(params, lr, weight_decay=..., fused=True)`` without the class: the same
    kernel (``torch._fused_adam_``, which the class's ``step`` reaches through
    ``torch.optim.adam.adam``) on the same lazily created state, so the updates are the same bits
    (tested). Why: constructing ``torch.optim.Adam`` imports
    ``torch._dynamo`` (~1.2 s, paid by every unit's kernel of a grid) and each of its steps passes
    dynamo's guards. ``lr`` is set by the trainer, epoch by epoch."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        with_grad = [p for p in self.params if p.grad is not None]  # as the class: others are skipped
        if not with_grad:
            return
        for p in with_grad:
            if p not in self.state:  # step (float32 for the fused kernel), first and second moments
                self.state[p] = (torch.zeros((), dtype=torch.float32, device=p.device),
                                 torch.zeros_like(p, memory_format=torch.preserve_format),
                                 torch.zeros_like(p, memory_format=torch.preserve_format))
        steps, means, squares = (list(part) for part in zip(*(self.state[p] for p in with_grad)))
        grads = [p.grad for p in with_grad]
        if len({(p.device, p.dtype) for p in with_grad}) > 1:  # torch groups them and calls the kernel per group
            adam_kernel(with_grad, grads, means, squares, [], steps, fused=True, amsgrad=False,
                        beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay,
                        eps=self.eps, maximize=False)
            return
        # one group: what torch.optim.adam's fused path calls, without its per-step checks (~0.1 ms a step)
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(with_grad, grads, means, squares, [], steps, amsgrad=False, lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                           maximize=False, grad_scale=None, found_inf=None)


def make_optimizer(model: Recommender, cfg: TrainConfig) -> FusedAdam:
    # fused: one kernel for all parameters (Adam's arithmetic; equal to torch's loop to the last bits)
    return FusedAdam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Epoch ``epoch``'s (from 1) learning rate: what ``LambdaLR`` with
    ``lambda e: lr_decay ** (e / lr_decay_epochs)`` gives after ``epoch - 1`` scheduler steps."""
    return cfg.learning_rate * cfg.lr_decay ** ((epoch - 1) / cfg.lr_decay_epochs)


def _fit(model: Recommender, data, cfg: TrainConfig, generator, result: RunResult, device, quiet) -> None:
    """Train until early stopping; the best epoch's validation and test passes are kept as scores and
    their metrics computed once, at the end (also when the run diverges): only they are reported."""
    best: list = []  # [validation, test pass] of the best epoch so far
    try:
        _train_epochs(model, data, cfg, generator, result, device, quiet, best)
    finally:
        if best:
            valid, test = best[0].result(), best[1].result()
            result.valid, result.test, result.per_user = valid.means, test.means, test.per_user


def _train_epochs(model: Recommender, data, cfg: TrainConfig, generator, result: RunResult, device, quiet,
                  best: list) -> None:
    optimizer = make_optimizer(model, cfg)
    sampler = NegativeSampler(data)
    train_pairs = torch.from_numpy(data.splits["train"])
    best_score, stale_epochs = -math.inf, 0
    epoch_seconds, eval_seconds = [], []
    progress = tqdm(
        total=cfg.max_epochs, desc=f"{result.config['model']} {data.name} seed {result.seed}",
        disable=quiet, leave=False, unit="epoch",
    )
    for epoch in range(1, cfg.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        model.on_epoch_start(epoch)
        pairs = train_pairs.index_select(0, torch.randperm(len(train_pairs), generator=generator))
        negatives = sampler.sample(pairs[:, 0], generator)
        total_loss = 0.0
        optimizer.lr = learning_rate(cfg, epoch)
        for begin in range(0, len(pairs), cfg.batch_size):
            users = pairs[begin: begin + cfg.batch_size, 0].to(device)
            positives = pairs[begin: begin + cfg.batch_size, 1].to(device)
            loss = model.loss(users, positives, negatives[begin: begin + cfg.batch_size].to(device))
            value = loss.item()  # what torch.isfinite(loss) tests, read once (a float32 keeps inf and NaN as a float)
            if not math.isfinite(value):
                raise TrainingDiverged(f"training loss is {value} at epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += value
        epoch_seconds.append(time.perf_counter() - start)

        valid = validate(model, data, cfg.valid_metric, cfg.topk, cfg.eval_batch_users)  # other metrics: at the end
        eval_seconds.append(valid.seconds)
        score = valid.score
        result.history.append(
            {"epoch": epoch, "loss": total_loss, "learning_rate": optimizer.lr, cfg.valid_metric: score}
        )
        result.epochs_run = epoch
        if round(score, cfg.stopping_decimals) > round(best_score, cfg.stopping_decimals):
            best_score, stale_epochs = score, 0
            # the test users scored now (with the validation's embeddings where the model allows),
            # the metrics of both passes when the run ends
            test = score_split(model, data, "test", cfg.topk, cfg.eval_batch_users, valid.embeddings)
            result.best_epoch, best[:] = epoch, [valid, test]
        else:
            stale_epochs += 1
        progress.update()
        progress.set_postfix(loss=f"{total_loss:.4f}", valid=f"{score:.4f}", best=f"{best_score:.4f}")
        if stale_epochs > cfg.patience:
            break
    progress.close()
    result.train_seconds_per_epoch = statistics.median(epoch_seconds)
    result.eval_seconds = statistics.median(eval_seconds)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
