"""What run directories tell once training has written them, read without TensorFlow:
``run.json``, ``config.yaml`` and ``history.csv``. ``kexp runs``, ``kexp compare`` and the
Python API's ``kexp.Run`` read runs through here.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kexp.monitor import higher_is_better
from kexp.runs import Run, RunRecord, find_runs, read_record

__all__ = [
    "RunResult",
    "read_result",
    "read_history",
    "best_value",
    "collect_runs",
    "flatten_config",
]

# A run directory's name: <YYYYMMDD-HHMMSS>, with -2, -3, ... when the second was taken.
_STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


@dataclass
class RunResult:
    """One run directory as its files describe it.

    ``history`` maps each ``history.csv`` column to its values, one per epoch (empty when
    the run has no history yet); ``status`` is ``killed`` for a ``running`` run whose lock
    no process holds.
    """

    path: Path
    record: RunRecord  # run.json (an empty record when missing or corrupt)
    status: str
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name or self.path.parent.name

    @property
    def started(self) -> str:
        return self.record.started or ""

    @property
    def epochs_completed(self) -> int | None:
        done = self.record.epochs_completed
        if done is None and self.history:
            return len(next(iter(self.history.values())))
        return done

    @property
    def epochs_planned(self) -> int | None:
        return self.record.epochs

    @property
    def duration(self) -> float | None:
        return _number(self.record.duration_seconds)

    @property
    def monitor(self) -> str | None:
        return self.record.monitor or None

    def config(self) -> dict[str, Any]:
        """The run's resolved ``config.yaml`` ({} when missing or unreadable)."""
        try:
            data = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    def best(self, metric: str) -> float | None:
        """The best value of ``metric`` over the epochs, in its direction
        (``kexp.monitor.higher_is_better``); falls back on ``run.json``'s last metrics."""
        values = self.history.get(metric)
        if not values:
            last = (self.record.last_metrics or {}).get(metric)
            return _number(last)
        return best_value(metric, values)

    def final(self, metric: str) -> float | None:
        """The value of ``metric`` after the last epoch."""
        values = self.history.get(metric)
        if values:
            return values[-1]
        return _number((self.record.last_metrics or {}).get(metric))

    def best_epoch(self, metric: str) -> int | None:
        """The (0-based) epoch of the best ``metric``."""
        values = self.history.get(metric)
        if not values:
            return None
        return values.index(best_value(metric, values))


def read_result(path: Path) -> RunResult:
    """Read a run directory (a missing or corrupt ``run.json`` gives ``status`` ``unknown``)."""
    path = Path(path)
    record = read_record(path)
    status = record.status if record is not None and record.status else "unknown"
    if status == "running" and not Run(path).is_training():
        status = "killed"  # nothing holds its lock: resume it with `kexp train --resume`
    return RunResult(path, record or RunRecord(), status, read_history(path / "history.csv"))


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as column -> values; {} when missing or unreadable. A value that is
    not a finite number is NaN (a failed run's last row may hold one)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    columns = [c for c in (rows[0].keys() if rows else []) if c]
    history: dict[str, list[float]] = {}
    for column in columns:
        values = [_number(row.get(column)) for row in rows]
        history[column] = [math.nan if v is None else v for v in values]
    if "epoch" in history:
        history["epoch"] = [int(v) if math.isfinite(v) else v for v in history["epoch"]]
    return history


def best_value(metric: str, values: Iterable[float]) -> float | None:
    """The best finite value of ``metric`` among ``values`` (None when there is none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if higher_is_better(metric) else min(finite)


def collect_runs(paths: Iterable[Path], *, with_unborn: bool = False) -> list[Path]:
    """The run directories ``paths`` name, each once, in the order given: a run directory
    itself, ``runs/<name>`` (all its runs), a sweep directory (its trials) or a runs
    directory (every run under it), oldest first within each.

    ``with_unborn`` adds directories named like a run whose ``run.json`` is missing (a run
    that died while starting).
    """
    seen: dict[Path, None] = {}
    for path in paths:
        path = Path(path)
        found = set(find_runs(path))
        if with_unborn and path not in found:
            found |= {p for p in path.glob("**/*") if p.is_dir() and _STAMP.match(p.name)}
        for run in sorted(found, key=lambda p: ((read_record(p) or RunRecord()).started,
                                                str(p))):
            seen.setdefault(run.resolve(), None)
    return list(seen)


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config as ``{dotted path: value}``, paths written as ``--set`` takes them
    (``model.layers[0].units``, ``compile.optimizer.learning_rate``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten_config(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten_config(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
