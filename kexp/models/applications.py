"""Keras Applications (``MobileNetV2``, ``EfficientNetB0``, ``ResNet50``, ...) as components,
their ``preprocess_input`` as a layer, pretrained weights, and freezing by name.

A ``keras.applications`` constructor is a model component (``kexp list models``) usable as a
layer of a sequential or functional model, with its own arguments::

    - {type: Preprocess, application: MobileNetV2}          # its preprocess_input, a layer
    - {type: MobileNetV2, include_top: false, weights: imagenet, pooling: avg,
       name: backbone, trainable: false}

``weights:`` is ``imagenet`` (Keras downloads the file into its cache,
``$KERAS_HOME/models``, default ``~/.keras/models``), ``null`` or a local weights file
(relative to the config file). A download is bounded: ``DOWNLOAD_TIMEOUT`` seconds without a
byte, and any failure is a ``WeightsUnavailable`` config error naming the cache path where the
file belongs -- raised while the model is built, before a run directory exists. Inside
``no_weight_downloads()`` (``make smoke``) an absent file fails at once, without a download.

``input_shape`` defaults to the shape of the tensor the application is called on.

Freezing: ``trainable: false`` on any layer node freezes it whole; ``freeze`` and
``unfreeze`` (on ``model:`` and on each ``train.phases`` item) (un)freeze part of a nested
model by its sublayer names -- see ``apply_freezing``. A frozen BatchNormalization layer
runs in inference mode (Keras 3: ``training and self.trainable``), and ``unfreeze`` leaves a
nested model's BatchNormalization layers frozen unless ``batchnorm: true``, as Keras's
fine-tuning guide recommends.

This module imports no TensorFlow at import time (``kexp validate`` uses it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kexp.config.errors import closest
from kexp.config.schema import Component, FreezeSpec, ModelSpec, UnfreezeSpec
from kexp.errors import ConfigError, Problem
from kexp.models.catalog import application_info, preprocess_module
from kexp.registry import LAYERS, MODELS

__all__ = [
    "KEXP_APPLICATION_ARGS",
    "WeightsUnavailable",
    "application_info",
    "preprocess_module",
    "check_applications",
    "model_layer_names",
    "build_application",
    "no_weight_downloads",
    "apply_freezing",
    "Preprocess",
]

# Arguments kexp adds to every application constructor (applied to the model it returns).
KEXP_APPLICATION_ARGS = ("trainable",)

_offline = False  # inside no_weight_downloads(): never download


class WeightsUnavailable(ConfigError):
    """Pretrained weights that are neither in Keras's cache nor downloadable now."""

    def __init__(self, problem: Problem, cache_file: Path):
        self.cache_file = cache_file
        super().__init__(problem)


@LAYERS.register("Preprocess")
def Preprocess(application: str, name: str | None = None) -> Any:  # noqa: N802 - a layer name
    """The ``preprocess_input`` of a Keras application as a layer:
    ``{type: Preprocess, application: MobileNetV2}``."""
    preprocess_module(application)  # a clear error before Keras is imported
    from kexp.models.preprocess import ApplicationPreprocess

    return ApplicationPreprocess(application, **({"name": name} if name else {}))


# --------------------------------------------------------------------------- checks (no TF)


def check_applications(spec: ModelSpec) -> list[Problem]:
    """Problems with application nodes, ``Preprocess`` layers and ``freeze``/``unfreeze``
    that can be seen without TensorFlow: a missing weights file, an application without a
    ``preprocess_input``, a ``layer:`` that names no node of the model."""
    problems: list[Problem] = []
    nodes = list(spec.layers or []) if spec.kind != "class" else [spec]
    for node in nodes:
        at = f"{node.path}." if node.path else ""
        if node.type == "Preprocess" and isinstance(node.args.get("application"), str):
            try:
                preprocess_module(node.args["application"])
            except ValueError as exc:
                problems.append(Problem(f"{at}application", str(exc)))
        if application_info(node.type) is not None:
            problems += _check_weights(node.args.get("weights", "imagenet"), f"{at}weights")
    names = model_layer_names(spec)
    problems += check_freeze_targets(spec.freeze, "model.freeze", names)
    problems += check_freeze_targets(spec.unfreeze, "model.unfreeze", names)
    return problems


def model_layer_names(spec: ModelSpec) -> set[str]:
    """The layer names a config gives its model's nodes (empty when the built model may
    have others: a registered class, a ``base:`` model)."""
    if spec.kind == "class" or spec.base is not None:
        return set()
    return {str(n.args["name"]) for n in spec.layers or []
            if n.args.get("name") and n.call is None}  # a `call:` node builds no layer


def _check_weights(weights: Any, path: str) -> list[Problem]:
    if weights is None or weights == "imagenet":
        return []
    if not isinstance(weights, str):
        return [Problem(path, "expected imagenet, null or the path of a weights file; "
                              f"received {weights!r}")]
    if not Path(weights).is_file():
        return [Problem(path, f"weights file {weights} does not exist (`weights:` is "
                              "imagenet, null or a file path relative to the config file)")]
    return []


def check_freeze_targets(specs: Any, path: str, names: set[str]) -> list[Problem]:
    """``layer:`` of each freeze/unfreeze item names a node of the model."""
    if not names:
        return []
    problems = []
    for i, item in enumerate(_as_list(specs)):
        if item.layer not in names:
            where = f"{path}[{i}].layer" if isinstance(specs, list) else f"{path}.layer"
            problems.append(Problem(where, f"{item.layer!r} is not a named layer of the model "
                                           f"(named: {', '.join(sorted(names))})",
                                    suggestion=closest(item.layer, sorted(names))))
    return problems


def _as_list(specs: Any) -> list:
    if specs is None:
        return []
    return list(specs) if isinstance(specs, list) else [specs]


# --------------------------------------------------------------------------- building


def build_application(node: Component, input_shape: Any = None, **runtime: Any) -> Any:
    """The Keras model an application node describes; ``input_shape`` (the incoming
    tensor's, without the batch axis) when the node gives none. ``weights: imagenet`` that
    cannot be had raises ``WeightsUnavailable``."""
    from kexp.components import build

    if input_shape is not None and not {"input_shape", "input_tensor"} & set(node.args):
        runtime["input_shape"] = tuple(input_shape)
    trainable = node.args.get("trainable")
    weights_path = f"{node.path}.weights" if node.path else "weights"
    with _bounded_downloads(node.type, weights_path, node.where_of("weights")):
        model = build(node, MODELS, skip=KEXP_APPLICATION_ARGS, **runtime)
    if trainable is not None:
        model.trainable = bool(trainable)
    return model


@contextmanager
def no_weight_downloads() -> Iterator[None]:
    """Weights that are not in Keras's cache fail at once (``make smoke`` skips the config)."""
    global _offline
    previous, _offline = _offline, True
    try:
        yield
    finally:
        _offline = previous


@contextmanager
def _bounded_downloads(application: str, path: str, where: str) -> Iterator[None]:
    """Keras's ``get_file`` with kexp's cache directory and timeout, and a config error
    naming the cache file when the weights cannot be had."""
    from keras.src.utils import file_utils

    from kexp.data.keras_datasets import DOWNLOAD_TIMEOUT, keras_home

    original = file_utils.get_file
    home = keras_home()

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None,
                 **kwargs):
        cache_dir = cache_dir or str(home)
        target = Path(cache_dir) / cache_subdir / str(fname)
        call = lambda: original(fname, origin, *args, cache_subdir=cache_subdir,  # noqa: E731
                                cache_dir=cache_dir, **kwargs)
        if target.exists():
            return call()
        if _offline:
            raise _unavailable(application, path, where, target, origin,
                               "no download in this mode")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # urllib has no other knob for get_file
        try:
            return call()
        except Exception as exc:  # any failure means "no weights": explain the way out
            raise _unavailable(application, path, where, target, origin,
                               str(exc).strip() or type(exc).__name__) from None
        finally:
            socket.setdefaulttimeout(previous)

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


def _unavailable(application: str, path: str, where: str, target: Path, origin: Any,
                 reason: str) -> WeightsUnavailable:
    return WeightsUnavailable(Problem(
        path,
        f"{application}'s imagenet weights are not in Keras's cache ({target}) and the "
        f"download from {origin} failed: {reason}. Download the file where there is network "
        f"access and put it at that path (set KERAS_HOME to move the cache), or give "
        f"`weights:` a local weights file, or `weights: null` to start from random weights.",
        where), target)


# --------------------------------------------------------------------------- freezing


def apply_freezing(model: Any, freeze: Any, unfreeze: Any, path: str = "model",
                   sources: Any = None, dry_run: bool = False) -> None:
    """(Un)freeze layers of a built model by name: ``unfreeze`` items first, then ``freeze``.

    - ``freeze: {layer: L}``: L is frozen whole.
    - ``freeze: {layer: L, until: S}``: L's sublayers from the first through S are frozen;
      the others keep their state.
    - ``unfreeze: {layer: L}``: L is trainable whole, except the BatchNormalization layers
      of a nested model, which stay as they were unless ``batchnorm: true``.
    - ``unfreeze: {layer: L, from: S}``: L's sublayers from S to the last become trainable
      (BatchNormalization as above); the ones before S keep their state.

    ``dry_run``: only check the names.

    Raises:
        ConfigError: a name that is no layer of the model or no sublayer of L.
    """
    for key, specs in (("unfreeze", unfreeze), ("freeze", freeze)):
        for i, item in enumerate(_as_list(specs)):
            at = f"{path}.{key}" + (f"[{i}]" if isinstance(specs, list) else "")
            layer, subs, index = _resolve(model, item, at, _where(sources, at))
            if not dry_run:
                _apply_one(layer, subs, index, item)


def _where(sources: Any, path: str) -> str:
    if sources is None:
        return ""
    from kexp.config.load import parse_path

    try:
        return sources.where(parse_path(path)) or ""
    except ValueError:
        return ""


def _resolve(model: Any, item: FreezeSpec | UnfreezeSpec, path: str,
             where: str) -> tuple[Any, list, int | None]:
    """The layer an item names, its sublayers, and the index of its ``until``/``from``
    sublayer (None without one)."""
    layer = _layer_named(model, item.layer, f"{path}.layer", where)
    subs = list(getattr(layer, "layers", None) or [])
    boundary = item.until if isinstance(item, FreezeSpec) else item.from_
    if boundary is None:
        return layer, subs, None
    if not subs:
        key = "until" if isinstance(item, FreezeSpec) else "from"
        raise ConfigError(Problem(f"{path}.{key}", f"{item.layer!r} is a {type(layer).__name__} "
                                  f"without sublayers: give `layer:` alone", where))
    return layer, subs, _sublayer_index(subs, item, path, where)


def _apply_one(layer: Any, subs: list, index: int | None,
               item: FreezeSpec | UnfreezeSpec) -> None:
    if isinstance(item, FreezeSpec):
        if index is None:
            layer.trainable = False
        for sub in subs[:0 if index is None else index + 1]:
            sub.trainable = False
        return
    if not subs:
        layer.trainable = True
        return
    import keras

    before = [bool(layer.trainable and sub.trainable) for sub in subs]
    layer.trainable = True  # Keras sets every sublayer trainable too: put the others back
    for i, sub in enumerate(subs):
        keep_bn = isinstance(sub, keras.layers.BatchNormalization) and not item.batchnorm
        sub.trainable = before[i] if i < (index or 0) or keep_bn else True


def _layer_named(model: Any, name: str, path: str, where: str) -> Any:
    names = [layer.name for layer in model.layers]
    if name in names:
        return model.get_layer(name)
    raise ConfigError(Problem(path, f"{name!r} is not a layer of the model "
                                    f"(layers: {', '.join(names)})", where,
                              suggestion=closest(name, names)))


def _sublayer_index(subs: list, item: Any, path: str, where: str) -> int:
    is_freeze = isinstance(item, FreezeSpec)
    name = item.until if is_freeze else item.from_
    names = [sub.name for sub in subs]
    if name in names:
        return names.index(name)
    key = "until" if is_freeze else "from"
    raise ConfigError(Problem(
        f"{path}.{key}", f"{name!r} is not a sublayer of {item.layer!r} ({len(names)} "
                         f"sublayers, from {names[0]!r} to {names[-1]!r})", where,
        suggestion=closest(name, names)))
