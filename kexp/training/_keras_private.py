"""Every use kexp makes of Keras's and TensorFlow's private API, in one place.

Each function here reaches into ``keras.src``, ``tensorflow.python`` or an attribute with a
leading underscore, because no public API does the same thing (checked against Keras 3.15 and
TensorFlow 2.21). ``tests/test_keras_private.py`` exercises every one of them against the
installed versions, so an upgrade that moves or changes one fails there, by name, instead of
somewhere inside a training run.

- ``loss_tracker``: ``Model._loss_tracker``, the ``Mean`` behind ``fit``'s ``loss`` log.
- ``initial_epoch``: ``Model._initial_epoch``, set by ``BackupAndRestore`` in
  ``on_train_begin``.
- ``symbolic_build``: ``Model._symbolic_build``, which builds compiled metrics and optimizer
  slots as ``fit`` does.
- ``keras_global_generator``, ``reset_keras_global_generator``: ``keras.random``'s unseeded
  ``SeedGenerator`` (``keras.src``), to save and restore it.
- ``tf_global_generator``: ``stateful_random_ops.global_generator`` (the public getter
  creates one, and refuses to under op determinism).
- ``CALLBACK_COUNTERS``: batch counters of ``ModelCheckpoint`` and ``TensorBoard``.
- ``tensorboard_writers``, ``tensorboard_epoch_only``, ``write_pending_train_graph``:
  ``TensorBoard``'s writers and flags (flushing, restart markers, skipping per-batch calls).
- ``import_restart_event``: ``summary_ops_v2.import_event`` and ``event_pb2``, to write a raw
  ``SessionLog.START`` event.
- ``compiled_loss``, ``compiled_metrics``: ``compile``'s own ``CompileLoss`` and
  ``CompileMetrics`` (``keras.src.trainers.compile_utils``), made apart from any model, for
  the start-up probe of one batch (``kexp.training.probe``).
- ``names_kept``: Keras's global name counters (``object_name_uids``), put back after the
  probe, so its metric objects do not rename the run's (a second ``AUC`` logs ``auc_1``).

Public API is used wherever it exists: ``Model.compute_loss`` (not ``_compute_loss``), and
the loss un-scaling under a strategy is written with ``tf.distribute`` (not
``keras.src...unscale_loss_for_distribution``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "CALLBACK_COUNTERS",
    "loss_tracker",
    "initial_epoch",
    "symbolic_build",
    "keras_global_generator",
    "reset_keras_global_generator",
    "tf_global_generator",
    "tensorboard_writers",
    "tensorboard_epoch_only",
    "write_pending_train_graph",
    "import_restart_event",
    "compiled_loss",
    "compiled_metrics",
    "names_kept",
]

# Private counters of Keras callbacks that a resumed run must put back: ``ModelCheckpoint``'s
# batches since its last save, ``TensorBoard``'s train and test batch steps.
CALLBACK_COUNTERS = ("_batches_seen_since_last_saving", "_global_train_batch",
                     "_global_test_batch")


def loss_tracker(model: Any) -> Any:
    """The compiled model's ``loss`` tracker (a ``keras.metrics.Mean``): ``fit``'s train and
    test steps add each batch's loss to it, weighted by the batch size."""
    return model._loss_tracker


def initial_epoch(model: Any) -> int | None:
    """The epoch a callback (``BackupAndRestore``) set to resume from in ``on_train_begin``
    (None when none did)."""
    return model._initial_epoch


def symbolic_build(model: Any, element_spec: Any, strategy: Any = None) -> None:
    """Create a compiled model's variables, compiled loss and metrics, and optimizer slots
    from a batch's structure (a dataset's ``element_spec``), as ``fit`` does before its first
    step: no batch is consumed and no weight or metric changes.

    With every variable in place before tracing, each ``tf.function`` traces once instead of
    twice; under a strategy it is also what makes the compiled metrics usable inside
    ``strategy.run`` ("You must feed a value for placeholder tensor 'cond/else/_1/...'").
    """
    if strategy is None:
        model._symbolic_build(data_batch=element_spec)
        return
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)


def keras_global_generator() -> Any:
    """The ``SeedGenerator`` behind ``keras.random`` calls without a seed (None until first
    used)."""
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    return global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)


def reset_keras_global_generator(state: Any) -> None:
    """Put ``keras.random``'s unseeded generator back to ``state``; ``None``: forget it, so
    that it is created again (from Python's generator) on first use."""
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR, global_seed_generator

    if state is None:
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
    else:
        global_seed_generator().state.assign(state)


def tf_global_generator() -> Any:
    """``tf.random.get_global_generator()`` if something created it, else None (the public
    getter creates one, and under op determinism refuses to)."""
    from tensorflow.python.ops import stateful_random_ops

    return stateful_random_ops.global_generator


def tensorboard_writers(callback: Any, *, created_only: bool = True) -> list[Any]:
    """The summary writers of a Keras ``TensorBoard`` callback: the ones it has opened
    (``created_only``), or its train writer and, when its directory exists, its validation
    writer (opening them)."""
    if created_only:
        return list(callback._writers.values())
    writers = [callback._train_writer]
    if Path(callback._val_dir).is_dir():
        writers.append(callback._val_writer)
    return writers


def tensorboard_epoch_only(callback: Any) -> bool:
    """Whether a Keras ``TensorBoard`` callback writes nothing at batch ends: epoch updates,
    no profiling trace pending, no steps-per-second scalar."""
    return (callback.update_freq == "epoch" and not callback._should_trace
            and not callback.write_steps_per_second)


def write_pending_train_graph(callback: Any) -> None:
    """What Keras's ``TensorBoard.on_train_batch_end`` does on the first batch with
    ``write_graph``: write the model's graph once."""
    if callback._should_write_train_graph:
        callback._write_keras_model_train_graph()
        callback._should_write_train_graph = False


def import_restart_event(writer: Any, step: int, wall_time: float) -> None:
    """Write a ``SessionLog.START`` event at ``step`` through a summary writer (twice:
    TensorBoard ignores a directory's first START). TensorBoard then drops what was logged at
    ``step`` or later."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2
    from tensorflow.python.ops import summary_ops_v2

    event = event_pb2.Event(step=step, wall_time=wall_time,
                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    record = tf.constant(event.SerializeToString())
    with writer.as_default():
        summary_ops_v2.import_event(record)
        summary_ops_v2.import_event(record)
    writer.flush()


def compiled_loss(loss: Any, output_names: list[str] | None) -> Any:
    """The ``CompileLoss`` that ``model.compile(loss=loss)`` makes: called as ``(y_true,
    y_pred, sample_weight)``, it returns the loss ``fit`` would compute."""
    from keras.src.trainers.compile_utils import CompileLoss

    return CompileLoss(loss, output_names=output_names)


def compiled_metrics(metrics: Any, weighted_metrics: Any, output_names: list[str] | None) -> Any:
    """The ``CompileMetrics`` that ``model.compile(metrics=..., weighted_metrics=...)`` makes;
    ``update_state(y_true, y_pred, sample_weight)`` as ``fit`` calls it."""
    from keras.src.trainers.compile_utils import CompileMetrics

    return CompileMetrics(metrics, weighted_metrics, output_names=output_names)


@contextmanager
def names_kept() -> Iterator[None]:
    """Keras objects made inside do not count for the names of those made after (Keras names
    an unnamed metric ``auc``, the next one ``auc_1``, from a global counter)."""
    from keras.src.backend.common import global_state

    counters = global_state.get_global_attribute("object_name_uids")
    saved = dict(counters) if counters is not None else None
    try:
        yield
    finally:
        counters = global_state.get_global_attribute("object_name_uids")
        if counters is not None:
            counters.clear()
            counters.update(saved or {})
