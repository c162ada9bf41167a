"""Profiles from TOML files: ``python -m lgmrec grid --profile my.toml``.

A file holds the fields of :class:`lgmrec.grids.Profile` (the keys below); it is read and checked
once into a Profile, which is then passed down. Every problem stops with one line naming the
file, the key and the problem, e.g. ``my.toml: key 'seeds': expected a list of integers, got 'x'``.

.. code-block:: toml

    name = "my-benchmark"            # the results folder (default: the file's name without .toml)
    description = "my model against three baselines on the embedded data"
    datasets = ["synth-baby-mini", "data/my-dataset"]  # presets, baby/sports/clothing, or folders
    models = ["bpr", "lightgcn", "lgmrec", "mymodel", "mypkg.model:SPEC"]  # built-ins or plug-ins
    focal_model = "mymodel"          # the model the claims are about (default: lgmrec)
    seeds = [999, 1, 2, 3, 4]
    experiments = ["tuning", "overall"]
    tuning = "reduced"               # none, reduced or full: which grid of each model's spec
    reductions = ["3 seeds instead of 5"]   # what the profile leaves out of the paper's design

    [train]                          # training settings (lgmrec.config.TrainConfig), e.g.
    max_epochs = 50

    [synthetic_presets.tiny-baby]    # a synthetic dataset of the profile's own (lgmrec.synthetic)
    n_users = 200
    n_items = 120
    mean_interactions = 9.0

A dataset is a synthetic preset (the file's own, :data:`lgmrec.synthetic.PRESETS` or the smoke
presets), a released dataset (baby, sports, clothing) or the path of a folder in the MMRec format
(relative to the file), named after the folder. A model is a built-in name, the name of an
installed plug-in (entry point group ``lgmrec.models``) or a ``module:attribute`` reference, which
must be importable wherever the grid runs (see :mod:`lgmrec.models.plugins`). The other keys:
``tuning_seed``, ``replicate_test_choice``, ``published_lgmrec_row``, ``ablation_datasets``,
``ablation_seeds``, ``sensitivity`` (a table: parameter -> values), ``sensitivity_datasets``,
``sensitivity_seeds``, ``error_rate_models``, ``error_rate_seeds`` and ``data_seed``, as
documented on :class:`~lgmrec.grids.Profile`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_READ: dict[tuple[str, int, int], Any] = {}  # (path, mtime, size) -> Profile: a file is read once


def read_profile_file(path: str | os.PathLike):
    """The Profile a TOML file describes (read and checked once per process while it is unchanged)."""
    file = Path(path).expanduser().resolve()
    try:
        status = file.stat()
    except OSError:
        raise ConfigError(f"{path}: profile file not found") from None
    key = (str(file), status.st_mtime_ns, status.st_size)
    if key not in _READ:
        _READ[key] = ProfileFile(file).profile()
    profile = _READ[key]
    profile.load_plugins()
    return profile


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ProfileFile:
    """One TOML profile file being read: its values, and errors that name it and the key."""

    def __init__(self, file: Path):
        self.file = file
        try:
            with open(file, "rb") as handle:
                self.values: dict[str, Any] = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {str(exc).splitlines()[0]}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read: {exc.strerror}") from None

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: key '{key}': {problem}")

    # ------------------------------------------------------------------ typed values
    def get(self, key: str, check: Callable[[Any], bool], expected: str, default: Any = None) -> Any:
        if key not in self.values:
            return default
        value = self.values[key]
        if not check(value):
            raise self.error(key, f"expected {expected}, got {_describe(value)}")
        return value

    def text(self, key: str, default: str | None = None) -> str | None:
        return self.get(key, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string", default)

    def integer(self, key: str, default: int | None = None) -> int | None:
        return self.get(key, _integer, "an integer", default)

    def flag(self, key: str, default: bool = False) -> bool:
        return self.get(key, lambda v: isinstance(v, bool), "true or false", default)

    def integers(self, key: str) -> tuple[int, ...] | None:
        value = self.get(key, lambda v: isinstance(v, list) and all(map(_integer, v)), "a list of integers")
        if value is not None and len(set(value)) != len(value):
            raise self.error(key, f"repeats a value: {value}")
        return None if value is None else tuple(value)

    def texts(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key, lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                         "a list of non-empty strings")
        return None if value is None else tuple(value)

    def table(self, key: str) -> dict[str, Any]:
        return self.get(key, lambda v: isinstance(v, dict), f"a table ([{key}])", {})

    # ------------------------------------------------------------------ the profile
    def profile(self):
        from .grids import EXPERIMENTS, PROFILES, Profile

        known = {f.name for f in dataclasses.fields(Profile)} - {"plugins", "dataset_folders", "source", "data"}
        unknown = sorted(set(self.values) - known)
        if unknown:
            raise self.error(unknown[0], f"unknown key; the keys are {', '.join(sorted(known))}")
        for required in ("datasets", "seeds"):
            if required not in self.values:
                raise self.error(required, "missing (a profile needs datasets and seeds)")
        name = self.text("name", self.file.stem)
        if not NAME_PATTERN.fullmatch(name):
            raise self.error("name", f"{name!r} must be letters, digits, '.', '-' or '_' (it names the results folder)")
        if name in PROFILES:
            raise self.error("name", f"{name!r} is a built-in profile's name; choose another (the results folder)")
        experiments = self.texts("experiments")
        for experiment in experiments or ():
            if experiment not in EXPERIMENTS:
                raise self.error("experiments", f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
        tuning = self.text("tuning", "none")
        if tuning not in ("none", "reduced", "full"):
            raise self.error("tuning", f"expected none, reduced or full, got {tuning!r}")
        presets = self.synthetic_presets()
        names, folders = self.datasets(presets)
        plugins: list[str] = []
        models = self.models("models", plugins)
        error_rate_models = self.models("error_rate_models", plugins) or ()
        focal = self.models("focal_model", plugins)
        focal_model = focal[0] if focal else "lgmrec"
        offered = models if models is not None else self._builtin_models()
        if focal_model not in offered:
            raise self.error("focal_model", f"{focal_model!r} is not among the profile's models "
                                            f"({', '.join(offered)}){'' if focal else '; set focal_model'}")
        released = {n for n in names if n not in folders and n not in presets}
        from .datasets.fetch import DATASET_NAMES

        data = "real" if released & set(DATASET_NAMES) else "folder" if folders else "synthetic"
        values = dict(
            name=name, description=self.text("description", f"profile file {self.file.name}"), data=data,
            datasets=names, seeds=self.integers("seeds"), train=self.train(), models=models,
            tuning=tuning, tuning_seed=self.integer("tuning_seed", 999),
            replicate_test_choice=self.flag("replicate_test_choice"),
            published_lgmrec_row=self.flag("published_lgmrec_row"),
            ablation_datasets=self.dataset_subset("ablation_datasets", names, folders),
            ablation_seeds=self.integers("ablation_seeds"), sensitivity=self.sensitivity(),
            sensitivity_datasets=self.dataset_subset("sensitivity_datasets", names, folders),
            sensitivity_seeds=self.integers("sensitivity_seeds"), error_rate_models=error_rate_models,
            error_rate_seeds=self.integers("error_rate_seeds") or (), synthetic_presets=presets,
            data_seed=self.integer("data_seed", 0), reductions=self.texts("reductions") or (),
            focal_model=focal_model, plugins=tuple(dict.fromkeys(plugins)),
            dataset_folders=folders, source=str(self.file),
        )
        if experiments is not None:
            values["experiments"] = experiments
        try:
            return Profile(**values)
        except ConfigError as exc:  # a rule across keys (e.g. error_rate_seeds apart from seeds)
            raise ConfigError(f"{self.file}: {exc}") from None

    @staticmethod
    def _builtin_models() -> list[str]:
        from .models import available_models

        return available_models()

    def models(self, key: str, plugins: list[str]) -> tuple[str, ...] | None:
        """Model names (plug-ins loaded and checked); ``module:attribute`` references become their
        spec's name and are remembered in ``plugins``."""
        from .models import get_model_spec, register_reference

        if key == "focal_model":
            raw = (self.text(key),) if key in self.values else None
        else:
            raw = self.texts(key)
        if raw is None:
            return None
        names = []
        for entry in raw:
            try:
                if ":" in entry:
                    names.append(register_reference(entry))
                    plugins.append(entry)
                else:
                    names.append(get_model_spec(entry).name)
            except ConfigError as exc:
                raise self.error(key, str(exc)) from None
        if len(set(names)) != len(names):
            raise self.error(key, f"names a model twice: {', '.join(raw)}")
        return tuple(names)

    def synthetic_presets(self) -> dict[str, Any]:
        """The file's own synthetic presets, plus the smoke presets wherever its datasets name them."""
        from .grids import SMOKE_PRESETS
        from .synthetic import SyntheticPreset

        presets: dict[str, Any] = {}
        for name, fields in self.table("synthetic_presets").items():
            key = f"synthetic_presets.{name}"
            if not isinstance(fields, dict):
                raise self.error(key, f"expected a table of SyntheticPreset fields, got {_describe(fields)}")
            allowed = {f.name: f.type for f in dataclasses.fields(SyntheticPreset)}
            for field, value in fields.items():
                if field not in allowed:
                    raise self.error(f"{key}.{field}", f"unknown field; the fields are {', '.join(allowed)}")
                floating = "float" in str(allowed[field])
                if not (_integer(value) or floating and isinstance(value, float)):
                    raise self.error(f"{key}.{field}", f"expected {'a number' if floating else 'an integer'}, "
                                                       f"got {_describe(value)}")
            try:
                presets[name] = SyntheticPreset(**fields)
            except TypeError as exc:
                raise self.error(key, str(exc)) from None
        for name in self.texts("datasets") or ():
            if name in SMOKE_PRESETS and name not in presets:
                presets[name] = SMOKE_PRESETS[name]
        return presets

    def datasets(self, presets: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
        """Dataset names, and name -> folder for those given as folders."""
        from . import synthetic
        from .datasets.fetch import DATASET_NAMES

        names, folders = [], {}
        for entry in self.texts("datasets"):
            if entry in presets or entry in synthetic.PRESETS or entry in DATASET_NAMES:
                names.append(entry)
                continue
            folder = (self.file.parent / entry).resolve()
            if not folder.is_dir():
                raise self.error("datasets", f"{entry!r} is neither a synthetic preset "
                                             f"({', '.join(list(presets) + list(synthetic.PRESETS))}), a released "
                                             f"dataset ({', '.join(DATASET_NAMES)}) nor a folder ({folder} does not exist)")
            if not (folder / f"{folder.name}.inter").is_file():
                raise self.error("datasets", f"folder {folder} is not in the MMRec format: {folder.name}.inter is missing")
            names.append(folder.name)
            folders[folder.name] = str(folder)
        if len(set(names)) != len(names):
            raise self.error("datasets", f"names a dataset twice: {', '.join(names)}")
        return tuple(names), folders

    def dataset_subset(self, key: str, names: tuple[str, ...], folders: dict[str, str]) -> tuple[str, ...] | None:
        """Datasets of ``key``, each one of ``datasets`` (given as there, or by its name)."""
        raw = self.texts(key)
        if raw is None:
            return None
        by_entry = {str((self.file.parent / e).resolve()): n for n, e in folders.items()}
        result = []
        for entry in raw:
            name = entry if entry in names else by_entry.get(str((self.file.parent / entry).resolve()))
            if name is None:
                raise self.error(key, f"{entry!r} is not one of the datasets ({', '.join(names)})")
            result.append(name)
        return tuple(result)

    def train(self) -> dict[str, Any]:
        from .config import TrainConfig, build_dataclass

        values = self.table("train")
        try:
            build_dataclass(TrainConfig, dict(values))
        except ConfigError as exc:
            raise self.error("train", str(exc)) from None
        return dict(values)

    def sensitivity(self) -> dict[str, tuple]:
        from .grids import SENSITIVITY_SYMBOLS

        curves = {}
        for parameter, values in self.table("sensitivity").items():
            key = f"sensitivity.{parameter}"
            if parameter not in SENSITIVITY_SYMBOLS:
                raise self.error(key, f"no sensitivity curve for it; choose from {', '.join(SENSITIVITY_SYMBOLS)}")
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise self.error(key, f"expected a non-empty list of numbers, got {_describe(values)}")
            curves[parameter] = tuple(values)
        return curves


__all__ = ["ProfileFile", "read_profile_file"]
