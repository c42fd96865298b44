"""YAML to a merged mapping, with the source of every value remembered.

Loading is safe (no ``!!python`` tags), rejects duplicate keys and tabs, reads ``1e-3`` as a
float, merges ``extends:`` files and applies ``--set PATH=VALUE`` overrides. Every value's
origin (``file:line:col``, or the ``--set`` argument) is kept in a ``SourceMap`` keyed by its
config path, so later errors can point at the line a user has to change.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kexp.errors import ConfigError, Problem

__all__ = ["SourceMap", "Loaded", "load_yaml", "load_merged", "apply_sets", "format_path",
           "parse_path"]

PathT = tuple[str | int, ...]

# YAML 1.1 needs a dot in a float; YAML 1.2 and every Keras user read 1e-3 as a number.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$")
_SAFE_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("map", "seq", "str", "int", "float", "bool", "null", "merge")
}


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


@dataclass
class SourceMap:
    """Where each config value came from: path -> ``file:line:col`` (or a ``--set`` argument)."""

    marks: dict[PathT, str] = field(default_factory=dict)

    def where(self, path: PathT) -> str:
        """The source of ``path``, or of its closest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), "")

    def merge(self, other: SourceMap) -> None:
        self.marks.update(other.marks)

    def drop_below(self, path: PathT) -> None:
        n = len(path)
        for key in [k for k in self.marks if len(k) > n and k[:n] == path]:
            del self.marks[key]


@dataclass
class Loaded:
    """A merged config mapping and where each value came from."""

    data: dict[str, Any]
    sources: SourceMap
    path: Path


def format_path(path: PathT) -> str:
    """``("model", "layers", 2, "units")`` -> ``model.layers[2].units``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out and any(c in part for c in ".[]"):  # a sweep parameter: itself a path
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_path(text: str) -> PathT:
    """``model.layers[2].units`` -> ``("model", "layers", 2, "units")``; ValueError if malformed."""
    parts: list[str | int] = []
    for token in re.finditer(r"([^.\[\]]+)|\[(-?\d+)\]|(\.)|(.)", text):
        name, index, dot, other = token.groups()
        if other or (name is None and index is None and dot is None):
            raise ValueError(f"cannot read {text!r} as a config path")
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index))
    if not parts or text.startswith((".", "[")) or text.endswith(".") or ".." in text:
        raise ValueError(f"cannot read {text!r} as a config path")
    return tuple(parts)


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Parse one YAML file safely, keeping the ``file:line:col`` of every value."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem("", f"config file {path} does not exist")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem("", f"cannot read config file {path}: {exc}")) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; ``name`` is the file name used in messages."""
    loader = _Loader(text)
    sources = SourceMap()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, sources
        value = _construct(loader, node, (), name, sources)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = (exc.problem or str(exc)).strip()
        if "\t" in text and "tab" in problem.lower() or "found character '\\t'" in problem:
            problem += " (YAML does not allow tabs for indentation; use spaces)"
        raise ConfigError(Problem("", f"invalid YAML: {problem}", where)) from None
    finally:
        loader.dispose()
    return value, sources


def _mark(name: str, node: yaml.Node) -> str:
    return f"{name}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _construct(loader: _Loader, node: yaml.Node, path: PathT, name: str,
               sources: SourceMap) -> Any:
    sources.marks.setdefault(path, _mark(name, node))
    if node.tag not in _SAFE_TAGS:
        raise ConfigError(Problem(
            format_path(path),
            f"the YAML tag {node.tag!r} is not allowed: kexp configs are plain data and cannot "
            "construct Python objects (name a plugin in `plugins:` to add code)",
            _mark(name, node),
        ))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in out:
                raise ConfigError(Problem(
                    format_path(child),
                    f"duplicate key {key!r} (first given at {sources.marks[child]}); "
                    "YAML keys must be unique",
                    _mark(name, key_node),
                ))
            sources.marks[child] = _mark(name, key_node)
            out[key] = _construct(loader, value_node, child, name, sources)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*path, i), name, sources)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def load_merged(path: Path, _stack: tuple[Path, ...] = ()) -> Loaded:
    """Load ``path`` and the files it ``extends:`` (deep-merged, the extending file wins).

    Example:
        ```yaml
        extends: base.yaml          # or a list; paths are relative to this file
        train: {epochs: 3}
        ```
    """
    path = path.resolve()
    data, sources = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(Problem(
            "", f"a config must be a mapping of keys, received {type(data).__name__}", str(path)
        ))
    _resolve_relative_paths(data, path.parent)
    bases = data.pop("extends", None)
    if bases is None:
        return Loaded(data, sources, path)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(Problem(
            "extends", "expected a file name or a list of file names", sources.where(("extends",))
        ))
    merged: dict[str, Any] = {}
    merged_sources = SourceMap()
    for i, base in enumerate(bases):
        base_path = (path.parent / base).resolve()
        where = sources.where(("extends", i))
        if not base_path.exists():
            raise ConfigError(Problem(
                "extends", f"the base config {base!r} does not exist (looked for {base_path})",
                where,
            ))
        if base_path in (*_stack, path):
            chain = " -> ".join(str(p) for p in (*_stack, path, base_path))
            raise ConfigError(Problem("extends", f"`extends:` forms a cycle: {chain}", where))
        loaded = load_merged(base_path, (*_stack, path))
        _deep_merge(merged, loaded.data, merged_sources, loaded.sources, ())
    _deep_merge(merged, data, merged_sources, sources, ())
    return Loaded(merged, merged_sources, path)


def _deep_merge(into: dict, new: dict, into_src: SourceMap, new_src: SourceMap,
                path: PathT) -> None:
    for key, value in new.items():
        child = (*path, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into_src.marks[child] = new_src.marks.get(child, into_src.where(child))
            _deep_merge(into[key], value, into_src, new_src, child)
        else:
            into_src.drop_below(child)
            into[key] = copy.deepcopy(value)
            for k, v in new_src.marks.items():
                if k[: len(child)] == child:
                    into_src.marks[k] = v


def _is_path_key(path: PathT) -> bool:
    """Keys whose string values name files relative to the config that sets them: the data
    files, ``model.base``, an application's ``weights`` file and plugin ``.py`` files.
    (Callback paths are different: they resolve inside the run directory.)"""
    last = path[-1] if path else ""
    if path[:1] == ("data",) and isinstance(last, str):
        return last == "path" or last.endswith("_path")
    if last == "weights" and (path == ("model", "weights") or path[:2] == ("model", "layers")
                              and len(path) == 4):
        return True  # a Keras application's weights file
    return path == ("model", "base") or (len(path) == 2 and path[0] == "plugins")


def _resolve_relative_paths(value: Any, base_dir: Path, path: PathT = ()) -> None:
    """Make relative file paths absolute against the config file that names them, so a base
    config's paths keep working when another file extends it, and the run's config.yaml is
    rerunnable from anywhere."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()
    for key, item in list(items):
        child = (*path, key)
        if isinstance(item, str) and _is_path_key(child) and _looks_relative(item):
            if child == ("model", "base") and not (base_dir / item).exists():
                # a run directory is usually named from where `kexp` runs (runs/<name>/...)
                value[key] = str(Path(item).resolve())
            elif child[0] != "plugins" or item.endswith(".py"):
                value[key] = str((base_dir / item).resolve())
        else:
            _resolve_relative_paths(item, base_dir, child)


def _looks_relative(text: str) -> bool:
    # `weights: imagenet` names Keras's download, not a file
    return bool(text) and not Path(text).is_absolute() and "://" not in text and \
        text != "imagenet"


def apply_sets(loaded: Loaded, sets: list[str] | tuple[str, ...]) -> None:
    """Apply ``--set PATH=VALUE`` overrides in order. VALUE is parsed as YAML.

    A path must lead through existing mappings and list items; its last key may be new (the
    schema then decides whether the key exists in the config language).
    """
    problems = []
    for item in sets:
        where = f"--set {item}"
        if "=" not in item:
            problems.append(Problem("", "expected PATH=VALUE, e.g. train.epochs=3", where))
            continue
        text, raw = item.split("=", 1)
        try:
            path = parse_path(text.strip())
            value, _ = parse_yaml(raw, where) if raw.strip() else (None, None)
            if isinstance(value, str) and _is_path_key(path) and _looks_relative(value):
                value = str(Path(value).resolve())  # relative to where the command runs
            _set_path(loaded.data, path)(value)
        except (ValueError, ConfigError) as exc:
            msg = exc.problems[0].message if isinstance(exc, ConfigError) else str(exc)
            problems.append(Problem(text.strip(), msg, where))
            continue
        loaded.sources.drop_below(path)
        loaded.sources.marks[path] = where
    if problems:
        raise ConfigError(problems)


def _set_path(data: dict, path: PathT):
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ValueError(_no_such(path[: depth + 1], node))
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ValueError(_no_such(path[: depth + 1], node))
            if part not in node:
                if isinstance(nxt, int):
                    raise ValueError(_no_such(path[: depth + 1], node))
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ValueError(_no_such(path, node))
    elif not isinstance(node, dict):
        raise ValueError(_no_such(path, node))

    def assign(value: Any) -> None:
        node[last] = value

    return assign


def _no_such(path: PathT, node: Any) -> str:
    if isinstance(path[-1], int):
        size = len(node) if isinstance(node, list) else 0
        return (f"the config has no {format_path(path)}: "
                f"{format_path(path[:-1])} has {size} item(s)")
    parent = format_path(path[:-1]) or "the config"
    return f"the config has no {format_path(path)} ({parent} is not a mapping)"
