"""``kexp plot CONFIG``: the model graph as an image, via ``keras.utils.plot_model``."""

from __future__ import annotations

from pathlib import Path

import typer

from kexp.cli.options import ConfigArg, PluginOpt, SetOpt


def plot(
    config: Path = ConfigArg,
    output: Path = typer.Option(Path("model.png"), "--output", "-o",
                                help="Image file to write (.png, .svg, .pdf, .dot)."),
    show_shapes: bool = typer.Option(False, "--show-shapes", help="Show tensor shapes."),
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
) -> None:
    """Draw the model's layer graph (needs Graphviz's `dot` program)."""
    from kexp.config import load_config
    from kexp.models.inspect import built_model, plot_model

    cfg = load_config(config, set_, plugin, model_only=True)
    model, _ = built_model(cfg)
    plot_model(model, output, show_shapes=show_shapes, where=cfg.model.where)
    typer.echo(f"wrote {output}")
