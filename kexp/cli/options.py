"""Options shared by every command that takes a CONFIG."""

from __future__ import annotations

import typer

__all__ = ["ConfigArg", "SetOpt", "PluginOpt"]

ConfigArg = typer.Argument(..., exists=False, dir_okay=False, help="The experiment's YAML file.",
                           show_default=False)
SetOpt = typer.Option(
    [], "--set", "-s", metavar="PATH=VALUE",
    help="Override a config value after merging, e.g. --set model.layers[0].units=32 "
    "(VALUE is parsed as YAML). Repeatable.",
)
PluginOpt = typer.Option(
    [], "--plugin", "-p", metavar="MODULE_OR_FILE",
    help="Import a plugin (a module path or a .py file) before reading the config. Repeatable.",
)

