"""YAML to a merged mapping, with the source of every value remembered.

Loading is safe (no ``!!python`` tags), rejects duplicate keys and tabs, reads ``1e-3`` as a
float, merges ``extends:`` files and applies ``--set PATH=VALUE`` overrides. Every value's
origin (``file:line:col``, or the ``--set`` argument) is kept in a ``SourceMap`` keyed by its
config path, so later errors can point at the line a user has to change.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kexp.errors import ConfigError, Problem

__all__ = ["SourceMap", "Loaded", "load_yaml", "load_merged", "load_resolved", "apply_sets",
           "format_path", "parse_path", "special_file"]

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
    for t in ("map", "seq", "str", "int", "float", "bool", "null", "merge", "timestamp")
}


# Bounds on what a config file may make kexp do (README, "Limits"). No real config comes near
# them; a hostile one (a "billion laughs" of aliases, 5,000 nested brackets, `extends:
# /dev/zero`) is refused at once with the file and line instead of hanging or crashing.
MAX_FILE_BYTES = 2 * 1024 * 1024    # one YAML file
MAX_DEPTH = 64                      # nesting of mappings and lists, aliases included
MAX_NODES = 50_000                  # values (mappings, lists, scalars) written in one file
MAX_ALIAS_NODES = 10_000            # values reached again through aliases, in total
MAX_EXTENDS_DEPTH = 16              # files in one `extends:` chain
MAX_EXTENDS_FILES = 64              # files read for one config, `extends:` lists included

_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats that refuses to compose nodes nested too deeply
    (PyYAML's composer recurses once per level: 5,000 brackets end in a RecursionError) or
    too many of them (PyYAML reads about 30,000 values a second)."""

    def __init__(self, stream: str, name: str):
        super().__init__(stream)
        self._name = name
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            self._nodes += 1
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                mark = self.peek_event().start_mark
                raise ConfigError(Problem(
                    "", f"the YAML is nested more than {MAX_DEPTH} levels deep"
                    if self._depth > MAX_DEPTH else f"the file holds more than {MAX_NODES:,} "
                    "values; a config describes an experiment: keep data in data files",
                    f"{self._name}:{mark.line + 1}:{mark.column + 1}"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


def special_file(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a directory (``"a
    character device"``, ``"a FIFO (named pipe)"``, ...), else None. Such a file is refused
    before it is opened: reading ``/dev/zero`` or a FIFO never ends."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Parse one YAML file safely, keeping the ``file:line:col`` of every value."""
    return parse_yaml(_read_config_file(path), str(path))


def _read_config_file(path: Path) -> str:
    """The text of a config file: a regular file of at most ``MAX_FILE_BYTES``."""
    what = special_file(path)
    if what is not None:
        raise ConfigError(Problem("", f"config file {path} is {what}, not a regular file"))
    try:
        # O_NONBLOCK: a FIFO swapped in after the check above cannot block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(Problem("", f"config file {path} does not exist")) from None
    except OSError as exc:
        raise ConfigError(Problem("", f"cannot read config file {path}: {exc}")) from None
    with os.fdopen(fd, "rb") as file:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(Problem("", f"config file {path} is not a regular file"))
            raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(Problem("", f"cannot read config file {path}: {exc}")) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(Problem(
            "", f"config file {path} is larger than {MAX_FILE_BYTES // 2**20} MB; a config "
            "describes an experiment: keep data in data files", str(path)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(Problem("", f"cannot read config file {path}: {exc}")) from None


def parse_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; ``name`` is the file name used in messages."""
    loader = _Loader(text, name)
    sources = SourceMap()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, sources
        value = _Builder(loader, name, sources).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = (exc.problem or str(exc)).strip()
        if "\t" in text and "tab" in problem.lower() or "found character '\\t'" in problem:
            problem += " (YAML does not allow tabs for indentation; use spaces)"
        raise ConfigError(Problem("", f"invalid YAML: {problem}", where)) from None
    except yaml.YAMLError as exc:  # a reader error (a control character, ...) has no mark
        raise ConfigError(Problem("", f"invalid YAML: {exc}", name)) from None
    finally:
        loader.dispose()
    return value, sources


def _mark(name: str, node: yaml.Node) -> str:
    return f"{name}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


class _Builder:
    """Python values from a composed YAML node graph, recording every value's mark.

    Aliases are expanded (a config is a tree), and every node reached a second time counts
    against ``MAX_ALIAS_NODES``: a "billion laughs" is refused after ten thousand steps
    instead of being expanded into billions of values.
    """

    def __init__(self, loader: _Loader, name: str, sources: SourceMap):
        self.loader, self.name, self.sources = loader, name, sources
        self.seen: set[int] = set()
        self.again = 0

    def refuse(self, path: PathT, message: str, node: yaml.Node) -> ConfigError:
        return ConfigError(Problem(format_path(path), message, _mark(self.name, node)))

    def build(self, node: yaml.Node, path: PathT) -> Any:
        if id(node) in self.seen:
            self.again += 1
            if self.again > MAX_ALIAS_NODES:
                raise self.refuse(path, f"aliases expand to more than {MAX_ALIAS_NODES:,} "
                                  "values (an alias bomb?)", node)
        else:
            self.seen.add(id(node))
        if len(path) > MAX_DEPTH:
            raise self.refuse((), f"the YAML is nested more than {MAX_DEPTH} levels deep "
                              "(through aliases)", node)
        self.sources.marks.setdefault(path, _mark(self.name, node))
        if node.tag not in _SAFE_TAGS:
            raise self.refuse(
                path, f"the YAML tag {node.tag!r} is not allowed: kexp configs are plain data "
                "and cannot construct Python objects (name a plugin in `plugins:` to add code)",
                node)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: PathT) -> Any:
        if node.tag == _TIMESTAMP:  # a date is text to kexp (a name, a tag), not an object
            return node.value
        try:
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str):
                value.encode("utf-8")  # "\ud800" escapes a lone surrogate: not text
            return value
        except (ValueError, OverflowError) as exc:  # '._', an int of 5,000 digits
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            raise self.refuse(path, f"cannot read {shown!r} ({exc})", node) from None

    def key(self, node: yaml.Node, path: PathT) -> str:
        if not isinstance(node, yaml.ScalarNode):
            kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
            raise self.refuse(path, f"a key must be a name, received a {kind}", node)
        if node.tag not in _SAFE_TAGS or node.tag == _MERGE:
            raise self.refuse(path, f"the YAML tag {node.tag!r} is not allowed on a key", node)
        key = self.scalar(node, path)
        return key if isinstance(key, str) else str(key)

    def mapping(self, node: yaml.MappingNode, path: PathT) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: set[str] = set()
        pairs = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:  # `<<: *defaults`: keys this mapping lacks
                self.merge(out, merged, value_node, path)
            else:
                pairs.append((key_node, value_node))
        for key_node, value_node in pairs:
            key = self.key(key_node, path)
            child = (*path, key)
            if key in out and key not in merged:
                raise self.refuse(child, f"duplicate key {key!r} (first given at "
                                  f"{self.sources.marks[child]}); YAML keys must be unique",
                                  key_node)
            if key in merged:  # an explicit key replaces a merged one, marks and all
                merged.discard(key)
                self.sources.drop_below(child)
            self.sources.marks[child] = _mark(self.name, key_node)
            out[key] = self.build(value_node, child)
        return out

    def merge(self, out: dict, merged: set[str], value: yaml.Node, path: PathT) -> None:
        """YAML merge keys: the first mapping that has a key gives it; explicit keys win."""
        bases = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for base in bases:
            if not isinstance(base, yaml.MappingNode):
                raise self.refuse(path, "`<<` merges a mapping or a list of mappings", base)
            sources, self.sources = self.sources, SourceMap()
            try:
                built = self.build(base, path)
            finally:
                sources, self.sources = self.sources, sources
            for key, item in built.items():
                if key not in out:
                    out[key] = item
                    merged.add(key)
                    child = (*path, key)
                    self.sources.marks.update(
                        (k, v) for k, v in sources.marks.items() if k[: len(child)] == child)


def load_resolved(path: str | Path, sets: list[str] | tuple[str, ...] = (),
                  plugins: list[str] | tuple[str, ...] = ()) -> Loaded:
    """``path`` with its ``extends:`` merged, ``--set`` overrides applied and ``--plugin``s
    appended to ``plugins:`` -- the mapping the schema then checks. Refuses file paths that
    name a device, a FIFO or a socket (``special_file``) before anything opens them."""
    loaded = load_merged(Path(path))
    apply_sets(loaded, sets)
    if plugins:
        listed = loaded.data.setdefault("plugins", [])
        if isinstance(listed, list):
            for plugin in plugins:
                loaded.sources.marks[("plugins", len(listed))] = f"--plugin {plugin}"
                listed.append(str(Path(plugin).resolve()) if plugin.endswith(".py") else plugin)
    problems = [Problem(format_path(p), f"{value} is {what}; expected a regular file or a "
                        "directory", loaded.sources.where(p))
                for p, value, what in _special_paths(loaded.data)]
    if problems:
        raise ConfigError(problems)
    return loaded


def _special_paths(value: Any, path: PathT = ()) -> list[tuple[PathT, str, str]]:
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()
    for key, item in items:
        child = (*path, key)
        if isinstance(item, str) and _is_path_key(child):
            what = "a name with a NUL character" if "\0" in item else special_file(item)
            if what is not None:
                found.append((child, item, what))
        else:
            found += _special_paths(item, child)
    return found


def load_merged(path: Path, _stack: tuple[Path, ...] = (), _count: list[int] | None = None
                ) -> Loaded:
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
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(Problem(
            "extends", "expected a file name or a list of file names", sources.where(("extends",))
        ))
    count = _count if _count is not None else [1]
    merged: dict[str, Any] = {}
    merged_sources = SourceMap()
    for i, base in enumerate(bases):
        where = sources.where(("extends", i))
        if "\0" in base:
            raise ConfigError(Problem("extends", "a file name cannot contain a NUL character",
                                      where))
        base_path = (path.parent / base).resolve()
        if base_path in (*_stack, path):
            chain = " -> ".join(str(p) for p in (*_stack, path, base_path))
            raise ConfigError(Problem("extends", f"`extends:` forms a cycle: {chain}", where))
        count[0] += 1
        if len(_stack) + 2 > MAX_EXTENDS_DEPTH or count[0] > MAX_EXTENDS_FILES:
            limit = (f"a chain of more than {MAX_EXTENDS_DEPTH} files"
                     if len(_stack) + 2 > MAX_EXTENDS_DEPTH
                     else f"more than {MAX_EXTENDS_FILES} files in all")
            raise ConfigError(Problem("extends", f"`extends:` reaches {limit}", where))
        what = special_file(base_path)
        if what is not None:
            raise ConfigError(Problem(
                "extends", f"the base config {base!r} is {what}, not a regular file", where))
        if not base_path.exists():
            raise ConfigError(Problem(
                "extends", f"the base config {base!r} does not exist (looked for {base_path})",
                where,
            ))
        loaded = load_merged(base_path, (*_stack, path), count)
        _deep_merge(merged, loaded.data, merged_sources, loaded.sources, ())
    _deep_merge(merged, data, merged_sources, sources, ())
    return Loaded(merged, merged_sources, path)


# In an extending file, `_replace_: true` in a mapping replaces the base's mapping whole
# instead of merging into it (the way to drop a base key without changing anything else).
REPLACE = "_replace_"


def _deep_merge(into: dict, new: dict, into_src: SourceMap, new_src: SourceMap,
                path: PathT) -> None:
    for key, value in new.items():
        child = (*path, key)
        if key == REPLACE:
            continue
        if _merges(into.get(key), value):
            into_src.marks[child] = new_src.marks.get(child, into_src.where(child))
            _deep_merge(into[key], value, into_src, new_src, child)
        else:
            into_src.drop_below(child)
            into[key] = _without_replace(copy.deepcopy(value))
            for k, v in new_src.marks.items():
                if k[: len(child)] == child:
                    into_src.marks[k] = v


def _merges(base: Any, value: Any) -> bool:
    """Whether ``value`` merges into ``base`` key by key: both mappings, no ``_replace_``, and
    not a component whose ``type`` changes (``{type: SGD, momentum: 0.9}`` over
    ``{type: Adam, beta_1: 0.8}`` is an SGD, not an SGD with Adam's arguments)."""
    if not (isinstance(value, dict) and isinstance(base, dict)) or value.get(REPLACE) is True:
        return False
    return "type" not in value or "type" not in base or value["type"] == base["type"]


def _without_replace(value: Any) -> Any:
    if isinstance(value, dict):
        value.pop(REPLACE, None)
        for item in value.values():
            _without_replace(item)
    elif isinstance(value, list):
        for item in value:
            _without_replace(item)
    return value


def _is_path_key(path: PathT) -> bool:
    """Keys whose string values name files relative to the config that sets them: the data
    files, ``model.base``, an application's ``weights`` file and plugin ``.py`` files.
    (Callback paths are different: they resolve inside the run directory.)"""
    last = path[-1] if path else ""
    if path[:1] == ("data",) and isinstance(last, int) and path[-2:-1] == ("path",):
        return True  # `path: [a.tfrecord, b.tfrecord]`
    if path == ("data", "cache"):
        return True  # a cache file (`memory` is not one: see _resolve_relative_paths)
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
        if isinstance(item, str) and _is_path_key(child) and _looks_relative(item) and (
                "\0" not in item):
            if child == ("model", "base") and not (base_dir / item).exists():
                # a run directory is usually named from where `kexp` runs (runs/<name>/...)
                value[key] = str(Path(item).resolve())
            elif child == ("data", "cache") and item == "memory":
                pass
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
            if isinstance(value, str) and _is_path_key(path) and _looks_relative(value) and (
                    "\0" not in value):
                value = str(Path(value).resolve())  # relative to where the command runs
            _set_path(loaded.data, path)(value)
        except (ValueError, ConfigError) as exc:
            msg = exc.problems[0].message if isinstance(exc, ConfigError) else str(exc)
            problems.append(Problem(text.strip(), msg, where))
            continue
        loaded.sources.drop_below(path)
        for depth in range(1, len(path) + 1):  # and the mappings it created
            loaded.sources.marks.setdefault(path[:depth], where)
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
