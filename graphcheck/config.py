"""Configuration: `[tool.graphcheck]` in the nearest pyproject.toml, validated and normalised."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from graphcheck.errors import GraphcheckError
from graphcheck.loader import split_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys accepted in [tool.graphcheck]; each maps to the command-line option of the same name.
KNOWN_KEYS = {
    "select", "ignore", "fail-on", "format", "ignore-parameters", "eval", "mode", "loss", "step",
    "input-shape", "rules", "exit-zero", "render-depth", "targets", "target",
}
# Keys of a [[tool.graphcheck.target]] table: the model and the settings that may differ per target.
TARGET_KEYS = {"model", "loss", "step", "input-shape", "mode", "select", "ignore", "ignore-parameters"}
_LIST_KEYS = ("select", "ignore", "ignore-parameters", "input-shape")


@dataclass
class TargetConfig:
    """One configured target: ``model`` (a TARGET), and what it overrides of the top-level settings."""
    model: str                                     # resolved against the configuration's folder
    settings: dict = field(default_factory=dict)   # TARGET_KEYS but "model" -> value (paths resolved)
    name: str = ""                                 # as written, for the report


@dataclass
class Config:
    path: Path | None = None
    values: dict = field(default_factory=dict)     # option name (dashes) -> value
    rules: dict = field(default_factory=dict)      # rule name or code -> {option: value}
    targets: list[TargetConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_pyproject(start: Path | None = None) -> Path | None:
    folder = (start or Path.cwd()).resolve()
    for candidate in [folder, *folder.parents]:
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def load_config(path: str | os.PathLike | None = None, *, search: bool = True,
                start: Path | None = None) -> Config:
    """Read ``[tool.graphcheck]`` from ``path``, or from the pyproject.toml nearest to ``start``."""
    if path is None:
        if not search:
            return Config()
        path = find_pyproject(start)
        if path is None:
            return Config()
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise GraphcheckError(f"The configuration file {str(path)!r} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise GraphcheckError(f"{path} is not valid TOML: {exc}. Fix the file or pass --no-config.") from None
    section = document.get("tool", {}).get("graphcheck")
    if section is None:
        # A file named on --config may be a dedicated graphcheck.toml with top-level keys.
        section = document if path.name != "pyproject.toml" and "tool" not in document else {}
    config = Config(path=path)
    for key, value in section.items():
        normalised = key.replace("_", "-")
        if normalised not in KNOWN_KEYS:
            config.warnings.append(f"{path}: unknown key {key!r} in [tool.graphcheck] (ignored); "
                                   f"known keys: {', '.join(sorted(KNOWN_KEYS))}")
            continue
        if normalised == "rules":
            if not isinstance(value, dict):
                raise GraphcheckError(f"{path}: [tool.graphcheck.rules] must be a table of rule tables.")
            config.rules = {name: dict(options) for name, options in value.items()}
        elif normalised == "targets":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise GraphcheckError(f"{path}: `targets` must be a list of TARGET strings "
                                      '(targets = ["models/net.py:build_model"]).')
            config.targets.extend(TargetConfig(_relative_to(path, v), name=v) for v in value)
        elif normalised == "target":
            tables = value if isinstance(value, list) else [value]
            config.targets.extend(_target_table(path, index, table, config.warnings)
                                  for index, table in enumerate(tables, start=1))
        else:
            config.values[normalised] = value
    _normalise(config.values, path, "[tool.graphcheck]")
    for key in ("loss", "step"):
        if isinstance(config.values.get(key), str):
            config.values[key] = _relative_to(path, config.values[key])
    fail_on = config.values.get("fail-on")
    if fail_on is not None and fail_on not in ("error", "warning", "info"):
        raise GraphcheckError(f"{path}: fail-on must be one of error, warning, info (not {fail_on!r}).")
    return config


def _normalise(values: dict, path: Path, where: str) -> None:
    """Comma-separated strings become lists; anything else that is not a list is an error."""
    for key in _LIST_KEYS:
        value = values.get(key)
        if isinstance(value, str):
            values[key] = [value] if key == "input-shape" else [v.strip() for v in value.split(",")]
        elif value is not None and not isinstance(value, list):
            raise GraphcheckError(f"{path}: `{key}` in {where} must be a list of strings.")


def _target_table(path: Path, index: int, table, warnings: list[str]) -> TargetConfig:
    where = f"[[tool.graphcheck.target]] number {index}"
    if not isinstance(table, dict):
        raise GraphcheckError(f"{path}: {where} must be a table with at least `model`.")
    settings = {}
    for key, value in table.items():
        normalised = key.replace("_", "-")
        if normalised not in TARGET_KEYS:
            warnings.append(f"{path}: unknown key {key!r} in {where} (ignored); "
                            f"known keys: {', '.join(sorted(TARGET_KEYS))}")
            continue
        settings[normalised] = value
    model = settings.pop("model", None)
    if not isinstance(model, str) or not model:
        raise GraphcheckError(
            f"{path}: {where} has no `model`. Each target table names the model's factory, e.g. "
            '[[tool.graphcheck.target]] model = "models/net.py:build_model".')
    if "loss" in settings and "step" in settings:
        raise GraphcheckError(f"{path}: {where} ({model}) gives both `loss` and `step`; a step returns "
                              "the loss itself, so give one of them.")
    for key in ("loss", "step"):
        if key in settings:
            if not isinstance(settings[key], str):
                raise GraphcheckError(f"{path}: `{key}` in {where} must be a string like file.py:function.")
            settings[key] = _relative_to(path, settings[key])
    if settings.get("mode", "train") not in ("train", "eval"):
        raise GraphcheckError(f"{path}: `mode` in {where} ({model}) must be \"train\" or \"eval\", "
                              f"not {settings['mode']!r}.")
    _normalise(settings, path, where)
    return TargetConfig(_relative_to(path, model), settings, name=model)


def _relative_to(config_path: Path, spec: str) -> str:
    """A file spec in the configuration is relative to the configuration file's folder."""
    try:
        where, _, is_file = split_spec(spec, "build_model")
    except GraphcheckError:
        return spec   # the loader reports the bad spec, with the target's name
    if not is_file or os.path.isabs(where):
        return spec
    resolved = os.path.normpath(os.path.join(config_path.resolve().parent, where))
    return resolved + spec[len(where):]
