"""The command line: `graphcheck TARGET...` (check) and `graphcheck rule CODE` (documentation)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from graphcheck.config import DEFAULTS, load_config, resolve
from graphcheck.docs import rule_markdown
from graphcheck.errors import GraphcheckError
from graphcheck.progress import StatusLine
from graphcheck.registry import all_rules, find_rule, parse_codes
from graphcheck.report import Report
from graphcheck.reporters import FORMATS, format_report
from graphcheck.frontends import FRONTEND_HELP, FRONTENDS


class _DefaultToCheck(click.Group):
    """`graphcheck TARGET` means `graphcheck check TARGET`; `graphcheck rule ...` is the other command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check", *args]
        elif not args:
            args = ["check"]
        return super().parse_args(ctx, args)


def _render_suffix(ctx, param, value):
    """Reject an image format before the analysis, as a usage error (exit 2)."""
    if not value:
        return value
    from graphcheck.drawing import FORMATS
    if Path(value).suffix.lower() not in FORMATS:
        raise click.BadParameter(f"use a file name ending in {', '.join(FORMATS)}")
    return value


def _config_start(targets) -> Path | None:
    """The nearest pyproject.toml is looked up from the first target's folder, like ruff and black."""
    from graphcheck.loader import split_spec
    for target in targets:
        try:
            where, _, is_file = split_spec(target, "build_model")
            if is_file and Path(where).parent.is_dir():
                return Path(where).resolve().parent
        except (GraphcheckError, ValueError, OSError):   # the loader reports a bad target
            continue
    return None


@click.group(cls=_DefaultToCheck, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graphcheck")
def cli() -> None:
    """graphcheck: find the parts of a PyTorch model that will get no gradient, before training.

    \b
    graphcheck model.py:build_model         lint a model (TARGET is file.py:factory,
                                            file.py, or package.module:factory)
    graphcheck                              lint the targets listed in pyproject.toml
    graphcheck rule GC103                   print a rule's documentation
    """


def _requests(planned, config, frontend, meta, verify, render) -> list:
    """One worker request per (run, input shapes): everything the worker needs, as plain data."""
    from graphcheck.drawing.output import output_paths
    from graphcheck.worker import Request
    paths = output_paths(render[0], len(planned)) if render else []
    requests = []
    for index, (run, shapes) in enumerate(planned):
        options = dict(rule_options=config.rules, frontends=tuple(frontend) or None, verify=verify, meta=meta,
                       **run.options())
        requests.append(Request(target=run.target, label=run.label, options=options, input_shapes=tuple(shapes),
                                render=(str(paths[index]), render[1], render[2]) if render else None,
                                cwd=os.getcwd(), environ=dict(os.environ), sys_path=tuple(sys.path),
                                timeout=run.timeout))
    return requests


def _fail(message: str) -> None:
    click.echo(f"graphcheck: error: {message}", err=True)
    sys.exit(2)


# The options `resolve` weighs against the configuration: click's parameter name -> its key in config.DEFAULTS.
_WEIGHED = {"loss": "loss", "step": "step", "input_shape": "input-shape", "fmt": "format",
            "render_depth": "render-depth", "select": "select", "ignore": "ignore", "fail_on": "fail-on",
            "exit_zero": "exit-zero", "train_mode": "train", "eval_mode": "eval", "timeout": "timeout", "jobs": "jobs"}


def _given(ctx: click.Context, weighed: dict) -> dict[str, object]:
    """The weighed options the user gave on the command line (not click's defaults), keyed as `resolve` wants."""
    return {key: weighed[name] for name, key in _WEIGHED.items()
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def _prepare(run):
    """The run's input shapes, after checking them and its rule codes (a usage error exits 2 before any analysis)."""
    from graphcheck.loader import check_input_shapes
    try:
        shapes = check_input_shapes(run.input_shapes)
        _check_codes(run.select, run.ignore)
    except GraphcheckError as exc:
        _fail(f"{run.label}: {exc.message}" if run.configured else exc.message)
    return shapes


@cli.command("check", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1, metavar="[TARGET ...]")
@click.option("--loss", metavar="LOSS", help="Callable loss(output) -> scalar tensor (file.py:fn or module:fn). "
              "Default: every floating-point output counts, as DistributedDataParallel assumes.")
@click.option("--step", metavar="STEP", help="Training step step(model, batch) -> loss (file.py:fn): runs the "
              "model as the training code does (several forward passes, losses that need the batch).")
@click.option("--input-shape", "input_shape", multiple=True, metavar="1,3,224,224",
              help="Shape of one positional input (float32 randn); repeat for several inputs.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=DEFAULTS["format"], show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the report to FILE.")
@click.option("--render", "render_path", type=click.Path(dir_okay=False), callback=_render_suffix,
              help="Draw the flagged paths; format from the suffix (.svg .png .pdf .dot).")
@click.option("--render-depth", type=click.IntRange(0), default=DEFAULTS["render-depth"], show_default=True,
              help="How deep the module hierarchy is expanded in the drawing.")
@click.option("--render-all", is_flag=True, help="Draw the whole graph (collapsed to --render-depth), not only the flagged paths.")
@click.option("--select", metavar="CODES", help="Rule code prefixes to enable, comma separated (default: all).")
@click.option("--ignore", metavar="CODES", help="Rule code prefixes to disable; the longest matching prefix wins.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=DEFAULTS["fail-on"], show_default=True,
              help="Lowest severity that makes the exit code 1.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings (errors still exit 2).")
@click.option("--train", "train_mode", is_flag=True, help="Analyse the model in train mode (default: the mode "
              "the factory left it in; submodules keep their own).")
@click.option("--eval", "eval_mode", is_flag=True, help="Analyse the model in eval mode (default: the mode "
              "the factory left it in).")
@click.option("--frontend", type=click.Choice(FRONTENDS), multiple=True, help=FRONTEND_HELP)
@click.option("--meta", is_flag=True, help="Build the model on the meta device (no weights allocated: "
              "any size fits; rules that read weight values are skipped).")
@click.option("--verify", is_flag=True, help="Cross-check the GC1xx verdict with a real forward + backward pass.")
@click.option("--show-suppressed", is_flag=True, help="Also list the findings `# graphcheck: ignore` comments suppressed.")
@click.option("--quiet", "-q", is_flag=True, help="No status line on stderr.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Read options from this TOML file.")
@click.option("--no-config", is_flag=True, help="Ignore pyproject.toml.")
@click.option("--timeout", type=click.FloatRange(0), default=DEFAULTS["timeout"], show_default=True, metavar="SECONDS",
              help="Stop a target whose analysis takes longer (the factory, forward, a loss that never returns) "
                   "and report it (exit 2); 0 turns it off.")
@click.option("--jobs", "-j", type=click.IntRange(1), default=DEFAULTS["jobs"], show_default=True, metavar="N",
              help="Analyse N targets at once, each in its own worker process; reports keep the order given.")
@click.option("--debug", is_flag=True, help="Show tracebacks and which frontends were tried.")
@click.pass_context
def check_command(ctx, targets, output, render_path, render_all, frontend, meta, verify, show_suppressed, quiet,
                  config_path, no_config, debug, **weighed):
    """Lint TARGET models (default: the targets in [tool.graphcheck]): report parameters that get no gradient, and why."""
    # `weighed` holds the options in _WEIGHED; `resolve` sets them against the configuration.
    try:
        config = load_config(config_path, search=not no_config, start=_config_start(targets))
    except GraphcheckError as exc:
        _fail(exc.message)
    for warning in config.warnings:
        click.echo(f"graphcheck: warning: {warning}", err=True)
    known = {r.name for r in all_rules()} | {r.code for r in all_rules()}
    for name in config.rules:
        if name not in known:
            click.echo(f"graphcheck: warning: {config.path}: [tool.graphcheck.rules.{name}] names no rule (ignored)", err=True)
    try:
        settings, runs = resolve(config, _given(ctx, weighed), targets, formats=FORMATS)
    except GraphcheckError as exc:
        _fail(exc.message)
    planned = [(run, _prepare(run)) for run in runs]

    if output and not Path(output).resolve().parent.is_dir():
        _fail(f"cannot write the report to {output}: the folder {Path(output).parent} does not exist.")

    from graphcheck.supervisor import Interrupted, Supervisor
    report = Report(show_suppressed=show_suppressed)
    status = StatusLine(enabled=not quiet)
    render = (render_path, settings.render_depth, render_all) if render_path else None
    supervisor = Supervisor(jobs=settings.jobs, status=status)
    try:
        outcomes = supervisor.run(_requests(planned, config, frontend, meta, verify, render))
    except Interrupted:
        status.clear()
        _fail("interrupted (Ctrl-C): the workers were stopped and nothing was reported.")
    finally:
        status.clear()
    report.results.extend(outcome.result for outcome in outcomes)
    if debug:
        for outcome in outcomes:
            _debug(outcome.result, outcome.captured)

    fmt = settings.format
    text = format_report(report, fmt)
    if output:
        try:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            _fail(f"cannot write the report to {output}: {exc.strerror}.")
    else:
        click.echo(text, nl=False)
    for result in report.results:
        for warning in result.warnings:
            click.echo(f"graphcheck: warning: {result.target}: {warning}", err=True)
        if result.status == "error" and fmt not in ("text", "concise"):
            click.echo(f"graphcheck: error: {result.target}: {result.error}", err=True)

    if render_path:
        from graphcheck.drawing.output import render_messages
        for message in render_messages([(o.result, o.rendered) for o in outcomes]):
            click.echo(f"graphcheck: {message}", err=True)
    sys.exit(report.exit_code(fail_on=settings.fail_on, exit_zero=settings.exit_zero))


def _check_codes(select, ignore) -> None:
    codes = [c for c in parse_codes(select) + parse_codes(ignore) if c != "ALL"]
    rule_codes = [r.code for r in all_rules()]
    for code in codes:
        if not any(rc.startswith(code) for rc in rule_codes):
            raise GraphcheckError(f"{code!r} in --select/--ignore matches no rule; codes look like GC1, GC103.")


def _debug(result, captured: str = "") -> None:
    if captured.strip():
        click.echo(f"graphcheck: --debug: what {result.target} and the libraries printed:", err=True)
        click.echo(captured.rstrip("\n"), err=True)
    for note in result.notes:
        click.echo(f"graphcheck: {result.target}: {note}", err=True)
    if result.detail:
        click.echo(result.detail, err=True)
    if result.timings:
        click.echo(f"graphcheck: {result.target}: " + ", ".join(
            f"{k} {v:.2f}s" for k, v in result.timings.items()), err=True)


@cli.command("rule")
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="Print every rule's documentation.")
def rule_command(code, show_all):
    """Print the documentation of rule CODE (a code like GC103 or a name like detached-parameter)."""
    if show_all:
        rules = all_rules()
    elif code:
        try:
            rules = [find_rule(code)]
        except GraphcheckError as exc:
            _fail(exc.message)
    else:
        _fail("give a rule code or name (graphcheck rule GC103), or --all.")
    for index, rule in enumerate(rules):
        if index:
            click.echo("\n" + "-" * 72 + "\n")
        click.echo(rule_markdown(rule))


def main() -> None:
    """The console entry point (``graphcheck``, ``python -m graphcheck``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never download anything while linting
    try:
        cli(prog_name="graphcheck")
    except SystemExit as exc:   # click ends every command with sys.exit(code)
        _leave(exc.code)
        raise
    _leave(0)


def _leave(code) -> None:
    """Exit now: flush the output and run the atexit handlers, but skip the interpreter's teardown.

    Freeing every module, tensor and graph node of torch, transformers and the user's model
    takes about a second after a BERT-base check (the runtime check pays it too), and the
    user, CI or pre-commit waits for it. Every cleanup registered with ``atexit`` (temporary
    files, loggers, the user's own) still runs. Not when another thread is alive (the
    interpreter would wait for it) or the running Python has no ``atexit._run_exitfuncs``.
    """
    import atexit
    import threading
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None or threading.active_count() > 1:
        return
    if code is None:
        code = 0
    elif not isinstance(code, int):   # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (graphcheck ... | head): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
