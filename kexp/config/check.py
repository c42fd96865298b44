"""Checks that need the registry: every component name resolves, every argument is one its
constructor takes, the functional graph is sound. No TensorFlow is imported."""

from __future__ import annotations

from typing import Any

from kexp.config.errors import closest, describe_value
from kexp.config.load import format_path, parse_path
from kexp.config.logged import logged_names
from kexp.config.rules import rule_problems
from kexp.config.schema import DATA_OPTIONS, Component, Config, ModelSpec, Node
from kexp.errors import Problem
from kexp.models.base import BaseError, describe_base
from kexp.models.graph import plan_graph
from kexp.registry import (
    ACTIVATIONS,
    CALLBACKS,
    CONSTRAINTS,
    DATASETS,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    METRICS,
    MODELS,
    OPTIMIZERS,
    REGULARIZERS,
    Entry,
    Nested,
    Registry,
    nested_components,
    registry_for_argument,
    resolve,
    unknown,
)

__all__ = ["check_config", "check_component", "model_output_names"]

# Kinds of argument Keras resolves from a name or a mapping only (a number is no activation),
# with an example name for the message.
_NAMES_ONLY = {
    ACTIVATIONS.kind: "an activation name (e.g. relu)",
    INITIALIZERS.kind: "an initializer name (e.g. he_normal)",
    REGULARIZERS.kind: "a regularizer name (e.g. L2)",
    CONSTRAINTS.kind: "a constraint name (e.g. NonNeg)",
}


def check_config(cfg: Config, sections: set[str] | None = None) -> list[Problem]:
    """Every problem the registry and the model graph can find, before anything is built.

    ``sections`` limits the checks to the top-level sections that passed the schema (the
    others already have their errors), so that all errors of a file are reported together.
    """
    sections = set(type(cfg).model_fields) if sections is None else sections
    problems: list[Problem] = []
    if "data" in sections and cfg.data is not None:
        problems += check_component(cfg.data, (DATASETS,), skip=DATA_OPTIONS)
        for split in ("validation", "test"):
            spec = getattr(cfg.data, split)
            if spec is not None:
                problems += check_component(spec, (DATASETS,))
    outputs: tuple[str, ...] = ()
    if "model" in sections:
        problems += _check_model(cfg.model)
        outputs = model_output_names(cfg.model)
    if "compile" in sections:
        problems += _check_compile(cfg, outputs)
        if "model" in sections and cfg.model.kind == "sequential":
            problems += _check_unnamed_output(cfg.compile)
    if "train" in sections:
        for callback in cfg.train.callbacks:
            problems += check_component(callback, (CALLBACKS,))
        if {"model", "compile"} <= sections:
            problems += _check_monitors(cfg, outputs)
        if "compile" in sections:
            problems += _check_plateau_with_schedule(cfg)
        if "model" in sections:
            problems += _check_class_weight(cfg, outputs, "data" in sections)
        from kexp.models.applications import model_layer_names  # it imports this package

        problems += _check_phases(cfg, model_layer_names(cfg.model) if "model" in sections
                                  else set())
    problems += rule_problems(cfg, sections)
    return [_locate(p, cfg) for p in problems]


def _check_phases(cfg: Config, names: set[str]) -> list[Problem]:
    """Each phase's optimizer and callbacks are components Keras or a plugin knows; its
    ``freeze``/``unfreeze`` names layers of the model (``names``; empty: not known)."""
    from kexp.models.applications import check_freeze_targets

    problems: list[Problem] = []
    total = sum(spec.epochs for spec in cfg.train.phases or [])
    if cfg.train.phases and cfg.train.epochs != total:
        problems.append(Problem("train.epochs", f"`epochs: {cfg.train.epochs}` disagrees with "
                                f"the phases' epochs, which add up to {total}: with `phases:`, "
                                "leave `epochs` out (each phase has its own)"))
    for i, spec in enumerate(cfg.train.phases or []):
        if spec.optimizer is not None:
            problems += check_component(spec.optimizer, (OPTIMIZERS,))
        for callback in spec.callbacks or []:
            problems += check_component(callback, (CALLBACKS,))
        at = f"train.phases[{i}]"
        problems += check_freeze_targets(spec.freeze, f"{at}.freeze", names)
        problems += check_freeze_targets(spec.unfreeze, f"{at}.unfreeze", names)
    return problems


def _check_compile(cfg: Config, outputs: tuple[str, ...]) -> list[Problem]:
    problems = check_component(cfg.compile.optimizer, (OPTIMIZERS,))
    problems += _check_per_output(cfg.compile.loss, "compile.loss", LOSSES, outputs)
    for key in ("metrics", "weighted_metrics"):
        metrics = getattr(cfg.compile, key)
        problems += _check_per_output(metrics, f"compile.{key}", METRICS, outputs)
        problems += _check_one_list_for_outputs(metrics, outputs, f"compile.{key}")
    if isinstance(cfg.compile.loss_weights, dict) and outputs:
        problems += _check_output_keys(cfg.compile.loss_weights, "compile.loss_weights", outputs)
    return problems + _check_weight_count(cfg.compile.loss, cfg.compile.loss_weights)


def _check_monitors(cfg: Config, outputs: tuple[str, ...]) -> list[Problem]:
    """A ``monitor`` (``train.monitor``, a callback's) must be a name the run logs."""
    names = logged_names(cfg, outputs)
    if names is None:
        return []
    monitors = [(f"{c.path}.monitor", c.args["monitor"]) for c in cfg.train.callbacks
                if isinstance(c.args.get("monitor"), str)]
    if "monitor" in cfg.train.model_fields_set:
        monitors.append(("train.monitor", cfg.train.monitor))
    logged = ", ".join(sorted(n for n in names if not n.startswith("val_")))
    return [Problem(path, f"{name!r} is not a name this run logs (it logs {logged}, and "
                          "each with a val_ prefix on validation data)",
                    suggestion=closest(name, names))
            for path, name in monitors if name not in names]


def _check_one_list_for_outputs(metrics: Any, outputs: tuple[str, ...],
                                path: str = "compile.metrics") -> list[Problem]:
    """Keras refuses one flat list of metrics for several outputs once training starts."""
    if len(outputs) < 2 or not isinstance(metrics, list) or not any(
            isinstance(m, Component) for m in metrics):
        return []
    names = ", ".join(outputs)
    example = ", ".join(f"{o}: [accuracy]" for o in outputs)
    return [Problem(path, f"one list of metrics for a model with {len(outputs)} "
                    f"outputs ({names}): key them by output, e.g. {{{example}}}, or give one "
                    "list per output in output order")]


# Datasets streamed from files (``kexp.data.stream``): their labels are not in memory.
_STREAMED = ("image_directory", "text_directory", "tfrecord", "array_record")


def _check_class_weight(cfg: Config, outputs: tuple[str, ...], data: bool) -> list[Problem]:
    """``train.class_weight`` as Keras's ``fit`` takes it: one output, no sample weights;
    ``balanced`` needs the training labels in memory. (Class indices are checked against
    the model's output and the labels once they are built and read.)"""
    weights = cfg.train.class_weight
    if weights is None:
        return []
    problems = []
    if len(outputs) > 1:
        problems.append(Problem("train.class_weight", "class weights apply to a model with one "
                                f"output (as in Keras's fit); this one has {len(outputs)} "
                                f"({', '.join(outputs)}): give per-sample weights instead "
                                "(data.sample_weight)"))
    if data and cfg.data is not None:
        if cfg.data.args.get("sample_weight") is not None:
            problems.append(Problem("train.class_weight", "Keras's fit takes class weights or "
                                    "sample weights for the training data, not both "
                                    "(data.sample_weight is given): fold the class weights "
                                    "into the sample weights"))
        streamed = cfg.data.type in _STREAMED or (cfg.data.type == "csv"
                                                  and cfg.data.args.get("stream") is True)
        if weights == "balanced" and streamed:
            problems.append(Problem("train.class_weight", "`balanced` counts the training "
                                    "labels, which a streamed dataset does not hold in memory; "
                                    "give the weights per class, e.g. {0: 1.0, 1: 4.0}"))
    return problems


def _check_plateau_with_schedule(cfg: Config) -> list[Problem]:
    """ReduceLROnPlateau sets the learning rate, which a schedule computes: Keras fails the
    first time the callback fires, possibly hours in."""
    rate = cfg.compile.optimizer.args.get("learning_rate")
    if not isinstance(rate, (dict, str)):
        return []
    return [Problem(f"{c.path}.type", "ReduceLROnPlateau cannot change a learning rate that a "
                    "schedule computes (compile.optimizer.learning_rate): use one or the other")
            for c in cfg.train.callbacks if c.type == "ReduceLROnPlateau"]


def _check_unnamed_output(spec: Any) -> list[Problem]:
    """Keras 3 gives a Sequential model no output names: a mapping keyed by output name fails
    (``loss``) or is ignored (``metrics``) once training starts."""
    return [
        Problem(f"compile.{key}", "a sequential model's output has no name to key a mapping "
                "by: give one value (or a list); name outputs in a `type: functional` model")
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics")
        if isinstance(getattr(spec, key), dict)
    ]


def _check_weight_count(loss: Any, weights: Any) -> list[Problem]:
    """Keras weighs the losses one to one: as many weights as losses (it fails only when
    training starts)."""
    if loss is None or weights is None:
        return []
    losses = 1 if isinstance(loss, Component) else len(loss)
    if len(weights) == losses:
        return []
    return [Problem("compile.loss_weights",
                    f"{len(weights)} weight{'s' if len(weights) != 1 else ''} for {losses} "
                    f"loss{'es' if losses != 1 else ''}: "
                    "`loss_weights` needs one weight per loss in `compile.loss`")]


def _locate(problem: Problem, cfg: Config) -> Problem:
    if problem.where:
        return problem
    return Problem(problem.path, problem.message, cfg.where(problem.path), problem.suggestion)


def check_component(comp: Component, registries: tuple[Registry, ...],
                    skip: tuple[str, ...] = ()) -> list[Problem]:
    """Problems with one component: unknown name, unknown or missing arguments, and the
    same for the components nested in its arguments."""
    found = resolve(comp.type, registries)
    if found is None:
        return [unknown(comp.type, registries, f"{comp.path}.type" if comp.path else "type")]
    args = {k: v for k, v in comp.args.items() if k not in skip}
    return _check_args(found[0], args, comp.path, registries, options=skip)


# Names Keras users carry over from older Keras, and what Keras 3 calls them.
_RENAMED = {"lr": "learning_rate", "decay": "weight_decay"}


def _check_args(entry: Entry, args: dict[str, Any], path: str,
                registries: tuple[Registry, ...], options: tuple[str, ...] = ()
                ) -> list[Problem]:
    """``options`` are the keys the section itself takes besides the component's arguments
    (``data``'s ``validation_split``, ``batch_size``, ...)."""
    problems = []
    for arg, value in args.items():
        arg_path = f"{path}.{arg}" if path else arg
        if arg not in entry.params and not entry.open_kwargs:
            message = f"{entry.name} has no argument {arg!r}"
            if options:
                message = (f"{arg!r} is neither a `{path}` option ({', '.join(options)}) "
                           f"nor an argument of {entry.name}")
            renamed = _RENAMED.get(arg)
            problems.append(Problem(
                arg_path, message,
                suggestion=closest(arg, (*options, *entry.params)) or (
                    repr(renamed) if renamed in entry.params else ""),
            ))
        elif registry_for_argument(arg) is None:
            problems += _check_kind(entry, arg, value, arg_path)
    accepted = {k: v for k, v in args.items() if k in entry.params or entry.open_kwargs}
    for nested in nested_components(accepted, registries):
        problems += _check_nested(nested, path)
    for required in entry.required:
        if required not in args:
            problems.append(Problem(path, f"{entry.name} needs the argument {required!r}"))
    if entry.check is not None and not problems:
        problems += [Problem(f"{path}.{arg}" if arg and path else arg or path,
                             f"{entry.name}: {message}") for arg, message in entry.check(args)]
    return problems


def _check_kind(entry: Entry, arg: str, value: Any, path: str) -> list[Problem]:
    """A value of the wrong kind for what the argument's default (or nature) says."""
    kind = entry.kinds.get(arg)
    if kind is None or value is None:
        return []
    if kind == "count" and not (isinstance(value, int) and not isinstance(value, bool)
                                and value > 0):
        expected = "a positive integer"
    elif kind == "number" and (isinstance(value, (str, bool, dict))):
        expected = "a number"
    elif kind == "bool" and not isinstance(value, bool):
        expected = "true or false"
    elif kind == "string" and not isinstance(value, str):
        expected = "a string"
    else:
        return []
    return [Problem(path, f"{entry.name}'s {arg!r} expects {expected}; "
                          f"received {describe_value(value)}")]


def _check_nested(nested: Nested, base: str) -> list[Problem]:
    """A nested component (``kernel_regularizer: {type: L2, l2: 0.01}``) or a name that
    Keras resolves (``activation: relu``), checked in the registry its argument implies."""
    path = nested.path(base)
    if nested.is_mapping:
        name = str(nested.value["type"])
        found = resolve(name, nested.registries)
        if found is None:
            return [unknown(name, nested.registries, f"{path}.type")]
        rest = {k: v for k, v in nested.value.items() if k != "type"}
        return _check_args(found[0], rest, path, (found[1],))
    registry, value = nested.registries[0], nested.value
    if isinstance(value, str) and registry.keras_kind not in ("layers", "models"):
        if registry.get(value) is None:
            return [unknown(value, (registry,), path)]
    if registry.kind in _NAMES_ONLY and not isinstance(value, (str, type(None))):
        return [Problem(path, f"expected {_NAMES_ONLY[registry.kind]} or a mapping with "
                              f"`type:`; received {describe_value(value)}")]
    return []


def _check_model(spec: ModelSpec) -> list[Problem]:
    allowed = {
        "sequential": {"name", "input_shape", "layers"},
        "functional": {"name", "inputs", "layers", "outputs", "class_", "base", "checkpoint",
                       "trainable"},
        "class": {"name", "input_shape"},
    }[spec.kind] | {"freeze", "unfreeze"}
    problems = [
        Problem(f"model.{type(spec).model_fields[f].alias or f}",
                f"`{type(spec).model_fields[f].alias or f}` is not used by a {spec.kind} model")
        for f in (spec.model_fields_set & set(type(spec).model_fields)) - allowed - {"type"}
    ]
    if spec.kind != "class":
        problems += [Problem(f"model.{k}", f"unknown key {k!r} for a {spec.type} model")
                     for k in spec.args]
    from kexp.models.applications import check_applications  # it imports this package

    problems += check_applications(spec)
    if spec.kind == "class":
        return problems + check_component(spec, (MODELS, LAYERS))
    if spec.kind == "sequential" and not spec.layers:
        problems.append(Problem("model.layers", "a sequential model needs at least one layer, "
                                "e.g. [{type: Dense, units: 1}]"))
    for node in spec.layers or []:
        if node.call is not None:
            problems += _check_call_node(node, spec.kind)
            continue
        problems += _check_layer_node(node)
        if spec.kind == "sequential" and node.inputs is not None:
            problems.append(Problem(f"{node.path}.inputs",
                                    "`inputs:` names graph nodes: use `type: functional`"))
    if spec.kind == "functional":
        problems += _check_graph(spec)
        if spec.class_ is not None and MODELS.get(spec.class_) is None:
            problems.append(unknown(spec.class_, (MODELS,), "model.class"))
    return problems


# What a ``type: sequential`` block takes besides ``layers:`` (``keras.Sequential``'s own).
_BLOCK_ARGS = ("name", "trainable")


def _check_layer_node(node: Node) -> list[Problem]:
    """A layer node: a component Keras or a plugin knows, or a ``type: sequential`` block of
    such layers (``layers:``, checked the same way; no graph inside it)."""
    if node.type != "sequential":
        if node.layers is not None:
            return [Problem(f"{node.path}.layers", "`layers:` makes a block of layers: it "
                            f"goes with `type: sequential`, not `type: {node.type}`")]
        return check_component(node, (LAYERS, MODELS))
    if not node.layers:
        return [Problem(f"{node.path}.layers", "a `type: sequential` block needs `layers:`, "
                        "e.g. [{type: Dense, units: 16}, {type: Dense, units: 8}]")]
    problems = [Problem(f"{node.path}.{key}", f"unknown key {key!r} for a sequential block "
                        f"(it takes layers, {', '.join(_BLOCK_ARGS)}, inputs)",
                        suggestion=closest(key, ("layers", *_BLOCK_ARGS, "inputs")))
                for key in node.args if key not in _BLOCK_ARGS]
    for sub in node.layers:
        wrong = [k for k in ("call", "inputs") if getattr(sub, k) is not None]
        wrong += ["adapt"] if sub.adapt else []
        problems += [Problem(f"{sub.path}.{key}", f"`{key}:` is for the nodes of a functional "
                             "graph; a sequential block's layers are called in order")
                     for key in wrong]
        if not wrong:
            problems += _check_layer_node(sub)
    return problems


def _check_call_node(node: Node, kind: str) -> list[Problem]:
    """A shared-layer node (``call: encoder``) has a ``name`` and ``inputs`` of its own and
    nothing else: the layer, its arguments and its weights are those of the node it calls."""
    if kind != "functional":
        return [Problem(f"{node.path}.call", "`call:` calls a layer of a functional graph "
                        "again on other inputs: use `type: functional` (with named `inputs:`)")]
    if node.type is not None:
        return [Problem(f"{node.path}.type", f"a node either builds a layer (`type: "
                        f"{node.type}`) or calls an earlier one again (`call: {node.call}`), "
                        "not both")]
    given = [k for k in node.args if k != "name"]
    given += ["adapt"] if node.adapt else []  # `adapt: false` is in a resolved config.yaml
    given += ["layers"] if node.layers is not None else []
    return [Problem(f"{node.path}.{key}", f"a `call:` node takes only `name` and `inputs`: "
                    f"{key!r} belongs to the layer it calls, where {node.call!r} is defined "
                    "with `type:` (the calls share that layer, its arguments and its weights)")
            for key in given]


def _check_graph(spec: ModelSpec) -> list[Problem]:
    base = ((), (), ())
    if spec.base is not None:
        try:
            info = describe_base(spec.base, spec.checkpoint)
        except BaseError as exc:
            return [Problem("model.base", str(exc))]
        base = (info.layers, info.inputs, info.outputs)
    _, problems = plan_graph(spec, *base)
    return problems


def model_output_names(spec: ModelSpec) -> tuple[str, ...]:
    """Output names a functional config declares (empty when only the built model knows)."""
    if spec.kind != "functional":
        return ()
    if spec.outputs is None:
        last = (spec.layers or [None])[-1]
        name = last.args.get("name") if last is not None else None
        return (str(name),) if name and spec.base is None else ()
    return (spec.outputs,) if isinstance(spec.outputs, str) else tuple(spec.outputs)


def _check_per_output(value: Any, path: str, registry: Registry,
                      outputs: tuple[str, ...]) -> list[Problem]:
    if value is None:
        return []
    if isinstance(value, Component):
        return check_component(value, (registry,))
    if isinstance(value, list):
        return [p for c in value for p in _check_per_output(c, path, registry, ())]
    problems = _check_output_keys(value, path, outputs) if outputs else []
    for item in value.values():
        problems += _check_per_output(item, path, registry, ())
    return problems


def _check_output_keys(mapping: dict, path: str, outputs: tuple[str, ...]) -> list[Problem]:
    return [
        Problem(format_path((*parse_path(path), key)),
                f"{key!r} is not an output of the model (outputs: {', '.join(outputs)})",
                suggestion=closest(key, outputs))
        for key in mapping if key not in outputs
    ]
