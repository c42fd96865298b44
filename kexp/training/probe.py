"""The start-up probe: one batch of training data through the model, each output's loss and
each metric, before the run directory exists.

A shape or dtype mistake between the model, the loss and the data (``loss: mse`` on a
two-unit softmax head fed integer labels; ``sparse_categorical_crossentropy`` fed one-hot
targets) would otherwise fail inside the first training step, with a run directory already
made. Here it is a config error (exit 2) naming the loss or metric (its config path and
file:line), the output, the data's targets, and TensorFlow's own message
(``Incompatible shapes: [32,2] vs. [32]``); nothing is written.

Each output's loss and metrics are Keras's own ``CompileLoss`` / ``CompileMetrics``, made
apart from the model exactly as ``compile`` makes them, so nothing the probe does shows in the
run: no weight, metric or optimizer changes, no random generator is drawn from (the forward
pass runs with ``training=False``), and Keras's name counters are put back. A model class with
its own ``train_step`` or ``compute_loss`` decides itself what it computes: it is not probed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kexp.config.schema import Component, Config
from kexp.errors import ConfigError, Problem, error_line
from kexp.training import _keras_private as private

__all__ = ["probe_batch"]

_KINDS = (("loss", "the loss"), ("metrics", "the metric"), ("weighted_metrics", "the metric"))


def probe_batch(cfg: Config, model: Any, splits: Any) -> None:
    """Run one training batch through ``model`` and the config's losses and metrics.

    Raises:
        ConfigError: a loss or metric fails on the batch (the op's message, the output, the
            targets, the config path and file:line of the loss or metric).
    """
    spec = cfg.compile
    if all(getattr(spec, key) is None for key, _ in _KINDS) or _own_step(model):
        return
    import tensorflow as tf

    batch = _first_batch(splits.train, cfg.data.batch_size)
    if batch is None or batch.y is None:
        return
    tensors = tf.nest.map_structure(tf.convert_to_tensor, (batch.x, batch.y))
    weights = None if batch.w is None else tf.convert_to_tensor(batch.w)
    with private.names_kept():
        try:
            y_pred = model(tensors[0], training=False)
        except (TypeError, ValueError, tf.errors.OpError):
            return  # the model itself: reported when it is built, or by training
        pairs = _pairs(model, tensors[1], y_pred)
        for index, (output, y_true, pred) in enumerate(pairs or []):
            for key, label in _KINDS:
                for path, comp in _components(key, getattr(spec, key), output, index,
                                              len(pairs)):
                    try:
                        _run(key, comp, output, y_true, pred, weights)
                    except (TypeError, ValueError, KeyError, tf.errors.OpError) as exc:
                        raise ConfigError(Problem(path, _message(
                            cfg, label, comp, output, index, len(pairs), y_true, pred, exc,
                            batch.source), cfg.where(path))) from None


def _run(key: str, comp: Component, output: str, y_true: Any, y_pred: Any,
         weights: Any) -> None:
    from kexp.components import build
    from kexp.registry import LOSSES, METRICS

    if key == "loss":
        private.compiled_loss(build(comp, LOSSES), [output])(y_true, y_pred, weights)
        return
    metric = [build(comp, METRICS)]
    plain, weighted = (metric, None) if key == "metrics" else (None, metric)
    private.compiled_metrics(plain, weighted, [output]).update_state(y_true, y_pred, weights)


def _message(cfg: Config, label: str, comp: Component, output: str, index: int, outputs: int,
             y_true: Any, y_pred: Any, exc: BaseException, source: str) -> str:
    return (f"{label} {comp.type!r} fails on the first batch: output {output!r} predicts shape "
            f"{_shape(y_pred)}, {_targets(cfg, output, index, outputs, source)} have shape "
            f"{_shape(y_true)}: {error_line(exc)}")


def _targets(cfg: Config, output: str, index: int, outputs: int, source: str) -> str:
    """The data's targets for ``output``, as the config names them."""
    named = cfg.data.args.get("targets") if cfg.data is not None else None
    if isinstance(named, dict):
        named = named.get(output)
    elif isinstance(named, list) and outputs > 1 and len(named) == outputs:
        named = named[index]
    if isinstance(named, (str, int)):
        return f"the targets {str(named)!r} (data.targets)"
    if named is not None:
        return f"the targets {named} (data.targets)"
    return f"the targets of {source or cfg.data.type}"


def _shape(tensor: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in tensor.shape) + (
        ",)" if len(tensor.shape) == 1 else ")")


def _components(key: str, value: Any, output: str, index: int,
                outputs: int) -> Iterator[tuple[str, Component]]:
    """``(config path, component)`` of each loss or metric ``compile.<key>`` gives
    ``output`` (one for all, a list in output order, or a mapping by output name)."""
    def items(value: Any, path: str) -> Iterator[tuple[str, Component]]:
        if isinstance(value, Component):
            yield path, value
        elif isinstance(value, list):
            for j, item in enumerate(value):
                yield from items(item, f"{path}[{j}]")

    base = f"compile.{key}"
    if isinstance(value, dict):
        if output in value:
            yield from items(value[output], f"{base}.{output}")
    elif isinstance(value, list) and outputs > 1:
        if len(value) == outputs:
            yield from items(value[index], f"{base}[{index}]")
    elif value is not None:
        yield from items(value, base)


def _first_batch(split: Any, batch_size: int) -> Any:
    from kexp.data.stream import is_stream

    if is_stream(split):
        return split.probe
    import numpy as np

    from kexp.data.splits import take

    return take(split, np.arange(min(batch_size, len(split)))) if len(split) else None


def _pairs(model: Any, y_true: Any, y_pred: Any) -> list[tuple[str, Any, Any]] | None:
    """``(output name, targets, predictions)`` per output, in the model's output order; None
    when the structures do not pair up plainly (then the probe checks nothing)."""
    try:
        names = list(model.output_names)
    except (AttributeError, ValueError, TypeError):
        names = []
    if isinstance(y_pred, dict):
        names, preds = list(y_pred), list(y_pred.values())
    elif isinstance(y_pred, (list, tuple)):
        preds = list(y_pred)
    else:
        preds = [y_pred]
    if len(names) != len(preds):  # a Sequential model: its last layer names its output
        layers = getattr(model, "layers", None) or []
        names = ([f"output_{i}" for i in range(len(preds))] if len(preds) > 1 or not layers
                 else [layers[-1].name])
    if isinstance(y_true, dict):
        if not set(names) <= set(y_true):
            return None if len(y_true) != 1 or len(preds) != 1 else [
                (names[0], next(iter(y_true.values())), preds[0])]
        return [(name, y_true[name], pred) for name, pred in zip(names, preds, strict=True)]
    return [(names[0], y_true, preds[0])] if len(preds) == 1 else None


def _own_step(model: Any) -> bool:
    """A model class that computes its own loss (``train_step`` or ``compute_loss``)."""
    import keras

    return any(getattr(type(model), hook, None) is not getattr(keras.Model, hook, None)
               for hook in ("train_step", "compute_loss"))
