"""kexp validate / summary / plot / list / schema, as a user runs them."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import CONFIGS, REPO, run_kexp

NO_TF_PROBE = """
import sys
from kexp.cli.app import app
try:
    app(sys.argv[1:], prog_name="kexp")
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("tensorflow", "keras", "sklearn") if m in sys.modules]
print("HEAVY:", heavy, "CODE:", code)
"""


def run_probe(*args):
    out = subprocess.run([sys.executable, "-c", NO_TF_PROBE, *map(str, args)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


@pytest.mark.parametrize("args", [
    ("validate", CONFIGS / "ticket_model.yaml"),
    ("validate", CONFIGS / "digits_mlp.yaml", "--set", "train.epochs=2"),
    ("list",),
    ("list", "layers"),
    ("schema",),
    ("--help",),
])
def test_inspection_commands_never_import_tensorflow(args):
    out = run_probe(*args)
    assert "HEAVY: [] CODE: 0" in out, out


MODULES_PROBE = """
import sys
from kexp.cli.app import app
try:
    app(sys.argv[1:], prog_name="kexp")
except SystemExit as exit:
    code = exit.code
print("LOADED:", sorted({m.split(".")[0] for m in sys.modules}), "CODE:", code)
"""
# What start-up must not pay for (issue 15: `kexp --help` and `kexp validate` within 0.3 s):
# TensorFlow and the numeric stack, and Rich's help rendering (Markdown, markdown-it, Pygments).
HEAVY = {"tensorflow", "keras", "numpy", "scipy", "sklearn", "pandas", "optuna", "matplotlib",
         "markdown_it", "pygments"}


@pytest.mark.parametrize(("args", "also_not"), [
    (("--help",), {"rich", "yaml", "pydantic"}),
    (("validate", CONFIGS / "digits_mlp.yaml"), {"rich"}),
])
def test_start_up_imports_only_what_the_command_needs(args, also_not):
    out = subprocess.run([sys.executable, "-c", MODULES_PROBE, *map(str, args)], cwd=REPO,
                         capture_output=True, text=True, timeout=60).stdout
    line = next(x for x in out.splitlines() if x.startswith("LOADED:"))
    loaded = set(ast.literal_eval(line.removeprefix("LOADED:").rpartition(" CODE:")[0]))
    assert line.endswith("CODE: 0"), out
    assert "typer" in loaded and "kexp" in loaded  # the probe did run the app
    assert not loaded & (HEAVY | also_not), sorted(loaded & (HEAVY | also_not))


def test_validate_is_fast():
    start = time.perf_counter()
    result = run_kexp("validate", CONFIGS / "ticket_model.yaml")
    assert result.returncode == 0, result.stderr
    # the whole process, interpreter included; generous: the machine is shared (0.15 s idle)
    assert time.perf_counter() - start < 5.0
    assert "valid" in result.stdout


BROKEN = {
    "unknown layer type": ("model.layers[0].type=Dens", "model.layers[0].type", "Dense"),
    "misspelled key": ("train.epoch=3", "train.epoch", "epochs"),
    "wrong type": ("train.epochs=three", "train.epochs", "integer"),
    "dangling inputs": ("model.layers[1].inputs=featurez", "model.layers[1].inputs", "features"),
    "unknown --set path": ("model.layers[9].units=3", "model.layers[9]", "4 item(s)"),
    "unknown plugin": ("plugins=[no_such_module]", "plugins[0]", "no_such_module"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_rejects_broken_configs_with_path_and_line(kexp, case):
    override, path, words = BROKEN[case]
    result = kexp("validate", CONFIGS / "ticket_model.yaml", "--set", override)
    assert result.exit_code == 2
    assert path in result.stderr and words in result.stderr
    assert "ticket_model.yaml:" in result.stderr or "--set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_rejects_duplicate_keys_and_missing_extends(kexp, write):
    result = kexp("validate", write("dup.yaml", "name: a\nname: b\n"))
    assert result.exit_code == 2 and "dup.yaml:2:1" in result.stderr
    assert "duplicate key 'name'" in result.stderr
    result = kexp("validate", write("ext.yaml", "extends: gone.yaml\n"))
    assert result.exit_code == 2 and "ext.yaml:1:1" in result.stderr
    assert "gone.yaml" in result.stderr and "does not exist" in result.stderr
    result = kexp("validate", write("x.yaml", "data: {type: digits}\n").parent / "none.yaml")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_summary_of_the_named_sequential_model(kexp):
    result = kexp("summary", CONFIGS / "listing_7_05_named_sequential.yaml")
    assert result.exit_code == 0, result.stderr
    for words in ("my_example_model", "my_first_layer", "my_last_layer", "256", "650",
                  "Total params: 906"):
        assert words in result.stdout


def test_summary_of_the_ticket_model_shows_inputs_outputs_and_connections(kexp):
    result = kexp("summary", CONFIGS / "ticket_model.yaml")
    assert result.exit_code == 0, result.stderr
    for words in ("title", "text_body", "tags", "priority", "department", "Connected to",
                  "Total params: 1,286,789"):
        assert words in result.stdout


def test_summary_with_extends_and_set(kexp, write):
    write("base.yaml", (CONFIGS / "listing_7_05_named_sequential.yaml").read_text())
    child = write("child.yaml", "extends: base.yaml\n")
    result = kexp("summary", child, "--set", "model.layers[0].units=32")
    assert result.exit_code == 0, result.stderr
    assert "Total params: 458" in result.stdout  # 3*32+32 + 32*10+10


def test_summary_of_a_subclassed_model_builds_it_on_the_data_shape(kexp):
    result = kexp("summary", CONFIGS / "listing_7_14_subclassed.yaml")
    assert result.exit_code == 0, result.stderr
    assert "Total params: 1,286,789" in result.stdout and "dummy batch" in result.stdout


@pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                    reason="Graphviz is not installed (CI installs it)")
def test_plot_writes_a_png_of_the_ticket_model(kexp, tmp_path):
    out = tmp_path / "model.png"
    result = kexp("plot", CONFIGS / "ticket_model.yaml", "--show-shapes", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["model.png"]  # written, then renamed


def test_plot_explains_a_subclassed_model(kexp, tmp_path):
    result = kexp("plot", CONFIGS / "listing_7_14_subclassed.yaml", "-o", tmp_path / "m.png")
    assert result.exit_code == 2
    assert "subclassed model" in result.stderr and "no layer graph" in result.stderr
    assert not (tmp_path / "m.png").exists()


def test_plot_explains_missing_graphviz(kexp, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = kexp("plot", CONFIGS / "ticket_model.yaml", "-o", tmp_path / "m.png")
    assert result.exit_code == 2 and "Graphviz" in result.stderr


def test_list_shows_builtins_and_plugins(kexp):
    result = kexp("list", "datasets")
    assert result.exit_code == 0
    for name in ("digits", "synthetic_tickets", "npz", "csv", "mnist"):
        assert name in result.stdout
    result = kexp("list", "models", "--plugin", CONFIGS / "plugins" / "tickets.py")
    assert "CustomerTicketModel" in result.stdout and "plugin" in result.stdout
    assert kexp("list", "widgets").exit_code == 2


def test_schema_is_json_schema_with_every_section(kexp):
    result = kexp("schema")
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {"data", "model", "compile", "train", "distribute"}
    assert "$defs" in schema and "TrainSpec" in schema["$defs"]
