"""Configuration: `[tool.graphcheck]` in the nearest pyproject.toml, validated and normalised.

:func:`resolve` weighs it against the command line, per target: the command line beats the
target's ``[[tool.graphcheck.target]]`` table, which beats ``[tool.graphcheck]``, which beats
:data:`DEFAULTS`. It needs neither click nor torch, so the precedence is tested on its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
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
    "input-shape", "rules", "exit-zero", "render-depth", "targets", "target", "timeout", "jobs",
}
# Keys of a [[tool.graphcheck.target]] table: the model and the settings that may differ per target.
TARGET_KEYS = {"model", "loss", "step", "input-shape", "mode", "select", "ignore", "ignore-parameters", "timeout"}
_LIST_KEYS = ("select", "ignore", "ignore-parameters", "input-shape")
# The command-line options `resolve` weighs against the configuration, with the value each has when
# neither gives it (the command line's own defaults are these). "train" / "eval" are the --train / --eval flags.
DEFAULTS: dict[str, object] = {
    "fail-on": "error", "format": "text", "exit-zero": False, "render-depth": 2, "select": None, "ignore": None,
    "input-shape": (), "loss": None, "step": None, "train": False, "eval": False,
    "timeout": 600.0, "jobs": 1,
}


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


@dataclass(frozen=True)
class Settings:
    """What holds for the whole run, resolved: when the exit code is 1, the report's format, the drawing's depth."""
    fail_on: str = "error"
    format: str = "text"
    exit_zero: bool = False
    render_depth: int = 2
    jobs: int = 1                                  # targets analysed at once, each in its own worker


@dataclass(frozen=True)
class Run:
    """One target to analyse, every per-target setting resolved (input shapes stay text: no torch here)."""
    target: str                                    # the TARGET handed to the loader
    label: str                                     # its name in the report
    input_shapes: tuple[str, ...] = ()             # --input-shape texts, for loader.parse_input_shapes
    select: str | tuple[str, ...] | None = None    # as given: "GC1,GC2" or a tuple of codes
    ignore: str | tuple[str, ...] | None = None
    ignore_parameters: tuple[str, ...] = ()
    mode: str | None = None                        # None: the mode the factory left the model in
    mode_source: str = "factory"                   # "--train", "--eval", "config" or "factory"
    loss: str | None = None
    step: str | None = None
    configured: bool = False                       # listed in the configuration, not on the command line
    timeout: float = 600.0                         # seconds the target's worker may take; 0: no limit

    def options(self) -> dict:
        """The keyword arguments of ``graphcheck.checker.check`` that this run sets."""
        return dict(select=self.select, ignore=self.ignore, ignore_parameters=self.ignore_parameters,
                    mode=self.mode, mode_source=self.mode_source, loss=self.loss, step=self.step)


def resolve(config: Config, given: Mapping[str, object], targets: tuple[str, ...] = (), *,
            formats: Collection[str] | None = None) -> tuple[Settings, list[Run]]:
    """The run-wide settings and one :class:`Run` per target, from the command line and ``config``.

    ``given`` holds only the options the user gave on the command line, keyed like
    :data:`DEFAULTS` (``{"format": "json", "train": True}``); ``targets`` are the command line's
    TARGETs, which replace the configured ones (and their tables). A setting comes from the
    command line, else the target's table, else ``[tool.graphcheck]``, else :data:`DEFAULTS`.
    A loss or step on the command line replaces both configured values, and so does a table's.
    ``--train`` / ``--eval`` beat a table's ``mode``, which beats ``mode`` / ``eval = true`` in
    ``[tool.graphcheck]``. A configured ``format`` must be one of ``formats`` (when given).
    Raises :class:`GraphcheckError` for a contradiction or when there is no target at all.
    """
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"resolve() knows no command-line option {', '.join(map(repr, unknown))}")
    values = config.values

    def top(key: str):
        return given[key] if key in given else values.get(key, DEFAULTS[key])

    fail_on, fmt, exit_zero = top("fail-on"), top("format"), top("exit-zero")
    mode, mode_source = _mode(given, values)
    if formats is not None and fmt not in formats:
        raise GraphcheckError(f"unknown format {fmt!r} in the configuration; choose from {', '.join(formats)}.")
    jobs = top("jobs")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise GraphcheckError(f"jobs must be a whole number of at least 1, not {jobs!r}.")
    settings = Settings(fail_on=fail_on, format=fmt, exit_zero=exit_zero, render_depth=top("render-depth"),
                        jobs=jobs)
    if targets:
        jobs = [(target, {}, target, False) for target in targets]
    elif config.targets:
        jobs = [(t.model, t.settings, t.name, True) for t in config.targets]
    else:
        raise GraphcheckError("no TARGET given and no `targets` in [tool.graphcheck]. Usage: graphcheck "
                              "path/to/model.py:build_model, or list the models in pyproject.toml "
                              '(targets = ["models/net.py:build_model"]; see `graphcheck --help`).')
    runs = [_run(target, label, table, configured, given, values, mode, mode_source)
            for target, table, label, configured in jobs]
    return settings, runs


def _run(target: str, label: str, table: dict, configured: bool, given: Mapping[str, object], values: dict,
         mode: str | None, mode_source: str) -> Run:
    """One target's run: each setting from the command line, else its table, else [tool.graphcheck], else the default."""
    def setting(key: str):
        return given[key] if key in given else table.get(key, values.get(key, DEFAULTS[key]))

    if "loss" in given or "step" in given:   # one loss or step replaces both: they exclude each other
        how = given
    elif "loss" in table or "step" in table:
        how = table
    else:
        how = values
    if mode_source not in ("--train", "--eval") and table.get("mode") is not None:
        mode, mode_source = table["mode"], "config"
    timeout = setting("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise GraphcheckError(f"timeout must be a number of seconds (0 turns it off), not {timeout!r}.")
    return Run(target, label, input_shapes=tuple(setting("input-shape") or ()),
               select=_codes(setting("select")), ignore=_codes(setting("ignore")),
               ignore_parameters=tuple(table.get("ignore-parameters", values.get("ignore-parameters", ())) or ()),
               mode=mode, mode_source=mode_source, loss=how.get("loss"), step=how.get("step"),
               configured=configured, timeout=float(timeout))


def _mode(given: Mapping[str, object], values: dict) -> tuple[str | None, str]:
    """(the run-wide mode override, or None for the factory's choice; where it came from)."""
    train, evaluate = bool(given.get("train")), bool(given.get("eval"))
    if train and evaluate:
        raise GraphcheckError("--train and --eval exclude each other.")
    if train or evaluate:
        return ("train", "--train") if train else ("eval", "--eval")
    configured = values.get("mode")
    if configured is not None:
        if configured not in ("train", "eval"):
            raise GraphcheckError(f"mode = {configured!r} in the configuration: choose \"train\" or \"eval\".")
        return configured, "config"
    if values.get("eval"):
        return "eval", "config"
    return None, "factory"


def _codes(value):
    """Rule codes as given: a string ("GC1,GC2") stays one, a configured list becomes a tuple."""
    return tuple(value) if isinstance(value, list) else value
