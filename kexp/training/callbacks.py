"""The callbacks of a run: the user's (by name, from the config) and the ones every run gets
(history CSV, TensorBoard logs, last/best checkpoints, progress display, a guard against
non-finite losses and weights). Both training loops drive the same list through Keras's
``CallbackList``.

kexp's own callbacks are written for chunked batch hooks (Keras's ``steps_per_execution``
contract), so they never force per-batch execution.

Keras's own callbacks are used wherever they do the job: the user's ``ModelCheckpoint``,
``CSVLogger``, ``TensorBoard``, ``EarlyStopping`` ... run unchanged, and the run's TensorBoard
logs are Keras's ``TensorBoard``. Each kexp callback below says why Keras's closest one is
not used: a measured cost, or something the run directory promises that it does not do.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from kexp.components import build
from kexp.config.schema import Component
from kexp.monitor import higher_is_better
from kexp.registry import CALLBACKS
from kexp.runs import Run, atomic_path, atomic_write
from kexp.training import _keras_private as private

__all__ = [
    "build_user_callbacks",
    "needs_every_batch",
    "TRAIN_BATCH_HOOKS",
    "TEST_BATCH_HOOKS",
    "HistoryCSV",
    "RunCheckpoints",
    "Progress",
    "NonFiniteGuard",
    "RunRecorder",
    "resolve_monitor",
    "read_history",
    "save_model",
    "checkpoint_info",
]

# Callback arguments that name files: relative values resolve inside the run directory.
_PATH_ARGS = ("filepath", "filename", "log_dir", "file", "path", "backup_dir")

_INFO_ENTRY = "kexp.json"


def build_user_callbacks(specs: list[Component], run_dir: Path) -> list[keras.callbacks.Callback]:
    """Build the config's ``train.callbacks``; relative file arguments land in the run
    directory, so ``ModelCheckpoint(filepath: checkpoint_path.keras)`` works unchanged."""
    callbacks = []
    for spec in specs:
        args = dict(spec.args)
        for key, value in args.items():
            if _is_path_arg(key) and isinstance(value, str) and not Path(value).is_absolute():
                target = run_dir / value
                target.parent.mkdir(parents=True, exist_ok=True)
                args[key] = str(target)
        resolved = spec.model_copy(update=args)
        resolved.locate(spec.path, spec.where)
        callbacks.append(build(resolved, CALLBACKS))
    return callbacks


def _is_path_arg(key: str) -> bool:
    return key in _PATH_ARGS or key.endswith(("_path", "_file", "_dir"))


# Batch hooks. `Callback.on_train_batch_*` forwards to `on_batch_*`, so those count for training.
TRAIN_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                     "on_train_batch_end")
TEST_BATCH_HOOKS = ("on_test_batch_begin", "on_test_batch_end")


def needs_every_batch(callbacks: Sequence[keras.callbacks.Callback],
                      hooks: Sequence[str] = TRAIN_BATCH_HOOKS) -> bool:
    """True when a callback outside Keras and kexp overrides one of the batch ``hooks``
    (including functions set on the instance, as ``LambdaCallback`` does): it wants to see
    every batch (e.g. the chapter's per-batch loss plotter), so batches run one per call.
    Keras's and kexp's own callbacks are written for chunked batch hooks (Keras's
    ``steps_per_execution`` contract) and never force it."""
    return any(_overrides(callback, hook) for callback in callbacks for hook in hooks)


def _overrides(callback: keras.callbacks.Callback, hook: str) -> bool:
    if hook in vars(callback):
        return True
    owner = next(c for c in type(callback).__mro__ if hook in vars(c))
    return not owner.__module__.startswith(("keras.", "kexp.training."))


def resolve_monitor(monitor: str, has_validation: bool) -> str:
    """``val_loss`` monitors ``loss`` when the run has no validation data."""
    if not has_validation and monitor.startswith("val_"):
        return monitor[len("val_"):]
    return monitor


def _current_lr(model: Any) -> float | None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None


def _finite(logs: dict[str, Any] | None, key: str = "loss") -> bool:
    value = (logs or {}).get(key)
    return value is None or math.isfinite(float(value))


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv``: one row per epoch (0-based ``epoch`` column, as Keras's ``CSVLogger``
    writes it; with ``train.phases`` a 0-based ``phase``), every metric, and the learning
    rate. The whole file is rewritten atomically
    each epoch, so a crash never leaves half a row. A resumed run passes the file's rows and
    the epoch it resumes at: earlier rows are kept, rows of epochs being redone are dropped.
    (``initial_epoch`` is an argument because Keras does not pass it to callbacks.)

    Why not Keras's ``CSVLogger``: it writes only the keys of the logs (``fit``'s logs have
    no learning rate unless a learning-rate callback adds it; the run's history has the
    column), and it appends a row at a time, so a kill mid-write leaves half a row, where
    every file of a run directory must parse after a crash."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None,
                 initial_epoch: int = 0, phase: int | None = None):
        super().__init__()
        self.path = path
        self.rows = list(rows or [])
        self.initial_epoch = initial_epoch
        self.phase = phase  # the `phase` column of a run with train.phases

    def on_train_begin(self, logs=None):
        self.rows = [r for r in self.rows if int(r["epoch"]) < self.initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        row: dict[str, Any] = {"epoch": epoch, **({} if self.phase is None else {
            "phase": self.phase}), **{k: _number(v) for k, v in (logs or {}).items()}}
        if "learning_rate" not in row:
            lr = _current_lr(self.model)
            if lr is not None:
                row["learning_rate"] = lr
        self.rows = [r for r in self.rows if int(r["epoch"]) != epoch] + [row]
        atomic_write(self.path, _to_csv(self.rows))


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``history.csv`` (numbers as floats, ``epoch`` as int)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {k: _number(v) for k, v in row.items() if v != ""}
        parsed["epoch"] = int(float(row["epoch"]))
        if "phase" in parsed:
            parsed["phase"] = int(parsed["phase"])
        out.append(parsed)
    return out


class RunCheckpoints(keras.callbacks.Callback):
    """``checkpoints/last.keras`` after every epoch and ``checkpoints/best.keras`` when the
    monitored metric improves; both written atomically, neither from non-finite weights.
    Each file records its epoch (and ``best.keras`` its monitored value) in its ``kexp.json``
    entry (``checkpoint_info``). ``best`` is the best value so far: a resumed run passes the
    value recorded in ``best.keras`` itself, so a restart never replaces the best model with
    a worse one, even if the run was killed between saving it and saving its state.

    Why not two Keras ``ModelCheckpoint``s (last and best): each would call ``model.save``,
    and a second save costs 20 ms on the MNIST network where a copy of the saved archive
    costs 1 ms; kexp's per-epoch work measured 55-65 ms with two saves and 31-37 ms with one
    save and a copy (``bench/README.md``, "Epoch end"). ``ModelCheckpoint`` also writes in
    place (a kill mid-save leaves a broken file) and cannot record the monitored value in
    the file."""

    def __init__(self, run: Run, monitor: str, mode: str = "auto",
                 best: float | None = None):
        super().__init__()
        self.run = run
        self.monitor = monitor
        self.mode = mode if mode != "auto" else ("max" if higher_is_better(monitor) else "min")
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _finite(logs) or not _weights_finite(self.model):
            return
        copies = []
        value = logs.get(self.monitor)
        if self._improves(value):
            self.best = float(value)
            copies.append((self.run.file("checkpoints/best.keras"),
                           {"epoch": epoch, "monitor": self.monitor, "value": self.best}))
        save_model(self.model, self.run.file("checkpoints/last.keras"), {"epoch": epoch},
                   copies=copies)

    def _improves(self, value: Any) -> bool:
        """Whether a logged monitor value is finite and better than the best so far."""
        if value is None or not math.isfinite(float(value)):
            return False
        value = float(value)
        return self.best is None or (value > self.best if self.mode == "max"
                                     else value < self.best)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's ``TensorBoard`` for per-epoch logs, without its per-batch cost: Keras 3.15
    calls ``summary.scalar`` for every metric at every batch end even with
    ``update_freq="epoch"``, when no writer is active and nothing is written (about 50 µs a
    batch, measured by ``make bench``). Profiling (``profile_batch``) still works."""

    def on_train_batch_end(self, batch, logs=None):
        if not private.tensorboard_epoch_only(self):
            return super().on_train_batch_end(batch, logs)
        private.write_pending_train_graph(self)


class EpochCounter(keras.callbacks.Callback):
    """Tells the one-epoch training dataset (``kexp.data.pipeline.epoch_dataset``) which
    epoch is starting, so its order is that epoch's permutation."""

    def __init__(self, variable: Any):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


def _weights_finite(model: Any) -> bool:
    import numpy as np

    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def save_model(model: Any, path: Path, info: dict[str, Any] | None = None,
               copies: Sequence[tuple[Path, dict[str, Any]]] = ()) -> None:
    """``model.save`` to a temporary file beside ``path``, then an atomic rename. ``info``
    goes into the archive as ``kexp.json`` (Keras ignores entries it does not know), so it
    can never disagree with the model it describes.

    ``copies`` are more files holding the same model, each with its own ``kexp.json`` and
    its own atomic rename: the model is saved once and copied (a copy of the MNIST network's
    3 MB archive takes 1 ms, a second ``model.save`` 20 ms).
    """
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path))
        model.save(tmp)
        files = [(tmp, info)]
        for other, other_info in copies:
            other_tmp = stack.enter_context(atomic_path(other))
            shutil.copyfile(tmp, other_tmp)
            files.append((other_tmp, other_info))
        for file, entry in files:
            if entry is not None:
                with zipfile.ZipFile(file, "a") as archive:
                    archive.writestr(_INFO_ENTRY, json.dumps(entry))


def checkpoint_info(path: Path) -> dict[str, Any] | None:
    """The ``kexp.json`` entry of a ``.keras`` file written by ``save_model`` (None when the
    file or the entry is missing or unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(_INFO_ENTRY))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or Inf loss, or at the end of an epoch that left a
    weight NaN or Inf (a ReLU can hide a NaN weight from the loss), and remembers why: the
    run is marked failed; the last checkpoint and state, saved from finite weights,
    are kept.

    Why not Keras's ``TerminateOnNaN``: it looks at ``loss`` only, never at the weights, and
    keeps no reason for run.json."""

    def __init__(self):
        super().__init__()
        self.reason: str | None = None

    def _check(self, logs: dict[str, Any] | None, where: str) -> None:
        for key, value in (logs or {}).items():
            if "loss" in key and value is not None and not math.isfinite(float(value)):
                self._stop(f"{key} became {float(value)} {where}")
                return

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.reason is None:
            self._check(logs, f"at batch {batch} of epoch {self._epoch}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.reason is None:
            self._check(logs, f"in epoch {epoch}")
        if self.reason is None:
            bad = _first_non_finite_weight(self.model)
            if bad:
                self._stop(f"weight {bad!r} became NaN or Inf in epoch {epoch}")


def _first_non_finite_weight(model: Any) -> str:
    import numpy as np

    for weight in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
            return weight.path
    return ""


class RunRecorder(keras.callbacks.Callback):
    """Keeps ``run.json`` current: epochs completed and the latest metrics (no Keras
    counterpart)."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.update(epochs_completed=epoch + 1,
                        last_metrics={k: _number(v) for k, v in (logs or {}).items()})


class Progress(keras.callbacks.Callback):
    """A Rich progress display: a live bar within each epoch on a terminal, and one line per
    epoch with every metric (the only output when not on a terminal, e.g. in CI).

    Why not Keras's progress bar (``verbose=1``): it redraws with carriage returns, which
    fill a CI log with one line per update, and it is written to stdout, where ``kexp train``
    prints only the run directory."""

    def __init__(self, epochs: int, steps: int | None, stream: Any = None):
        super().__init__()
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.epochs, self.steps = epochs, steps
        self.live = self.console.is_terminal
        self._progress = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn(f"epoch {epoch + 1}/{self.epochs}"),
                                      BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[loss]}"),
                                      console=self.console, transient=True)
            self._task = self._progress.add_task("train", total=self.steps, loss="")
            self._progress.start()

    def on_train_batch_end(self, batch, logs=None):
        if self._progress is not None:
            loss = (logs or {}).get("loss")
            self._progress.update(self._task, completed=batch + 1,
                                  loss=f"loss {float(loss):.4f}" if loss is not None else "")

    def on_epoch_end(self, epoch, logs=None):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        metrics = "  ".join(f"{k} {_fmt(v)}" for k, v in (logs or {}).items())
        seconds = time.perf_counter() - self._start
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {metrics}  ({seconds:.1f}s)",
                           soft_wrap=True)

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
