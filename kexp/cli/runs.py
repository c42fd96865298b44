"""``kexp runs [RUNS_DIR]``: one row per run. Reads run.json and history.csv only — no
TensorFlow import, so it answers instantly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any, Literal

import typer

from kexp.cli.options import run_dirs

__all__ = ["runs", "duration_text"]

STATUSES = ("completed", "failed", "interrupted", "running", "killed", "pruned", "unknown")


def runs(
    runs_dir: Path = typer.Argument(Path("runs"), metavar="RUNS_DIR",
                                    help="Where run directories are (a runs_dir, "
                                    "runs/<name>, a sweep directory, or one run).",
                                    autocompletion=run_dirs),
    sort: str = typer.Option(None, "--sort", metavar="METRIC",
                             help="Sort by the best value of a history.csv column, best "
                             "first (its direction: accuracy up, loss down). Default: "
                             "oldest first."),
    status: str = typer.Option(None, "--status", metavar="STATUS",
                               help=f"Only runs with this status ({', '.join(STATUSES)})."),
    last: int = typer.Option(None, "--last", metavar="N", min=1,
                             help="Only the N newest runs (after --status)."),
    fmt: Literal["table", "csv", "json"] = typer.Option(
        "table", "--format", "-f", help="table (for reading), csv or json (for scripts)."),
) -> None:
    """List runs: name, start, status, epochs, best validation metrics, duration."""
    from kexp.errors import DataError
    from kexp.results import collect_runs, read_result

    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: no such directory (give the runs directory, default "
                        "runs/).")
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"expected one of {', '.join(STATUSES)}; received "
                                 f"{status!r}.", param_hint="--status")
    results = [read_result(p) for p in collect_runs([runs_dir], with_unborn=True)]
    results.sort(key=lambda r: _order(r.path))  # the stamp: oldest first
    if status is not None:
        results = [r for r in results if r.status == status]
    if last is not None:
        results = results[-last:]
    if sort is not None:
        from kexp.monitor import higher_is_better

        sign = -1 if higher_is_better(sort) else 1
        results.sort(key=lambda r: (r.best(sort) is None, sign * (r.best(sort) or 0.0)))
    rows = [_row(r, runs_dir, sort) for r in results]
    if fmt == "csv":
        typer.echo(_csv(rows), nl=False)
    elif fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo(f"no runs under {runs_dir}" + (f" with status {status}" if status else ""))
    else:
        _print_table(rows, sort, runs_dir)


def _row(result: Any, runs_dir: Path, sort: str | None) -> dict[str, Any]:
    """What ``--format json`` prints for a run (csv: the same, ``best`` flattened)."""
    val = sorted(k for k in result.history if k.startswith("val_"))
    if not val:  # no history: the last metrics run.json holds
        val = sorted(k for k in (result.record.last_metrics or {}) if k.startswith("val_"))
    names = val + ([sort] if sort and sort not in val else [])
    return {
        "run": _label(result.path, runs_dir),
        "path": str(result.path),
        "name": result.name,
        "started": result.started or None,
        "status": result.status,
        "epochs_completed": result.epochs_completed,
        "epochs": result.epochs_planned,
        "duration_seconds": result.duration,
        "best": {name: result.best(name) for name in names},
        "sweep": str(sweep) if (sweep := _sweep_of(result.path)) is not None else None,
    }


def _sweep_of(run: Path) -> Path | None:
    """The sweep directory of a trial's run (``<sweep>/trials/NNNN``), or None."""
    sweep = run.parent.parent
    if run.parent.name == "trials" and (sweep / "sweep.json").is_file():
        return sweep
    return None


def _order(run: Path) -> tuple[str, str]:
    """Oldest first by the directory's timestamp; a sweep's trials where the sweep began."""
    sweep = _sweep_of(run)
    return (sweep.name.removeprefix("sweep-"), str(run)) if sweep else (run.name, str(run))


def _sweep_cells(sweep: Path, runs_dir: Path) -> list[str]:
    """A sweep's row in the table: its status, finished trials, best value of its metric."""
    try:
        info = json.loads((sweep / "sweep.json").read_text())
    except (OSError, ValueError):
        info = {}
    best = info.get("best") or {}
    value = ("-" if best.get("value") is None else
             f"{info.get('metric')} {best['value']:.4g} (trial {best.get('trial')})")
    total = _text((info.get("sweep") or {}).get("trials"))
    return [_label(sweep, runs_dir), _when(info.get("started")),
            f"sweep {info.get('status', '?')}", f"{info.get('finished_trials', 0)}/{total} trials",
            "-", value]


def _label(path: Path, runs_dir: Path) -> str:
    try:
        rel = path.relative_to(runs_dir.resolve())
    except ValueError:
        rel = path
    return str(rel) if str(rel) != "." else str(runs_dir)


def _csv(rows: list[dict[str, Any]]) -> str:
    metrics = list(dict.fromkeys(m for row in rows for m in row["best"]))
    columns = [c for c in (rows[0] if rows else _row_columns()) if c != "best"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns + [f"best {m}" for m in metrics])
    for row in rows:
        cells = ["" if row[c] is None else row[c] for c in columns]
        best = [row["best"].get(m) for m in metrics]
        writer.writerow(cells + ["" if v is None else v for v in best])
    return out.getvalue()


def _row_columns() -> list[str]:
    return ["run", "path", "name", "started", "status", "epochs_completed", "epochs",
            "duration_seconds"]


def _print_table(rows: list[dict[str, Any]], sort: str | None, runs_dir: Path) -> None:
    from rich import box
    from rich.table import Column, Table

    from kexp.cli.console import console

    # Short columns never wrap, so the table stays legible at 80 columns (a pipe).
    fixed = {"no_wrap": True}
    extra = [Column(f"best {sort}", **fixed)] if sort and sort != "val_loss" else []
    table = Table(Column("run", overflow="fold"), Column("started", **fixed),
                  Column("status", **fixed), Column("epochs", **fixed), "best val_loss",
                  Column("best val metric", overflow="fold"), *extra,
                  Column("duration", **fixed), box=box.SIMPLE_HEAD)
    sweep = None
    for row in rows:
        if sort is None and row["sweep"] is not None:  # a sweep's row, then its trials
            if row["sweep"] != sweep:
                sweep = row["sweep"]
                table.add_row(*_sweep_cells(Path(sweep), runs_dir), *(["-"] * len(extra)), "-")
            row = {**row, "run": f"  └ {Path(row['path']).relative_to(sweep)}"}
        done, planned = row["epochs_completed"], row["epochs"]
        epochs = f"{_text(done)}/{_text(planned)}" if done is not None or planned else "-"
        loss = row["best"].get("val_loss")
        other = _other_metric(row["best"])
        cells = [row["run"], _when(row["started"]), row["status"], epochs,
                 "-" if loss is None else f"{loss:.4g}",
                 "-" if other is None else f"{other[0]} {other[1]:.4g}"]
        if extra:
            value = row["best"].get(sort)
            cells.append("-" if value is None else f"{value:.4g}")
        table.add_row(*cells, duration_text(row["duration_seconds"]))
    console().print(table)


def _other_metric(metrics: dict[str, float | None]) -> tuple[str, float] | None:
    """One validation metric besides the loss: val_accuracy if there is one, else the first
    val_* that is not a loss, by name."""
    if metrics.get("val_accuracy") is not None:
        return "val_accuracy", metrics["val_accuracy"]
    names = sorted(k for k, v in metrics.items()
                   if k.startswith("val_") and not k.endswith("loss") and v is not None)
    return (names[0], metrics[names[0]]) if names else None


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _when(started: Any) -> str:
    try:
        return dt.datetime.fromisoformat(str(started)).strftime("%m-%d %H:%M")
    except ValueError:
        return "-"


def duration_text(seconds: Any) -> str:
    """``1h 02m``, ``3m 07s`` or ``4.2s``; ``-`` when unknown."""
    try:
        number = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(number):
        return "-"
    minutes, secs = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{number:.1f}s"
