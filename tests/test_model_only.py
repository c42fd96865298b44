"""A model-only config (SPEC 1.3): no ``data:``, input shapes given. ``kexp validate``,
``summary`` and ``plot`` take it, as the chapter's listings 7.1–7.7 build models with no data;
``kexp train`` explains that it needs ``data:``."""

from __future__ import annotations

import os
import shutil

import pytest

NAMED_SEQUENTIAL = """
# Listings 7.5-7.7: a named Sequential model with its input shape, and no data.
model:
  type: sequential
  name: my_example_model
  input_shape: [3]
  layers:
    - {type: Dense, units: 64, activation: relu, name: my_first_layer}
    - {type: Dense, units: 10, activation: softmax, name: my_last_layer}
"""

FUNCTIONAL = """
model:
  type: functional
  name: two_inputs
  inputs:
    - {name: title, shape: [20]}
    - {name: tags, shape: [5]}
  layers:
    - {type: Concatenate, name: concat, inputs: [title, tags]}
    - {type: Dense, units: 4, activation: softmax, name: department}
  outputs: department
compile: {optimizer: rmsprop, loss: categorical_crossentropy}
"""

# Listing 7.1: no input shape, no data: the model has no weights until it sees a batch.
UNBUILT = """
model:
  type: sequential
  layers:
    - {type: Dense, units: 64, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
"""

needs_dot = pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                               reason="Graphviz's dot is not installed")


def test_validate_takes_a_model_only_config(kexp, write):
    result = kexp("validate", write("m.yaml", NAMED_SEQUENTIAL))
    assert result.exit_code == 0, result.stderr
    assert "valid (sequential model, 2 layers; no data" in result.stdout


def test_summary_of_listing_7_5_counts_its_parameters(kexp, write):
    result = kexp("summary", write("m.yaml", NAMED_SEQUENTIAL))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("my_first_layer (Dense)" in ln and "(None, 64)" in ln and "256" in ln
               for ln in lines)
    assert any("my_last_layer (Dense)" in ln and "650" in ln for ln in lines)
    assert "Total params: 906" in result.stdout


def test_summary_of_a_functional_model_only_config(kexp, write):
    result = kexp("summary", write("f.yaml", FUNCTIONAL))
    assert result.exit_code == 0, result.stderr
    assert "concat (Concatenate)" in result.stdout and "(None, 25)" in result.stdout
    assert "Total params: 104" in result.stdout  # 25 * 4 + 4


@needs_dot
@pytest.mark.parametrize("text", [NAMED_SEQUENTIAL, FUNCTIONAL], ids=["sequential",
                                                                     "functional"])
def test_plot_of_a_model_only_config(kexp, write, tmp_path, text):
    out = tmp_path / "model.png"
    result = kexp("plot", write("m.yaml", text), "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_of_a_model_without_shapes_or_data_says_how_to_build_it(kexp, write):
    result = kexp("summary", write("u.yaml", UNBUILT))
    assert result.exit_code == 0, result.stderr
    assert "0 (unbuilt)" in result.stdout and "Declare `input_shape:`" in result.stdout


def test_plot_of_a_model_without_shapes_or_data_is_refused(kexp, write, tmp_path):
    result = kexp("plot", write("u.yaml", UNBUILT), "-o", tmp_path / "m.png")
    assert result.exit_code == 2
    assert "u.yaml:1:" in result.stderr and "model: the model has no layer graph yet" in \
        result.stderr and "input_shape" in result.stderr
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("text", [NAMED_SEQUENTIAL, FUNCTIONAL], ids=["sequential",
                                                                     "functional"])
def test_train_explains_that_it_needs_data(kexp, write, tmp_path, text):
    config = write("m.yaml", text)
    result = kexp("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    line = 2 if text.lstrip().startswith("#") else 1  # the first key's line
    assert f"{config}:{line}:1: data: this key is required to train" in result.stderr
    assert "validate, summary and plot" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_train_lists_a_missing_data_with_the_other_problems(kexp, write, tmp_path):
    config = write("m.yaml", NAMED_SEQUENTIAL + "train: {epoch: 3}\n")
    result = kexp("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "2 problems" in result.stderr
    assert "data: this key is required to train" in result.stderr
    assert "train.epoch" in result.stderr and "did you mean 'epochs'" in result.stderr
