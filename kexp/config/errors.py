"""Turning pydantic's validation errors into kexp ``Problem``s: config path, source line,
what was received, what was expected, and a "did you mean" where one is close."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kexp.config.load import SourceMap, format_path
from kexp.config.schema import UNION_TAGS, Config
from kexp.errors import Problem

__all__ = ["problems_from_validation", "closest", "describe_value"]


def closest(name: str, candidates: typing.Iterable[str]) -> str:
    """``'epochs'`` for ``'epoch'`` among the candidates, quoted and joined with "or"; or ''."""
    matches = difflib.get_close_matches(name, list(candidates), n=2, cutoff=0.6)
    return " or ".join(repr(m) for m in matches)


def describe_value(value: Any) -> str:
    """A short description of a received value: ``'abc' (a string)``."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a mapping", type(None): "nothing (null)"}
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kinds.get(type(value), type(value).__name__)})"


def problems_from_validation(error: ValidationError, sources: SourceMap) -> list[Problem]:
    """One ``Problem`` per pydantic error, located in the YAML; the errors of the members of
    one union (``steps_per_execution``: a positive integer or ``auto``) make one problem."""
    found: list[Problem | tuple] = []
    unions: dict[tuple, list[tuple[tuple, dict]]] = {}
    for err in error.errors():
        loc, union = _config_loc(err["loc"])
        if union is None:
            found.append(_problem(err, loc, sources))
            continue
        if union not in unions:
            found.append(union)
        unions.setdefault(union, []).append((loc, err))
    return [item if isinstance(item, Problem) else _union_problem(unions[item], sources)
            for item in found]


# How pydantic names the member of a union that failed, in an error's location: ``int``,
# ``constrained-int``, ``literal['auto']``, ``list[str]``. They are no config keys.
_MEMBER = re.compile(r"^(?:int|float|str|bool|bytes|none|[a-z-]+\[.*\]|[a-z]+(?:-[a-z]+)+)$")


def _config_loc(loc: tuple) -> tuple[tuple, tuple | None]:
    """The config path of a pydantic error location, and the path of the union whose member
    failed (None when the error is not in a union's member)."""
    out: list = []
    union = None
    annotation: Any = Config
    for part in loc:
        if part in UNION_TAGS:
            continue
        if union is None and isinstance(part, str) and _MEMBER.match(part) and len(
                [m for m in _flatten(annotation) if m is not type(None)]) > 1:
            union = tuple(out)
            continue
        out.append(part)
        annotation = _step(annotation, part) if annotation is not None else None
    return tuple(out), union


def _union_problem(members: list[tuple[tuple, dict]], sources: SourceMap) -> Problem:
    """The deepest member errors (``outputs: [1]`` fails inside the list member, which is
    what the user meant) as one problem: "expected a string, or expected a list"."""
    depth = max(len(loc) for loc, _ in members)
    problems = [_problem(err, loc, sources) for loc, err in members if len(loc) == depth]
    if len(problems) == 1:
        return problems[0]
    heads, received = [], ""
    for problem in problems:
        head, _, rest = problem.message.partition("; received ")
        heads.append(head)
        received = received or rest
    message = ", or ".join(dict.fromkeys(heads)) + (f"; received {received}" if received else "")
    suggestion = next((p.suggestion for p in problems if p.suggestion), "")
    return Problem(problems[0].path, message, problems[0].where, suggestion)


def _problem(err: Any, loc: tuple, sources: SourceMap) -> Problem:
    """One pydantic error at config path ``loc``: what was received, what was expected."""
    path = format_path(loc)
    received = describe_value(err.get("input"))
    kind = err["type"]
    suggestion = ""
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _keys_at(loc[:-1])
        message = f"unknown key {key!r}"
        suggestion = closest(key, allowed)
        if allowed and not suggestion:
            message += f" (expected one of: {', '.join(sorted(allowed))})"
    elif kind == "missing":
        message = "this key is required"
    elif kind == "literal_error":
        expected = re.findall(r"'([^']*)'", err["msg"])
        message = f"expected one of {', '.join(expected)}; received {received}"
        if isinstance(err.get("input"), str):
            suggestion = closest(err["input"], expected)
    else:
        message = err["msg"].removeprefix("Value error, ")
        message = _EXPECTED.get(kind, message[:1].lower() + message[1:])
        if "received" not in message:
            message += f"; received {received}"
    return Problem(path, message, sources.where(loc), suggestion)


_EXPECTED = {
    "int_type": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _keys_at(loc: tuple) -> set[str]:
    """The keys the schema allows at a config path (for "did you mean")."""
    annotation: Any = Config
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return set()
    model = _model_in(annotation)
    if model is None:
        return set()
    return {f.alias or name for name, f in model.model_fields.items()}


def _step(annotation: Any, part: Any) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in _fields(model):
        return _fields(model)[part]
    for arg in _flatten(annotation):
        origin = typing.get_origin(arg)
        if origin is list and isinstance(part, int):
            return typing.get_args(arg)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(arg)[1]
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _flatten(annotation: Any) -> list[Any]:
    """The members of a (possibly Annotated, Optional or Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return [m for a in typing.get_args(annotation) for m in _flatten(a)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
