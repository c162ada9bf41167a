"""Typed run configuration: training settings, model hyperparameters and ``key=value`` overrides."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

METRICS = ("recall", "ndcg", "precision", "map")


@dataclass
class TrainConfig:
    """Training and evaluation protocol (``shared/spec/protocol.md``)."""

    max_epochs: int = 1000
    patience: int = 20  # stop on the (patience + 1)-th epoch without strict improvement
    batch_size: int = 2048
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 term; MMRec's overall.yaml sets 0 (SLMRec's yaml 1e-4)
    # MMRec's learning_rate_scheduler: lr * lr_decay ** (epoch / lr_decay_epochs); 1.0 = constant
    lr_decay: float = 1.0
    lr_decay_epochs: int = 50
    eval_batch_users: int = 4096  # users scored at once (MMRec's eval batch)
    topk: tuple[int, ...] = (5, 10, 20, 50)
    valid_metric: str = "recall@20"
    stopping_decimals: int = 4  # the public code compares validation scores rounded to 4 decimals
    device: str = "auto"  # "auto": CUDA when available, else CPU

    def __post_init__(self) -> None:
        _positive(self, "max_epochs", "batch_size", "eval_batch_users", "lr_decay_epochs")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        self.topk = tuple(sorted({int(k) for k in self.topk}))
        if not self.topk or self.topk[0] < 1:
            raise ConfigError(f"topk must be positive integers, got {self.topk}")
        name, _, k = self.valid_metric.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) not in self.topk:
            raise ConfigError(
                f"valid_metric must be one of {METRICS} @ a K in topk {self.topk}, "
                f"got {self.valid_metric!r}"
            )


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")


def parse_assignments(pairs: list[str] | None) -> dict[str, Any]:
    """``["alpha=0.5", "modalities=image"]`` -> ``{"alpha": 0.5, "modalities": "image"}``."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        result[key.strip()] = value
    return result


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def build_dataclass(cls: type, values: dict[str, Any]):
    """Instantiate ``cls`` from ``values``, coercing each value to its field's declared type."""
    hints = typing.get_type_hints(cls)
    unknown = set(values) - field_names(cls)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
    kwargs = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        item_type = args[0] if args else str
        return tuple(_coerce(name, v, item_type) for v in items if v != "")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if value in (0, 1):
            return bool(value)
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not float(_number(name, value)).is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(float(value))
    if hint is float:
        return float(_number(name, value))
    if hint is str:
        return str(value)
    return value


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def asdict(obj: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


__all__ = ["TrainConfig", "parse_assignments", "build_dataclass", "asdict", "field", "METRICS"]


def require(owner: str, rules: dict[str, bool]) -> None:
    """Raise one ConfigError naming every rule (``"lr > 0"``: its truth) that does not hold."""
    failed = [rule for rule, ok in rules.items() if not ok]
    if failed:
        raise ConfigError(f"{owner} config violates: {', '.join(failed)}")
