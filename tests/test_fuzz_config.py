"""Property tests (Hypothesis): whatever YAML a user or an attacker writes, `kexp validate`
and the config loader end with exit 0 or 2 (a ConfigError) -- never a traceback, never a
hang.

Two sources of input: random YAML documents (nested mappings, lists, scalars of every YAML
type, anchors and aliases, keys of the real config language, bombs, deep brackets, random
characters spliced in), and random mutations of every config in ``configs/`` (a key
deleted, duplicated, renamed or retyped, a value changed, an alias inserted).

``make test`` runs a few hundred examples; ``make fuzz`` runs 5,000
(``KEXP_FUZZ_EXAMPLES=2500`` per property). ``KEXP_FUZZ_DEADLINE`` (seconds of CPU time, not
wall time: the machines tests run on are shared; 2 under ``make fuzz``, a generous 10
otherwise) bounds one example: loading plus `kexp validate`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kexp.cli.app import app
from kexp.config import load_config
from kexp.config.schema import Config
from kexp.errors import ConfigError
from tests.conftest import CONFIGS, run_kexp

EXAMPLES = int(os.environ.get("KEXP_FUZZ_EXAMPLES", "150"))
DEADLINE = float(os.environ.get("KEXP_FUZZ_DEADLINE", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="KEXP_FUZZ_EXAMPLES" not in
                os.environ, suppress_health_check=list(HealthCheck))

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def _config_keys() -> list[str]:
    keys = set(Config.model_fields)
    for field in Config.model_fields.values():
        model = field.annotation
        keys.update(getattr(model, "model_fields", {}))
    return sorted(keys | {"type", "units", "activation", "name", "inputs", "outputs", "layers",
                          "shape", "extends", "path", "base", "<<", "callbacks", "monitor",
                          "learning_rate", "features", "targets"})


KEYS = _config_keys()
NAMES = ["Dense", "relu", "adam", "rmsprop", "accuracy", "mse", "EarlyStopping", "digits",
         "npz", "csv", "sequential", "functional", "fit", "custom", "val_loss", "Nope",
         "sparse_categorical_crossentropy", "softmax", "Dropout", "L2"]
# YAML spellings that are not JSON: every implicit type, odd numbers, tags, paths.
ODD_SCALARS = ["1e-3", "._", "~", "null", "yes", "No", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
               ".inf", "-.inf", ".nan", "0x1F", "0o17", "017", "0b101", "1_000", "1:30", "-",
               "''", '""', "!!str 3", "!!int '3'", "!!float x", "!!python/name:os.system",
               "!!binary aGk=", "!!set {a}", "!custom 1", "/dev/zero", "/dev/null", "/tmp",
               "runs/x", "plugins/none.py", "'\\x00'", "\"\\0\"", "1" * 5000, "9" * 400 + ".0",
               "1e999", "-0", "+1", "0.", "-.5_e3", "'a: b'", "\"\\t\"", "|\n  text\n", "true"]

SCALARS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(NAMES + KEYS + ODD_SCALARS),
    st.text(max_size=12).map(json.dumps),
)


@st.composite
def yaml_documents(draw) -> str:
    """A flow-style YAML document with random anchors and aliases (an alias may name an
    enclosing node: a recursive structure)."""
    anchors: list[str] = []

    def node(depth: int) -> str:
        kinds = ["scalar", "map", "list", "alias", "deep", "bomb"] if depth < 6 else ["scalar"]
        kind = draw(st.sampled_from(kinds))
        if kind == "alias" and anchors:
            return "*" + draw(st.sampled_from(anchors))
        if kind == "deep":
            n = draw(st.integers(0, 120))
            return "[" * n + "]" * n
        if kind == "bomb":
            width, levels = draw(st.integers(2, 9)), draw(st.integers(1, 9))
            first = f"&b{len(anchors)}_0 [" + ", ".join(["x"] * width) + "]"
            items = [first] + [f"&b{len(anchors)}_{i} [" + ", ".join(
                [f"*b{len(anchors)}_{i - 1}"] * width) + "]" for i in range(1, levels)]
            anchors.append(f"b{len(anchors)}_{levels - 1}")
            return "[" + ", ".join(items) + "]"
        prefix = ""
        if draw(st.integers(0, 4)) == 0:
            anchors.append(f"a{len(anchors)}")
            prefix = f"&{anchors[-1]} "
        if kind == "map":
            size = draw(st.integers(0, 4))
            keys = [draw(st.sampled_from(KEYS)) if draw(st.booleans()) else draw(SCALARS)
                    for _ in range(size)]
            return prefix + "{" + ", ".join(f"{k}: {node(depth + 1)}" for k in keys) + "}"
        if kind == "list":
            return prefix + "[" + ", ".join(node(depth + 1)
                                            for _ in range(draw(st.integers(0, 4)))) + "]"
        return prefix + draw(SCALARS)

    top = [f"{draw(st.sampled_from(KEYS))}: {node(1)}" for _ in range(draw(st.integers(0, 6)))]
    text = "\n".join(top) + "\n"
    if draw(st.integers(0, 3)) == 0:  # random characters spliced in
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text("[]{}:,&*!|>-#'\"\n\t ?%@`\\", max_size=6)) + text[at:]
    return text


_KEY_LINE = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z_][\w]*)(:)(.*)$")
_INLINE_VALUE = re.compile(r"(: )([^,{}\[\]\n]+)")


@st.composite
def mutated_configs(draw) -> tuple[str, str]:
    """(config name, its text with one to three random mutations)."""
    path = draw(st.sampled_from(CONFIG_FILES))
    lines = path.read_text().splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "rename", "retype", "inline",
                                   "alias", "indent"]))
        match = _KEY_LINE.match(lines[i])
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "rename" and match:
            lines[i] = match.group(1) + draw(st.sampled_from(KEYS + NAMES)) + match.group(3) + \
                match.group(4)
        elif op == "retype" and match:
            value = draw(st.one_of(SCALARS, st.sampled_from(["[]", "{}", "[1, [2]]", "{a: 1}",
                                                             "{type: Dense}"])))
            lines[i] = match.group(1) + match.group(2) + ": " + value
        elif op == "inline":
            spots = list(_INLINE_VALUE.finditer(lines[i]))
            if spots:
                spot = draw(st.sampled_from(spots))
                value = draw(st.one_of(SCALARS.filter(lambda s: "\n" not in s),
                                       st.sampled_from(["[]", "{}", "[x]"])))
                lines[i] = lines[i][:spot.start(2)] + value + lines[i][spot.end(2):]
        elif op == "alias" and match and match.group(4).strip():
            j = draw(st.integers(0, len(lines) - 1))
            lines[i] = match.group(1) + match.group(2) + ": &m " + match.group(4).strip()
            other = _KEY_LINE.match(lines[j])
            if other and j != i:
                lines[j] = other.group(1) + other.group(2) + ": *m"
        elif op == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip()
    text = "\n".join(lines) + "\n"
    # plugins stay the repository's files (imported once per process, whatever the copy)
    text = re.sub(r"(?<![\w/])plugins/", f"{CONFIGS}/plugins/", text)
    return path.name, text


@pytest.fixture(scope="module")
def validate(tmp_path_factory):
    """validate(text) -> exit code of `kexp validate` in-process; also loads the config with
    the loader. Any exception but a ConfigError fails the property."""
    folder = tmp_path_factory.mktemp("fuzz")
    runner = CliRunner()
    for path in CONFIG_FILES:  # import the plugins (and so TensorFlow) before the clock runs
        runner.invoke(app, ["validate", str(path)], catch_exceptions=False)

    def _validate(text: str, name: str = "fuzz.yaml") -> int:
        path = folder / name
        path.write_text(text)
        start = time.process_time()
        try:
            load_config(path)
        except ConfigError:
            pass
        result = runner.invoke(app, ["validate", str(path)], catch_exceptions=False)
        seconds = time.process_time() - start
        assert result.exit_code in (0, 2), (result.exit_code, result.output, text)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert "config error" in result.stderr, (result.stderr, text)
        assert seconds < DEADLINE, (seconds, text)
        return result.exit_code

    return _validate


@FUZZ
@given(text=yaml_documents())
def test_random_yaml_documents(validate, text):
    validate(text)


@FUZZ
@given(case=mutated_configs())
def test_mutated_configs(validate, case):
    name, text = case
    validate(text, name)


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(text=st.one_of(yaml_documents(), mutated_configs().map(lambda case: case[1])))
def test_the_real_process(tmp_path_factory, text):
    path = Path(tmp_path_factory.mktemp("real")) / "fuzz.yaml"
    path.write_text(text)
    proc = run_kexp("validate", path, timeout=60)
    assert proc.returncode in (0, 2), (proc.returncode, proc.stderr, text)
    assert "Traceback" not in proc.stderr


def test_the_mutations_reach_both_outcomes(validate):
    """The generators are not degenerate: unmutated configs pass, broken ones fail."""
    assert validate((CONFIGS / "digits_mlp.yaml").read_text()) == 0
    assert validate("train: {epochs: *nope}\n") == 2
