"""``kexp train CONFIG``: train, and print where the run went."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kexp.cli.options import ConfigArg, PluginOpt, SetOpt


def train(
    config: Path = ConfigArg,
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
    name: str = typer.Option(None, "--name", help="Run name (default: the config's name:, "
                             "else the file's stem)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Where run directories go "
                                  "(default: the config's runs_dir:, else runs/)."),
    smoke: bool = typer.Option(False, "--smoke", help="Two batches of train and validation "
                               "data for one epoch, under <runs_dir>/_smoke/ (for CI)."),
) -> None:
    """Train a model as CONFIG says; prints the run directory."""
    from kexp.config import load_config

    sets = list(set_)
    if name:
        sets.append(f"name={name}")
    if runs_dir:
        sets.append(f"runs_dir={runs_dir}")
    cfg = load_config(config, sets, plugin)

    from kexp.training.engine import TrainOptions
    from kexp.training.engine import train as run_training

    run = run_training(cfg, TrainOptions(smoke=smoke, command=tuple(sys.argv)))
    typer.echo(f"run directory: {run.path}")
