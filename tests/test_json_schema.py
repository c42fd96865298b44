"""``kexp schema`` tells the truth: the JSON Schema accepts every config kexp ships and every
config block in the README, and refuses the same files with an unknown key or a wrong type."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from kexp.config.json_schema import config_json_schema
from kexp.config.load import parse_yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator():
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _data(path: Path):
    data, _ = parse_yaml(path.read_text(), str(path))
    return data


def _messages(validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(data)]


def test_kexp_schema_prints_the_same_schema(kexp):
    result = kexp("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == config_json_schema()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_passes(validator, path):
    assert _messages(validator, _data(path)) == []


def _broken_copies(data: dict):
    unknown = copy.deepcopy(data)
    unknown.setdefault("train", {})["epoch"] = 3            # a typo of epochs
    yield "unknown key", unknown
    wrong_type = copy.deepcopy(data)
    wrong_type.setdefault("train", {})["epochs"] = "ten"
    yield "wrong type", wrong_type
    top = copy.deepcopy(data)
    top["modle"] = {"type": "sequential"}
    yield "unknown top-level key", top


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_broken_copies_fail(validator, path):
    for what, data in _broken_copies(_data(path)):
        assert _messages(validator, data), f"{path.name}: a copy with {what} passed"


def test_a_file_without_extends_must_be_complete(validator):
    assert _messages(validator, {"train": {"epochs": 3}})              # no model:
    assert _messages(validator, {"extends": "base.yaml", "train": {"epochs": 3}}) == []
    partial = {"model": {"layers": [{"type": "Dense", "units": 3}]}}   # model without type
    assert _messages(validator, partial)
    assert _messages(validator, {"extends": ["a.yaml", "b.yaml"], **partial}) == []


def test_bare_names_and_mappings_are_both_components(validator):
    base = {"model": {"type": "sequential", "layers": ["Flatten", {"type": "Dense", "units": 2}]}}
    for compile_ in ({"optimizer": "rmsprop", "loss": "mse", "metrics": ["accuracy"]},
                     {"optimizer": {"type": "Adam", "learning_rate": 0.001},
                      "loss": {"a": "mse", "b": {"type": "Huber", "delta": 2.0}},
                      "metrics": {"a": ["mae"], "b": "accuracy"}}):
        assert _messages(validator, {**base, "compile": compile_}) == []


def test_component_fields_offer_names_for_completion():
    defs = config_json_schema()["$defs"]
    assert "Adam" in defs["CompileSpec"]["properties"]["optimizer"]["examples"]
    assert "EarlyStopping" in defs["TrainSpec"]["properties"]["callbacks"]["examples"]


def _readme_config_blocks() -> list[tuple[int, str]]:
    """Fenced yaml blocks of the README that are whole configs (they name a model:)."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"```yaml\n(.*?)```", text, re.S):
        line = text.count("\n", 0, match.start()) + 2
        body = match.group(1)
        if re.search(r"^model:", body, re.M):
            blocks.append((line, body))
    return blocks


@pytest.mark.parametrize("line, body", _readme_config_blocks(), ids=lambda v: str(v)[:12])
def test_readme_config_blocks_pass_the_schema(validator, line, body):
    data, _ = parse_yaml(body, f"README.md:{line}")
    assert _messages(validator, data) == [], f"README.md block at line {line}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_kexp_validate_agrees(validator, path):
    """What the schema refuses, ``kexp validate``'s loader refuses too (same --set edits)."""
    from kexp.config import load_config
    from kexp.errors import ConfigError

    try:
        load_config(path, model_only=True)
    except ConfigError as exc:
        if "does not exist" not in str(exc):    # 7.13's base run is made by another config
            raise
        pytest.skip(str(exc))
    for edit in ("train.epoch=3", "train.epochs=ten", "modle.type=sequential"):
        with pytest.raises(ConfigError):
            load_config(path, [edit], model_only=True)


@pytest.mark.parametrize("line, body", _readme_config_blocks(), ids=lambda v: str(v)[:12])
def test_readme_config_blocks_pass_kexps_schema_too(line, body):
    """The same blocks through kexp's own schema (files they name need not exist here)."""
    from kexp.config.schema import Config

    data, _ = parse_yaml(body, f"README.md:{line}")
    data.pop("extends", None)
    if "model" in data:
        Config.model_validate(data)
