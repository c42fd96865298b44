"""``tf.data`` input pipelines over in-memory splits.

The training dataset covers every remaining epoch in one ``tf.data.Dataset``. Epoch ``e``'s
sample order is a stateless permutation seeded by ``(seed, e)``, so it depends on nothing
else: a run resumed at epoch ``k`` sees exactly the batches an uninterrupted run sees from
epoch ``k`` on. Batches are index vectors turned into data with one ``tf.gather`` per array
(what Keras does for NumPy input), which is much faster than
``from_tensor_slices().shuffle().batch()``.

Data is held in memory as tensors, so the config's ``cache`` option needs no work here: there
is nothing to read twice. Likewise ``shuffle`` may be a buffer size, as in Keras; the
permutation is always over the whole split, which is what an infinite buffer would give.

TensorFlow is imported inside the functions: this module is imported only to train.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kexp.data.order import permutation
from kexp.data.splits import Split
from kexp.data.stream import is_stream, stream_batches

if TYPE_CHECKING:
    import tensorflow as tf

    from kexp.data.stream import Shard

__all__ = ["train_dataset", "epoch_dataset", "eval_dataset", "epoch_permutation",
           "InMemoryEpochs", "OrdersAhead", "in_memory_epochs", "gather_rows"]


def train_dataset(
    split: Split,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    shuffle: bool | int = True,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    shard: Shard | None = None,
) -> tuple[tf.data.Dataset, int]:
    """One dataset of ``(x, y)`` batches for epochs ``initial_epoch .. epochs - 1``, and the
    number of batches per epoch.

    Pass both to Keras as ``model.fit(ds, epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps)``: with ``steps_per_epoch`` Keras keeps one iterator across epochs,
    so epoch ``e`` gets this dataset's epoch-``e`` batches. (Without it Keras would read the
    whole dataset, every epoch, as its first epoch.)

    Args:
        split: the training split (``y`` None: batches are ``x`` only).
        batch_size: samples per batch.
        seed: the run's seed; epoch ``e``'s order is ``epoch_permutation(n, seed, e)``.
        epochs: the epoch to stop before, as in ``fit``.
        shuffle: false keeps the split's order. An int (a Keras-style buffer size) means
            true: the data is in memory, so the whole split is always permuted.
        initial_epoch: the first epoch to produce (a resumed run).
        steps_per_epoch: exactly this many full batches per epoch: the first ones of the
            epoch's permutation, continued by further permutations seeded by
            ``(seed, e, r)`` when one pass over the data is not enough. Default: one pass,
            ``ceil(n / batch_size)`` batches, the last one partial.
        shard: a streamed split only: this worker's part of every epoch
            (``kexp.data.stream.Shard``; needs ``steps_per_epoch``).

    Returns:
        ``(dataset, steps)``. Batches have an unknown batch dimension (``None``) in the
        element spec, so a partial last batch does not retrace a ``tf.function``.
    """
    import tensorflow as tf

    if is_stream(split):
        return stream_batches(split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                              epochs=range(initial_epoch, max(epochs, initial_epoch)),
                              steps_per_epoch=steps_per_epoch, shard=shard)
    n = _check_sizes(split, batch_size)
    epochs_ = InMemoryEpochs(_tensors(split), n, batch_size, seed, bool(shuffle),
                             steps_per_epoch)
    steps = epochs_.steps

    def batches(order: tf.Tensor) -> tf.data.Dataset:
        # Slicing by a tensor step gives index vectors of unknown length: batch dim None.
        return tf.data.Dataset.range(steps).map(
            lambda i: order[i * batch_size:(i + 1) * batch_size])

    # One permutation ahead is enough; more would contend for the CPU (as in Keras).
    orders = tf.data.Dataset.range(initial_epoch, max(epochs, initial_epoch))
    indices = orders.map(epochs_.order).prefetch(1).flat_map(batches)
    indices = indices.apply(
        tf.data.experimental.assert_cardinality(steps * max(epochs - initial_epoch, 0)))
    dataset = _gather(indices, split, epochs_.tensors)
    # The same batches, for a loop that gathers them itself (``in_memory_epochs``).
    dataset._kexp_in_memory = epochs_
    return dataset, steps


@dataclass(frozen=True)
class InMemoryEpochs:
    """The batches ``train_dataset`` gives, as index slices of tensors held in memory: epoch
    ``e``'s batch ``i`` is ``tensors`` gathered at ``order(e)[i * batch_size:(i + 1) *
    batch_size]`` (the last batch of a pass may be partial).

    For a loop that gathers its batches itself, inside one compiled function, rather than
    pulling them from a ``tf.data`` iterator (``kexp.training.custom_loop``'s ``epoch``
    mode).
    """

    tensors: Any  # x, (x, y) or (x, y, sample_weight)
    n: int
    batch_size: int
    seed: int
    shuffle: bool
    steps_per_epoch: int | None = None

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return self.steps_per_epoch or math.ceil(self.n / self.batch_size)

    @property
    def slots(self) -> int:
        """Sample slots per epoch: ``n``, or ``steps_per_epoch`` full batches."""
        return self.steps * self.batch_size if self.steps_per_epoch else self.n

    def order(self, epoch: tf.Tensor) -> tf.Tensor:
        """Epoch ``epoch``'s sample indices, ``slots`` of them: one permutation per pass
        over the data, seeded by ``(seed, epoch, pass)``."""
        import tensorflow as tf

        n, slots = self.n, self.slots
        epoch = tf.cast(epoch, tf.int64)
        if not self.shuffle:
            return tf.range(slots, dtype=tf.int64) % n
        passes = math.ceil(slots / n)
        if passes == 1:  # the usual case: no loop to trace
            return permutation(n, self.seed, epoch, tf.constant(0, tf.int64))[:slots]
        orders = tf.map_fn(
            lambda r: permutation(n, self.seed, epoch, r),
            tf.range(passes, dtype=tf.int64),
            fn_output_signature=tf.TensorSpec([n], tf.int64),
        )
        return tf.reshape(orders, [-1])[:slots]


class OrdersAhead:
    """Epoch orders (``order(epoch)``, e.g. ``InMemoryEpochs.order``), each computed one epoch
    ahead on a background thread: a permutation of the MNIST-sized split takes about 60 ms,
    which would otherwise stall the start of every epoch (what ``prefetch(1)`` of the orders
    does for ``train_dataset``'s iterator)."""

    def __init__(self, order: Callable[[Any], tf.Tensor]):
        self._order = order
        self._pool: ThreadPoolExecutor | None = None
        self._next: tuple[int, Future] | None = None

    def get(self, epoch: int, ahead: bool = True) -> tf.Tensor:
        """Epoch ``epoch``'s order; with ``ahead``, start computing the next one."""
        if self._next is not None and self._next[0] == epoch:
            order = self._next[1].result()
        else:
            order = self._compute(epoch)
        self._next = None
        if ahead:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="kexp-order")
            self._next = (epoch + 1, self._pool.submit(self._compute, epoch + 1))
        return order

    def _compute(self, epoch: int) -> tf.Tensor:
        import tensorflow as tf

        return self._order(tf.constant(epoch, tf.int64))


def in_memory_epochs(dataset: Any) -> InMemoryEpochs | None:
    """The in-memory batches behind a dataset ``train_dataset`` returned, or None (a stream,
    or a dataset transformed since, e.g. with class weights added)."""
    return getattr(dataset, "_kexp_in_memory", None)


def epoch_dataset(split: Split, *, batch_size: int, seed: int, epoch: tf.Variable,
                  shuffle: bool | int = True) -> tuple[tf.data.Dataset, int]:
    """One epoch of ``(x, y)`` batches whose order is that of epoch ``epoch`` (a variable read
    each time an iterator starts), and the number of batches.

    For ``model.fit`` without ``steps_per_epoch``: Keras then starts a new iterator every
    epoch and may run several steps per call (``steps_per_execution``) whatever the number of
    batches, the last call stopping where the data ends. A callback assigns the epoch in
    ``on_epoch_begin``. Epoch ``e``'s batches are those ``train_dataset`` gives for ``e``.
    """
    import tensorflow as tf

    if is_stream(split):
        return stream_batches(split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                              epoch=epoch)
    n = _check_sizes(split, batch_size)
    steps = math.ceil(n / batch_size)
    # Each epoch's order is computed during the epoch before, off the iterator's start.
    ahead = OrdersAhead(lambda e: permutation(n, seed, e, tf.constant(0, tf.int64)))

    def order(_: tf.Tensor) -> tf.Tensor:
        if not shuffle:
            return tf.range(n, dtype=tf.int64)
        ordered = tf.py_function(lambda e: ahead.get(int(e)), [epoch.read_value()], tf.int64)
        return tf.ensure_shape(ordered, [n])

    def batches(indices: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.range(steps).map(
            lambda i: indices[i * batch_size:(i + 1) * batch_size])

    indices = tf.data.Dataset.range(1).map(order).flat_map(batches)
    indices = indices.apply(tf.data.experimental.assert_cardinality(steps))
    return _gather(indices, split), steps


def eval_dataset(split: Split, *, batch_size: int, steps: int | None = None) -> tf.data.Dataset:
    """Batches of ``split`` in order, once: for validation, ``evaluate`` and ``predict``.

    Args:
        split: the data; ``y`` None (data to predict on) yields ``x`` batches only.
        batch_size: samples per batch; the last batch may be partial.
        steps: at most this many batches (``--smoke`` runs); default: all of them.

    Returns:
        A finite dataset of ``(x, y)`` (or ``x``) batches, batch dimension ``None``.
    """
    import tensorflow as tf

    if is_stream(split):
        return stream_batches(split, batch_size=batch_size, seed=0, shuffle=False,
                              steps=steps)[0]
    n = _check_sizes(split, batch_size)
    count = math.ceil(n / batch_size)
    if steps is not None:
        count = min(count, steps)
    indices = tf.data.Dataset.range(count).map(
        lambda i: tf.range(i * batch_size, tf.minimum((i + 1) * batch_size, n)))
    return _gather(indices, split)


def epoch_permutation(n: int, seed: int, epoch: int, repeat: int = 0) -> tf.Tensor:
    """The sample order of pass ``repeat`` of epoch ``epoch``: a permutation of ``range(n)``
    that depends only on ``(seed, epoch, repeat)`` (for tests and tools)."""
    import tensorflow as tf

    return permutation(n, seed, tf.constant(epoch, tf.int64), tf.constant(repeat, tf.int64))


def _check_sizes(split: Split, batch_size: int) -> int:
    from kexp.errors import DataError

    n = len(split)
    if n == 0:
        raise DataError(f"{split.source or 'the data'}: no samples.")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1; received {batch_size}.")
    return n


def _tensors(split: Split) -> Any:
    """The split as the batches' structure of tensors: ``x``, ``(x, y)``, or ``(x, y,
    sample_weight)`` with per-sample weights, as Keras's fit takes them."""
    import tensorflow as tf

    data: Any = (split.x if split.y is None else
                 (split.x, split.y) if getattr(split, "w", None) is None else
                 (split.x, split.y, split.w))
    return tf.nest.map_structure(tf.convert_to_tensor, data)


def gather_rows(indices: tf.Tensor, tensors: Any) -> Any:
    """The rows ``indices`` of every tensor of ``tensors`` (one batch of in-memory data)."""
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: tf.gather(t, indices, axis=0), tensors)


def _gather(indices: tf.data.Dataset, split: Split, tensors: Any = None) -> tf.data.Dataset:
    """Index-vector batches -> data batches, gathering from tensors held in memory."""
    import tensorflow as tf

    tensors = _tensors(split) if tensors is None else tensors

    # The data rides along as a repeated dataset element rather than a captured constant of
    # the map function (Keras's array adapter does the same).
    dataset = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensors(tensors).repeat()))
    dataset = dataset.map(gather_rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # In-memory data has no files to shard by: shard batches between workers instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
