"""Setting up a run, before its first step: seeds and thread pools, data and model, datasets,
compile, callbacks. What comes out is a ``Job``, which ``kexp.training.fit`` runs with either
loop; both loops get the same datasets, compiled model and callbacks.

Order matters for "nothing written on a config error": ``data_and_model`` reads the data and
builds, checks and adapts the model before the run directory exists; ``prepare`` needs the
directory (the user's callbacks, whose relative paths land in it, and kexp's own callbacks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.config.schema import Config
from kexp.errors import ConfigError, Problem, error_line
from kexp.output import quiet
from kexp.runs import Run
from kexp.training.distribute import Distributed, plan_distribution, writes_run
from kexp.training.phases import Start

__all__ = ["SMOKE_STEPS", "TrainOptions", "Resumed", "Job", "seed_everything",
           "data_and_model", "prepare", "planned_epochs"]

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


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run starts: the epoch, the state to restore (None: epoch 0), and
    whether ``train.epochs`` was changed."""

    start: int
    saved: Any
    extended: bool


@dataclass
class Job:
    """Everything a loop needs to train: datasets, epochs, callbacks, distribution."""

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
    dist: Distributed | None = None
    fit_steps: int | None = None  # steps_per_epoch for model.fit (None: a one-epoch dataset)
    stop: int | None = None  # the epoch this job's loop ends before (its phase's end)
    # ``train.phases``: the next phase's Job, given the epoch it starts at (None: no next)
    next_phase: Callable[[int], Job | None] | None = None


def seed_everything(cfg: Config) -> None:
    """Thread pools, then every seed (Python, NumPy, TensorFlow, Keras), then op determinism
    if asked: the first thing a run does, before any tensor exists."""
    from kexp._tf import import_tensorflow
    from kexp.training.threads import configure_threads

    tf = import_tensorflow()
    import keras

    # First: TensorFlow's thread pools can only be sized before its runtime starts.
    configure_threads(cfg.train.threads, cfg.data.batch_size)

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def data_and_model(cfg: Config) -> tuple[Any, Any]:
    """The data splits, and the model built, checked against them and adapted."""
    from kexp.data.checks import check_against_model, match_input_structure
    from kexp.data.load import load_data
    from kexp.data.stream import adapt_source
    from kexp.models.build import adapt_layers, build_model
    from kexp.training.phases import check_freeze_names
    from kexp.training.threads import configure_threads
    from kexp.training.weights import class_weights

    splits = load_data(cfg)
    configure_threads(cfg.train.threads, cfg.data.batch_size, splits.train.x)
    model, adaptations = build_model(cfg.model)
    check_freeze_names(model, cfg)
    check_against_model(splits, model)
    # Layers on the raw input adapt first: a TextVectorization's output size (and so the
    # next layer's weights) is known only once it has a vocabulary.
    on_input = [a for a in adaptations if a.source is None]
    adapt_layers(model, on_input, adapt_source(splits.train))
    _ensure_built(cfg, model, splits.train)
    adapt_layers(model, [a for a in adaptations if a.source is not None],
                 adapt_source(splits.train))
    match_input_structure(splits, model)
    class_weights(cfg, model, splits)  # checked against the model and labels now
    return splits, model


def _ensure_built(cfg: Config, model: Any, split: Any) -> None:
    """A model without declared input shapes gets its weights from one batch, as ``fit``
    would, so its summary is complete before training — and a model that cannot run on the
    data is a config error before the run directory exists."""
    if model.built and getattr(model, "inputs", None) is not None:
        return
    import numpy as np

    from kexp.data.splits import take
    from kexp.data.stream import is_stream

    split = split.probe if is_stream(split) else split  # streamed data: its first batch
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


def prepare(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any,
            resumed: Resumed | None = None, strategy: Any = None,
            source: Run | None = None, phase: Start | None = None) -> Job:
    """The run's datasets, compiled model and callbacks (``source``: the run a non-chief
    worker's private copy was made from) for the training phase it starts in, or for
    ``phase`` (``kexp.training.phases``: the model is compiled with the phase's optimizer,
    the user's callbacks are the phase's)."""
    from kexp.training import callbacks as cb
    from kexp.training import phases as ph
    from kexp.training.compile import compile_model

    start = resumed.start if resumed else 0
    epochs = planned_epochs(cfg, options)
    phase = phase or _starting_phase(cfg, options, run, model, resumed)
    data = _datasets(cfg, options, splits, start, phase.phase.end, strategy, model)
    dist = plan_distribution(cfg, strategy, run, source, data.steps, start, bool(resumed))
    if dist is not None and dist.initial_step:
        from kexp.training.distribute import skip_steps

        data.train = skip_steps(data.train, dist.initial_step)
    user = cb.build_user_callbacks(ph.phase_callbacks(cfg, phase.phase), run.path)
    if resumed:
        from kexp.training.resume import rewind_csv_loggers

        rewind_csv_loggers(user, start)
    # Under a strategy `steps_per_execution: auto` is 1: Keras 3.15's fit fails with more
    # ("You must feed a value for placeholder tensor 'while/.../Placeholder_1'").
    compile_model(model, ph.phase_compile(cfg, phase.phase), steps_per_epoch=data.steps,
                  every_batch=cb.needs_every_batch(user) or strategy is not None,
                  aligned=data.counter is None)
    guard = cb.NonFiniteGuard()
    monitor = cb.resolve_monitor(cfg.train.monitor, data.validation is not None)
    callbacks = _callbacks(cfg, run, data, user, guard, monitor, epochs, resumed, phase,
                           options.callbacks)
    following = (lambda at: _next_phase(cfg, options, run, model, splits, strategy, source,
                                        phase.phase, at)) if cfg.train.phases else None
    return Job(data.train, data.validation, data.test, data.steps, epochs, callbacks, guard,
               monitor, start, bool(resumed) and phase.done, dist,
               fit_steps=None if data.counter is not None else data.steps,
               stop=phase.phase.end, next_phase=following)


def planned_epochs(cfg: Config, options: TrainOptions) -> int:
    """The epochs a run trains: the config's (its phases' total), or one per phase for
    ``--smoke``."""
    from kexp.training.phases import plan_phases

    return plan_phases(cfg, options.smoke)[-1].end


def _starting_phase(cfg: Config, options: TrainOptions, run: Run, model: Any,
                    resumed: Resumed | None) -> Start:
    """The phase a (resumed) run starts in, the model (un)frozen as the phases up to it
    leave it."""
    from kexp.training import phases as ph
    from kexp.training.callbacks import read_history

    saved = resumed.saved if resumed else None
    start = ph.starting_phase(
        cfg, options.smoke, resumed.start if resumed else 0,
        read_history(run.file("history.csv")) if resumed else [],
        stopped=bool(saved and saved.stopped), extended=bool(resumed and resumed.extended))
    ph.freeze_for(model, cfg, start.phase, replay=True)
    return start


def _next_phase(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any,
                strategy: Any, source: Run | None, phase: Any, at: int) -> Job | None:
    """The Job of the phase after ``phase``, starting at epoch ``at``: the model
    (un)frozen as it says, compiled with its optimizer, with its callbacks; the run's own
    files continue as on a resume (None after the last phase)."""
    from kexp.training import phases as ph

    following = ph.next_phase(cfg, options.smoke, phase, at)
    if following is None:
        return None
    ph.freeze_for(model, cfg, following, replay=False)
    return prepare(cfg, options, run, model, splits, resumed=Resumed(at, None, False),
                   strategy=strategy, source=source, phase=ph.Start(following, True))


@dataclass
class _Datasets:
    train: Any
    steps: int
    validation: Any
    test: Any
    counter: Any  # the EpochCounter of a one-epoch training dataset (None: one for all epochs)


def _datasets(cfg: Config, options: TrainOptions, splits: Any, start: int, epochs: int,
              strategy: Any, model: Any) -> _Datasets:
    from kexp.data.pipeline import eval_dataset, train_dataset
    from kexp.training.weights import class_weights, table_size, with_class_weights

    steps = SMOKE_STEPS if options.smoke else cfg.train.steps_per_epoch
    batch, shuffle = cfg.data.batch_size, bool(cfg.data.shuffle)
    # `fit` on one process reads a one-epoch dataset (a new iterator each epoch), so it may
    # run up to 32 steps per call whatever the epoch's length; everything else reads one
    # dataset through every epoch. Both give epoch e the same batches.
    counter = None
    if cfg.train.loop == "fit" and strategy is None and steps is None:
        import tensorflow as tf

        from kexp.data.pipeline import epoch_dataset
        from kexp.training.callbacks import EpochCounter

        epoch_var = tf.Variable(start, dtype=tf.int64, trainable=False, name="kexp_epoch")
        train_ds, steps = epoch_dataset(splits.train, batch_size=batch, seed=cfg.seed,
                                        epoch=epoch_var, shuffle=shuffle)
        counter = EpochCounter(epoch_var)
    elif (sharded := _sharded(cfg, splits.train, strategy, start, epochs, steps,
                                    shuffle)) is not None:
        train_ds, steps = sharded
    else:
        train_ds, steps = train_dataset(splits.train, batch_size=batch, seed=cfg.seed,
                                        shuffle=shuffle, epochs=epochs,
                                        initial_epoch=min(start, epochs), steps_per_epoch=steps)
    weights = class_weights(cfg, model, splits)
    if weights is not None:  # as Keras's fit(class_weight=...): training batches only
        train_ds = with_class_weights(train_ds, weights, table_size(weights, model, splits))
    eval_steps = SMOKE_STEPS if options.smoke else None
    val_ds, test_ds = (eval_dataset(split, batch_size=batch, steps=eval_steps)
                       if split is not None else None
                       for split in (splits.validation, splits.test))
    return _Datasets(train_ds, steps, val_ds, test_ds, counter)


def _sharded(cfg: Config, train: Any, strategy: Any, start: int, epochs: int,
             steps: int | None, shuffle: bool) -> tuple[Any, int] | None:
    """Under ``multi_worker``, a streamed training split read by each worker from its own
    files (``kexp.data.stream.Shard``), in per-replica batches, and the steps of an epoch:
    ``ceil(samples / batch_size)`` (or ``steps_per_epoch``) on every worker. None when the
    data is in memory (every worker keeps its slice of each global batch) or when the global
    batch does not split evenly over the replicas."""
    import math

    from kexp.data.stream import Shard, is_stream
    from kexp.output import notice
    from kexp.training import distribute as dist

    if (cfg.distribute.strategy != "multi_worker" or not is_stream(train)
            or not train.shardable):
        return None
    workers, replicas = dist.num_workers(), strategy.num_replicas_in_sync
    batch = cfg.data.batch_size
    if workers < 2 or batch % replicas or replicas % workers:
        return None
    from kexp.data.pipeline import train_dataset

    steps = steps or math.ceil(train.count / batch)
    shard = Shard(dist.worker_index(), workers)
    local = replicas // workers
    dataset, _ = train_dataset(train, batch_size=batch // replicas, seed=cfg.seed,
                               shuffle=shuffle, epochs=epochs,
                               initial_epoch=min(start, epochs),
                               steps_per_epoch=steps * local, shard=shard)
    notice(train.shard_notice(shard))
    return dist.per_worker(dataset, local), steps


def _callbacks(cfg: Config, run: Run, data: _Datasets, user: list, guard: Any, monitor: str,
               epochs: int, resumed: Resumed | None, phase: Start, extra: tuple = ()) -> list:
    """The user's callbacks between kexp's: the epoch counter first, the run's own files
    after, and ``RunState`` last (it saves what the others updated, and restores after they
    reset)."""
    from kexp.training import callbacks as cb
    from kexp.training.resume import RunState, after_earlier_logs

    history = cb.read_history(run.file("history.csv")) if resumed else None
    start = resumed.start if resumed else 0
    standard: list = [guard, cb.HistoryCSV(run.file("history.csv"), history, start,
                                           phase.phase.index if cfg.train.phases else None)]
    if cfg.train.tensorboard:
        from kexp.training.graph import ModelGraph

        profile = cfg.train.profile
        standard.append(cb.EpochTensorBoard(
            log_dir=str(run.file("logs")), write_graph=True,
            profile_batch=(profile.start_step, profile.end_step) if profile else 0))
        standard.append(ModelGraph(run.file("logs"), data.train.element_spec[0]))
    if cfg.train.checkpoints:
        standard.append(cb.RunCheckpoints(run, monitor, cfg.train.mode,
                                          best=_recorded_best(run, monitor) if resumed else None))
    standard.append(cb.RunRecorder(run))
    if cfg.train.progress and writes_run(cfg) and not quiet():  # one display per cluster
        standard.append(cb.Progress(epochs, data.steps))
    callbacks = ([data.counter] if data.counter else []) + user + standard + list(extra)
    if resumed:
        after_earlier_logs(callbacks)
    # A phase that begins here has a new optimizer and callbacks: only the model and the
    # random generators are restored.
    callbacks.append(RunState(run.path, callbacks, guard, start=start if resumed else None,
                              saved=resumed.saved if resumed else None,
                              model_only=phase.begins and phase.phase.index > 0))
    return callbacks


def _recorded_best(run: Run, monitor: str) -> float | None:
    """The monitored value ``checkpoints/best.keras`` records (None without one)."""
    from kexp.training.callbacks import checkpoint_info

    info = checkpoint_info(run.file("checkpoints/best.keras"))
    return float(info["value"]) if info and info.get("monitor") == monitor else None
