"""``kexp evaluate RUN_DIR``: a run's model on its test (or validation) data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from kexp.cli.options import QuietOpt, RunDirArg, chosen_run

CheckpointOpt = typer.Option(
    "final", "--checkpoint", "-c",
    help="final: model.keras (the weights after the last epoch); best / last: "
    "checkpoints/best.keras / checkpoints/last.keras.")


def evaluate(
    run_dir: Path = RunDirArg,
    checkpoint: Literal["final", "best", "last"] = CheckpointOpt,
    split: Literal["test", "validation"] = typer.Option(
        None, "--split", help="Default: test when the run's data has a test split, else "
        "validation (the same validation split training used).", show_default=False),
    data: list[str] = typer.Option(
        [], "--data", "-d", metavar="P=VALUE",
        help="Override the run config's data.P, e.g. --data path=other.npz (relative paths "
        "resolve against the current directory). Repeatable."),
    quiet: bool = QuietOpt,
) -> None:
    """Evaluate a run's model: print its metrics and record them in the run's
    evaluation.json."""
    from rich.table import Table

    from kexp.cli.console import console
    from kexp.evaluation import evaluate_run, record_evaluation

    run = chosen_run(run_dir, checkpoint)
    result = evaluate_run(run, checkpoint, split, data)
    record_evaluation(run, result)
    if quiet:  # the metrics alone, one per line
        for name, value in result.metrics.items():
            typer.echo(f"{name} {value:.6g}")
        return
    typer.echo(f"{run}: checkpoint {result.checkpoint}, {result.split} split "
               f"({result.samples} samples)")
    table = Table("metric", "value")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.6g}")
    console().print(table)
    typer.echo(f"wrote {run / 'evaluation.json'}")
