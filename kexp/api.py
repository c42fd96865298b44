"""kexp from Python: what the commands do, for notebooks and scripts.

```python
import kexp

run = kexp.train("configs/digits_mlp.yaml", overrides={"train.epochs": 5})
run.path, run.status, run.history["val_loss"], run.metrics["validation"]
model = run.load_model("best")            # the run's plugins imported, Keras safe mode
kexp.evaluate(run, split="validation")    # {"loss": ..., "accuracy": ...}
kexp.predict(run, x)                      # {"predictions": array}, or one array per output
kexp.runs("runs/")                        # [Run, ...], oldest first
kexp.compare("runs/digits-mlp", metric="val_accuracy").render("csv")
kexp.export(run, format="tflite")         # checked against kexp.predict
kexp.sweep("configs/digits_sweep.yaml", overrides={"sweep.trials": 4})
```

Errors are exceptions — ``kexp.ConfigError`` (every problem, with the config path and
file:line, as the command prints it), ``kexp.DataError``, ``kexp.TrainingError`` — never
``SystemExit``. TensorFlow is imported by the functions that need it, not by ``import kexp``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexp.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kexp.comparison import Comparison
    from kexp.serving import Export

__all__ = ["Run", "SweepResult", "train", "evaluate", "predict", "runs", "compare", "export",
           "sweep"]

Overrides = Mapping[str, Any] | Sequence[str] | None


class Run:
    """A run directory, read when asked (a run still training shows its latest state).

    Attributes:
        path: the run directory.
    """

    def __init__(self, path: str | Path):
        from kexp.evaluation import find_run

        self.path = find_run(Path(path))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def info(self) -> dict[str, Any]:
        """``run.json``."""
        from kexp.runs import read_run

        return read_run(self.path)

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ``interrupted``, ``running``, ``killed`` (running, but no
        process holds it) or ``unknown``."""
        from kexp.results import read_result

        return read_result(self.path).status

    @property
    def config(self) -> dict[str, Any]:
        """The resolved ``config.yaml``."""
        from kexp.results import read_result

        return read_result(self.path).config()

    @property
    def history(self) -> dict[str, list[float]]:
        """``history.csv`` as column -> values, one per epoch."""
        from kexp.results import read_history

        return read_history(self.path / "history.csv")

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: final ``train`` / ``validation`` (/ ``test``) metrics ({} before
        the run completes)."""
        try:
            return json.loads((self.path / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def load_model(self, checkpoint: str = "final", compile: bool = True) -> Any:
        """The run's model (``final``: ``model.keras``; ``best`` / ``last``: the
        checkpoints), loaded in Keras's safe mode after importing the run's plugins.

        Raises:
            DataError: no such checkpoint, or a model that cannot be loaded safely.
        """
        from kexp.evaluation import checkpoint_file, load_run_config, load_run_model

        file = checkpoint_file(self.path, checkpoint)
        load_run_config(self.path)  # imports the plugins that define custom classes
        return load_run_model(file, compile=compile)


def train(config: str | Path, overrides: Overrides = None, *, runs_dir: str | Path | None = None,
          name: str | None = None, plugins: Sequence[str] = (), smoke: bool = False) -> Run:
    """Train as ``config`` says (``kexp train``); return the run.

    Args:
        config: the experiment's YAML file.
        overrides: ``{"train.epochs": 5, "model.layers[0].units": 64}`` (values as Python
            objects) or ``["train.epochs=5"]`` (``--set`` strings).
        runs_dir: where the run directory goes (default: the config's ``runs_dir:``).
        name: the run's name (default: the config's ``name:``, else the file's stem).
        plugins: extra plugins to import (``--plugin``).
        smoke: two batches of train and validation data for one epoch, under ``_smoke/``.

    Raises:
        ConfigError: the config cannot be run (nothing is written).
        DataError: unusable data (nothing is written).
        TrainingError: training failed; the run is marked ``failed`` with the reason.
        KeyboardInterrupt: the run is marked ``interrupted``.
    """
    from kexp.config import load_config
    from kexp.training.engine import TrainOptions
    from kexp.training.engine import train as run_training

    sets = _sets(overrides)
    sets += [f"name={name}"] if name else []
    sets += [f"runs_dir={runs_dir}"] if runs_dir is not None else []
    cfg = load_config(Path(config), sets, list(plugins))
    command = ("kexp.train", str(config), *(f"--set {s}" for s in sets))
    return Run(run_training(cfg, TrainOptions(smoke=smoke, command=command)).path)


def evaluate(run: Run | str | Path, checkpoint: str = "final", split: str | None = None,
             data: Overrides = None) -> dict[str, float]:
    """Evaluate a run's model (``kexp evaluate``): its metrics on ``split`` (default
    ``test`` when the data has one, else ``validation``), also recorded in the run's
    ``evaluation.json``.

    Args:
        data: overrides of the run config's ``data`` section (``{"path": "other.npz"}``).
    """
    from kexp.evaluation import evaluate_run, record_evaluation

    path = _run_path(run)
    result = evaluate_run(path, checkpoint, split, _sets(data))
    record_evaluation(path, result)
    return result.metrics


def predict(run: Run | str | Path, x: Any, checkpoint: str = "final") -> dict[str, Any]:
    """Predictions of a run's model (``kexp predict``) for ``x``: an array, a dict of
    arrays named like the model's inputs, or an ``.npz`` / ``.csv`` file. Returns one
    array per model output (``{"predictions": array}`` for a single output)."""
    from kexp.evaluation import predict_run

    return predict_run(_run_path(run), Path(x) if isinstance(x, str) else x, checkpoint)


def runs(runs_dir: str | Path = "runs", status: str | None = None) -> list[Run]:
    """Every run under ``runs_dir`` (a runs directory, ``runs/<name>``, a sweep directory),
    oldest first; ``status`` keeps only runs with that status.

    Raises:
        DataError: ``runs_dir`` does not exist.
    """
    from kexp.results import collect_runs, read_result

    if not Path(runs_dir).is_dir():
        raise DataError(f"{runs_dir}: no such directory.")
    found = [Run(p) for p in collect_runs([Path(runs_dir)])]
    return [r for r in found if status is None or read_result(r.path).status == status]


def compare(*paths: Run | str | Path, metric: str | Sequence[str] = ()) -> Comparison:
    """Runs side by side (``kexp compare``): ``.differing`` config paths, ``.rows`` (best
    first), ``.render("csv" | "json" | "markdown")``, ``.plot("cmp.png")``.

    Args:
        paths: runs, run directories, ``runs/<name>`` or sweep directories.
        metric: the history column(s) to report, the first sorting (default: the monitored
            metric, else ``val_loss``).
    """
    from kexp.comparison import compare_runs

    metrics = [metric] if isinstance(metric, str) else list(metric)
    flat = [p for item in paths for p in (item if isinstance(item, (list, tuple)) else [item])]
    return compare_runs([_as_path(p) for p in flat], metrics)


def export(run: Run | str | Path, checkpoint: str = "final", format: str = "saved_model",
           output: str | Path | None = None) -> Export:
    """Export a run's model (``kexp export``) and check it against ``predict``.

    Raises:
        ExportCheckError: the artifact's predictions differ (nothing is written).
    """
    from kexp.serving import export_run

    return export_run(_run_path(run), checkpoint, format,
                      Path(output) if output is not None else None)


@dataclass(frozen=True)
class SweepResult:
    """A finished (or stopped) sweep: its directory, metric, direction, and the best trial's
    run (None when no trial completed)."""

    path: Path
    metric: str
    direction: str
    best: Run | None

    @property
    def trials(self) -> list[Run]:
        """Every trial's run, in trial order."""
        trials = self.path / "trials"
        return runs(trials) if trials.is_dir() else []


def sweep(config: str | Path, overrides: Overrides = None, *,
          runs_dir: str | Path | None = None, name: str | None = None,
          plugins: Sequence[str] = (), trials: int | None = None, jobs: int | None = None,
          storage: str | None = None, study: str | None = None) -> SweepResult:
    """Run the config's ``sweep:`` block (``kexp sweep``); each trial is a run.

    Raises:
        ConfigError: no ``sweep:`` block, or a search space or config that cannot run.
    """
    from kexp.config import load_config
    from kexp.sweep.directory import check_sweep, create_sweep
    from kexp.sweep.results import best_trial
    from kexp.sweep.runner import run_sweep

    sets = _sets(overrides)
    for key, value in (("name", name), ("runs_dir", runs_dir), ("sweep.trials", trials),
                       ("sweep.jobs", jobs)):
        if value is not None:
            sets.append(f"{key}={value}")
    cfg = load_config(Path(config), sets, list(plugins))
    check_sweep(cfg, Path(config), sets, list(plugins), storage)
    plan = create_sweep(cfg, storage, study)
    best = best_trial(run_sweep(plan))
    run_dir = best.user_attrs.get("run_dir") if best is not None else None
    return SweepResult(plan.dir, plan.metric, plan.direction,
                       Run(run_dir) if run_dir else None)


def _sets(overrides: Overrides) -> list[str]:
    """``{"a.b": value}`` -> ``["a.b=<value as YAML>"]``; ``--set`` strings pass through."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError("overrides: expected a mapping {path: value} or a list of "
                          f"'PATH=VALUE' strings; received the string {overrides!r}")
    return [str(item) for item in overrides]


def _as_path(run: Run | str | Path) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def _run_path(run: Run | str | Path) -> Path:
    from kexp.evaluation import find_run

    return find_run(_as_path(run))
