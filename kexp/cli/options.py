"""Options shared by every command that takes a CONFIG."""

from __future__ import annotations

import typer

from kexp.cli.complete import config_files, run_dirs, set_values

__all__ = ["ConfigArg", "SetOpt", "PluginOpt", "QuietOpt", "RunDirArg", "config_files",
           "run_dirs"]

ConfigArg = typer.Argument(..., exists=False, dir_okay=False, help="The experiment's YAML file.",
                           show_default=False, autocompletion=config_files)
RunDirArg = typer.Argument(..., metavar="RUN_DIR",
                           help="A run directory, or runs/<name> for its newest run.",
                           show_default=False, autocompletion=run_dirs)
QuietOpt = typer.Option(False, "--quiet", "-q",
                        help="Print only the final lines (the run directory, the metrics) "
                        "and errors.")
SetOpt = typer.Option(
    [], "--set", "-s", metavar="PATH=VALUE", autocompletion=set_values,
    help="Override a config value after merging, e.g. --set model.layers[0].units=32 "
    "(VALUE is parsed as YAML). Repeatable.",
)
PluginOpt = typer.Option(
    [], "--plugin", "-p", metavar="MODULE_OR_FILE",
    help="Import a plugin (a module path or a .py file) before reading the config. Repeatable.",
)



def chosen_run(run_dir, checkpoint: str | None = None):
    """The run RUN_DIR names (``runs/<name>``: its newest run with a model), saying on stderr
    which run that is when a newer one was passed over."""
    from pathlib import Path

    from kexp.evaluation import find_run
    from kexp.runs import resolve_run_dir

    run = find_run(Path(run_dir), checkpoint)
    newest = resolve_run_dir(Path(run_dir))
    if newest is not None and run != newest:
        typer.echo(f"using {run}: the newest run with a model (the newer {newest} has none)",
                   err=True)
    return run
