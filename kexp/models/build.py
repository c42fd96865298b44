"""Building the Keras model a ``model:`` section describes.

Three ways, as in the chapter, which mix freely: ``sequential`` (a list of layers),
``functional`` (a graph of named nodes, optionally on top of a ``base:`` model, optionally
built as a registered Model subclass with ``class:``), and a registered Model or Layer class
with its keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kexp.components import build
from kexp.config.schema import ModelSpec
from kexp.errors import ConfigError, Problem, error_line
from kexp.models.applications import application_info, apply_freezing, build_application
from kexp.models.base import BaseError, describe_base, load_base
from kexp.models.graph import plan_graph
from kexp.plugins import PluginError
from kexp.registry import LAYERS, MODELS

__all__ = ["build_model", "Adaptation", "adapt_layers", "has_graph"]


@dataclass(frozen=True)
class Adaptation:
    """A preprocessing layer marked ``adapt: true`` and the model tensor it reads (None: the
    model's own input, for a sequential model)."""

    layer: Any
    source: Any


def build_model(spec: ModelSpec) -> tuple[Any, list[Adaptation]]:
    """The Keras model of ``spec`` and the layers to adapt on training data.

    Raises:
        ConfigError: located at the layer or key that Keras refused.
    """
    from kexp._tf import import_tensorflow

    import_tensorflow()
    import keras

    if spec.kind == "sequential":
        model, adapt = _sequential(spec, keras)
    elif spec.kind == "functional":
        model, adapt = _functional(spec, keras)
    else:
        model, adapt = _class_model(spec, keras), []
    apply_freezing(model, spec.freeze, spec.unfreeze, "model", spec._sources)
    return model, adapt


def _class_model(spec: ModelSpec, keras: Any) -> Any:
    name = {"name": spec.name} if spec.name else {}
    if application_info(spec.type) is not None:
        return build_application(spec, spec.input_shape, **name)
    model = build(spec, MODELS, LAYERS, skip=("input_shape",), **name)
    if not isinstance(model, keras.Model):
        model = keras.Sequential([model], name=spec.name or f"{spec.type.lower()}_model")
    if spec.input_shape is not None:
        _call(model.build, "model.input_shape", spec.where_of("input_shape"),
              (None, *spec.input_shape))
    return model


def has_graph(model: Any) -> bool:
    """True for models with a layer graph (functional, built sequential): plot and
    connectivity need one; a subclassed model has none."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional) or getattr(model, "_functional", None) is not None


def _sequential(spec: ModelSpec, keras: Any) -> tuple[Any, list[Adaptation]]:
    model = keras.Sequential(name=spec.name) if spec.name else keras.Sequential()
    if spec.input_shape is not None:
        model.add(keras.Input(shape=tuple(spec.input_shape)))
    adapt = []
    for node in spec.layers or []:
        layer = _build_layer(node, _output_shape(model))
        _call(model.add, node.path, node.where, layer)
        if node.adapt:
            adapt.append(Adaptation(layer, None))
    return model, adapt


def _functional(spec: ModelSpec, keras: Any) -> tuple[Any, list[Adaptation]]:
    tensors: dict[str, Any] = {}
    layers: dict[str, Any] = {}  # node key (or base layer name) -> its layer, for `call:`
    base_args: tuple = ((), (), ())
    inputs: dict[str, Any] = {}
    if spec.base is not None:
        base, info = _load_base(spec)
        base_args = (info.layers, info.inputs, info.outputs)
        if spec.trainable is False:
            base.trainable = False
        tensors.update({layer.name: layer.output for layer in base.layers})
        layers.update({layer.name: layer for layer in base.layers})
        inputs = {t.name: t for t in base.inputs} if not spec.inputs else {}
        if len(base.inputs) != len(info.inputs):
            inputs = dict(zip(info.inputs, base.inputs, strict=False))
    for item in spec.inputs or []:
        inputs[item.name] = keras.Input(shape=tuple(item.shape), name=item.name,
                                        dtype=item.dtype)
    tensors.update(inputs)
    plan, problems = plan_graph(spec, *base_args)
    if plan is None:
        raise ConfigError(problems)
    adapt = []
    for graph_node in plan.order:
        node = graph_node.node
        args = [tensors[ref] for ref in graph_node.inputs]
        arg = args[0] if len(args) == 1 else args
        if graph_node.calls is not None:  # a shared layer, called again
            layer = layers[graph_node.calls]
            tensors[graph_node.key] = _call_again(layer, graph_node, arg)
        else:
            layer = _build_layer(node, args[0].shape[1:] if len(args) == 1 else None)
            tensors[graph_node.key] = _call(layer, node.path, node.where, arg)
        layers[graph_node.key] = layer
        if node.adapt:
            adapt.append(Adaptation(layer, args[0] if len(args) == 1 else None))
    model_inputs = list(inputs.values()) if len(inputs) > 1 else next(iter(inputs.values()))
    if len(inputs) > 1:
        model_inputs = inputs  # dict inputs: data keyed by input name feeds them
    called = {n.key for n in plan.order if n.calls is not None and not n.key.startswith("#")}
    outputs = [keras.layers.Identity(name=key)(tensors[key]) if key in called else tensors[key]
               for key in plan.outputs]  # Keras names an output after its layer
    model_outputs = outputs if len(outputs) > 1 else outputs[0]
    name = {"name": spec.name} if spec.name else {}
    if spec.class_ is not None:
        entry = MODELS.get(spec.class_)
        cls = entry.load()
        return _call(cls, "model.class", spec.where_of("class"), inputs=model_inputs,
                     outputs=model_outputs, **name), adapt
    return _call(keras.Model, "model", spec.where, inputs=model_inputs, outputs=model_outputs,
                 **name), adapt


def _call_again(layer: Any, graph_node: Any, arg: Any) -> Any:
    """Call a shared layer on a ``call:`` node's inputs; a refusal (inputs of another shape
    than the first call's) names the layer, the node that defines it and the inputs."""
    node = graph_node.node
    try:
        return layer(arg)
    except (TypeError, ValueError) as exc:
        on = ", ".join(repr(ref) for ref in graph_node.inputs)
        raise ConfigError(Problem(
            node.path, f"`call: {graph_node.calls}` calls layer {layer.name!r} again on {on}, "
            f"which it cannot take: {error_line(exc)} (a shared layer takes inputs shaped like "
            "those of its first call)", node.where)) from None


def _build_layer(node: Any, input_shape: Any) -> Any:
    """A node's layer; a Keras application gets the incoming shape as its ``input_shape``
    when it names none. A ``type: sequential`` node is a ``keras.Sequential`` block of its
    ``layers:``."""
    if node.type == "sequential" and node.layers is not None:
        import keras

        block = keras.Sequential(**{k: node.args[k] for k in ("name", "trainable")
                                    if k in node.args})
        for sub in node.layers:
            _call(block.add, sub.path, sub.where, _build_layer(sub, _output_shape(block)))
        return block
    if application_info(node.type) is not None:
        return build_application(node, input_shape)
    return build(node, LAYERS, MODELS)


def _output_shape(model: Any) -> Any:
    """A sequential model's output shape so far (without the batch axis), None if unknown."""
    try:
        return tuple(model.outputs[0].shape[1:]) if model.layers else None
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _load_base(spec: ModelSpec) -> tuple[Any, Any]:
    try:
        info = describe_base(spec.base, spec.checkpoint)
        if info.run_dir is not None:
            _import_run_plugins(info.run_dir)
        return load_base(info), info
    except (BaseError, PluginError) as exc:
        raise ConfigError(Problem("model.base", str(exc), spec.where_of("base"))) from None


def _import_run_plugins(run_dir: Any) -> None:
    """A base taken from a run directory brings the plugins that run used."""
    from kexp.plugins import import_plugin
    from kexp.runs import read_run_plugins

    for plugin in read_run_plugins(run_dir):
        import_plugin(plugin)


def _call(fn: Any, path: str, where: str, *args: Any, **kwargs: Any) -> Any:
    """Call into Keras; a refusal becomes a config error at ``path`` (written at ``where``)."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(Problem(path, error_line(exc), where)) from None


def adapt_layers(model: Any, adaptations: list[Adaptation], features: Any) -> None:
    """Adapt preprocessing layers (``adapt: true``) on the training features: arrays, or a
    ``tf.data.Dataset`` of feature batches for streamed data (``kexp.data.stream``)."""
    import keras

    if not adaptations:
        return
    if all(item.source is None for item in adaptations):
        for item in adaptations:  # a sequential model's input: it may not be built yet
            item.layer.adapt(features)
        return
    inputs = {id(t): name for name, t in zip(_input_names(model), model.inputs, strict=False)}
    for item in adaptations:
        if item.source is None:
            data = features
        elif id(item.source) in inputs and isinstance(features, dict):
            data = features[inputs[id(item.source)]]
        elif id(item.source) in inputs and _named_batches(features):
            name = inputs[id(item.source)]
            data = features.map(lambda x, name=name: x[name])
        else:
            data = keras.Model(model.inputs, item.source).predict(features, verbose=0)
        item.layer.adapt(data)



def _named_batches(features: Any) -> bool:
    """``features`` is a dataset of named feature batches (streamed data)."""
    spec = getattr(features, "element_spec", None)
    return isinstance(spec, dict)


def _input_names(model: Any) -> list[str]:
    return [getattr(t, "name", "").split(":")[0] for t in model.inputs]
