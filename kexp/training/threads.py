"""TensorFlow's CPU thread pools, from ``train.threads``.

TensorFlow runs each op on an *intra-op* pool (one op split across threads) and independent
ops on an *inter-op* pool, each with one thread per core by default, beside ``tf.data``'s own
threads. On a machine with few cores and small batches those pools outnumber the cores:
splitting a 32 x 784 by 784 x 512 matmul costs more than it saves, and the threads wait on
one another. Measured on 2 cores (whole-epoch loop, samples/s per epoch, one process per
run, interleaved; the figures are in the README):

- the chapter's MNIST network at batch 32: 40-41k with one thread per pool, 35-38k with
  TensorFlow's default -- and in some runs a stall at 19-20k (process CPU 0.85 cores);
- at batch 64: 53-58k with one thread, 50-54k by default;
- at batch 128 and more, and the ticket model at batch 32 (20,100 input values per sample):
  TensorFlow's default is as fast or 5-20% faster.

Trials of a sweep that run side by side share the cores: ``kexp sweep`` gives each
``KEXP_CORES`` = cores // jobs, and ``auto`` then means that many threads per pool (one
for small batches on few cores, as above).

The work of a step grows with the values it reads, so ``threads: auto`` (the default) means
one thread per pool when a batch holds at most ``SMALL_BATCH_VALUES`` input values on a
machine of at most ``FEW_CORES`` cores, and TensorFlow's own choice otherwise. ``0`` always
keeps TensorFlow's choice; ``N`` sets both pools to ``N``. Both pools change together: one
thread in one pool and two in the other stalled the same way.

The pools can only be sized before TensorFlow's runtime starts. An explicit ``N`` is set
first, right after TensorFlow is imported; ``auto`` needs the data, so it is applied after the
data is loaded (NumPy only) and before the model is built, and only when nothing has started
the runtime yet (a distribution strategy does: ``auto`` then keeps TensorFlow's choice).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np

from kexp.data.splits import Arrays

__all__ = ["FEW_CORES", "SMALL_BATCH_VALUES", "auto_threads", "configure_threads",
           "threads_in_use"]

FEW_CORES = 2
SMALL_BATCH_VALUES = 65_536


def auto_threads(batch_size: int, x: Arrays, cores: int | None = None) -> int:
    """What ``threads: auto`` picks for batches of ``batch_size`` samples of ``x`` (0:
    TensorFlow's default)."""
    arrays = x.values() if isinstance(x, dict) else x if isinstance(x, list | tuple) else [x]
    values = sum(int(np.prod(np.shape(a)[1:], dtype=np.int64)) for a in arrays)
    share = _share()
    cores = cores or share or _cores()
    if cores <= FEW_CORES and batch_size * values <= SMALL_BATCH_VALUES:
        return 1
    return share or 0


def configure_threads(threads: int | Literal["auto"], batch_size: int,
                      x: Arrays | None = None) -> None:
    """Size TensorFlow's intra-op and inter-op pools as ``train.threads`` says.

    Called twice: right after TensorFlow is imported (``x`` None), where an explicit number
    is set, and once the data ``x`` is loaded, where ``auto`` is decided. ``auto`` is skipped
    quietly when the runtime has already started; an explicit number then warns.
    """
    if threads == "auto":
        if x is not None:
            _set(auto_threads(batch_size, x))
    elif x is None and not _set(threads):
        warnings.warn(f"train.threads: TensorFlow had already started, so its thread pools "
                      f"keep their size instead of {threads}.", stacklevel=2)


def _set(threads: int) -> bool:
    """Both pools to ``threads`` (0: leave them); false when the runtime already started."""
    if threads == 0:
        return True
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


def threads_in_use() -> int | str:
    """Threads per pool, or ``"default"`` (one per core): what run.json records."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or "default"


def _share() -> int | None:
    """The cores this process is given when it shares the machine with others: ``kexp
    sweep`` running ``jobs`` trials at once sets ``KEXP_CORES`` to cores // jobs."""
    try:
        return max(1, int(os.environ["KEXP_CORES"]))
    except (KeyError, ValueError):
        return None


def _cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
