"""``kexp runs [RUNS_DIR]``: one row per run. Reads run.json and history.csv only — no
TensorFlow import, so it answers instantly."""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from kexp.monitor import higher_is_better

# A run directory's name: <YYYYMMDD-HHMMSS>, with -2, -3, ... when the second was taken.
_STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def runs(
    runs_dir: Path = typer.Argument(Path("runs"), metavar="RUNS_DIR",
                                    help="Where run directories are (a runs_dir, "
                                    "runs/<name>, or one run)."),
) -> None:
    """List runs: name, start, status, epochs, best validation metrics, duration."""
    from rich import box
    from rich.table import Column, Table

    from kexp.cli.console import console
    from kexp.errors import DataError

    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: no such directory (give the runs directory, default "
                        "runs/).")
    found = _run_dirs(runs_dir)
    if not found:
        typer.echo(f"no runs under {runs_dir}")
        return
    # Short columns never wrap, so the table stays legible at 80 columns (a pipe).
    fixed = {"no_wrap": True}
    table = Table(Column("run", overflow="fold"), Column("started", **fixed),
                  Column("status", **fixed), Column("epochs", **fixed), "best val_loss",
                  Column("best val metric", overflow="fold"), Column("duration", **fixed),
                  box=box.SIMPLE_HEAD)
    for path in found:
        row = _summarize(path)
        table.add_row(_label(path, runs_dir), row.started, row.status, row.epochs,
                      row.best_loss, row.best_other, row.duration)
    console().print(table)


def _run_dirs(runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir`` (oldest first): those with a run.json, and those
    named like a run whose run.json is missing (a run that died while starting)."""
    from kexp.runs import find_runs

    found = set(find_runs(runs_dir))
    if runs_dir not in found:
        found |= {p for p in runs_dir.glob("**/*") if p.is_dir() and _STAMP.match(p.name)}
    return sorted(found, key=lambda p: (p.name, str(p)))


def _label(path: Path, runs_dir: Path) -> str:
    try:
        rel = path.relative_to(runs_dir)
    except ValueError:
        rel = path
    return str(rel) if str(rel) != "." else str(path)


@dataclass
class _Row:
    started: str
    status: str
    epochs: str
    best_loss: str
    best_other: str
    duration: str


def _summarize(path: Path) -> _Row:
    from kexp.runs import Run, read_run

    info = read_run(path)
    history = _read_history(path / "history.csv")
    status = str(info.get("status") or "unknown")
    if status == "running" and not Run(path).is_training():
        status = "killed"  # nothing holds its lock: resume it with `kexp train --resume`
    completed = info.get("epochs_completed", len(history) if history else None)
    planned = info.get("epochs")
    epochs = f"{_text(completed)}/{_text(planned)}" if completed is not None or planned else "-"
    metrics = _best(history) or {k: v for k, v in (info.get("last_metrics") or {}).items()
                                 if isinstance(v, (int, float))}
    loss = metrics.get("val_loss")
    other = _other_metric(metrics)
    return _Row(
        started=_when(info.get("started")),
        status=status,
        epochs=epochs,
        best_loss="-" if loss is None else f"{loss:.4g}",
        best_other="-" if other is None else f"{other[0]} {other[1]:.4g}",
        duration=_duration(info.get("duration_seconds")),
    )


def _read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv rows as numbers; [] when missing or unreadable (a run still gets a row)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    return [{k: _number(v) for k, v in row.items() if k and _number(v) is not None}
            for row in rows]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _best(history: list[dict[str, Any]]) -> dict[str, float]:
    """The best value of each validation metric over the epochs."""
    names = {k for row in history for k in row if k.startswith("val_")}
    best = {}
    for name in names:
        values = [row[name] for row in history if name in row]
        best[name] = max(values) if higher_is_better(name) else min(values)
    return best




def _other_metric(metrics: dict[str, float]) -> tuple[str, float] | None:
    """One validation metric besides the loss: val_accuracy if there is one, else the first
    val_* that is not a loss, by name."""
    if "val_accuracy" in metrics:
        return "val_accuracy", metrics["val_accuracy"]
    names = sorted(k for k in metrics if k.startswith("val_") and not k.endswith("loss"))
    return (names[0], metrics[names[0]]) if names else None


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _when(started: Any) -> str:
    try:
        return dt.datetime.fromisoformat(str(started)).strftime("%m-%d %H:%M")
    except ValueError:
        return "-"


def _duration(seconds: Any) -> str:
    number = _number(seconds)
    if number is None:
        return "-"
    minutes, secs = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{number:.1f}s"
