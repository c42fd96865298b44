"""Shared layers in functional configs (issue #21, item 7): a `call:` node calls an earlier
node's layer again on other inputs — one layer, one set of weights — checked by `validate`
without TensorFlow, shown by `summary` and `plot`, trained by both loops, saved and reloaded
by `evaluate` and `predict`. The Siamese example is the README's own block."""

from __future__ import annotations

import json
import re
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, read_history, read_run_json, run_dir_of, run_kexp
from test_cli_conventions import probe

from kexp.config.load import parse_yaml

REST = """
data: {type: npz, path: pairs.npz, features: [left, right], targets: y,
       validation_split: 0.25, batch_size: 16}
compile: {optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}
train: {epochs: 2}
seed: 1
"""

TOWER_PLUGIN = '''
import keras
from kexp.registry import LAYERS


@LAYERS.register()
class Tower(keras.Model):
    """A two-layer encoder: a whole sub-model, to be called on both sides."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.embed = keras.layers.Dense(units)

    def call(self, inputs):
        return self.embed(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''

TOWER_MODEL = """
plugins: [towers.py]
model:
  type: functional
  inputs: [{name: left, shape: [16]}, {name: right, shape: [16]}]
  layers:
    - {name: tower, type: Tower, units: 4, inputs: left}
    - {call: tower, inputs: right, name: right_vec}
    - {name: diff, type: Subtract, inputs: [tower, right_vec]}
    - {name: out, type: Dense, units: 1, activation: sigmoid, inputs: diff}
  outputs: out
"""


def readme_example(marker: str) -> str:
    """The README's shared-layers example that contains ``marker`` (its `model:` block)."""
    text = (REPO / "README.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if marker in b]
    return block


def readme_siamese() -> str:
    """Two Dense layers, each called again on the other input."""
    return readme_example("{call: hidden,")


def readme_block() -> str:
    """A `type: sequential` block called again as a whole."""
    return readme_example("{call: tower,")


def unshared(model_yaml: str) -> str:
    """The same graph with new layers where the README's example calls its layers again."""
    return (model_yaml
            .replace("{call: hidden, inputs: right,",
                     "{type: Dense, units: 16, activation: relu, inputs: right,")
            .replace("{call: encoder,", "{type: Dense, units: 8,"))


def pairs(n: int = 64, right_width: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = rng.normal(size=(n, 16)).astype("float32")
    right = rng.normal(size=(n, right_width)).astype("float32")
    k = min(16, right_width)
    right[: n // 2, :k] = left[: n // 2, :k] * (1 + 0.1 * rng.normal(size=(n // 2, 1)))
    y = np.zeros(n, dtype="float32")
    y[: n // 2] = 1.0  # the first half are near-copies: "same"
    return {"left": left, "right": right, "y": y}


def project(tmp_path: Path, model_yaml: str, right_width: int = 16) -> Path:
    np.savez(tmp_path / "pairs.npz", **pairs(right_width=right_width))
    (tmp_path / "towers.py").write_text(TOWER_PLUGIN)
    config = tmp_path / "siamese.yaml"
    config.write_text(textwrap.dedent(model_yaml).lstrip() + textwrap.dedent(REST))
    return config


def equal_and_different_pairs(path: Path, n: int = 16) -> None:
    """Half the rows have left == right (the shared encoder's difference is 0: every such
    prediction is the head's sigmoid(bias)), half have unrelated sides."""
    rng = np.random.default_rng(7)
    left = rng.normal(size=(n, 16)).astype("float32")
    right = rng.normal(size=(n, 16)).astype("float32")
    right[: n // 2] = left[: n // 2]
    np.savez(path, left=left, right=right)


def check_predictions_share_the_encoder(run: Path, cwd: Path) -> None:
    equal_and_different_pairs(cwd / "probe.npz")
    result = run_kexp("predict", run, "--input", "probe.npz", "--output", "probe_out.npz",
                      cwd=cwd)
    assert result.returncode == 0, result.stderr
    predictions = np.load(cwd / "probe_out.npz")["predictions"]
    assert predictions.shape == (16, 1)
    assert np.ptp(predictions[:8]) < 1e-6      # equal sides: one value, whatever the input
    assert np.ptp(predictions[8:]) > 1e-5      # different sides: the model does look


def test_the_readme_siamese_trains_with_fit_and_reloads(tmp_path):
    config = project(tmp_path, readme_siamese())
    result = run_kexp("train", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / run_dir_of(result)
    assert read_run_json(run)["status"] == "completed"
    assert [set(r) >= {"loss", "val_loss", "val_accuracy"} for r in read_history(run)] == [
        True, True]
    # the saved model holds each shared layer once, and no layer for the `call:` nodes
    with zipfile.ZipFile(run / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    calls = {layer.get("name") or layer["config"]["name"]: len(layer["inbound_nodes"])
             for layer in saved["config"]["layers"]}
    assert calls == {"left": 0, "right": 0, "hidden": 2, "encoder": 2, "diff": 1, "out": 1}
    result = run_kexp("evaluate", run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    check_predictions_share_the_encoder(run, tmp_path)


def test_a_shared_sequential_block_trains_with_the_custom_loop_and_reloads(tmp_path):
    config = project(tmp_path, readme_block())
    result = run_kexp("train", config, "--set", "train.loop=custom", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / run_dir_of(result)
    assert read_run_json(run)["status"] == "completed"
    assert len(read_history(run)) == 2
    with zipfile.ZipFile(run / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    [tower] = [layer for layer in saved["config"]["layers"] if layer["name"] == "tower"]
    assert tower["class_name"] == "Sequential" and len(tower["inbound_nodes"]) == 2
    check_predictions_share_the_encoder(run, tmp_path)


def test_a_shared_plugin_sub_model_saves_and_reloads_in_safe_mode(tmp_path):
    import keras

    (tmp_path / "towers.py").write_text(TOWER_PLUGIN)
    model = _built(tmp_path, TOWER_MODEL, "towers.yaml")
    assert len(model.trainable_weights) == 6  # the tower's 2 Dense layers once, and the head
    model.save(tmp_path / "towers.keras")
    again = keras.saving.load_model(tmp_path / "towers.keras", safe_mode=True)
    equal_and_different_pairs(tmp_path / "probe.npz")
    probe_pairs = dict(np.load(tmp_path / "probe.npz"))
    predictions = again.predict(probe_pairs, verbose=0)
    np.testing.assert_allclose(predictions, model.predict(probe_pairs, verbose=0), atol=1e-6)
    assert np.ptp(predictions[:8]) < 1e-6 and np.ptp(predictions[8:]) > 1e-5


def _built(tmp_path: Path, model_yaml: str, name: str):
    from kexp.config import load_config
    from kexp.models.build import build_model

    path = tmp_path / name
    path.write_text(textwrap.dedent(model_yaml).lstrip())
    return build_model(load_config(path, model_only=True).model)[0]


def test_the_calls_share_one_set_of_weights(tmp_path):
    shared = _built(tmp_path, readme_siamese(), "shared.yaml")
    separate = _built(tmp_path, unshared(readme_siamese()), "separate.yaml")
    # two Dense layers called twice: their kernel and bias are not duplicated
    assert len(separate.trainable_weights) == 10
    assert len(shared.trainable_weights) == len(separate.trainable_weights) - 4
    assert shared.count_params() == 417 and separate.count_params() == 825  # as the README says
    # the two sides of `diff` come from the very same layer object, with the same variables
    left, right = shared.get_layer("diff")._inbound_nodes[0].input_tensors
    ops = [t._keras_history.operation for t in (left, right)]
    assert ops[0] is ops[1] is shared.get_layer("encoder")
    model_vars = {id(v) for v in shared.trainable_weights}
    assert {id(v) for v in ops[0].trainable_weights} <= model_vars
    x = np.random.default_rng(0).normal(size=(5, 16)).astype("float32")
    same = shared.predict({"left": x, "right": x}, verbose=0)
    assert np.ptp(same) < 1e-6


def test_a_call_node_as_output_keeps_its_name(tmp_path):
    model_yaml = readme_siamese().replace("outputs: out", "outputs: [encoder, right_vec]")
    model = _built(tmp_path, model_yaml, "embeddings.yaml")
    assert model.output_names == ["encoder", "right_vec"]
    x = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    left, right = model.predict({"left": x, "right": x}, verbose=0)
    np.testing.assert_allclose(left, right, atol=1e-6)


def test_summary_and_plot_show_the_shared_layers(kexp, tmp_path):
    config = project(tmp_path, readme_siamese())
    result = kexp("summary", config)
    assert result.exit_code == 0, result.stderr
    assert "Total params: 417 " in result.stdout
    # each shared layer once, called on both sides
    assert re.search(r"hidden \(Dense\) .* 272 . left\[0\]\[0\], right\[0\]\[0\]", result.stdout)
    assert re.search(r"encoder \(Dense\) .* 136 . hidden\[0\]\[0\], hidden\[1\]\[0\]",
                     result.stdout)
    out = tmp_path / "siamese.png"
    result = kexp("plot", config, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


BAD = [  # (what the README block becomes, config path, words of the message)
    ("{call: encodr, name: right_vec}", "model.layers[3].call", "did you mean 'encoder'"),
    ("{call: encoder, type: Dense, name: right_vec}", "model.layers[3].type", "not both"),
    ("{call: encoder, units: 8, name: right_vec}", "model.layers[3].units",
     "takes only `name` and `inputs`"),
    ("{call: encoder, name: diff}", "model.layers[4].name", "'diff' is used twice"),
    ("{call: left, name: right_vec}", "model.layers[3].call", "is a model input, not a layer"),
    ("{call: right_vec, name: right_vec}", "model.layers[3].call", "calls itself"),
]


@pytest.mark.parametrize("node, path, words", BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_validate_refuses_a_bad_call_node(kexp, tmp_path, node, path, words):
    model_yaml = readme_siamese().replace("{call: encoder, name: right_vec}", node)
    config = project(tmp_path, model_yaml)
    layer_lines = [i + 1 for i, text in enumerate(config.read_text().splitlines())
                   if text.lstrip().startswith("- {")]
    line = layer_lines[int(re.search(r"layers\[(\d+)\]", path).group(1))]
    result = kexp("validate", config)
    assert result.exit_code == 2
    assert path in result.stderr and words in result.stderr
    assert f"siamese.yaml:{line}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_call_is_for_functional_models(kexp, tmp_path):
    config = tmp_path / "seq.yaml"
    config.write_text(textwrap.dedent("""
        model:
          type: sequential
          input_shape: [4]
          layers:
            - {type: Dense, units: 4, name: d}
            - {call: d}
        """).lstrip())
    result = kexp("validate", config)
    assert result.exit_code == 2
    assert "model.layers[1].call" in result.stderr and "type: functional" in result.stderr


def test_validate_checks_a_sequential_block_and_its_layers(kexp, tmp_path):
    model_yaml = (readme_block()
                  .replace("{type: Dense, units: 8}", "{type: Dense, unitz: 8, inputs: left}")
                  .replace("{type: Dense, units: 16, activation: relu}",
                           "{type: Dense, units: 16, activaton: relu}")
                  .replace("      inputs: left\n", "      inputs: left\n      input_shap: [16]\n")
                  .replace("{name: out, type: Dense,", "{name: out, type: Dense, layers: [],"))
    config = project(tmp_path, model_yaml)
    result = kexp("validate", config)
    assert result.exit_code == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert [re.search(r"yaml:\d+:\d+: (\S+):", p).group(1) for p in problems] == [
        "model.layers[0].input_shap", "model.layers[0].layers[0].activaton",
        "model.layers[0].layers[1].inputs", "model.layers[3].layers"]
    assert "did you mean 'activation'" in problems[1]
    assert "a sequential block's layers are called in order" in problems[2]
    assert "goes with `type: sequential`, not `type: Dense`" in problems[3]


def test_the_real_command_names_the_unknown_layer_without_tensorflow(tmp_path):
    model_yaml = readme_siamese().replace("{call: encoder,", "{call: encodr,")
    config = project(tmp_path, model_yaml)
    out = probe("validate", config, cwd=tmp_path)
    assert "HEAVY: [] CODE: 2" in out
    assert "model.layers[3].call" in out and "did you mean 'encoder'" in out
    assert re.search(r"siamese\.yaml:\d+:\d+", out) and "Traceback" not in out


def test_validate_refuses_a_model_input_that_does_not_fit_the_shared_layer(kexp, tmp_path):
    model_yaml = readme_siamese().replace("{name: right, shape: [16]}",
                                          "{name: right, shape: [8]}")
    config = project(tmp_path, model_yaml, right_width=8)
    result = kexp("validate", config)
    assert result.exit_code == 2
    assert "model.layers[2].inputs: 'right' has shape [8], but the Dense layer 'hidden'" in (
        result.stderr)
    assert "'left', of shape [16]" in result.stderr and "Traceback" not in result.stderr


def test_a_shape_only_the_built_model_shows_stops_train_before_a_run(kexp, tmp_path):
    # right_hidden is a new 4-unit Dense: `encoder`, built on 16 features, cannot take it
    model_yaml = readme_siamese().replace(
        "{call: hidden, inputs: right, name: right_hidden}",
        "{type: Dense, units: 4, inputs: right, name: right_hidden}")
    config = project(tmp_path, model_yaml)
    assert kexp("validate", config).exit_code == 0
    result = kexp("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "siamese.yaml:" in result.stderr and "model.layers[3]: " in result.stderr
    assert "`call: encoder` calls layer 'encoder' again on 'right_hidden'" in result.stderr
    assert "(None, 4)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_json_schema_takes_a_call_node(kexp):
    import jsonschema

    schema = json.loads(kexp("schema").stdout)
    validator = jsonschema.Draft202012Validator(schema)
    data, _ = parse_yaml(readme_siamese(), "README.md")
    assert list(validator.iter_errors(data)) == []
    data["model"]["layers"][3] = {"name": "right_vec", "inputs": "right_hidden"}  # neither
    assert list(validator.iter_errors(data))
    assert list(validator.iter_errors({"extends": "base.yaml", **data})) == []
