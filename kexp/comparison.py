"""``kexp compare``: runs side by side — the config values that differ between them, their
status, epochs, best and final metric, duration — sorted by the metric in its direction, and
their curves overlaid. Reads ``config.yaml``, ``run.json`` and ``history.csv`` only: no
TensorFlow import.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.errors import DataError
from kexp.monitor import higher_is_better
from kexp.results import RunResult, collect_runs, flatten_config, read_result

__all__ = ["Comparison", "compare_runs", "cell_text", "FORMATS"]

FORMATS = ("table", "csv", "json", "markdown")


@dataclass
class Comparison:
    """The rows of ``kexp compare``: ``differing`` lists the config paths whose values
    differ between the runs; ``rows`` hold, per run (sorted best first), ``run``, each
    differing path, ``status``, ``epochs``, ``best <metric>`` / ``final <metric>`` for every
    metric, and ``duration_seconds``."""

    metrics: list[str]
    differing: list[str]
    rows: list[dict[str, Any]]
    results: list[RunResult]

    @property
    def columns(self) -> list[str]:
        metric_columns = [f"{kind} {m}" for m in self.metrics for kind in ("best", "final")]
        return ["run", *self.differing, "status", "epochs", *metric_columns,
                "duration_seconds"]

    def labels(self) -> list[str]:
        """One legend label per row: its differing values (``units=64, learning_rate=0.01``),
        or the run when nothing differs."""
        short = _short_names(self.differing)
        labels = []
        for row in self.rows:
            parts = [f"{short[p]}={cell_text(row[p])}" for p in self.differing]
            labels.append(", ".join(parts) or row["run"])
        return labels

    def render(self, fmt: str) -> str:
        """The comparison as ``csv``, ``json`` or ``markdown`` text."""
        if fmt == "json":
            rows = [{k: _finite_or_none(v) for k, v in row.items()} for row in self.rows]
            return json.dumps({"metrics": self.metrics, "differing": self.differing,
                               "runs": rows}, indent=2, default=str) + "\n"
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(self.columns)
            writer.writerows([_csv_cell(row[c]) for c in self.columns] for row in self.rows)
            return out.getvalue()
        if fmt == "markdown":
            lines = ["| " + " | ".join(self.columns) + " |",
                     "|" + "|".join("---" for _ in self.columns) + "|"]
            lines += ["| " + " | ".join(cell_text(row[c]).replace("|", "\\|")
                                        for c in self.columns) + " |" for row in self.rows]
            return "\n".join(lines) + "\n"
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}; received {fmt!r}")

    def plot(self, file: Path) -> Path:
        """Every run's curve of each metric, overlaid, one panel per metric, labelled by the
        differing values; written atomically to ``file`` (PNG)."""
        from kexp.curves import epoch_axis, figure

        with figure(len(self.metrics), Path(file)) as (_, axes):
            for ax, metric in zip(axes, self.metrics, strict=True):
                for result, label in zip(self.results, self.labels(), strict=True):
                    values = result.history.get(metric)
                    if values:
                        ax.plot(_epochs(result, len(values)), values, marker="o",
                                markersize=3, label=label)
                ax.set_title(f"{metric} ({'higher' if higher_is_better(metric) else 'lower'}"
                             " is better)")
                ax.set_ylabel(metric)
                if ax.has_data():
                    epoch_axis(ax, *ax.dataLim.intervalx)
                    ax.legend(fontsize="small")
        return Path(file)


def compare_runs(paths: Sequence[Path | str], metrics: Sequence[str] = ()) -> Comparison:
    """Compare the runs ``paths`` name (run directories, ``runs/<name>`` for all its runs, a
    sweep directory for its trials).

    Args:
        paths: where the runs are.
        metrics: ``history.csv`` columns to report (the first sorts the rows); default the
            runs' monitored metric when they agree on one, else ``val_loss``.

    Raises:
        DataError: a path that does not exist or holds no run.
    """
    run_dirs = []
    for path in paths:
        found = collect_runs([Path(path)]) if Path(path).is_dir() else []
        if not found:
            what = "does not exist" if not Path(path).exists() else "holds no run (no run.json)"
            raise DataError(f"{path} {what}: give run directories, runs/<name> or a sweep "
                            "directory.")
        run_dirs += [d for d in found if d not in run_dirs]
    results = [read_result(d) for d in run_dirs]
    metrics = list(metrics) or [_default_metric(results)]
    configs = [flatten_config(r.config()) for r in results]
    differing = _differing(configs)
    labels = _run_labels(run_dirs)
    rows = []
    for result, config, label in zip(results, configs, labels, strict=True):
        row: dict[str, Any] = {"run": label}
        row.update({p: config.get(p) for p in differing})
        done, planned = result.epochs_completed, result.epochs_planned
        row["status"] = result.status
        row["epochs"] = done
        for metric in metrics:
            row[f"best {metric}"] = result.best(metric)
            row[f"final {metric}"] = result.final(metric)
        row["duration_seconds"] = result.duration
        row["path"] = str(result.path)
        row["epochs_planned"] = planned
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: _sort_key(rows[i], metrics[0]))
    return Comparison(metrics, differing, [rows[i] for i in order], [results[i] for i in order])


def _default_metric(results: list[RunResult]) -> str:
    monitors = {r.monitor for r in results if r.monitor}
    return monitors.pop() if len(monitors) == 1 else "val_loss"


def _differing(configs: list[dict[str, Any]]) -> list[str]:
    """Config paths whose values are not the same in every run (in config order)."""
    paths: dict[str, None] = {}
    for config in configs:
        paths.update(dict.fromkeys(config))
    return [p for p in paths
            if len({(p in c, json.dumps(c.get(p), default=str)) for c in configs}) > 1]


def _run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's path from where the runs' names part (``digits-mlp/<stamp>``,
    ``trials/0003``)."""
    base = Path(os.path.commonpath([str(d.parent.parent) for d in run_dirs]))
    return [str(d.relative_to(base)) for d in run_dirs]


def _sort_key(row: dict[str, Any], metric: str) -> tuple:
    value = row[f"best {metric}"]
    if value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, -value if higher_is_better(metric) else value)


def _short_names(paths: list[str]) -> dict[str, str]:
    """The last part of each path (``learning_rate``) where that is unambiguous."""
    last = {p: p.rsplit(".", 1)[-1] for p in paths}
    counts: dict[str, int] = {}
    for name in last.values():
        counts[name] = counts.get(name, 0) + 1
    return {p: (name if counts[name] == 1 else p) for p, name in last.items()}


def _epochs(result: RunResult, n: int) -> list[float]:
    epochs = result.history.get("epoch")
    return list(epochs) if epochs and len(epochs) == n else list(range(n))


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN (a failed run's last loss may be one): null instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value
