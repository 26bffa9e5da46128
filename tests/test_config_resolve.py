"""`config.resolve`: the command line over the target's table over [tool.graphcheck] over the defaults, without click or torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from graphcheck.config import DEFAULTS, Config, Run, Settings, TargetConfig, load_config, resolve
from graphcheck.errors import GraphcheckError

FORMATS = ("text", "concise", "json", "sarif", "github")


def config(targets=(), **values) -> Config:
    """A loaded configuration: ``values`` as [tool.graphcheck] keys (underscores for dashes)."""
    return Config(values={key.replace("_", "-"): value for key, value in values.items()},
                  targets=[TargetConfig(model, dict(table), name=model) for model, table in targets])


def one(config_: Config, given=None, targets=("net.py:build",)) -> Run:
    settings, runs = resolve(config_, given or {}, targets, formats=FORMATS)
    (run,) = runs
    return run


# --- run-wide settings ---------------------------------------------------------------------------

def test_nothing_given_anywhere_is_the_defaults():
    settings, runs = resolve(Config(), {}, ("net.py:build",))
    assert settings == Settings(fail_on="error", format="text", exit_zero=False, render_depth=2)
    assert runs == [Run("net.py:build", "net.py:build", input_shapes=(), select=None, ignore=None,
                        ignore_parameters=(), mode=None, mode_source="factory", loss=None, step=None,
                        configured=False)]


def test_defaults_table_is_the_settings_defaults():
    settings, _ = resolve(Config(), {}, ("t",))
    assert (settings.fail_on, settings.format, settings.exit_zero, settings.render_depth) == (
        DEFAULTS["fail-on"], DEFAULTS["format"], DEFAULTS["exit-zero"], DEFAULTS["render-depth"])


def test_configuration_beats_the_defaults():
    settings, _ = resolve(config(fail_on="warning", format="json", exit_zero=True, render_depth=5), {}, ("t",))
    assert settings == Settings(fail_on="warning", format="json", exit_zero=True, render_depth=5)


def test_command_line_beats_the_configuration():
    given = {"fail-on": "info", "format": "sarif", "exit-zero": False, "render-depth": 0}
    settings, _ = resolve(config(fail_on="warning", format="json", exit_zero=True, render_depth=5), given, ("t",))
    assert settings == Settings(fail_on="info", format="sarif", exit_zero=False, render_depth=0)


def test_command_line_value_equal_to_the_default_still_wins():
    """Given on the command line is what counts, not whether the value differs from the default."""
    settings, _ = resolve(config(format="json"), {"format": "text"}, ("t",))
    assert settings.format == "text"


def test_unknown_configured_format_is_an_error():
    with pytest.raises(GraphcheckError) as caught:
        resolve(config(format="yaml"), {}, ("t",), formats=FORMATS)
    assert caught.value.message == ("unknown format 'yaml' in the configuration; choose from "
                                    "text, concise, json, sarif, github.")


def test_format_is_not_checked_without_formats():
    settings, _ = resolve(config(format="yaml"), {}, ("t",))
    assert settings.format == "yaml"


def test_unknown_given_key_is_a_programming_error():
    with pytest.raises(ValueError, match="'fmt'"):
        resolve(Config(), {"fmt": "json"}, ("t",))


# --- targets and per-target settings -------------------------------------------------------------

def test_no_target_anywhere_is_an_error():
    with pytest.raises(GraphcheckError) as caught:
        resolve(Config(), {}, ())
    assert caught.value.message.startswith("no TARGET given and no `targets` in [tool.graphcheck]. Usage: graphcheck ")


def test_configured_targets_in_order_with_their_names():
    cfg = config(targets=[("/repo/a.py:one", {}), ("/repo/b.py:two", {})])
    cfg.targets[0].name, cfg.targets[1].name = "a.py:one", "b.py:two"
    _, runs = resolve(cfg, {}, ())
    assert [(r.target, r.label, r.configured) for r in runs] == [
        ("/repo/a.py:one", "a.py:one", True), ("/repo/b.py:two", "b.py:two", True)]


def test_command_line_targets_replace_the_configured_ones_and_their_tables():
    cfg = config(targets=[("a.py:one", {"select": ["GC2"], "mode": "train", "loss": "a.py:l"})], select="GC1")
    _, runs = resolve(cfg, {}, ("x.py:f", "y.py:g"))
    assert [(r.target, r.label, r.configured) for r in runs] == [("x.py:f", "x.py:f", False),
                                                                  ("y.py:g", "y.py:g", False)]
    assert {(r.select, r.mode, r.loss) for r in runs} == {("GC1", None, None)}


@pytest.mark.parametrize("key, field, cli_value, table_value, top_value", [
    ("select", "select", "GC1", ["GC2"], ["GC3"]),
    ("ignore", "ignore", "GC101", ["GC102"], ["GC103"]),
    ("input-shape", "input_shapes", ("1,3",), ["2,4"], ["5,6"]),
])
def test_per_target_precedence(key, field, cli_value, table_value, top_value):
    as_tuple = (lambda v: tuple(v) if isinstance(v, list) else v)
    cfg = config(targets=[("t.py:f", {key: table_value})], **{key.replace("-", "_"): top_value})
    assert getattr(one(cfg, {key: cli_value}, ()), field) == cli_value                      # command line
    assert getattr(one(cfg, {}, ()), field) == as_tuple(table_value)                         # the target's table
    bare = config(targets=[("t.py:f", {})], **{key.replace("-", "_"): top_value})
    assert getattr(one(bare, {}, ()), field) == as_tuple(top_value)                          # [tool.graphcheck]
    default = getattr(one(config(targets=[("t.py:f", {})]), {}, ()), field)
    assert default == (DEFAULTS[key] if key != "input-shape" else ())                        # the default


def test_each_target_reads_its_own_table():
    cfg = config(targets=[("a.py:f", {"select": ["GC1"]}), ("b.py:g", {"input-shape": ["1,8"]}), ("c.py:h", {})],
                 select=["GC3"], input_shape=["2,2"])
    _, runs = resolve(cfg, {}, ())
    assert [(r.select, r.input_shapes) for r in runs] == [
        (("GC1",), ("2,2",)), (("GC3",), ("1,8",)), (("GC3",), ("2,2",))]


def test_ignore_parameters_table_then_top_level_then_nothing():
    cfg = config(targets=[("a.py:f", {"ignore-parameters": ["head.*"]}), ("b.py:g", {})],
                 ignore_parameters=["aux.*", "spare"])
    _, runs = resolve(cfg, {}, ())
    assert [r.ignore_parameters for r in runs] == [("head.*",), ("aux.*", "spare")]
    assert one(Config()).ignore_parameters == ()


def test_select_from_the_command_line_stays_a_string():
    run = one(config(select=["GC2"]), {"select": "GC1, GC3", "ignore": "GC103"})
    assert (run.select, run.ignore) == ("GC1, GC3", "GC103")


def test_input_shapes_from_the_command_line_in_order():
    assert one(Config(), {"input-shape": ("1,3,8,8", "1,4")}).input_shapes == ("1,3,8,8", "1,4")


# --- mode -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, given, table, expected", [
    ({}, {}, {}, (None, "factory")),
    ({"eval": True}, {}, {}, ("eval", "config")),
    ({"eval": False}, {}, {}, (None, "factory")),
    ({"mode": "train"}, {}, {}, ("train", "config")),
    ({"mode": "train", "eval": True}, {}, {}, ("train", "config")),      # `mode` beats `eval = true`
    ({"mode": "train"}, {}, {"mode": "eval"}, ("eval", "config")),      # the table beats [tool.graphcheck]
    ({"eval": True}, {}, {"mode": "train"}, ("train", "config")),
    ({}, {}, {"mode": "eval"}, ("eval", "config")),
    ({"mode": "eval"}, {"train": True}, {"mode": "eval"}, ("train", "--train")),   # the flags beat both
    ({"mode": "train"}, {"eval": True}, {"mode": "train"}, ("eval", "--eval")),
    ({}, {"train": False}, {}, (None, "factory")),
])
def test_mode_and_where_it_came_from(values, given, table, expected):
    run = one(config(targets=[("t.py:f", table)], **values), given, ())
    assert (run.mode, run.mode_source) == expected


def test_mode_from_the_flags_also_for_command_line_targets():
    run = one(config(mode="train"), {"eval": True})
    assert (run.mode, run.mode_source) == ("eval", "--eval")


def test_train_and_eval_together_is_an_error():
    with pytest.raises(GraphcheckError) as caught:
        resolve(Config(), {"train": True, "eval": True}, ("t",))
    assert caught.value.message == "--train and --eval exclude each other."


def test_bad_configured_mode_is_an_error():
    with pytest.raises(GraphcheckError) as caught:
        resolve(config(mode="sideways"), {}, ("t",))
    assert caught.value.message == 'mode = \'sideways\' in the configuration: choose "train" or "eval".'


def test_bad_configured_mode_does_not_matter_when_a_flag_decides():
    assert one(config(mode="sideways"), {"train": True}).mode == "train"


# --- loss and step --------------------------------------------------------------------------------

@pytest.mark.parametrize("values, given, table, expected", [
    ({}, {}, {}, (None, None)),
    ({"loss": "/r/l.py:loss"}, {}, {}, ("/r/l.py:loss", None)),
    ({"step": "/r/s.py:step"}, {}, {}, (None, "/r/s.py:step")),
    # a table's loss or step replaces both configured values
    ({"step": "/r/s.py:step"}, {}, {"loss": "/r/t.py:loss"}, ("/r/t.py:loss", None)),
    ({"loss": "/r/l.py:loss"}, {}, {"step": "/r/t.py:step"}, (None, "/r/t.py:step")),
    ({"loss": "/r/l.py:loss"}, {}, {"loss": "/r/t.py:loss"}, ("/r/t.py:loss", None)),
    # the command line's loss or step replaces both, wherever they were configured
    ({"step": "/r/s.py:step"}, {"loss": "c.py:loss"}, {"step": "/r/t.py:step"}, ("c.py:loss", None)),
    ({"loss": "/r/l.py:loss"}, {"step": "c.py:step"}, {"loss": "/r/t.py:loss"}, (None, "c.py:step")),
    ({}, {"loss": "c.py:loss", "step": "c.py:step"}, {}, ("c.py:loss", "c.py:step")),   # the checker objects
])
def test_loss_and_step(values, given, table, expected):
    run = one(config(targets=[("t.py:f", table)], **values), given, ())
    assert (run.loss, run.step) == expected


def test_loss_per_target():
    cfg = config(targets=[("a.py:f", {"step": "/r/a.py:step"}), ("b.py:g", {})], loss="/r/l.py:loss")
    _, runs = resolve(cfg, {}, ())
    assert [(r.loss, r.step) for r in runs] == [(None, "/r/a.py:step"), ("/r/l.py:loss", None)]


def test_options_are_the_checker_keywords():
    run = Run("t.py:f", "t", input_shapes=("1,2",), select=("GC1",), ignore="GC103", ignore_parameters=("x",),
              mode="eval", mode_source="--eval", loss="l.py:loss", step=None, configured=True)
    assert run.options() == dict(select=("GC1",), ignore="GC103", ignore_parameters=("x",), mode="eval",
                                 mode_source="--eval", loss="l.py:loss", step=None)


# --- from a pyproject.toml ------------------------------------------------------------------------

def test_from_a_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.graphcheck]
        select = "GC1, GC2"
        eval = true
        loss = "losses.py:loss"
        fail-on = "warning"

        [[tool.graphcheck.target]]
        model = "models/a.py:build"
        mode = "train"
        step = "steps.py:step"

        [[tool.graphcheck.target]]
        model = "models/b.py:build"
        ignore = ["GC103"]
        input-shape = "1,3,32,32"
    """))
    settings, (a, b) = resolve(load_config(tmp_path / "pyproject.toml"), {"format": "json"}, ())
    assert settings == Settings(fail_on="warning", format="json", exit_zero=False, render_depth=2)
    folder = str(tmp_path.resolve())
    assert a == Run(f"{folder}/models/a.py:build", "models/a.py:build", select=("GC1", "GC2"), mode="train",
                    mode_source="config", loss=None, step=f"{folder}/steps.py:step", configured=True)
    assert b == Run(f"{folder}/models/b.py:build", "models/b.py:build", input_shapes=("1,3,32,32",),
                    select=("GC1", "GC2"), ignore=("GC103",), mode="eval", mode_source="config",
                    loss=f"{folder}/losses.py:loss", configured=True)


def test_config_module_imports_neither_click_nor_torch():
    code = ("import sys\nimport graphcheck.config\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'click')))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "[]"
