"""``kexp train``: a checked config becomes a trained model and a run directory.

Both loops share everything here — data, model, compile, callbacks, checkpoints, the run
directory; only the loop itself differs (``model.fit`` or ``fit_custom``).

Order matters for "nothing written on a config error": data is read, the model built and
checked against the data, before the run directory exists; what needs the directory (the
user's callbacks, whose relative paths land in it) is set up right after, and the directory
is removed again if that set-up fails.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kexp.config.schema import Config
from kexp.errors import KexpError, TrainingError
from kexp.runs import Run, now, versions

__all__ = ["train", "TrainOptions", "config_hash"]

SMOKE_STEPS = 2


@dataclass(frozen=True)
class TrainOptions:
    """Command-line choices that are not part of the config."""

    smoke: bool = False
    command: tuple[str, ...] = ()


def config_hash(cfg: Config) -> str:
    """A hash of the resolved config (recorded in run.json; ``--resume`` compares it)."""
    text = yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train(cfg: Config, options: TrainOptions = TrainOptions()) -> Run:
    """Train as ``cfg`` says; return the run. Prints the run directory at the end.

    Raises:
        ConfigError, DataError: before anything is written.
        TrainingError: the run failed (marked ``failed`` in run.json, with the reason).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the run is marked ``interrupted``).
    """
    from kexp.data.checks import check_against_model
    from kexp.data.load import load_data

    _seed(cfg)
    splits = load_data(cfg)
    model, adaptations = _build(cfg)
    check_against_model(splits, model)
    from kexp.models.build import adapt_layers

    adapt_layers(model, adaptations, splits.train.x)
    runs_dir = Path(cfg.runs_dir) / ("_smoke" if options.smoke else "")
    run = Run.create(runs_dir, cfg.run_name())
    try:
        job = _prepare(cfg, options, run, model, splits)
    except (KexpError, KeyboardInterrupt):
        _remove(run)
        raise
    bad = _non_finite(splits)
    if bad:
        # Some models mask a NaN (relu(NaN) is 0 on some CPUs) and would train on garbage.
        run.update(status="failed", ended=now(), reason=f"non-finite data: {bad}")
        raise TrainingError(f"training failed: non-finite data: {bad}\nrun: {run.path}")
    _fit(cfg, run, model, job)
    return run


def _non_finite(splits: Any) -> str:
    """Where the first NaN or Inf in the data is ('' when there is none)."""
    import numpy as np

    for split_name in ("train", "validation", "test"):
        split = getattr(splits, split_name)
        if split is None:
            continue
        for role, arrays in (("features", split.x), ("targets", split.y)):
            named = arrays if isinstance(arrays, dict) else {"": arrays}
            for name, array in named.items():
                if array is None or not np.issubdtype(array.dtype, np.floating):
                    continue
                rows = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
                if rows.any():
                    label = f"{role} {name!r}" if name else role
                    return (f"{split.source or split_name}: {label} of the {split_name} split "
                            f"hold a NaN or Inf at sample {int(np.argmax(rows))}")
    return ""


def _seed(cfg: Config) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def _build(cfg: Config) -> tuple[Any, list]:
    from kexp.models.build import build_model

    return build_model(cfg.model)


@dataclass
class _Job:
    train_ds: Any
    val_ds: Any
    test_ds: Any
    steps: int
    epochs: int
    callbacks: list
    guard: Any


def _prepare(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any) -> _Job:
    from kexp.data.pipeline import eval_dataset, train_dataset
    from kexp.training import callbacks as cb
    from kexp.training.compile import compile_model

    epochs = 1 if options.smoke else cfg.train.epochs
    steps = SMOKE_STEPS if options.smoke else cfg.train.steps_per_epoch
    batch = cfg.data.batch_size
    train_ds, steps = train_dataset(splits.train, batch_size=batch, seed=cfg.seed,
                                    shuffle=bool(cfg.data.shuffle), epochs=epochs,
                                    steps_per_epoch=steps)
    val_steps = SMOKE_STEPS if options.smoke else None
    val_ds = (eval_dataset(splits.validation, batch_size=batch, steps=val_steps)
              if splits.validation is not None else None)
    test_ds = (eval_dataset(splits.test, batch_size=batch, steps=val_steps)
               if splits.test is not None else None)

    user = cb.build_user_callbacks(cfg.train.callbacks, run.path)
    compile_model(model, cfg.compile, steps_per_epoch=steps,
                  every_batch=cb.needs_every_batch(user))
    _ensure_built(model, splits.train, batch)

    guard = cb.NonFiniteGuard()
    monitor = cb.resolve_monitor(cfg.train.monitor, val_ds is not None)
    standard: list = [guard, cb.HistoryCSV(run.file("history.csv"))]
    if cfg.train.tensorboard:
        import keras

        standard.append(keras.callbacks.TensorBoard(log_dir=str(run.file("logs")),
                                                    write_graph=True))
    if cfg.train.checkpoints:
        standard.append(cb.RunCheckpoints(run, monitor, cfg.train.mode))
    standard.append(cb.RunRecorder(run))
    if cfg.train.progress:
        standard.append(cb.Progress(epochs, steps))

    from kexp.models.inspect import summary_text

    run.write_yaml("config.yaml", cfg.to_yaml_dict())
    run.write_text("summary.txt", summary_text(model) + "\n")
    run.write_json("run.json", {
        "name": cfg.run_name(),
        "status": "running",
        "started": now(),
        "command": list(options.command),
        "config_file": str(cfg.file) if cfg.file else None,
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "loop": cfg.train.loop,
        "smoke": options.smoke,
        "epochs": epochs,
        "monitor": monitor,
        "plugins": list(cfg.plugins),
        "versions": versions(),
        "epochs_completed": 0,
    })
    return _Job(train_ds, val_ds, test_ds, steps, epochs, user + standard, guard)


def _ensure_built(model: Any, split: Any, batch: int) -> None:
    """A model without declared input shapes gets its weights from one batch, as ``fit``
    would, so its summary is complete before training."""
    if model.built and getattr(model, "inputs", None) is not None:
        return
    import numpy as np

    from kexp.data.splits import take

    first = take(split, np.arange(min(batch, len(split))))
    model(first.x, training=False)


def _fit(cfg: Config, run: Run, model: Any, job: _Job) -> None:
    started = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            history = _loop(cfg, model, job)
    except KeyboardInterrupt:
        run.update(status="interrupted", ended=now(), reason="interrupted (Ctrl-C or SIGTERM)",
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        run.update(status="failed", ended=now(), reason=reason,
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise TrainingError(f"training failed: {reason}\nrun: {run.path}") from exc
    if job.guard.reason:
        reason = f"non-finite loss: {job.guard.reason}"
        run.update(status="failed", ended=now(), reason=reason,
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise TrainingError(f"training failed: {reason}; the last finite checkpoint is kept\n"
                            f"run: {run.path}")
    _finish(run, model, job, history, time.perf_counter() - started)


def _loop(cfg: Config, model: Any, job: _Job) -> Any:
    kwargs = dict(epochs=job.epochs, steps_per_epoch=job.steps, validation_data=job.val_ds,
                  callbacks=job.callbacks)
    if cfg.train.loop == "custom":
        from kexp.training.custom_loop import fit_custom

        return fit_custom(model, job.train_ds, compile_mode=cfg.train.compile_mode, **kwargs)
    return model.fit(job.train_ds, verbose=0, shuffle=False, **kwargs)


def _finish(run: Run, model: Any, job: _Job, history: Any, seconds: float) -> None:
    from kexp.training.callbacks import save_model

    save_model(model, run.file("model.keras"))
    last = {k: float(v[-1]) for k, v in history.history.items() if v}
    metrics = {
        "train": {k: v for k, v in last.items() if not k.startswith("val_")},
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
    }
    if job.test_ds is not None:
        result = model.evaluate(job.test_ds, verbose=0, return_dict=True)
        metrics["test"] = {k: float(v) for k, v in result.items()}
    run.write_json("metrics.json", metrics)
    run.update(status="completed", ended=now(), duration_seconds=round(seconds, 3),
               final_metrics=metrics, epochs_completed=len(history.epoch))


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job) is handled like Ctrl-C: state is kept and the
    run marked interrupted."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    if sys.platform == "win32":
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove(run: Run) -> None:
    shutil.rmtree(run.path, ignore_errors=True)
    parent = run.path.parent
    if parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
