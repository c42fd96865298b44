"""``kexp summary CONFIG``: build the model and print Keras's summary."""

from __future__ import annotations

from pathlib import Path

import typer

from kexp.cli.options import ConfigArg, PluginOpt, SetOpt


def summary(config: Path = ConfigArg, set_: list[str] = SetOpt,
            plugin: list[str] = PluginOpt) -> None:
    """Build the model; print its layers, shapes, connections and parameters."""
    from kexp.config import load_config
    from kexp.models.inspect import built_model, summary_text

    cfg = load_config(config, set_, plugin, model_only=True)
    model, note = built_model(cfg)
    typer.echo(summary_text(model))
    if note:
        typer.echo(note)
