"""What a sweep shows a person: a progress line per finished trial, the table of the best
trials, and in the sweep directory ``trials.csv``, ``best.yaml`` and the plots of the search
(Optuna's matplotlib visualizations, as PNG)."""

from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from kexp.runs import atomic_path, atomic_write

__all__ = ["best_trial", "progress_line", "write_trials_csv", "write_best_yaml",
           "write_plots", "top_table", "PLOTS"]

PLOTS = {
    "history.png": "plot_optimization_history",
    "importances.png": "plot_param_importances",
    "parallel_coordinates.png": "plot_parallel_coordinate",
}

_STATE = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
          "WAITING": "waiting"}


def state_name(trial: Any) -> str:
    return _STATE.get(trial.state.name, trial.state.name.lower())


def values_of(trial: Any) -> dict[str, Any]:
    """The trial's config values (``{path: value}``), as it was given them."""
    return json.loads(trial.user_attrs.get("values", "{}"))


def best_trial(study: Any) -> Any:
    """The best completed trial (None before one completed)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return None
    return study.best_trial


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def progress_line(study: Any, number: int, metric: str, total: int) -> str:
    """``[4/12] trial 3 completed  lr=0.0012 units=64  val_accuracy 0.9611  best 0.9722
    (trial 1)``: how many trials have finished, this one's values and result, the best."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    params = " ".join(f"{p}={_short(v)}" for p, v in values_of(trial).items())
    if trial.state.name == "PRUNED":
        last = max(trial.intermediate_values, default=None)
        result = ("" if last is None else
                  f"after epoch {last}: {metric} {trial.intermediate_values[last]:.4g}")
    elif trial.value is not None:
        result = f"{metric} {trial.value:.4g}"
    else:
        result = trial.user_attrs.get("reason", "")
    best = best_trial(study)
    best_text = f"  best {best.value:.4g} (trial {best.number})" if best is not None else ""
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    return f"[{done}/{total}] trial {number} {state_name(trial)}  {params}  {result}{best_text}"


def write_trials_csv(sweep_dir: Path, study: Any, metric: str) -> None:
    """``trials.csv``: one row per trial — number, state, each parameter, the metric, the
    run directory, the sweep process that ran it (``host:pid``), the reason it failed or was
    pruned."""
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(p for t in trials for p in values_of(t)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", *params, metric, "run_dir", "worker", "reason"])
    for trial in trials:
        values = values_of(trial)
        writer.writerow([trial.number, state_name(trial),
                         *[_cell(values.get(p)) for p in params],
                         "" if trial.value is None else repr(float(trial.value)),
                         trial.user_attrs.get("run_dir", ""), trial.user_attrs.get("worker", ""),
                         trial.user_attrs.get("reason", "")])
    atomic_write(Path(sweep_dir) / "trials.csv", out.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def write_best_yaml(sweep_dir: Path, best: Any) -> None:
    """``best.yaml``: the best trial's resolved config (its run's config.yaml), trainable
    with ``kexp train``. ``train.threads: auto`` is pinned to the threads the trial used, so
    the same seed reproduces its history on this machine whatever else is running."""
    if best is None:
        return
    run_dir = Path(best.user_attrs["run_dir"])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    threads = json.loads((run_dir / "run.json").read_text()).get("threads")
    train = config.setdefault("train", {})
    if train.get("threads", "auto") == "auto" and threads is not None:
        train["threads"] = 0 if threads == "default" else threads
    head = (f"# The best trial ({best.number}) of the sweep {Path(sweep_dir).name}: "
            f"{best.value:.6g}.\n# Train it with: kexp train best.yaml\n")
    atomic_write(Path(sweep_dir) / "best.yaml", head + yaml.safe_dump(config, sort_keys=False))


def write_plots(sweep_dir: Path, study: Any) -> list[str]:
    """The search as PNG: optimization history, parameter importances, parallel
    coordinates. A plot Optuna cannot draw yet (too few completed trials) is skipped with a
    note; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    written = []
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings
                axes = getattr(vis, function)(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            with atomic_path(Path(sweep_dir) / name) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            plt.close(figure)
            written.append(name)
        except Exception as exc:  # a plot is a convenience; never fail a sweep over it
            print(f"note: {name} not drawn ({str(exc).splitlines()[0] if str(exc) else exc})",
                  file=sys.stderr)
    return written


def top_table(study: Any, metric: str, direction: str, count: int = 5) -> Any:
    """A Rich table of the best ``count`` completed trials."""
    import optuna
    from rich import box
    from rich.table import Table

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done.sort(key=lambda t: t.value, reverse=direction == "maximize")
    params = list(dict.fromkeys(p for t in done for p in values_of(t)))
    table = Table("trial", *params, metric, "run", box=box.SIMPLE_HEAD,
                  title=f"best {min(count, len(done))} of {len(study.get_trials())} trials")
    for trial in done[:count]:
        values = values_of(trial)
        table.add_row(str(trial.number), *[_short(values.get(p)) for p in params],
                      f"{trial.value:.4g}", Path(trial.user_attrs.get("run_dir", "")).name)
    return table
