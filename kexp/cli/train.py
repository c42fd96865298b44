"""``kexp train CONFIG``: train, and print where the run went; ``kexp train --resume
RUN_DIR``: continue a run from its own saved state."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kexp.cli.options import PluginOpt, SetOpt


def train(
    config: Path = typer.Argument(None, dir_okay=False, show_default=False, metavar="CONFIG",
                                  help="The experiment's YAML file (not with --resume)."),
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
    name: str = typer.Option(None, "--name", help="Run name (default: the config's name:, "
                             "else the file's stem)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Where run directories go "
                                  "(default: the config's runs_dir:, else runs/)."),
    smoke: bool = typer.Option(False, "--smoke", help="Two batches of train and validation "
                               "data for one epoch, under <runs_dir>/_smoke/ (for CI)."),
    resume: Path = typer.Option(None, "--resume", metavar="RUN_DIR", file_okay=False,
                                help="Continue an interrupted, killed or failed run from its "
                                "own config.yaml and newest saved epoch. --set train.epochs=N "
                                "(the one override allowed) extends a completed run."),
) -> None:
    """Train a model as CONFIG says; prints the run directory."""
    if resume is not None:
        _resume(resume, config, set_, plugin, name, runs_dir, smoke)
        return
    if config is None:
        raise typer.BadParameter("give a CONFIG file, or --resume RUN_DIR.",
                                 param_hint="CONFIG")
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


def _resume(run_dir: Path, config: Path | None, sets: list[str], plugins: list[str],
            name: str | None, runs_dir: Path | None, smoke: bool) -> None:
    given = [flag for flag, value in (("CONFIG", config), ("--plugin", plugins),
                                      ("--name", name), ("--runs-dir", runs_dir),
                                      ("--smoke", smoke)) if value]
    if given:
        raise typer.BadParameter(
            f"--resume continues a run with its own config.yaml and plugins; {given[0]} "
            "cannot be given with it.", param_hint="--resume")
    from kexp.training.engine import resume as resume_training

    run = resume_training(run_dir, sets, command=tuple(sys.argv))
    typer.echo(f"run directory: {run.path}")
