"""``kexp train``: a checked config becomes a trained model and a run directory.

Both loops share everything here — data, model, compile, callbacks, checkpoints, the run
directory; only the loop itself differs (``model.fit`` or ``fit_custom``).

Order matters for "nothing written on a config error": data is read, the model built and
checked against the data, before the run directory exists; what needs the directory (the
user's callbacks, whose relative paths land in it) is set up right after, and the directory
is removed again if that set-up fails.

``resume`` continues a run in its own directory from its newest saved state
(``kexp.training.resume``): the same data, model and compile steps, then ``fit`` /
``fit_custom`` from the saved epoch with the state put back by the ``RunState`` callback.
A process holds the run's lock (``Run.lock``) while it trains it.

Distribution (``distribute.strategy``, ``kexp.distribute``): the strategy is created right
after seeding, before any tensor; data, model and compile happen under its scope.
``data.batch_size`` is the global batch. ``fit`` gets undistributed datasets (Keras distributes
them under ``mirrored``); ``fit_custom`` gets the strategy and runs its steps with
``strategy.run``. The default strategy takes none of these paths.

Under ``multi_worker`` every worker runs the same code, callbacks included, because reading
a metric is a cross-worker collective; only the chief (worker 0) writes the run directory.
The other workers write the same files into a private temporary copy, removed when they
finish. A fresh run's directory is created by the chief alone; on ``--resume RUN_DIR`` every
worker is given the same path (a shared filesystem) and the others copy what they need from
it. A SIGTERM to any worker saves every worker's state at the same step into
``<run>/checkpoints/preemption`` (chief only) and stops them all with exit code 130; the run
is marked ``interrupted``, and ``--resume`` continues at that step: the per-epoch state sets
restore the callbacks, the pre-emption checkpoint the weights, optimizer and step.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kexp.config.schema import Config
from kexp.errors import ConfigError, Problem, TrainingError, error_line
from kexp.output import notice, quiet
from kexp.runs import Run, now, versions

__all__ = ["train", "resume", "TrainOptions", "config_hash"]

SMOKE_STEPS = 2


@dataclass(frozen=True)
class TrainOptions:
    """Command-line choices that are not part of the config."""

    smoke: bool = False
    command: tuple[str, ...] = ()
    # A sweep's trial (``kexp.sweep.trial``): its exact run directory, what run.json says
    # about the sweep, and the callback that reports to the study.
    run_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    callbacks: tuple[Any, ...] = ()


def config_hash(cfg: Config) -> str:
    """A hash of the resolved config (recorded in run.json; ``--resume`` compares it)."""
    text = yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train(cfg: Config, options: TrainOptions = TrainOptions()) -> Run:
    """Train as ``cfg`` says; return the run.

    Raises:
        ConfigError, DataError: before anything is written.
        TrainingError: the run failed (marked ``failed`` in run.json, with the reason).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the run is marked ``interrupted``).
    """
    _seed(cfg)
    strategy = _start_strategy(cfg)
    with _scope(strategy):
        splits, model = _data_and_model(cfg)
        runs_dir = Path(cfg.runs_dir) / ("_smoke" if options.smoke else "")
        chief = _is_chief(cfg)
        # The directory appears with its config and run.json, or not at all: a kill at any
        # moment leaves nothing or a run that `--resume` continues.
        def populate(new: Run) -> None:
            _record_start(cfg, options, new, model, splits, strategy)

        run = (Run.at(options.run_dir, populate) if options.run_dir is not None and chief else
               Run.create(runs_dir if chief else _private_dir(), cfg.run_name(), populate))
        try:
            try:
                job = _prepare(cfg, options, run, model, splits, strategy=strategy)
            except BaseException:  # nothing half-written is left behind
                _remove(run)
                raise
            _announce(cfg, run, chief)
            _check_data_and_fit(cfg, run, model, splits, job)
        finally:
            run.unlock()
            if not chief:
                _remove_private(run)
    return run


def resume(path: Path, sets: Sequence[str] = (), command: Sequence[str] = (),
           callbacks: Sequence[Any] = ()) -> Run:
    """Continue an interrupted, killed or failed run from its newest saved state
    (``kexp train --resume RUN_DIR``); return the run.

    The run's own ``config.yaml`` is used (``sets`` may only change ``train.epochs``, e.g. to
    extend a completed run). Training restarts at the first epoch that was not saved, with
    the weights, optimizer, random generators and callback state of the end of the one
    before; with ``deterministic: true`` the result is bit-identical to an uninterrupted run.

    Raises:
        ResumeError: the run cannot be resumed (completed, config changed, still being
            trained by another process, non-finite saved weights); nothing is written.
        TrainingError, KeyboardInterrupt: as ``train``.
    """
    from kexp.training import resume as rs

    plan = rs.plan_resume(Path(path), sets)
    cfg = plan.cfg
    chief = _is_chief(cfg)
    # Other workers train a private copy: the same callbacks, state and history, no writes here.
    run = plan.run if chief else _private_copy(plan.run)
    if not run.lock():
        raise rs.ResumeError(f"cannot resume {run.path}: another process is training it "
                             f"(it holds {run.file('.lock')})")
    try:
        saved = rs.load_state(run.path)
        start = rs.start_epoch(plan, saved)
        options = TrainOptions(smoke=bool(plan.info.get("smoke")), command=tuple(command),
                               callbacks=tuple(callbacks))
        _seed(cfg)
        strategy = _start_strategy(cfg)
        with _scope(strategy):
            splits, model = _data_and_model(cfg)
            job = _prepare(cfg, options, run, model, splits, strategy=strategy,
                           resumed=_Resumed(start, saved, plan.extended), source=plan.run)
            _record_resume(cfg, options, run, plan, job)
            at_step = (f", step {job.dist.initial_step}"
                       if job.dist is not None and job.dist.initial_step else "")
            notice(f"resuming {plan.run.path} at epoch {start}{at_step} of {job.epochs}"
                   + (f" (from {saved.path.name})" if saved else ""))
            _check_data_and_fit(cfg, run, model, splits, job)
    finally:
        run.unlock()
        if not chief:
            _remove_private(run)
    return plan.run


# --------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class _Distributed:
    """How a run is distributed: the strategy, and for ``multi_worker`` with the custom loop
    the pre-emption checkpoint directory, whether to restore it, and the batch of the first
    epoch it resumes at."""

    strategy: Any
    preemption_dir: str | None = None
    restore: bool = False
    initial_step: int = 0


def _start_strategy(cfg: Config) -> Any:
    """The config's strategy (None for the default one), created before any tensor exists."""
    spec = cfg.distribute
    if spec.strategy == "default":
        return None
    from kexp import distribute

    strategy = distribute.make_strategy(spec.strategy, spec.devices, spec.communication)
    if spec.strategy == "multi_worker":
        index, count = distribute.worker_index(), distribute.num_workers()
        role = " (chief)" if distribute.is_chief() else ""
        notice(f"worker {index} of {count}{role}, {strategy.num_replicas_in_sync} replicas")
    return strategy


def _scope(strategy: Any) -> Any:
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _is_chief(cfg: Config) -> bool:
    if cfg.distribute.strategy != "multi_worker":
        return True
    from kexp.distribute import is_chief

    return is_chief()


def _private_dir() -> Path:
    from kexp.distribute import worker_index

    return Path(tempfile.mkdtemp(prefix=f"kexp-worker{worker_index()}-"))


def _private_copy(run: Run) -> Run:
    """A non-chief worker's copy of the run it resumes (not the TensorBoard logs, the
    pre-emption checkpoints or the lock: every worker reads those from the run itself)."""
    copy = _private_dir() / run.path.parent.name / run.path.name
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns(".lock", "logs",
                                                                 "preemption", ".*.tmp*"))
    return Run(copy)


def _remove_private(run: Run) -> None:
    """Remove a non-chief worker's ``<tmp>/<name>/<run>``."""
    shutil.rmtree(run.path.parent.parent, ignore_errors=True)


def _announce(cfg: Config, run: Run, chief: bool) -> None:
    """Under multi_worker, where the run goes (the user needs it to resume after a
    pre-emption)."""
    if cfg.distribute.strategy == "multi_worker" and chief:
        print(f"run directory: {run.path}", file=sys.stderr, flush=True)


def _distributed(cfg: Config, strategy: Any, run: Run, source: Run | None, steps: int,
                 start: int, resumed: bool) -> _Distributed | None:
    if strategy is None:
        return None
    if cfg.distribute.strategy != "multi_worker" or cfg.train.loop != "custom":
        return _Distributed(strategy)
    from kexp.distribute import preempted_step

    directory = str((source or run).file("checkpoints/preemption"))
    step = preempted_step(directory) if resumed else None
    # Usable when it lies in the epoch the state sets resume at; older is stale.
    if step is None or not start * steps <= step < (start + 1) * steps:
        return _Distributed(strategy, directory)
    return _Distributed(strategy, directory, restore=True, initial_step=step - start * steps)


def _cluster(cfg: Config, strategy: Any) -> dict[str, Any]:
    from kexp import distribute

    cluster: dict[str, Any] = {"strategy": cfg.distribute.strategy,
                               "replicas": strategy.num_replicas_in_sync}
    if cfg.distribute.strategy == "multi_worker":
        cluster["num_workers"] = distribute.num_workers()
        cluster["workers"] = distribute.worker_addresses()
    return cluster


def _data_and_model(cfg: Config) -> tuple[Any, Any]:
    """The data splits, and the model built, checked against them and adapted."""
    from kexp.data.checks import check_against_model
    from kexp.data.load import load_data
    from kexp.data.stream import adapt_source
    from kexp.models.build import adapt_layers
    from kexp.training.threads import configure_threads

    splits = load_data(cfg)
    configure_threads(cfg.train.threads, cfg.data.batch_size, splits.train.x)
    model, adaptations = _build(cfg)
    check_against_model(splits, model)
    # Layers on the raw input adapt first: a TextVectorization's output size (and so the
    # next layer's weights) is known only once it has a vocabulary.
    on_input = [a for a in adaptations if a.source is None]
    adapt_layers(model, on_input, adapt_source(splits.train))
    _ensure_built(cfg, model, splits.train)
    adapt_layers(model, [a for a in adaptations if a.source is not None],
                 adapt_source(splits.train))
    return splits, model


def _check_data_and_fit(cfg: Config, run: Run, model: Any, splits: Any, job: _Job) -> None:
    from kexp.curves import draw_run_curves_at_end, warm_up

    warm_up()
    try:
        bad = _non_finite(splits)
        if bad:
            # Some models mask a NaN (relu(NaN) is 0 on some CPUs) and would train on garbage.
            run.update(status="failed", ended=now(), reason=f"non-finite data: {bad}")
            raise TrainingError(f"training failed: non-finite data: {bad}\nrun: {run.path}")
        _fit(cfg, run, model, job)
    finally:  # completed, failed or interrupted: whatever epochs exist
        draw_run_curves_at_end(run.path)


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
    from kexp._tf import import_tensorflow
    from kexp.training.threads import configure_threads

    tf = import_tensorflow()
    import keras

    # First: TensorFlow's thread pools can only be sized before its runtime starts.
    configure_threads(cfg.train.threads, cfg.data.batch_size)

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def _build(cfg: Config) -> tuple[Any, list]:
    from kexp.models.build import build_model

    return build_model(cfg.model)


@dataclass(frozen=True)
class _Resumed:
    """Where a resumed run starts: the epoch, the state to restore (None: epoch 0), and
    whether ``train.epochs`` was changed."""

    start: int
    saved: Any
    extended: bool


@dataclass
class _Job:
    train_ds: Any
    val_ds: Any
    test_ds: Any
    steps: int
    epochs: int
    callbacks: list
    guard: Any
    monitor: str
    start: int = 0
    # Nothing left to train (resumed after the last epoch, or after a callback stopped
    # training): the callbacks only begin and end, so the saved state is restored.
    finished: bool = False
    dist: _Distributed | None = None
    fit_steps: int | None = None  # steps_per_epoch for model.fit (None: a one-epoch dataset)


def _prepare(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any,
             resumed: _Resumed | None = None, strategy: Any = None,
             source: Run | None = None) -> _Job:
    from kexp.data.pipeline import eval_dataset, train_dataset
    from kexp.training import callbacks as cb
    from kexp.training.compile import compile_model
    from kexp.training.resume import RunState, after_earlier_logs, rewind_csv_loggers

    start = resumed.start if resumed else 0
    epochs = _planned_epochs(cfg, options)
    steps = SMOKE_STEPS if options.smoke else cfg.train.steps_per_epoch
    batch = cfg.data.batch_size
    # `fit` on one process reads a one-epoch dataset (a new iterator each epoch), so it may
    # run up to 32 steps per call whatever the epoch's length; everything else reads one
    # dataset through every epoch. Both give epoch e the same batches.
    per_epoch = (cfg.train.loop == "fit" and strategy is None and steps is None)
    counter = None
    if per_epoch:
        import tensorflow as tf

        from kexp.data.pipeline import epoch_dataset

        epoch_var = tf.Variable(start, dtype=tf.int64, trainable=False, name="kexp_epoch")
        train_ds, steps = epoch_dataset(splits.train, batch_size=batch, seed=cfg.seed,
                                        epoch=epoch_var, shuffle=bool(cfg.data.shuffle))
        counter = cb.EpochCounter(epoch_var)
    else:
        train_ds, steps = train_dataset(splits.train, batch_size=batch, seed=cfg.seed,
                                        shuffle=bool(cfg.data.shuffle), epochs=epochs,
                                        initial_epoch=min(start, epochs), steps_per_epoch=steps)
    dist = _distributed(cfg, strategy, run, source, steps, start, bool(resumed))
    if dist is not None and dist.initial_step:
        train_ds = train_ds.skip(dist.initial_step)
    val_steps = SMOKE_STEPS if options.smoke else None
    val_ds = (eval_dataset(splits.validation, batch_size=batch, steps=val_steps)
              if splits.validation is not None else None)
    test_ds = (eval_dataset(splits.test, batch_size=batch, steps=val_steps)
               if splits.test is not None else None)

    user = cb.build_user_callbacks(cfg.train.callbacks, run.path)
    if resumed:
        rewind_csv_loggers(user, start)
    # Under a strategy `steps_per_execution: auto` is 1: Keras 3.15's fit fails with more
    # ("You must feed a value for placeholder tensor 'while/.../Placeholder_1'").
    compile_model(model, cfg.compile, steps_per_epoch=steps,
                  every_batch=cb.needs_every_batch(user) or strategy is not None,
                  aligned=not per_epoch)

    guard = cb.NonFiniteGuard()
    monitor = cb.resolve_monitor(cfg.train.monitor, val_ds is not None)
    history = cb.read_history(run.file("history.csv")) if resumed else None
    standard: list = [guard, cb.HistoryCSV(run.file("history.csv"), history, start)]
    if cfg.train.tensorboard:

        from kexp.training.graph import ModelGraph

        standard.append(cb.EpochTensorBoard(log_dir=str(run.file("logs")), write_graph=True))
        standard.append(ModelGraph(run.file("logs"), train_ds.element_spec[0]))
    if cfg.train.checkpoints:
        standard.append(cb.RunCheckpoints(run, monitor, cfg.train.mode,
                                          best=_recorded_best(run, monitor) if resumed else None))
    standard.append(cb.RunRecorder(run))
    if cfg.train.progress and _is_chief(cfg) and not quiet():  # one display per cluster
        standard.append(cb.Progress(epochs, steps))
    callbacks = ([counter] if counter else []) + user + standard + list(options.callbacks)
    if resumed:
        after_earlier_logs(callbacks)
    # Last: it saves what the others updated, and restores after they reset.
    callbacks.append(RunState(run.path, callbacks, guard, start=start if resumed else None,
                              saved=resumed.saved if resumed else None))
    finished = bool(resumed) and (start >= epochs or (
        resumed.saved is not None and resumed.saved.stopped and not resumed.extended))
    return _Job(train_ds, val_ds, test_ds, steps, epochs, callbacks, guard, monitor,
                start, finished, dist, fit_steps=None if per_epoch else steps)


def _planned_epochs(cfg: Config, options: TrainOptions) -> int:
    return 1 if options.smoke else cfg.train.epochs


def _recorded_best(run: Run, monitor: str) -> float | None:
    """The monitored value ``checkpoints/best.keras`` records (None without one)."""
    from kexp.training.callbacks import checkpoint_info

    info = checkpoint_info(run.file("checkpoints/best.keras"))
    return float(info["value"]) if info and info.get("monitor") == monitor else None


def _record_start(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any,
                  strategy: Any) -> None:
    """A new run's first files: config.yaml, summary.txt and run.json (``running``)."""
    from kexp.models.inspect import summary_text
    from kexp.training.callbacks import resolve_monitor
    from kexp.training.threads import threads_in_use

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
        "threads": threads_in_use(),
        "loop": cfg.train.loop,
        "smoke": options.smoke,
        "epochs": _planned_epochs(cfg, options),
        "monitor": resolve_monitor(cfg.train.monitor, splits.validation is not None),
        "plugins": list(cfg.plugins),
        "versions": versions(),
        "epochs_completed": 0,
        **options.info,
        **({"cluster": _cluster(cfg, strategy)} if strategy is not None else {}),
        **({"class_names": splits.train.class_names}
           if getattr(splits.train, "class_names", None) else {}),
    })


def _record_resume(cfg: Config, options: TrainOptions, run: Run, plan: Any, job: _Job) -> None:
    """run.json (and, when ``train.epochs`` changed, config.yaml): running again, and when
    from which epoch."""
    info = run.info()
    for stale in ("ended", "reason", "final_metrics"):
        info.pop(stale, None)
    entry = {"at": now(), "epoch": job.start, "command": list(options.command)}
    if job.dist is not None:
        entry.update(step=job.start * job.steps + job.dist.initial_step,
                     cluster=_cluster(cfg, job.dist.strategy))
    info.update(status="running", epochs=job.epochs, epochs_completed=job.start,
                resumed=[*info.get("resumed", []), entry])
    if plan.extended:
        run.write_yaml("config.yaml", cfg.to_yaml_dict())
        info["config_hash"] = config_hash(cfg)
    run.write_json("run.json", info)


def _ensure_built(cfg: Config, model: Any, split: Any) -> None:
    """A model without declared input shapes gets its weights from one batch, as ``fit``
    would, so its summary is complete before training — and a model that cannot run on the
    data is a config error before the run directory exists."""
    if model.built and getattr(model, "inputs", None) is not None:
        return
    import numpy as np

    from kexp.data.splits import take

    first = take(split, np.arange(min(cfg.data.batch_size, len(split))))
    try:
        model(first.x, training=False)
    except (TypeError, ValueError) as exc:
        node = _node_named_in(str(exc), cfg, model)
        raise ConfigError(Problem(
            node.path if node else "model",
            f"building the model on the first batch of data failed: {error_line(exc)}",
            node.where if node else cfg.model.where)) from None


def _node_named_in(message: str, cfg: Config, model: Any) -> Any:
    """The config layer that Keras's message names (``layer 'conv2d'``), if any."""
    import re

    match = re.search(r"layer '([^']+)'", message)
    nodes = cfg.model.layers or []
    if match is None or cfg.model.kind != "sequential" or len(model.layers) != len(nodes):
        return None
    names = [layer.name for layer in model.layers]
    return nodes[names.index(match.group(1))] if match.group(1) in names else None


def _fit(cfg: Config, run: Run, model: Any, job: _Job) -> None:
    from kexp.distribute import Preempted

    started = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            history = _end_only(model, job) if job.finished else _loop(cfg, model, job)
    except Preempted as exc:
        step = getattr(exc, "step", None)
        run.update(status="interrupted", ended=now(), preempted_step=step,
                   reason=f"pre-empted (SIGTERM to a worker) at step {step}",
                   duration_seconds=round(time.perf_counter() - started, 3))
        from kexp.distribute import is_chief

        where = run.path if is_chief() else "RUN_DIR (the chief's run directory)"
        raise Preempted(f"pre-empted at step {step}: every worker saved its state; restart "
                        f"every worker with --resume {where}") from None
    except KeyboardInterrupt:
        run.update(status="interrupted", ended=now(), reason="interrupted (Ctrl-C or SIGTERM)",
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise
    except Exception as exc:
        from kexp.data.stream import explain_failure

        reason = explain_failure(exc) or (
            f"{type(exc).__name__}: {error_line(exc) if str(exc).strip() else ''}")
        run.update(status="failed", ended=now(), reason=reason,
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise TrainingError(f"training failed: {reason}\nrun: {run.path}") from exc
    if job.guard.reason:
        reason = f"non-finite values: {job.guard.reason}"
        run.update(status="failed", ended=now(), reason=reason,
                   duration_seconds=round(time.perf_counter() - started, 3))
        raise TrainingError(f"training failed: {reason}; the last finite checkpoint is kept\n"
                            f"run: {run.path}")
    _finish(run, model, job, history, time.perf_counter() - started)


def _loop(cfg: Config, model: Any, job: _Job) -> Any:
    kwargs = dict(epochs=job.epochs, initial_epoch=job.start, steps_per_epoch=job.fit_steps,
                  validation_data=job.val_ds, callbacks=job.callbacks)
    if cfg.train.loop == "custom":
        from kexp.training.custom_loop import fit_custom

        if job.dist is not None:
            kwargs.update(strategy=job.dist.strategy, initial_step=job.dist.initial_step,
                          preemption_dir=job.dist.preemption_dir,
                          restore_preemption=job.dist.restore)
        return fit_custom(model, job.train_ds, compile_mode=cfg.train.compile_mode, **kwargs)
    return model.fit(job.train_ds, verbose=0, shuffle=False, **kwargs)


def _end_only(model: Any, job: _Job) -> None:
    """A resumed run with no epoch left: begin and end the callbacks, so the saved state
    is restored and end-of-training work (``EarlyStopping(restore_best_weights)``) is done."""
    import keras

    callbacks = keras.callbacks.CallbackList(job.callbacks, model=model, epochs=job.epochs,
                                             steps=job.steps)
    callbacks.on_train_begin()
    callbacks.on_train_end()


def _finish(run: Run, model: Any, job: _Job, history: Any, seconds: float) -> None:
    from kexp.training.callbacks import read_history, save_model

    save_model(model, run.file("model.keras"))
    ran = len(history.epoch) if history is not None else 0
    if ran:
        last = {k: float(v[-1]) for k, v in history.history.items() if v}
    else:  # nothing trained in this process: the last epoch on record
        rows = read_history(run.file("history.csv"))
        last = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if k != "epoch"}
    metrics = {
        "train": {k: v for k, v in last.items() if not k.startswith("val_")},
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
    }
    if job.test_ds is not None:
        metrics["test"] = _evaluate_test(model, job)
    run.write_json("metrics.json", metrics)
    run.update(status="completed", ended=now(), duration_seconds=round(seconds, 3),
               final_metrics=metrics, epochs_completed=job.start + ran)
    if job.dist is not None and job.dist.preemption_dir is not None:
        # A completed run is not resumed from a pre-emption: its checkpoint is stale.
        shutil.rmtree(run.file("checkpoints/preemption"), ignore_errors=True)


def _evaluate_test(model: Any, job: _Job) -> dict[str, float]:
    if job.dist is not None and job.dist.preemption_dir is not None:
        # multi_worker: Keras's evaluate fails there as fit does (keras-team/keras#20585).
        from kexp.training.custom_loop import evaluate_custom

        result = evaluate_custom(model, job.test_ds, strategy=job.dist.strategy)
    else:
        result = model.evaluate(job.test_ds, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


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
