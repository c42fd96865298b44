"""``kexp config CONFIG``: the resolved config a run will use, and where each value came
from (``--explain``). No TensorFlow import (unless a plugin the config names imports it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import typer

from kexp.cli.options import ConfigArg, PluginOpt, SetOpt

_MARK = re.compile(r"^(?P<file>.+):(?P<line>\d+):\d+$")


def config(
    config: Path = ConfigArg,
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
    explain: bool = typer.Option(False, "--explain", help="Show where each value came from: "
                                 "file:line (of the file or a base it extends), a --set, or "
                                 "kexp's default."),
    format_: Literal["yaml", "json"] = typer.Option("yaml", "--format", help="yaml, or json "
                                                    "for scripts."),
) -> None:
    """Print the resolved config, as the run's config.yaml will hold it; --explain: sources."""
    import yaml

    from kexp.config import load_config
    from kexp.config.load import format_path, load_resolved

    cfg = load_config(config, set_, plugin)
    data = cfg.to_yaml_dict()
    if not explain:
        typer.echo(json.dumps(data, indent=2) if format_ == "json"
                   else yaml.safe_dump(data, sort_keys=False).rstrip())
        return
    loaded = load_resolved(config, set_, plugin)  # the values as written, before defaults
    origins = {format_path(path): _origin(path, loaded) for path, _ in _leaves(data)}
    if format_ == "json":
        typer.echo(json.dumps({"config": data, "from": origins}, indent=2))
        return
    rows = [(format_path(path), _scalar(value)) for path, value in _leaves(data)]
    width = max((len(p) + len(v) + 2 for p, v in rows), default=0)
    for path, value in rows:
        typer.echo(f"{path}: {value}".ljust(width) + f"  # {origins[path]}")


def _leaves(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every scalar (and empty mapping or list), in order."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list) and value:
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [(path, value)]


def _origin(path: tuple, loaded: Any) -> str:
    """Where the value at ``path`` came from: the deepest part of ``path`` that the files and
    --set gave. A value under a scalar they gave (``optimizer: rmsprop`` is ``{type:
    rmsprop}``) came from that scalar; a key its mapping lacks is kexp's default."""
    node: Any = loaded.data
    given = 0
    for part in path:
        if isinstance(node, dict) and part in node or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node, given = node[part], given + 1
        else:
            break
    if given < len(path) and isinstance(node, (dict, list)):
        return "default"
    return _readable(loaded.sources.where(path[:given]) or "default")


def _readable(mark: str) -> str:
    """``/abs/configs/x.yaml:12:5`` -> ``configs/x.yaml:12`` (file:line)."""
    from kexp.data.files import display_path

    match = _MARK.match(mark)
    if not match or mark.startswith("--"):
        return mark
    return f"{display_path(match['file'])}:{match['line']}"


def _scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()
