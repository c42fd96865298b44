"""Class weights (``train.class_weight``), applied as Keras's ``fit`` applies them.

Keras's ``fit(class_weight=...)`` turns class weights into per-sample weights in its data
adapter (``make_class_weight_map_fn`` in ``keras/src/trainers/data_adapters``): each
training batch ``(x, y)`` becomes ``(x, y, sample_weight)`` with ``sample_weight[i] =
class_weight[class of y[i]]`` (the class: ``argmax`` of a one-hot or probability row, else
the rounded label), a class the mapping does not name weighing 1.0. Validation data is not
weighed. kexp does the same to its training dataset for both loops, so ``fit`` and the custom
loop see the same batches and weigh the loss (and ``weighted_metrics``) alike.

``balanced`` is scikit-learn's ``compute_class_weight("balanced")``: ``n_samples /
(n_classes * count(c))`` for each class ``c`` present in the training labels.

Mistakes Keras would make a crash or a silent no-op are config errors here, raised before
the run directory exists: a class index the model's output has no unit for, targets that
are not class labels (values that are not whole numbers), several outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kexp.config.schema import Config
from kexp.errors import ConfigError, Problem

if TYPE_CHECKING:
    import numpy as np

__all__ = ["class_weights", "with_class_weights"]

_PATH = "train.class_weight"


def class_weights(cfg: Config, model: Any, splits: Any) -> dict[int, float] | None:
    """The class weights a run uses (``balanced`` computed from the training labels), checked
    against the model and the labels; None without ``train.class_weight``.

    Raises:
        ConfigError: several outputs, targets that are not class labels, a class index the
            model has no output unit for.
    """
    spec = cfg.train.class_weight
    if spec is None or splits.train.y is None:
        return None
    where = cfg.where(_PATH)
    _check_one_output(model, splits.train.y, where)
    units = _classes_of(model)
    labels = None
    if not _streamed(splits.train):
        labels = class_labels(_single(splits.train.y), splits.train.source, where)
    if spec == "balanced":
        if labels is None:
            raise ConfigError(Problem(_PATH, "`balanced` counts the training labels, which "
                                      "streamed data does not hold in memory; give the "
                                      "weights per class, e.g. {0: 1.0, 1: 4.0}", where))
        return balanced(labels)
    weights = {int(k): float(v) for k, v in spec.items()}
    known = units if units is not None else (int(labels.max()) + 1 if labels is not None
                                             and len(labels) else None)
    for index in weights:
        if index < 0 or (known is not None and index >= known):
            at = cfg.sources.where(("train", "class_weight", index)) if cfg.sources else ""
            what = ("class indices count from 0" if known is None else
                    f"the model's output tells {known} classes apart (0..{known - 1})"
                    if units is not None else
                    f"the training labels run from 0 to {known - 1}")
            raise ConfigError(Problem(_PATH, f"class {index} is not a class of this run: {what}",
                                      at or where))
    return weights


def balanced(labels: np.ndarray) -> dict[int, float]:
    """scikit-learn's ``compute_class_weight("balanced", classes=np.unique(y), y=y)``."""
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): float(len(labels) / (len(classes) * n))
            for c, n in zip(classes, counts, strict=True)}


def class_labels(y: Any, source: str, where: str) -> np.ndarray:
    """The class index of each sample, as Keras derives it: ``argmax`` of one-hot (or
    probability) rows, else the label itself, which must be a whole number >= 0."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    if y.ndim >= 2:
        y = y[..., 0]
    bad = (y != np.round(y)) | (y < 0)
    if bad.any():
        i = int(np.argmax(bad.reshape(-1)))
        raise ConfigError(Problem(
            _PATH, f"class weights need class labels (whole numbers >= 0, or one-hot rows); "
            f"the targets of {source or 'the training data'} hold {y.reshape(-1)[i]!r} at "
            f"sample {i}", where))
    return np.round(y).astype(np.int64).reshape(-1)


def with_class_weights(dataset: Any, weights: dict[int, float], size: int) -> Any:
    """``dataset`` of ``(x, y)`` batches as ``(x, y, sample_weight)``: Keras's
    ``make_class_weight_map_fn``, with a table of ``size`` classes (unnamed ones weigh 1.0)."""
    import tensorflow as tf

    table = tf.convert_to_tensor([weights.get(c, 1.0) for c in range(size)])

    def add_weights(x: Any, y: Any) -> Any:
        labels = _single(y)

        def one_hot() -> Any:
            return tf.argmax(labels, axis=-1, output_type=tf.int32)

        def sparse() -> Any:
            return tf.cast(tf.round(tf.squeeze(labels, axis=-1)), tf.int32)

        width = labels.shape[-1] if labels.shape.rank >= 2 else None
        if labels.shape.rank < 2:  # a rank-1 label is a class index
            classes = tf.cast(tf.round(labels), tf.int32)
        elif width is not None:  # Keras's smart_cond, decided on the static shape
            classes = one_hot() if width > 1 else sparse()
        else:
            classes = tf.cond(tf.shape(labels)[-1] > 1, one_hot, sparse)
        return x, y, tf.gather(table, classes)

    return dataset.map(add_weights).prefetch(tf.data.AUTOTUNE)


def table_size(weights: dict[int, float], model: Any, splits: Any) -> int:
    """Classes the weight table covers: every index the model's output, the labels (in
    memory) or the mapping can produce."""
    size = max(weights, default=-1) + 1
    units = _classes_of(model)
    if units is not None:
        size = max(size, units)
    if not _streamed(splits.train):
        labels = class_labels(_single(splits.train.y), "", "")
        size = max(size, int(labels.max()) + 1 if len(labels) else 0)
    return size


def _check_one_output(model: Any, y: Any, where: str) -> None:
    try:
        outputs = [getattr(t, "name", "?") for t in model.outputs]
    except (AttributeError, ValueError, TypeError):
        outputs = []
    if isinstance(y, dict) and len(y) > 1:
        outputs = list(y)
    if len(outputs) > 1:
        raise ConfigError(Problem(
            _PATH, f"class weights apply to a model with one output (as in Keras's fit); this "
            f"one has {len(outputs)} ({', '.join(outputs)}): give per-sample weights instead "
            "(data.sample_weight)", where))


def _classes_of(model: Any) -> int | None:
    """The classes the model's output tells apart: its units (one sigmoid unit: 2)."""
    try:
        width = model.outputs[0].shape[-1]
    except (AttributeError, IndexError, ValueError, TypeError):
        return None
    if width is None or len(model.outputs[0].shape) < 2:
        return None
    return 2 if width == 1 else int(width)


def _single(y: Any) -> Any:
    return next(iter(y.values())) if isinstance(y, dict) else y


def _streamed(split: Any) -> bool:
    from kexp.data.stream import is_stream

    return is_stream(split)
