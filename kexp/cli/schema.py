"""``kexp schema``: the JSON Schema of the config language, for editor completion."""

from __future__ import annotations

import json

import typer


def schema() -> None:
    """Print the JSON Schema of the config language (e.g. for a YAML editor plugin)."""
    from kexp.config.schema import Config

    document = Config.model_json_schema(by_alias=True, mode="validation")
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "kexp experiment config"
    typer.echo(json.dumps(document, indent=2))
