"""The ``kexp`` command: one small module per command, joined here.

Errors reach the person at the keyboard in exactly one place, ``_KexpGroup.invoke``: a
``ConfigError``/``DataError`` becomes its message on stderr and exit code 2, a
``TrainingError`` exit code 1, Ctrl-C exit code 130 — without a traceback unless ``--debug``.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from kexp.cli import (
    evaluate,
    list_cmd,
    plot,
    predict,
    runs,
    schema,
    summary,
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
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    ctx.obj = {"debug": debug}


app.command("train")(train.train)
app.command("validate")(validate.validate)
app.command("summary")(summary.summary)
app.command("plot")(plot.plot)
app.command("list")(list_cmd.list_components)
app.command("schema")(schema.schema)
app.command("evaluate")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("tensorboard")(tensorboard.tensorboard)
app.command("runs")(runs.runs)


def main() -> None:
    """Console entry point."""
    app(prog_name="kexp")


if __name__ == "__main__":
    main()
    sys.exit(0)
