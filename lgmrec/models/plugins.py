"""Models from outside the package: loading a plug-in's :class:`~lgmrec.models.ModelSpec` and
checking it before any run uses it.

A plug-in is named either by an entry point of the group ``lgmrec.models`` (an installed
distribution declares ``[project.entry-points."lgmrec.models"] mymodel = "mypkg.model:SPEC"``; the
entry point's name is the model's name) or by a ``module:attribute`` reference that a profile
lists among its models. Either way the attribute is a ``ModelSpec`` instance. The registry
(:func:`lgmrec.models.get_model_spec`) loads each plug-in once per process, lazily, and checks it
here: a wrong type, a model that does not follow :mod:`lgmrec.models.base`, or one whose scores on
3 users x 4 items are not a (3, 4) matrix stops with one :class:`PluginError` line naming the
plug-in, before a grid starts. Worker processes and notebook kernels load it again the same way,
so an entry point must be installed, and a ``module:attribute`` importable (on ``sys.path``,
e.g. via ``PYTHONPATH``), in the environment that runs the grid.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError

ENTRY_POINT_GROUP = "lgmrec.models"
#: a model's name is a folder of the results store and a CLI word
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
CHECK_USERS, CHECK_ITEMS = 3, 4


class PluginError(ConfigError):
    """A plug-in model cannot be loaded or does not follow the contract; names the plug-in."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def load_reference(reference: str) -> Any:
    """The object a ``module:attribute`` reference names (``attribute`` may be dotted)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise PluginError(f"plug-in {reference!r}: expected 'module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error of the plug-in's own import is the plug-in's problem
        raise PluginError(f"plug-in {reference}: cannot import {module_name}: {first_line(exc)}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise PluginError(f"plug-in {reference}: module {module_name} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def load_entry_point(entry_point) -> Any:
    origin = f"entry point {entry_point.name!r} ({entry_point.value})"
    try:
        return entry_point.load()
    except Exception as exc:
        raise PluginError(f"plug-in {origin}: cannot be loaded: {first_line(exc)}") from None


def check_plugin(origin: str, spec: Any, expected_name: str | None = None):
    """``spec`` when it is a ModelSpec whose model follows the contract; else one PluginError line.

    ``origin``: how the plug-in was named (for the message); ``expected_name``: the entry point's name,
    which the spec's ``name`` must equal (records and folders carry the spec's name)."""
    from . import MODEL_MODULES, ModelSpec

    def fail(problem: str) -> PluginError:
        return PluginError(f"plug-in {origin}: {problem}")

    if not isinstance(spec, ModelSpec):
        raise fail(f"is a {type(spec).__name__}, not an lgmrec.models.ModelSpec")
    if not isinstance(spec.name, str) or not NAME_PATTERN.fullmatch(spec.name):
        raise fail(f"name {spec.name!r} must be lower-case letters, digits, '-' or '_' (it names folders)")
    if expected_name is not None and spec.name != expected_name:
        raise fail(f"its ModelSpec is named {spec.name!r}, not {expected_name!r} like its entry point")
    if spec.name in MODEL_MODULES:
        raise fail(f"name {spec.name!r} is a built-in model's")
    if not (isinstance(spec.config_class, type) and dataclasses.is_dataclass(spec.config_class)):
        raise fail("config_class must be a dataclass (the model's hyperparameters)")
    if not callable(spec.build):
        raise fail("build must be a function (data, config) -> model")
    _check_grids(spec, fail)
    _check_model(spec, fail)
    return spec


def _check_grids(spec, fail: Callable[[str], PluginError]) -> None:
    from ..config import TrainConfig, field_names

    known = field_names(spec.config_class) | field_names(TrainConfig)
    for grid_name in ("tuning_grid", "reduced_grid"):
        grid = getattr(spec, grid_name)
        unknown = sorted(set(grid) - known)
        if unknown:
            raise fail(f"{grid_name} names {', '.join(unknown)}, neither a field of "
                       f"{spec.config_class.__name__} nor a training setting")
        for key, values in grid.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not list(values):
                raise fail(f"{grid_name}[{key!r}] must be a non-empty list of values")
    outside = {k: [v for v in values if v not in list(spec.tuning_grid.get(k, ()))]
               for k, values in spec.reduced_grid.items()}
    if any(outside.values()):
        raise fail(f"reduced_grid values not in tuning_grid: {{{', '.join(f'{k}: {v}' for k, v in outside.items() if v)}}}")


def check_data():
    """3 users x 4 items, every user with train, validation and test items, two modalities."""
    from ..data import InteractionData

    pairs = lambda rows: np.array(rows, dtype=np.int64)
    rng = np.random.default_rng(0)
    return InteractionData(
        "plugin-check", CHECK_USERS, CHECK_ITEMS,
        {"train": pairs([[0, 0], [0, 1], [1, 1], [1, 2], [2, 2], [2, 3]]),
         "valid": pairs([[0, 2], [1, 3], [2, 0]]), "test": pairs([[0, 3], [1, 0], [2, 1]])},
        {"image": rng.standard_normal((CHECK_ITEMS, 8)).astype(np.float32),
         "text": rng.standard_normal((CHECK_ITEMS, 6)).astype(np.float32)},
        source="synthetic:plugin-check")


def _check_model(spec, fail: Callable[[str], PluginError]) -> None:
    """Build the model at its defaults on :func:`check_data` and call what the trainer and the
    evaluator call: ``forward()``, ``score`` on all users, ``loss`` on a batch of 3."""
    import torch

    from . import resolve_model_config
    from .base import Embeddings, Recommender

    try:
        config = resolve_model_config(spec, "plugin-check")
    except ConfigError as exc:
        raise fail(f"its default configuration is invalid: {exc}") from None
    with torch.random.fork_rng(devices=[]):  # the check must not move the caller's random state
        torch.manual_seed(0)
        try:
            model = spec.build(check_data(), config)
        except Exception as exc:
            raise fail(f"build() failed on {CHECK_USERS} users x {CHECK_ITEMS} items: {first_line(exc)}") from None
        if not isinstance(model, Recommender):
            raise fail(f"build() returned a {type(model).__name__}, not an lgmrec.models.base.Recommender")
        missing = [m for m in ("forward", "loss") if getattr(type(model), m) is getattr(Recommender, m)]
        if missing:
            raise fail(f"{type(model).__name__} does not implement {' and '.join(m + '()' for m in missing)}")
        users = torch.arange(CHECK_USERS)
        try:
            embeddings = model()
            scores = model.score(users, embeddings)
        except Exception as exc:
            raise fail(f"forward() or score() failed on {CHECK_USERS} users x {CHECK_ITEMS} items: "
                       f"{first_line(exc)}") from None
        if not isinstance(embeddings, Embeddings):
            raise fail(f"forward() returned a {type(embeddings).__name__}, not lgmrec.models.base.Embeddings")
        shape = tuple(getattr(scores, "shape", ()))
        if not isinstance(scores, torch.Tensor) or shape != (CHECK_USERS, CHECK_ITEMS):
            raise fail(f"score() gave shape {shape} for {CHECK_USERS} users x {CHECK_ITEMS} items, "
                       f"expected (users, items) = ({CHECK_USERS}, {CHECK_ITEMS})")
        try:
            loss = model.loss(users, torch.tensor([0, 1, 2]), torch.tensor([3, 0, 1]))
        except Exception as exc:
            raise fail(f"loss() failed on a batch of 3: {first_line(exc)}") from None
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
            raise fail(f"loss() must return a scalar tensor with a gradient, got "
                       f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}")
        if not torch.isfinite(loss):
            raise fail(f"loss() is {loss.item()} on a batch of 3")
