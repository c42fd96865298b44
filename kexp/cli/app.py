"""The ``kexp`` command: one small module per command, joined here.

Errors reach the person at the keyboard in exactly one place, ``_KexpGroup.invoke``: a
``ConfigError``/``DataError`` becomes its message on stderr and exit code 2, a
``TrainingError`` exit code 1, Ctrl-C exit code 130 — without a traceback unless ``--debug``.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup

from kexp.cli import (
    compare,
    config_cmd,
    evaluate,
    export,
    list_cmd,
    plot,
    predict,
    runs,
    schema,
    summary,
    sweep,
    tensorboard,
    train,
    validate,
)
from kexp.errors import KexpError

__all__ = ["app", "main"]


class _KexpGroup(TyperGroup):
    def invoke(self, ctx: typer.Context):  # noqa: D102
        try:
            return super().invoke(ctx)
        except KexpError as exc:
            if _debug(ctx):
                raise
            typer.echo(str(exc), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _debug(ctx: typer.Context) -> bool:
    return bool((ctx.obj or {}).get("debug"))


app = typer.Typer(
    cls=_KexpGroup,
    name="kexp",
    help="Keras experiments from YAML configs: train, evaluate, predict, inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help and usage errors (Click's format): Typer's Rich panels cost about 0.1 s of
    # every `kexp --help` (rich's Markdown, markdown-it, Pygments), a third of its start-up.
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


def version_text() -> str:
    """kexp's version and those of Python, TensorFlow and Keras, from the installed
    distributions' metadata (TensorFlow is not imported)."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return (f"kexp {installed('kexp')} (Python {python}, TensorFlow {installed('tensorflow')}, "
            f"Keras {installed('keras')})")


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", "-V", is_eager=True,
                                 callback=_print_version,
                                 help="Show the versions of kexp, Python, TensorFlow and Keras."),
) -> None:
    ctx.obj = {"debug": debug}


app.command("train")(train.train)
app.command("validate")(validate.validate)
app.command("config")(config_cmd.config)
app.command("summary")(summary.summary)
app.command("plot")(plot.plot)
app.command("list")(list_cmd.list_components)
app.command("schema")(schema.schema)
app.command("evaluate")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("tensorboard")(tensorboard.tensorboard)
app.command("runs")(runs.runs)
app.command("compare")(compare.compare)
app.command("sweep")(sweep.sweep)
app.command("export")(export.export)


def main() -> NoReturn:
    """Console entry point."""
    try:
        app(prog_name="kexp")
    except SystemExit as exit:
        _exit(exit.code)
    _exit(0)


def _exit(code: int | str | None) -> NoReturn:
    """End the process with ``code``, as ``sys.exit`` would.

    Once TensorFlow is loaded, the interpreter's own teardown (freeing every module, then
    TensorFlow's C++ destructors) takes about a second on 2 cores -- a quarter of a
    ``kexp train --smoke`` -- and does nothing a finished command needs: kexp's files are
    written atomically and closed before the command returns. So the ``atexit`` handlers run
    (logging's flush among them), the standard streams are flushed, and the process ends with
    ``os._exit``. ``KEXP_FULL_EXIT=1`` keeps the full teardown (for profilers and coverage).
    """
    if "tensorflow" not in sys.modules or os.environ.get("KEXP_FULL_EXIT"):
        sys.exit(code)
    if isinstance(code, str):  # sys.exit("message"): print it, exit code 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
