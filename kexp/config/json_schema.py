"""The JSON Schema of a config *file*, for editors (``kexp schema``).

It is generated from the pydantic schema, then told three things pydantic cannot know:
- a component is a bare name or a ``{type: ...}`` mapping (``optimizer: rmsprop``);
- a file may say ``extends:``, and then any key may come from the base, so nothing is
  required; a file without ``extends`` must be complete (``model:``, each component's
  ``type``; a layer node's ``type`` or ``call``);
- which names a component field takes: the built-in and Keras names of its kind, offered as
  ``examples`` (names stay open strings: plugins add more).
No TensorFlow is imported.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["config_json_schema"]

_COMPONENT_DEFS = ("Component", "Node", "ModelSpec", "DataSpec")
_STRICT = "Strict"


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that a config file passes exactly when its keys and
    value types pass ``kexp validate``'s schema check."""
    from kexp.config.schema import Config

    strict = Config.model_json_schema(by_alias=True, mode="validation")
    _any_of_everywhere(strict)
    defs = strict.pop("$defs")
    if "Node" in defs:  # a layer node builds a layer (`type:`) or calls one again (`call:`)
        defs["Node"]["anyOf"] = [{"required": ["type"]}, {"required": ["call"]}]
    for name in _COMPONENT_DEFS:
        if name in defs:
            defs[name] = {"anyOf": [{"type": "string"}, defs[name]]}
    _add_examples(defs)
    strict_defs = {_STRICT + k: _renamed_refs(copy.deepcopy(v)) for k, v in defs.items()}
    strict_root = _renamed_refs(copy.deepcopy(strict))

    lenient = _without_required(copy.deepcopy(strict))
    lenient_defs = {k: _without_required(copy.deepcopy(v)) for k, v in defs.items()}
    lenient["properties"]["extends"] = {
        "description": "Base file(s), deep-merged first (paths relative to this file).",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kexp experiment config",
        **lenient,
        "if": {"not": {"required": ["extends"]}},
        "then": {"$ref": f"#/$defs/{_STRICT}Config"},
        "$defs": {**lenient_defs, **strict_defs, f"{_STRICT}Config": strict_root},
    }


def _walk(node: Any, visit) -> Any:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)
    return node


def _any_of_everywhere(node: Any) -> Any:
    """pydantic writes ``oneOf`` for tagged unions; a bare name matches one branch only, but
    a partial mapping (allowed under ``extends``) may match two, so ``anyOf`` it is."""
    def visit(d: dict) -> None:
        if "oneOf" in d:
            d["anyOf"] = d.pop("oneOf")
        d.pop("discriminator", None)
    return _walk(node, visit)


def _without_required(node: Any) -> Any:
    return _walk(node, lambda d: d.pop("required", None))


def _renamed_refs(node: Any) -> Any:
    def visit(d: dict) -> None:
        ref = d.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            d["$ref"] = "#/$defs/" + _STRICT + ref.removeprefix("#/$defs/")
    return _walk(node, visit)


def _add_examples(defs: dict[str, Any]) -> None:
    """Names a field's component may take, for completion in editors."""
    from kexp import registry as r

    fields = {
        ("CompileSpec", "optimizer"): r.OPTIMIZERS, ("CompileSpec", "loss"): r.LOSSES,
        ("CompileSpec", "metrics"): r.METRICS, ("CompileSpec", "weighted_metrics"): r.METRICS,
        ("TrainSpec", "callbacks"): r.CALLBACKS,
    }
    for (section, key), registry in fields.items():
        prop = defs.get(section, {}).get("properties", {}).get(key)
        if prop is not None:
            prop["examples"] = registry.names()
    for name, registry in (("DataSpec", r.DATASETS), ("Node", r.LAYERS),
                           ("ModelSpec", r.MODELS)):
        branches = defs.get(name, {}).get("anyOf", [])
        for branch in branches:
            if branch.get("type") == "string":
                branch["examples"] = registry.names()
