"""``kexp compare RUN_OR_SWEEP...``: runs side by side. Reads config.yaml, run.json and
history.csv only — no TensorFlow import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from kexp.cli.options import run_dirs


def compare(
    paths: list[Path] = typer.Argument(..., metavar="RUN_OR_SWEEP", show_default=False,
                                       help="Run directories, runs/<name> (all its runs) or "
                                       "sweep directories (their trials).",
                                       autocompletion=run_dirs),
    metric: list[str] = typer.Option(
        [], "--metric", "-m", metavar="METRIC",
        help="A history.csv column to report and sort by (default: the runs' monitored "
        "metric, else val_loss). Repeatable: the first sorts; --plot draws one panel each."),
    plot: Path = typer.Option(None, "--plot", metavar="FILE.png", dir_okay=False,
                              help="Also draw every run's curve of the metric(s), overlaid."),
    fmt: Literal["table", "csv", "json", "markdown"] = typer.Option(
        "table", "--format", "-f", help="table (for reading), csv, json or markdown."),
) -> None:
    """Compare runs: the config values that differ, status, epochs, best and final metric,
    duration; best run first."""
    from kexp.comparison import compare_runs

    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter(f"{plot}: expected a file name ending in .png.",
                                 param_hint="--plot")
    comparison = compare_runs(paths, metric)
    if fmt == "table":
        _print_table(comparison)
    else:
        typer.echo(comparison.render(fmt), nl=False)
    if plot is not None:
        comparison.plot(plot)
        typer.echo(f"wrote {plot}", err=fmt != "table")


def _print_table(comparison) -> None:
    from rich import box
    from rich.table import Table

    from kexp.cli.console import console
    from kexp.cli.runs import duration_text
    from kexp.comparison import cell_text

    table = Table(box=box.SIMPLE_HEAD)
    for column in comparison.columns:
        table.add_column("duration" if column == "duration_seconds" else column,
                         overflow="fold")
    for row in comparison.rows:
        cells = [cell_text(row[c]) for c in comparison.columns[:-1]]
        table.add_row(*cells, duration_text(row["duration_seconds"]))
    console().print(table)
    if not comparison.differing and len(comparison.rows) > 1:
        typer.echo("(the runs' configs are the same)")
