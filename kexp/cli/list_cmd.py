"""``kexp list [KIND]``: the components a config can name."""

from __future__ import annotations

import typer


def list_components(
    kind: str = typer.Argument(None, help="layers, optimizers, losses, metrics, callbacks, "
                               "datasets, schedules, models, ... (default: all kinds)"),
    plugin: list[str] = typer.Option([], "--plugin", "-p", help="Import a plugin first."),
) -> None:
    """List the components a config can name (with KIND: Keras's too)."""
    from rich.table import Table

    from kexp.cli.console import console
    from kexp.errors import ConfigError
    from kexp.plugins import PluginError, import_plugin
    from kexp.registry import REGISTRIES

    for spec in plugin:
        try:
            import_plugin(spec)
        except PluginError as exc:
            raise ConfigError(str(exc)) from None
    if kind is not None and kind not in REGISTRIES:
        singular = {k.rstrip("s"): k for k in REGISTRIES}
        if kind in singular:
            kind = singular[kind]
        else:
            raise ConfigError(f"unknown kind {kind!r}; expected one of {', '.join(REGISTRIES)}")
    out = console()
    table = Table("kind", "name", "from")
    for name, registry in REGISTRIES.items():
        if kind is not None and name != kind:
            continue
        registered = registry.registered()
        for entry in registered.values():
            table.add_row(name, entry.name, f"{entry.origin} ({entry.owner})")
        keras_names = [n for n in registry.names() if n not in registered]
        if kind is not None:
            for n in keras_names:
                table.add_row(name, n, "keras")
        elif keras_names:
            table.add_row(name, f"[dim]+ {len(keras_names)} Keras names[/dim]",
                          f"kexp list {name}")
    out.print(table)
