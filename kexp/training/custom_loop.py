"""kexp's own training loop: the chapter's ``GradientTape`` loop with ``model.fit``'s contract.

``fit_custom(model, dataset, epochs=...)`` trains a compiled model the way Listings 7.21-7.25
of the book do it by hand -- forward pass under ``tf.GradientTape`` with ``training=True``,
gradients of ``model.trainable_weights``, ``optimizer.apply_gradients``, metric
``update_state`` -- and returns the same ``History`` as ``model.fit``: the loss and metrics
are the model's own compiled ones (``model.compute_loss`` / ``model.compute_metrics`` and the
model's ``loss`` tracker), so ``history.history`` has the same keys and, for the same seed,
the same values as ``fit``. Callbacks are driven through ``keras.callbacks.CallbackList``
exactly as ``fit`` drives them.

Compile modes (``train.compile_mode``):

- ``eager``: no ``tf.function`` at all, for stepping through a model in a debugger.
- ``step``: each train / test step is one ``tf.function`` (traced once, with an input
  signature whose batch dimension is ``None``, so the last partial batch does not retrace);
  batches are pulled from the dataset in Python.
- ``epoch`` (default): the whole epoch -- iteration over the dataset included, as in
  Listing 7.25 -- is one ``tf.function`` looping over the iterator with ``tf.while_loop``;
  metric results are read once, when the call returns. Traced once per run. When the
  training data is in memory (a dataset from ``kexp.data.pipeline.train_dataset`` over
  arrays, not a stream, and not transformed since, e.g. by class weights), there is no
  iterator at all: the epoch function takes the epoch's sample order and gathers each batch
  from the data tensors itself, inside its ``tf.while_loop`` -- the same batches in the
  same order as the dataset's, so the same results bit for bit, without ``tf.data``'s
  threads and prefetch buffer between the steps (measured by ``make bench``: about 1.15-1.3x
  the iterator loop at batch 32 on 2 cores). Under a distribution strategy, and for a
  pre-emption restart in mid-epoch, the iterator is used.

Batch-level callback hooks follow Keras's own contract for ``steps_per_execution``: they are
called once per executed chunk of batches, ``on_*_batch_begin`` with the chunk's first batch
index and ``on_*_batch_end`` with its last one and the running logs. In ``eager`` and
``step`` mode a chunk is one batch. In ``epoch`` mode a chunk is the whole epoch, unless a
callback that is not part of Keras overrides a batch hook (``on_batch_*``,
``on_train_batch_*``, ``on_test_batch_*``, including ones set on the instance as
``LambdaCallback`` does): then the compiled function runs one batch per call, so a per-batch
loss plotter sees every batch. Keras's built-in callbacks are written for chunked calls
(``fit`` with ``steps_per_execution``), so they alone never force per-batch calls: the
progress bar then moves once per epoch, ``ModelCheckpoint(save_freq=N)`` and
``TensorBoard(update_freq=N)`` see one batch-end per epoch, and ``TerminateOnNaN`` sees the
epoch's running mean loss. A NaN or Inf in any batch makes that mean NaN, so
``TerminateOnNaN`` still stops training -- at the end of the epoch instead of after the bad
batch; ``on_epoch_end`` runs with the NaN loss either way, as in ``fit``.

The epoch logs contain ``learning_rate`` exactly when ``fit``'s do: Keras 3.15's ``fit`` does
not add it itself; ``ReduceLROnPlateau``, ``LearningRateScheduler`` and ``TensorBoard`` add
it to the logs they receive, and they receive the same logs here.

When the number of batches is unknown (a dataset of unknown cardinality and no
``steps_per_epoch``) and ``epoch`` mode runs one batch per call, the final call finds no
data: its ``on_*_batch_begin`` has no matching end, as in ``fit``.

Variables (model, compiled loss and metrics, optimizer) are created before tracing, from the
dataset's element spec, so every ``tf.function`` traces once per run: without that, TF
traces a function that creates variables twice.

The train and test steps are plain module-level functions of ``(model, data)``. Under a
distribution strategy (``strategy=``, any but the default one) each runs on every replica's
share of the global batch with ``strategy.run``
(``kexp.training.distribute.distributed_step``); the datasets are distributed here, and
metric results are read outside ``strategy.run``, so that every worker reads them -- a
cross-worker collective -- at the same points. Keras's
``compute_loss`` already scales the loss by ``1 / replicas`` and the optimizer sums the
replicas' gradients, so the step itself is unchanged.

Pre-emption (``preemption_dir=``, for ``MultiWorkerMirroredStrategy``): every executed chunk
runs under a ``PreemptionCheckpointHandler``; after SIGTERM to any worker, every worker saves
the model, the optimizer and the global step before the next chunk and ``Preempted`` is
raised, carrying that step. In ``epoch`` mode a chunk is a whole epoch unless a callback
needs every batch, so a pre-emption then waits for the end of the epoch.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kexp.training import _keras_private as private

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kexp.data.pipeline import InMemoryEpochs

__all__ = ["COMPILE_MODES", "fit_custom", "evaluate_custom"]

COMPILE_MODES = ("eager", "step", "epoch")

# "Run until the iterator is exhausted" for the compiled epoch function.
_ALL_STEPS = 2**31 - 1

Logs = dict[str, Any]
Hook = Callable[..., None]


def fit_custom(
    model: keras.Model,
    x: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    validation_data: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    compile_mode: str = "epoch",
    verbose: int = 0,
    strategy: tf.distribute.Strategy | None = None,
    initial_step: int = 0,
    preemption_dir: str | None = None,
    restore_preemption: bool = False,
) -> keras.callbacks.History:
    """Trains a compiled model with kexp's ``GradientTape`` loop; a drop-in for ``model.fit``.

    Args:
        model: A model compiled with ``model.compile(optimizer, loss, loss_weights,
            metrics)``, exactly as for ``fit``.
        x: A dataset of ``(inputs, targets)`` or ``(inputs, targets, sample_weights)``
            batches; inputs and targets may be dicts keyed by input / output name.
        epochs: Index of the last epoch (exclusive), as in ``fit``.
        initial_epoch: Epoch to start from (for resuming).
        steps_per_epoch: Batches per epoch. When given, ``x`` must cover all remaining
            epochs: one iterator is created for the whole run. When ``None``, ``x`` is
            iterated fully once per epoch.
        validation_data: A finite dataset evaluated at the end of every epoch; its logs
            are prefixed ``val_``.
        validation_steps: Batches of ``validation_data`` per evaluation (default: all).
        callbacks: Keras callbacks; a ``History`` (and, with ``verbose``, a progress bar)
            is added as ``fit`` adds them.
        compile_mode: ``"eager"``, ``"step"`` or ``"epoch"`` (see the module docstring).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        strategy: A ``tf.distribute`` strategy the model was created and compiled under;
            ``x`` and ``validation_data`` are undistributed datasets of global batches.
            ``None`` (or the default strategy): one device, no ``strategy.run``.
        initial_step: Batches of ``initial_epoch`` already done (a run resumed from a
            pre-emption checkpoint); ``x`` must start after them.
        preemption_dir: With ``strategy``: the chief's pre-emption checkpoint directory
            (``kexp.training.distribute.preemption_handler``); ``None``: no pre-emption handling.
        restore_preemption: Restore the checkpoint in ``preemption_dir`` first (it must hold
            the state of step ``initial_epoch * steps_per_epoch + initial_step``); otherwise
            a stale one there is removed.

    Returns:
        The ``History`` callback, as ``model.fit`` returns it.

    Raises:
        ValueError: For an unknown ``compile_mode`` or an uncompiled model.
        kexp.training.distribute.Preempted: A worker got SIGTERM; its ``step`` attribute is
            the global step saved in ``preemption_dir``.

    Example:
        ```python
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        history = fit_custom(model, train_ds, epochs=3, validation_data=val_ds)
        ```
    """
    strategy = _checked(model, compile_mode, strategy)
    private.symbolic_build(model, x.element_spec, strategy)
    steps = steps_per_epoch or _known_cardinality(x)
    callbacks = _callback_list(callbacks, model, epochs=epochs, steps=steps, verbose=verbose)
    memory = _in_memory(x, compile_mode, strategy, initial_step, steps_per_epoch)
    train_loop, test_loop = _loops(model, x, validation_data, compile_mode, strategy,
                                   callbacks.callbacks, memory)
    if strategy is not None:
        x = _distribute(strategy, x)

    # With steps_per_epoch, one iterator runs through all epochs, as in `fit`. In-memory
    # data in `epoch` mode needs none: each epoch's batches are gathered in the graph.
    run_iterator = iter(x) if steps_per_epoch and memory is None else None
    orders = _orders_ahead(memory)
    model.stop_training = False
    callbacks.on_train_begin()
    # A callback such as BackupAndRestore may set the epoch to resume from in on_train_begin.
    initial_epoch = private.initial_epoch(model) or initial_epoch
    with _preemption(strategy, model, preemption_dir, restore_preemption,
                     initial_epoch * (steps or 0) + initial_step) as guard:
        train_loop.guard = guard
        epoch_logs = None
        for epoch in range(initial_epoch, epochs):
            first = initial_step if epoch == initial_epoch else 0
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            source = (_EpochOrder(orders.get(epoch, ahead=epoch + 1 < epochs))
                      if memory is not None else run_iterator or iter(x))
            done = train_loop.run(
                source, steps,
                callbacks.on_train_batch_begin, callbacks.on_train_batch_end,
                should_stop=lambda: model.stop_training, first=first,
            )
            if steps_per_epoch and first + done < steps_per_epoch and not model.stop_training:
                _warn_out_of_data(epoch, first + done, steps_per_epoch)
                model.stop_training = True
            epoch_logs = _epoch_logs(model, test_loop, validation_data, validation_steps,
                                     callbacks, strategy)
            callbacks.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break

    _end_training(model, epochs, callbacks, epoch_logs)
    return model.history


def _end_training(model: keras.Model, epochs: int, callbacks: keras.callbacks.CallbackList,
                  logs: Logs | None) -> None:
    import keras

    # As `fit` does: e.g. swaps in the moving-average weights of an optimizer using EMA.
    if isinstance(model.optimizer, keras.optimizers.Optimizer) and epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=logs)


def _checked(model: keras.Model, compile_mode: str,
             strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy | None:
    """Check the arguments of ``fit_custom``; returns the strategy, None for the default."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(
            f"Unknown compile_mode: expected one of {', '.join(COMPILE_MODES)}. "
            f"Received: compile_mode={compile_mode!r}"
        )
    if not model.compiled:
        raise ValueError("fit_custom() needs a compiled model: call model.compile() first.")
    return None if strategy is None or _is_default(strategy) else strategy


def _loops(model: keras.Model, x: tf.data.Dataset, validation_data: tf.data.Dataset | None,
           compile_mode: str, strategy: tf.distribute.Strategy | None,
           callbacks: list[keras.callbacks.Callback],
           memory: InMemoryEpochs | None = None) -> tuple[_Loop, _Loop | None]:
    """The train loop, and the validation loop (None without validation data); each runs one
    batch per call when a callback needs to see its batches."""
    from kexp.training.callbacks import TEST_BATCH_HOOKS, needs_every_batch

    train_loop = _Loop(model, _train_step, x, compile_mode, strategy=strategy,
                       every_batch=needs_every_batch(callbacks), memory=memory)
    if validation_data is None:
        return train_loop, None
    return train_loop, _Loop(model, _test_step, validation_data, compile_mode,
                             strategy=strategy,
                             every_batch=needs_every_batch(callbacks, TEST_BATCH_HOOKS))


def _epoch_logs(model: keras.Model, test_loop: _Loop | None, validation_data: Any,
                validation_steps: int | None, callbacks: keras.callbacks.CallbackList,
                strategy: tf.distribute.Strategy | None) -> Logs:
    """The epoch's train metrics (read before evaluation resets them), then the validation
    ones prefixed ``val_``."""
    logs = model.get_metrics_result()
    if test_loop is not None:
        val_logs = _evaluate(model, test_loop, validation_data, validation_steps, callbacks,
                             strategy)
        logs.update({f"val_{name}": value for name, value in val_logs.items()})
    return logs


def evaluate_custom(model: keras.Model, dataset: tf.data.Dataset, *,
                    strategy: tf.distribute.Strategy | None = None,
                    compile_mode: str = "epoch") -> Logs:
    """Evaluates a compiled model on a finite dataset with the custom loop's test step
    (``model.evaluate`` for ``fit_custom``; under ``MultiWorkerMirroredStrategy`` Keras's own
    fails). Returns the compiled loss and metrics."""
    import keras

    if strategy is not None and _is_default(strategy):
        strategy = None
    private.symbolic_build(model, dataset.element_spec, strategy)
    loop = _Loop(model, _test_step, dataset, compile_mode, every_batch=False, strategy=strategy)
    return _evaluate(model, loop, dataset, None, keras.callbacks.CallbackList([], model=model),
                     strategy)


def _callback_list(callbacks: list[keras.callbacks.Callback] | None, model: keras.Model, *,
                   epochs: int, steps: int | None, verbose: int) -> keras.callbacks.CallbackList:
    """The callbacks as ``fit`` wraps them: plus a ``History`` and, if verbose, a progress bar."""
    import keras

    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    return keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps,
    )


def _train_step(model: keras.Model, data: Any) -> Logs:
    """One optimization step on a batch: the chapter's Listing 7.21, with fit's loss and metrics.

    Returns the running metric results (the batch logs ``fit`` passes to callbacks).
    """
    import keras
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    # Forward pass: every output's compiled loss (times its loss weight) plus model.losses.
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = _compute_loss(model, x, y, y_pred, sample_weight, training=True)
        _track_loss(model, x, loss)
        # Mixed-precision loss scaling; the identity for other optimizers.
        scaled_loss = model.optimizer.scale_loss(loss)

    # Gradients of the loss with regard to the trainable weights.
    gradients = tape.gradient(scaled_loss, model.trainable_weights)

    # Update: the weights, then the metrics.
    model.optimizer.apply_gradients(zip(gradients, model.trainable_weights, strict=True))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _test_step(model: keras.Model, data: Any) -> Logs:
    """One evaluation step on a batch (Listing 7.23): forward pass with ``training=False``."""
    import keras

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    loss = _compute_loss(model, x, y, y_pred, sample_weight, training=False)
    _track_loss(model, x, loss)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _compute_loss(model: keras.Model, x: Any, y: Any, y_pred: Any, sample_weight: Any,
                  training: bool) -> Any:
    """``model.compute_loss``: every output's compiled loss (times its loss weight) plus
    ``model.losses``. A subclass may override it without the ``training`` argument (Keras
    added it in 3.3), as ``fit`` allows."""
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=training)
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)


def _track_loss(model: keras.Model, x: Any, loss: Any) -> None:
    """Adds a batch's loss to the model's ``loss`` tracker (a ``Mean``), as ``fit`` does.

    Weighting by the batch size makes the epoch loss a per-sample mean even with a partial
    last batch, and is what makes it match ``fit``. Under a distribution strategy
    ``compute_loss`` scales the loss by ``1 / replicas``; the tracker gets the unscaled loss,
    as Keras's ``unscale_loss_for_distribution`` gives it to ``fit``'s.
    """
    import tensorflow as tf

    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(replicas, loss.dtype)
    private.loss_tracker(model).update_state(loss, sample_weight=batch_size)


class _Loop:
    """Runs a step function over a dataset iterator in one of the compile modes."""

    def __init__(self, model: keras.Model, step: Callable[[keras.Model, Any], Logs],
                 dataset: tf.data.Dataset, compile_mode: str, *, every_batch: bool,
                 strategy: tf.distribute.Strategy | None = None,
                 memory: InMemoryEpochs | None = None):
        import tensorflow as tf

        self.compile_mode = compile_mode
        # A whole epoch per call unless a callback needs to see every batch.
        self.chunk = 1 if compile_mode != "epoch" or every_batch else _ALL_STEPS
        # Runs each executed chunk (the pre-emption handler's `run` under multi_worker).
        self.guard: Any = None

        def one_step(data: Any) -> Logs:
            return step(model, data)

        # What the compiled epoch loops over: the step, without reading the metrics.
        run_one = one_step
        spec = dataset.element_spec
        if strategy is not None:
            from kexp.training.distribute import distributed_step

            run_one = distributed_step(strategy, lambda data: _updates_only(step(model, data)))
            spec = _distribute(strategy, dataset).element_spec

            def one_step(data: Any) -> Logs:
                run_one(data)
                # Outside `strategy.run`: every worker reads (all-reduces) the same metrics.
                return model.get_metrics_result()

        if compile_mode == "eager":
            self.one_step = one_step
        elif compile_mode == "step":
            # The dataset's element spec has a None batch dimension: one trace serves every
            # batch, the partial last one included.
            self.one_step = tf.function(one_step, input_signature=[spec],
                                        jit_compile=model.jit_compile, autograph=False)
        else:
            # XLA cannot compile the iterator ops, so only the step itself is jit-compiled,
            # as in `fit`.
            if model.jit_compile:
                run_one = tf.function(run_one, jit_compile=True, autograph=False)
            self.one_step = run_one
            self.run_steps = (
                tf.function(_make_run_steps(model, run_one), reduce_retracing=True,
                            autograph=False) if memory is None else
                _make_run_indexed(memory, model, run_one))

    def run(self, iterator: Iterator, steps: int | None, on_batch_begin: Hook,
            on_batch_end: Hook, should_stop: Callable[[], bool], first: int = 0) -> int:
        """Runs batches ``first`` .. ``steps - 1`` (all when ``steps`` is ``None``) with the
        batch hooks around each chunk; returns the number of batches run."""
        import tensorflow as tf

        done = first
        while steps is None or done < steps:
            chunk = self.chunk if steps is None else min(self.chunk, steps - done)
            if self.compile_mode == "epoch":
                on_batch_begin(done)
                ran, logs = self._call(self.run_steps, iterator, tf.constant(chunk))
                ran = int(ran)
            else:
                data = next(iterator, None)
                if data is None:
                    break
                on_batch_begin(done)
                ran, logs = 1, self._call(self.one_step, data)
            if self.guard is not None:
                self.guard.advance(ran)
            if ran == 0:
                break
            on_batch_end(done + ran - 1, logs)
            done += ran
            if ran < chunk or should_stop():
                break
        return done - first

    def _call(self, function: Callable, *args: Any) -> Any:
        return function(*args) if self.guard is None else self.guard.run(function, *args)


def _updates_only(logs: Logs) -> Logs:
    """A replica's step returns nothing to reduce: its metric results are one replica's."""
    del logs
    return {}


def _distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    from kexp.training.distribute import distribute_dataset

    return distribute_dataset(strategy, dataset)


def _is_default(strategy: tf.distribute.Strategy) -> bool:
    import tensorflow as tf

    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def _in_memory(x: tf.data.Dataset, compile_mode: str, strategy: tf.distribute.Strategy | None,
               initial_step: int, steps_per_epoch: int | None = None) -> InMemoryEpochs | None:
    """The in-memory batches behind ``x`` when the epoch function may gather them itself
    (``epoch`` mode, one device, an epoch started from its first batch, epochs of the
    dataset's own length); None: pull them from ``x``'s iterator (streams, class weights,
    other compile modes, strategies, another ``steps_per_epoch``)."""
    from kexp.data.pipeline import in_memory_epochs

    if compile_mode != "epoch" or strategy is not None or initial_step:
        return None
    memory = in_memory_epochs(x)
    if memory is None or steps_per_epoch not in (None, memory.steps):
        return None
    return memory


def _orders_ahead(memory: InMemoryEpochs | None) -> Any:
    """The epochs' sample orders, each computed during the epoch before (None: no
    in-memory data)."""
    from kexp.data.pipeline import OrdersAhead

    return None if memory is None else OrdersAhead(memory.order)


class _EpochOrder:
    """One epoch of in-memory batches for ``_make_run_indexed``'s function: the epoch's
    sample order and the next batch to run (the "iterator" of an in-memory epoch)."""

    def __init__(self, order: tf.Tensor):
        self.order = order
        self.position = 0


def _make_run_indexed(memory: InMemoryEpochs, model: keras.Model,
                      one_step: Callable[[Any], Logs]) -> Callable:
    """``_make_run_steps`` for in-memory data: the epoch function gathers each batch from
    the data tensors by the epoch's order (``InMemoryEpochs``) inside its ``tf.while_loop``
    -- the batches ``train_dataset`` gives, without a ``tf.data`` iterator, its threads or a
    prefetch buffer between the steps. Returns ``run_steps(epoch_order, max_steps)``."""
    import tensorflow as tf

    from kexp.data.pipeline import gather_rows

    batch_size, slots = memory.batch_size, memory.slots

    def run_indexed(order: tf.Tensor, start: tf.Tensor,
                    max_steps: tf.Tensor) -> tuple[tf.Tensor, Logs]:
        count = tf.minimum(max_steps, memory.steps - start)

        def next_step(step: tf.Tensor) -> tf.Tensor:
            first = tf.cast(start + step, tf.int64) * batch_size
            indices = order[first:tf.minimum(first + batch_size, slots)]
            one_step(gather_rows(indices, memory.tensors))
            return step + 1

        tf.while_loop(lambda step: step < count, next_step, [tf.constant(0)])
        return count, model.get_metrics_result()

    # Traced once per run: the order, the first batch and the count are tensors.
    compiled = tf.function(run_indexed, autograph=False)

    def run_steps(source: _EpochOrder, max_steps: tf.Tensor) -> tuple[tf.Tensor, Logs]:
        ran, logs = compiled(source.order, tf.constant(source.position), max_steps)
        source.position += int(ran)
        return ran, logs

    run_steps.compiled = compiled
    return run_steps


def _make_run_steps(model: keras.Model, one_step: Callable[[Any], Logs]) -> Callable:
    """Builds the body of the compiled epoch function: up to ``max_steps`` steps pulled from
    the iterator inside the graph (Listing 7.25), then the running metric results."""
    import tensorflow as tf

    def run_steps(iterator: Any, max_steps: tf.Tensor) -> tuple[tf.Tensor, Logs]:
        def has_more(step: tf.Tensor, exhausted: tf.Tensor) -> tf.Tensor:
            return tf.logical_and(step < max_steps, tf.logical_not(exhausted))

        def next_step(step: tf.Tensor, exhausted: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # Pull one batch per step, never one ahead: with steps_per_epoch the next epoch
            # continues from the same iterator.
            batch = iterator.get_next_as_optional()

            def run() -> tf.Tensor:
                one_step(batch.get_value())
                return tf.constant(False)

            exhausted = tf.cond(batch.has_value(), run, lambda: tf.constant(True))
            return step + tf.cast(tf.logical_not(exhausted), tf.int32), exhausted

        steps, _ = tf.while_loop(has_more, next_step, [tf.constant(0), tf.constant(False)])
        return steps, model.get_metrics_result()

    return run_steps


def _evaluate(model: keras.Model, loop: _Loop, dataset: tf.data.Dataset, steps: int | None,
              callbacks: keras.callbacks.CallbackList,
              strategy: tf.distribute.Strategy | None = None) -> Logs:
    """One pass over the validation data (Listing 7.23); returns the logs, not yet prefixed."""
    model.stop_evaluating = False
    callbacks.on_test_begin()
    model.reset_metrics()
    steps = steps or _known_cardinality(dataset)
    if strategy is not None:
        dataset = _distribute(strategy, dataset)
    loop.run(iter(dataset), steps, callbacks.on_test_batch_begin, callbacks.on_test_batch_end,
             should_stop=lambda: model.stop_evaluating)
    logs = model.get_metrics_result()
    callbacks.on_test_end(logs)
    return logs


class _Guard:
    """Each executed chunk under a ``PreemptionCheckpointHandler``, with the global step
    (``step``, saved with the model and optimizer) that the handler's checkpoint records."""

    def __init__(self, handler: Any, step: tf.Variable):
        self.handler = handler
        self.step = step

    def run(self, function: Callable, *args: Any) -> Any:
        return self.handler.run(function, *args)

    def advance(self, ran: int) -> None:
        self.step.assign_add(ran)


@contextmanager
def _preemption(strategy: tf.distribute.Strategy | None, model: keras.Model,
                directory: str | None, restore: bool, step: int) -> Iterator[_Guard | None]:
    """The pre-emption guard of a run (``None`` without ``directory``)."""
    if strategy is None or directory is None:
        yield None
        return
    import tensorflow as tf

    from kexp.training.distribute import Preempted, preemption_handler

    counter = tf.Variable(step, dtype=tf.int64, trainable=False, name="global_step")
    # The random layers' generator states are not tracked through the model (Keras 3.15):
    # without them a resumed run's Dropout masks would differ from an uninterrupted run's.
    seeds = [v for v in model.variables if "seed_generator_state" in v.path]
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=counter,
                                     seeds=seeds)
    try:
        with preemption_handler(strategy, checkpoint, directory, restore=restore) as handler:
            if int(counter.numpy()) != step:
                raise RuntimeError(f"the pre-emption checkpoint in {directory} is at step "
                                   f"{int(counter.numpy())}, expected {step}")
            yield _Guard(handler, counter)
    except Preempted as exc:
        exc.step = int(counter.numpy())
        raise


def _known_cardinality(dataset: tf.data.Dataset) -> int | None:
    """The number of batches in one pass, or ``None`` when tf.data cannot tell."""
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else None


def _warn_out_of_data(epoch: int, done: int, steps_per_epoch: int) -> None:
    warnings.warn(
        f"The training data ran out in epoch {epoch} after {done} of {steps_per_epoch} "
        "steps; stopping. With steps_per_epoch the dataset must yield "
        "steps_per_epoch * epochs batches (use .repeat()).",
        stacklevel=3,
    )
