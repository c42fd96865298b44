"""Resuming a run: the state saved after every epoch, and putting it back.

After every epoch whose loss and weights are finite, ``RunState`` (the last callback of every
run) saves one *state set*, ``<run>/state/epoch-<k>/``, where ``k`` is the number of epochs
completed -- the epoch a resumed run starts at:

- ``variables.npz``: the model's variables (weights, and the ``SeedGenerator`` states of
  ``Dropout`` and other random layers), the optimizer's (iterations, learning rate, slots),
  callbacks' arrays (``EarlyStopping``'s best weights), NumPy's, Keras's and TensorFlow's
  generator states.
- ``state.json``: format, epoch, whether training had stopped, Python's ``random`` state,
  each callback's counters and best value, the path, shape and dtype of every saved
  variable, the SHA-256 of ``variables.npz``.

Both files are written into a hidden temporary directory and fsynced; renaming the directory
to ``epoch-<k>`` commits the set, so a kill at any moment leaves the previous set current.
The two newest sets are kept. ``load_state`` returns the newest set that verifies (it parses
and its checksum matches) and warns about each newer one that does not.

The data position needs no saving: epoch ``e``'s batches depend only on ``(seed, e)``
(``kexp.data.pipeline``). kexp's own callbacks keep their state in the run directory
(``history.csv``; the monitored value recorded inside ``best.keras``). Other callbacks' state
is saved by attribute name: ``best``, ``wait``, ``stopped_epoch``, ``best_epoch``,
``best_weights``, ``cooldown_counter`` -- ``EarlyStopping``, ``ReduceLROnPlateau``,
``ModelCheckpoint`` and plugin callbacks that use Keras's names -- and ``TensorBoard``'s
batch counters. Keras's ``CSVLogger`` gets its rows of the epochs being redone removed.

Not restorable: TensorFlow's stateful random ops used without a generator
(``tf.random.uniform`` with no seed keeps its position inside the op's kernel). Keras layers
do not use them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kexp.config.schema import Config
from kexp.errors import KexpError
from kexp.runs import (
    Run,
    RunRecord,
    atomic_write,
    clean_temporaries,
    config_hash,
    fsync_dir,
    now,
    read_record,
)
from kexp.training import _keras_private as private

__all__ = [
    "ResumeError",
    "SavedState",
    "ResumePlan",
    "RunState",
    "STATE_DIR",
    "KEEP",
    "plan_resume",
    "start_epoch",
    "save_state",
    "load_state",
    "restore_state",
    "state_sets",
    "rewind_csv_loggers",
    "after_earlier_logs",
]

STATE_DIR = "state"
KEEP = 2  # state sets kept: the newest, and one to fall back to if it is damaged
FORMAT = 1

_SET_NAME = re.compile(r"^epoch-(\d+)$")
_EPOCHS_KEY = re.compile(r"train\.epochs|train\.phases\[\d+\]\.epochs")  # --resume --set
_EVENT_FILE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")
_NPZ = "variables.npz"
_JSON = "state.json"
# Callback attributes saved by name (Keras's MonitorCallback family, TensorBoard's counters).
_COUNTERS = ("best", "wait", "stopped_epoch", "best_epoch", "cooldown_counter",
             *private.CALLBACK_COUNTERS)
_ARRAY_LISTS = ("best_weights",)
_MISSING = object()


class ResumeError(KexpError):
    """A run that cannot be resumed: completed, changed, still training, or non-finite."""


@dataclass
class SavedState:
    """One verified state set, read into memory."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def epoch(self) -> int:
        """Epochs completed when it was saved: the epoch a resumed run starts at."""
        return int(self.meta["epoch"])

    @property
    def stopped(self) -> bool:
        """Whether a callback (e.g. ``EarlyStopping``) had stopped training."""
        return bool(self.meta.get("stopped"))

    def non_finite(self) -> str:
        """The first saved model or optimizer variable holding a NaN or Inf ('' if none)."""
        for group in ("model", "optimizer"):
            for i, spec in enumerate(self.meta["variables"][group]):
                value = self.arrays[f"{group}.{i}"]
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    return f"{group} variable {spec['path']!r}"
        return ""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --- Saving ------------------------------------------------------------------------------


def save_state(run_dir: Path, *, epoch: int, model: keras.Model,
               callbacks: Sequence[keras.callbacks.Callback], stopped: bool) -> Path | None:
    """Save the state after ``epoch`` completed epochs as ``<run_dir>/state/epoch-<epoch>``.

    Returns the set's path, or None when a model or optimizer variable is not finite (a
    run is never resumed from such weights; the previous set stays the newest).
    """
    arrays, meta = _capture(model, callbacks)
    meta.update(format=FORMAT, epoch=epoch, stopped=stopped, saved=now())
    if SavedState(Path(), meta, arrays).non_finite():
        return None
    state_dir = Path(run_dir) / STATE_DIR
    path = _commit(state_dir, f"epoch-{epoch:04d}", arrays, meta)
    for old in state_sets(run_dir)[:-KEEP]:
        _discard(old)
    return path


def _capture(model: keras.Model, callbacks: Sequence[keras.callbacks.Callback]
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"variables": {}, "callbacks": [], "rng": {}}
    for group, variables in _variable_groups(model):
        specs = []
        for i, variable in enumerate(variables):
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            arrays[f"{group}.{i}"] = value
            specs.append({"path": variable.path, "shape": list(value.shape),
                          "dtype": str(value.dtype)})
        meta["variables"][group] = specs
    for i, callback in enumerate(callbacks):
        state, lists = _callback_state(callback)
        for name, values in lists.items():
            state[name] = len(values)
            arrays.update({f"callback{i}.{name}.{j}": v for j, v in enumerate(values)})
        meta["callbacks"].append({"class": type(callback).__name__, "state": state})
    _capture_rng(arrays, meta["rng"])
    return arrays, meta


def _variable_groups(model: keras.Model) -> list[tuple[str, list]]:
    # `model.variables`, unlike `model.weights` (and unlike what a .keras file holds),
    # includes the SeedGenerator states that make dropout continue where it was.
    optimizer = getattr(model, "optimizer", None)
    return [("model", list(model.variables)),
            ("optimizer", list(optimizer.variables) if optimizer is not None else [])]


def _callback_state(callback: keras.callbacks.Callback
                    ) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """The counters and arrays of a callback that is not kexp's own."""
    if type(callback).__module__.startswith("kexp."):
        return {}, {}
    state: dict[str, Any] = {}
    for name in _COUNTERS:
        value = _scalar(getattr(callback, name, _MISSING))
        if value is not _MISSING:
            state[name] = value
    lists: dict[str, list[np.ndarray]] = {}
    for name in _ARRAY_LISTS:
        value = getattr(callback, name, _MISSING)
        if isinstance(value, list | tuple):
            lists[name] = [np.asarray(keras.ops.convert_to_numpy(v)) for v in value]
        elif value is None:
            state[name] = None
    return state, lists


def _scalar(value: Any) -> Any:
    """A JSON scalar for ``value``, or ``_MISSING`` when it is not a scalar."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if value is _MISSING or not hasattr(value, "shape") or tuple(value.shape) != ():
        return _MISSING
    number = np.asarray(keras.ops.convert_to_numpy(value)).item()
    return number if isinstance(number, int | float) else _MISSING


def _capture_rng(arrays: dict[str, np.ndarray], rng: dict[str, Any]) -> None:
    version, internal, gauss = random.getstate()
    rng["python"] = [version, list(internal), gauss]
    _, keys, pos, has_gauss, cached = np.random.get_state()
    arrays["rng.numpy"] = np.asarray(keys)
    rng["numpy"] = {"pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(cached)}
    keras_generator = private.keras_global_generator()
    if keras_generator is not None:
        arrays["rng.keras"] = np.asarray(keras.ops.convert_to_numpy(keras_generator.state))
    tf_generator = private.tf_global_generator()
    if tf_generator is not None:
        arrays["rng.tensorflow"] = tf_generator.state.numpy()
        rng["tensorflow_algorithm"] = int(tf_generator.algorithm)


def _commit(state_dir: Path, name: str, arrays: dict[str, np.ndarray],
            meta: dict[str, Any]) -> Path:
    """Write a set into a temporary directory, fsync it, and rename it into place."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=state_dir))
    try:
        with open(tmp / _NPZ, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta["sha256"] = {_NPZ: _sha256(tmp / _NPZ)}
        with open(tmp / _JSON, "w", encoding="utf-8") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        final = state_dir / name
        if final.exists():  # left by an attempt that was lost: this one replaces it
            _discard(final)
        os.rename(tmp, final)
        fsync_dir(state_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _discard(path: Path) -> None:
    """Remove a set: renamed out of the way first, so a kill mid-removal leaves no half set
    under a set's name."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Loading -----------------------------------------------------------------------------


class _Unusable(Exception):
    """A state set that does not parse or does not match its checksum."""


def state_sets(run_dir: Path) -> list[Path]:
    """The committed state sets of a run, oldest first."""
    state_dir = Path(run_dir) / STATE_DIR
    if not state_dir.is_dir():
        return []
    sets = [p for p in state_dir.iterdir() if p.is_dir() and _SET_NAME.match(p.name)]
    return sorted(sets, key=lambda p: int(_SET_NAME.match(p.name).group(1)))


def load_state(run_dir: Path, warn: Callable[[str], None] = _warn) -> SavedState | None:
    """The newest state set that verifies, or None when there is none. Each newer set that
    does not verify (truncated, corrupt) is reported through ``warn`` and skipped."""
    for path in reversed(state_sets(run_dir)):
        try:
            return _read(path)
        except _Unusable as exc:
            warn(f"the saved state {path} is unusable ({exc}); falling back to an older one")
    return None


def _read(path: Path) -> SavedState:
    try:
        meta = json.loads((path / _JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _Unusable(f"{_JSON}: {exc}") from None
    if (not isinstance(meta, dict) or meta.get("format") != FORMAT
            or not isinstance(meta.get("epoch"), int)):
        raise _Unusable(f"{_JSON} is not a kexp state of format {FORMAT}")
    try:
        digest = _sha256(path / _NPZ)
    except OSError as exc:
        raise _Unusable(f"{_NPZ}: {exc}") from None
    if digest != (meta.get("sha256") or {}).get(_NPZ):
        raise _Unusable(f"{_NPZ} does not match its checksum")
    try:
        with np.load(path / _NPZ, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _Unusable(f"{_NPZ}: {exc}") from None
    return SavedState(path, meta, arrays)


# --- Restoring ---------------------------------------------------------------------------


def restore_state(saved: SavedState, model: keras.Model,
                  callbacks: Sequence[keras.callbacks.Callback], model_only: bool = False) -> None:
    """Put a saved state back: variables, optimizer, callbacks, then the random generators.
    ``model_only``: the model's variables and the generators, not the optimizer and the
    callbacks (a training phase that begins with new ones, ``kexp.training.phases``).

    The model must be built and compiled as when it was saved (same config).

    Raises:
        ResumeError: the model's variables do not match the saved ones.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    for group, variables in _variable_groups(model)[:1 if model_only else None]:
        _assign(saved, group, variables)
    if not model_only:
        _restore_callbacks(saved, callbacks)
    # Last: nothing after this point may draw a random number before the next epoch.
    _restore_rng(saved)


def _assign(saved: SavedState, group: str, variables: list) -> None:
    specs = saved.meta["variables"][group]
    if len(specs) != len(variables):
        raise ResumeError(
            f"cannot resume from {saved.path}: it holds {len(specs)} {group} variables, the "
            f"{group} built from config.yaml has {len(variables)}")
    for i, (variable, spec) in enumerate(zip(variables, specs, strict=True)):
        value = saved.arrays[f"{group}.{i}"]
        if tuple(variable.shape) != value.shape:
            raise ResumeError(
                f"cannot resume from {saved.path}: {group} variable {spec['path']!r} has shape "
                f"{list(value.shape)} there and {list(variable.shape)} in the rebuilt {group}")
        variable.assign(value)


def _restore_callbacks(saved: SavedState, callbacks: Sequence[keras.callbacks.Callback]) -> None:
    entries = saved.meta["callbacks"]
    for i, (callback, entry) in enumerate(zip(callbacks, entries, strict=False)):
        if type(callback).__name__ != entry["class"]:
            _warn(f"callback {i} is a {type(callback).__name__} now and was a "
                  f"{entry['class']} when {saved.path} was saved; its state is not restored")
            continue
        for name, value in entry["state"].items():
            if name in _ARRAY_LISTS and value is not None:
                value = [saved.arrays[f"callback{i}.{name}.{j}"] for j in range(value)]
            setattr(callback, name, value)


def _restore_rng(saved: SavedState) -> None:
    rng, arrays = saved.meta["rng"], saved.arrays
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = rng["numpy"]
    np.random.set_state(("MT19937", arrays["rng.numpy"], numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    # None: not created yet when saved; it will be, from Python's (restored) generator.
    private.reset_keras_global_generator(arrays.get("rng.keras"))
    if "rng.tensorflow" in arrays:
        import tensorflow as tf

        state, algorithm = arrays["rng.tensorflow"], rng["tensorflow_algorithm"]
        # Not get_global_generator(): under op determinism it refuses to create one.
        generator = private.tf_global_generator()
        if generator is not None and int(generator.algorithm) == algorithm:
            generator.reset(state)
        else:
            tf.random.set_global_generator(tf.random.Generator.from_state(state, algorithm))


def _discard_after(run_dir: Path, epoch: int) -> None:
    """Before continuing at ``epoch``: remove what killed processes left (temporary files
    and directories) and any set newer than ``epoch`` (unusable, or from a lost future)."""
    clean_temporaries(run_dir)
    state_dir = Path(run_dir) / STATE_DIR
    if state_dir.is_dir():
        for path in state_dir.iterdir():
            if path.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(path, ignore_errors=True)
    for path in state_sets(run_dir):
        if int(_SET_NAME.match(path.name).group(1)) > epoch:
            _discard(path)


class RunState(keras.callbacks.Callback):
    """Saves the run's state at the end of every epoch; on a resumed run, puts the saved
    state back before the first epoch. It must be the last callback: it saves what the
    others updated in ``on_epoch_end`` and restores after they reset in ``on_train_begin``.

    Args:
        run_dir: the run directory.
        callbacks: every other callback of the run, in order.
        guard: the run's ``NonFiniteGuard``: no state is saved once it has tripped.
        start: the epoch a resumed run starts at (None for a new run).
        saved: the state to restore (None: a resumed run starting over at epoch 0).
        model_only: restore the model and the random generators only (a phase's first
            epoch: its optimizer and callbacks are new).
    """

    def __init__(self, run_dir: Path, callbacks: Sequence[keras.callbacks.Callback],
                 guard: Any = None, start: int | None = None, saved: SavedState | None = None,
                 model_only: bool = False):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.guard = guard
        self.start = start
        self.saved = saved
        self.model_only = model_only

    def on_train_begin(self, logs=None):
        if self.start is None:
            return
        _discard_after(self.run_dir, self.start)
        if self.saved is not None:
            restore_state(self.saved, self.model, self.callbacks, self.model_only)
        _mark_tensorboard_restart(self.callbacks, self.start)

    def on_epoch_end(self, epoch, logs=None):
        if (self.guard is not None and self.guard.reason) or not _finite_losses(logs):
            return
        # What TensorBoard wrote for this epoch reaches the disk before the state does.
        _flush_tensorboard(self.callbacks)
        save_state(self.run_dir, epoch=epoch + 1, model=self.model, callbacks=self.callbacks,
                   stopped=bool(self.model.stop_training))


def _finite_losses(logs: dict[str, Any] | None) -> bool:
    return all(math.isfinite(float(v)) for k, v in (logs or {}).items()
               if "loss" in k and v is not None)


def _flush_tensorboard(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.TensorBoard):
            for writer in private.tensorboard_writers(callback):
                writer.flush()


def _mark_tensorboard_restart(callbacks: Sequence[keras.callbacks.Callback], step: int) -> None:
    """Write a restart marker at ``step`` into each TensorBoard log directory: it tells
    TensorBoard to drop what an earlier process logged at ``step`` or later (epochs that are
    being redone)."""
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.TensorBoard):
            for writer in private.tensorboard_writers(callback, created_only=False):
                private.import_restart_event(writer, step, time.time())


def after_earlier_logs(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Wait, if needed, until the clock is past the second in the name of every TensorBoard
    event file already in the logs (``events.out.tfevents.<seconds>.<host>.<pid>...``).
    TensorBoard reads a directory's files in name order: the files a resumed process writes
    must sort after the earlier process's, or its restart marker would be read first. Only a
    resume within a second of the earlier process's start ever waits."""
    stamps = [int(m.group(1)) for callback in callbacks
              if isinstance(callback, keras.callbacks.TensorBoard)
              for path in Path(callback.log_dir).rglob("events.out.tfevents.*")
              if (m := _EVENT_FILE.match(path.name))]
    if stamps:
        time.sleep(max(0.0, max(stamps) + 1 - time.time()))


def rewind_csv_loggers(callbacks: Sequence[keras.callbacks.Callback], epoch: int) -> None:
    """Keras's ``CSVLogger`` truncates its file on a restart (or, with ``append``, repeats
    epochs): keep its rows of the epochs before ``epoch`` and append after them."""
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.CSVLogger):
            continue
        path = Path(callback.filename)
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f, delimiter=callback.sep))
            if rows:
                header = rows[0]
                kept = [r for r in rows[1:] if len(r) == len(header)
                        and _epoch_of(r, header) is not None and _epoch_of(r, header) < epoch]
                out = io.StringIO()
                csv.writer(out, delimiter=callback.sep, lineterminator="\n").writerows(
                    [header, *kept])
                atomic_write(path, out.getvalue())
        callback.append = True


def _epoch_of(row: list[str], header: list[str]) -> int | None:
    try:
        return int(float(row[header.index("epoch")]))
    except ValueError:
        return None


# --- Deciding whether and where to resume ------------------------------------------------


@dataclass
class ResumePlan:
    """A run that passed the checks that need no saved state."""

    run: Run
    cfg: Config
    record: RunRecord
    extended: bool  # `--set train.epochs=N` changed the number of epochs


def plan_resume(path: Path, sets: Sequence[str] = ()) -> ResumePlan:
    """Check that ``path`` is a run that may be resumed, and load its config.

    The config is the run's own ``config.yaml`` (its plugins are named in it); its hash must
    match the one recorded in ``run.json`` when the run started. The only override allowed is
    ``train.epochs=N``, to give the run more (or fewer) epochs.

    Raises:
        ResumeError: not a run directory, another override, an edited config, a completed
            run without more epochs.
        ConfigError: the config no longer loads (a plugin is missing, say).
    """
    from kexp.config import load_config
    from kexp.runs import resolve_run_dir

    run_dir = resolve_run_dir(Path(path))
    record = read_record(run_dir) if run_dir is not None else None
    if record is None or not (run_dir / "config.yaml").is_file():
        raise ResumeError(f"cannot resume {path}: not a run directory (no run.json and "
                          "config.yaml in it)")
    others = [s for s in sets if not _EPOCHS_KEY.fullmatch(s.split("=", 1)[0].strip())]
    if others:
        raise ResumeError(
            f"cannot resume {run_dir} with --set {others[0]}: a resumed run continues with "
            "its own config.yaml; the one change allowed is --set train.epochs=N (with "
            "train.phases: --set train.phases[I].epochs=N)")
    cfg = load_config(run_dir / "config.yaml")
    recorded, current = record.config_hash, config_hash(cfg.to_yaml_dict())
    if current != recorded:
        raise ResumeError(
            f"cannot resume {run_dir}: its config.yaml no longer matches the config it was "
            f"trained with (hash {current}, run.json records {recorded}). Restore the "
            f"file, or start a new run: kexp train {run_dir / 'config.yaml'}")
    extended = False
    if sets:
        cfg = load_config(run_dir / "config.yaml", list(sets))
        extended = cfg.train.epochs != record.epochs
        if extended and record.smoke:
            raise ResumeError(f"cannot resume {run_dir} with more epochs: it is a --smoke run")
    if record.status == "completed" and not extended:
        raise ResumeError(
            f"cannot resume {run_dir}: it is completed ({record.epochs_completed} epochs). "
            f"To train it further: kexp train --resume {run_dir} --set train.epochs=N")
    return ResumePlan(Run(run_dir), cfg, record, extended)


def start_epoch(plan: ResumePlan, saved: SavedState | None) -> int:
    """The epoch to resume at, after checking the saved state can be continued from.

    Raises:
        ResumeError: the state holds NaN or Inf, or ``train.epochs`` leaves nothing to train.
    """
    run_dir = plan.run.path
    if saved is None:
        if state_sets(run_dir):
            _warn(f"no usable saved state in {run_dir / STATE_DIR}; starting over at epoch 0")
        return 0
    bad = saved.non_finite()
    if bad:
        raise ResumeError(f"cannot resume {run_dir}: the saved state {saved.path} holds NaN "
                          f"or Inf in {bad}; start a new run instead")
    if plan.extended and plan.cfg.train.epochs <= saved.epoch:
        raise ResumeError(f"cannot resume {run_dir} with train.epochs={plan.cfg.train.epochs}: "
                          f"it has already completed {saved.epoch} epochs")
    return saved.epoch
