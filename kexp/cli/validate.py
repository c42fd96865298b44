"""``kexp validate CONFIG``: check a config without importing TensorFlow."""

from __future__ import annotations

from pathlib import Path

import typer

from kexp.cli.options import ConfigArg, PluginOpt, SetOpt


def validate(config: Path = ConfigArg, set_: list[str] = SetOpt,
             plugin: list[str] = PluginOpt) -> None:
    """Check a config: schema, component names and arguments, layer references."""
    from kexp.config import load_config

    cfg = load_config(config, set_, plugin, model_only=True)
    layers = len(cfg.model.layers or [])
    what = f"{cfg.model.kind} model" + (f", {layers} layers" if layers else "")
    if cfg.data is None:
        typer.echo(f"{config}: valid ({what}; no data: a model-only config for summary and "
                   "plot; train needs `data:`)")
        return
    typer.echo(f"{config}: valid ({what}; data: {cfg.data.type}; loop: {cfg.train.loop})")
