"""The functional model's node graph, checked without TensorFlow.

Each layer of a ``functional`` model names the node(s) it is called on in ``inputs:``
(default: the previous layer); a ``call:`` node calls another node's layer again (a shared
layer). This module resolves those references, rejects unknown or duplicate names and cycles,
and returns the layers in an order they can be called in.
"""

from __future__ import annotations

from dataclasses import dataclass

from kexp.config.schema import ModelSpec, Node
from kexp.errors import Problem

__all__ = ["GraphNode", "Plan", "plan_graph"]


@dataclass(frozen=True)
class GraphNode:
    """A layer of the graph: its key (its ``name``, or ``#i`` when unnamed), its position in
    ``layers:``, the keys of the nodes it is called on and, for a ``call:`` node, the key of
    the node (or the name of the ``base:`` layer) whose layer it calls again."""

    key: str
    index: int
    inputs: tuple[str, ...]
    node: Node
    calls: str | None = None


@dataclass(frozen=True)
class Plan:
    """Layers in call order, the model's input names and its output keys."""

    order: tuple[GraphNode, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def plan_graph(spec: ModelSpec, base_layers: tuple[str, ...] = (),
               base_inputs: tuple[str, ...] = (), base_outputs: tuple[str, ...] = (),
               ) -> tuple[Plan | None, list[Problem]]:
    """Resolve a functional spec's references. ``base_*`` describe a ``base:`` model.

    Example:
        ```yaml
        inputs: [{name: title, shape: [10000]}, {name: tags, shape: [100]}]
        layers:
          - {type: Concatenate, name: concat, inputs: [title, tags]}
          - {type: Dense, units: 1, name: priority}       # called on concat
        outputs: [priority]
        ```
    """
    problems: list[Problem] = []
    input_names = tuple(i.name for i in spec.inputs or ()) or base_inputs
    if not input_names:
        problems.append(Problem("model.inputs", "a functional model needs `inputs:` "
                                "(e.g. [{name: x, shape: [3]}]) or a `base:` model"))
    layers = spec.layers or []
    keys = [str(n.args.get("name") or f"#{i}") for i, n in enumerate(layers)]
    known = set(input_names) | set(base_layers)
    for i, key in enumerate(keys):
        if key in known or key in keys[:i]:
            problems.append(Problem(f"model.layers[{i}].name",
                                    f"the name {key!r} is used twice; node names must be unique"))
    known |= set(keys)
    nodes = [GraphNode(keys[i], i, tuple(_references(node, i, keys, input_names, base_outputs)),
                       node, node.call) for i, node in enumerate(layers)]
    problems += [p for n in nodes for p in _reference_problems(n, known, input_names)]
    layer_keys = tuple(k for k in keys if not k.startswith("#")) + tuple(
        b for b in base_layers if b not in base_inputs)
    problems += [p for n in nodes
                 for p in _call_problems(n, layer_keys, (*input_names, *base_inputs))]
    outputs = spec.outputs if spec.outputs is not None else (keys[-1:] or list(base_outputs))
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    problems += _output_problems(outputs, known)
    if problems:
        return None, problems
    order, cycle = _topological(nodes)
    if cycle:
        what = "`inputs:` and `call:`" if any(n.calls for n in cycle) else "`inputs:`"
        return None, [Problem(f"model.layers[{cycle[0].index}].inputs",
                              f"the layers' {what} form a cycle: "
                              + " -> ".join(n.key for n in cycle))]
    shapes = {i.name: tuple(i.shape) for i in spec.inputs or ()}
    by_key = {n.key: n for n in nodes}
    problems = [p for n in order for p in _shape_problems(n, by_key, shapes)]
    if problems:
        return None, problems
    return Plan(tuple(order), tuple(input_names), outputs), []


# Layers whose weights are sized by the last axis of their input (channels last, Keras's
# default): a shared one takes only inputs of the first call's rank and last axis.
_SIZED_BY_LAST_AXIS = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "LSTM", "GRU",
                                 "SimpleRNN"})


def _shape_problems(node: GraphNode, by_key: dict[str, GraphNode],
                    shapes: dict[str, tuple]) -> list[Problem]:
    """A ``call:`` on a model input that cannot fit the layer, where that shows without
    TensorFlow: the layer (one of ``_SIZED_BY_LAST_AXIS``) was first called on a model input
    of another rank or last axis. Other mismatches show when the model is built."""
    first = node
    while first.calls is not None and first.calls in by_key:  # a call of a call: its layer
        first = by_key[first.calls]
    if (first is node or first.node.type not in _SIZED_BY_LAST_AXIS
            or "data_format" in first.node.args or len(node.inputs) != 1
            or len(first.inputs) != 1):
        return []
    new, old = shapes.get(node.inputs[0]), shapes.get(first.inputs[0])
    if not new or not old or (len(new) == len(old) and (
            new[-1] == old[-1] or None in (new[-1], old[-1]))):
        return []
    return [Problem(f"model.layers[{node.index}].inputs",
                    f"{node.inputs[0]!r} has shape {list(new)}, but the {first.node.type} "
                    f"layer {first.key!r} that `call: {node.calls}` calls again was built for "
                    f"{first.inputs[0]!r}, of shape {list(old)}: a shared layer takes inputs "
                    "shaped like those of its first call")]


def _call_problems(node: GraphNode, layers: tuple[str, ...],
                   inputs: tuple[str, ...]) -> list[Problem]:
    """A ``call:`` that names no layer: an unknown name, a model input, the node itself."""
    if node.calls is None or (node.calls in layers and node.calls != node.key):
        return []
    at = f"model.layers[{node.index}].call"
    if node.calls == node.key:
        return [Problem(at, f"the node {node.key!r} calls itself: `call:` names another "
                            "layer node, whose layer this node calls again")]
    if node.calls in inputs:
        return [Problem(at, f"{node.calls!r} is a model input, not a layer: `call:` names a "
                            "layer node (one with `type:`) to call again on this node's "
                            "`inputs:`")]
    names = ", ".join(sorted(layers)) or "none"
    return [Problem(at, f"{node.calls!r} is not a layer of this model (layers: {names})",
                    suggestion=_close(node.calls, set(layers)))]


def _reference_problems(node: GraphNode, known: set[str],
                        input_names: tuple[str, ...]) -> list[Problem]:
    """A layer called on a node that does not exist, or on nothing."""
    if not node.inputs:
        return [Problem(f"model.layers[{node.index}]",
                        "say which node this layer is called on with `inputs:` "
                        f"(the model has inputs {list(input_names)})")]
    names = ", ".join(sorted(k for k in known if not k.startswith("#")))
    return [Problem(f"model.layers[{node.index}].inputs",
                    f"{ref!r} is not an input or a layer of this model (known: {names})",
                    suggestion=_close(ref, known))
            for ref in node.inputs if ref not in known]


def _output_problems(outputs: tuple[str, ...], known: set[str]) -> list[Problem]:
    if not outputs:
        return [Problem("model.layers", "a functional model needs at least one layer "
                        "(or a `base:` model) to have an output")]
    return [Problem("model.outputs", f"{out!r} is not a layer of this model",
                    suggestion=_close(out, known)) for out in outputs if out not in known]


def _references(node: Node, i: int, keys: list[str], input_names: tuple[str, ...],
                base_outputs: tuple[str, ...]) -> list[str]:
    """The nodes a layer is called on: its ``inputs:``, else the previous layer (the first
    layer: the only input, or the base model's only output)."""
    if node.inputs is not None:
        return [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
    if i > 0:
        return [keys[i - 1]]
    if base_outputs and len(base_outputs) == 1:
        return [base_outputs[0]]
    return list(input_names) if len(input_names) == 1 else []


def _topological(nodes: list[GraphNode]) -> tuple[list[GraphNode], list[GraphNode]]:
    """Nodes in an order where each comes after the nodes it reads; or the cycle found."""
    by_key = {n.key: n for n in nodes}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order: list[GraphNode] = []
    stack: list[GraphNode] = []

    def visit(node: GraphNode) -> list[GraphNode]:
        state[node.key] = 1
        stack.append(node)
        for ref in (*node.inputs, *([node.calls] if node.calls else [])):  # a called layer
            # is built (by its own node) before it is called again
            child = by_key.get(ref)
            if child is None or state.get(ref) == 2:
                continue
            if state.get(ref) == 1:
                return stack[stack.index(child):] + [child]
            cycle = visit(child)
            if cycle:
                return cycle
        stack.pop()
        state[node.key] = 2
        order.append(node)
        return []

    for node in nodes:
        if node.key not in state:
            cycle = visit(node)
            if cycle:
                return [], cycle
    return order, []


def _close(name: str, known: set[str]) -> str:
    import difflib

    matches = difflib.get_close_matches(name, [k for k in known if not k.startswith("#")], n=1)
    return repr(matches[0]) if matches else ""
