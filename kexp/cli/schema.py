"""``kexp schema``: the JSON Schema of the config language, for editor completion."""

from __future__ import annotations

import json

import typer


def schema() -> None:
    """Print the JSON Schema of a config file (e.g. for the YAML language server)."""
    from kexp.config.json_schema import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))
