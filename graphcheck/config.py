"""Configuration: `[tool.graphcheck]` in the nearest pyproject.toml, validated and normalised."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from graphcheck.errors import GraphcheckError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys accepted in [tool.graphcheck]; each maps to the command-line option of the same name.
KNOWN_KEYS = {
    "select", "ignore", "fail-on", "format", "ignore-parameters", "eval", "mode", "loss",
    "input-shape", "rules", "exit-zero", "render-depth",
}


@dataclass
class Config:
    path: Path | None = None
    values: dict = field(default_factory=dict)     # option name (dashes) -> value
    rules: dict = field(default_factory=dict)      # rule name or code -> {option: value}
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
        else:
            config.values[normalised] = value
    for key in ("select", "ignore", "ignore-parameters", "input-shape"):
        value = config.values.get(key)
        if isinstance(value, str):
            config.values[key] = [value] if key == "input-shape" else [v.strip() for v in value.split(",")]
        elif value is not None and not isinstance(value, list):
            raise GraphcheckError(f"{path}: `{key}` must be a list of strings.")
    fail_on = config.values.get("fail-on")
    if fail_on is not None and fail_on not in ("error", "warning", "info"):
        raise GraphcheckError(f"{path}: fail-on must be one of error, warning, info (not {fail_on!r}).")
    return config
