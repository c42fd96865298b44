"""train.phases: a pretrained backbone frozen while the head trains, then its top blocks
fine-tuned with a new optimizer -- in one run, resumable after kill -9, epochs continuing."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import read_run_json as info
from tests.conftest import run_dir_of
from tests.filedata import image_folder
from tests.test_resume import assert_same_weights, only_run, start_kexp, wait_for

UNFROZEN_FROM = "block_15_expand"

CONFIG = f"""
name: two-phase
seed: 3
deterministic: true
data: {{type: image_directory, path: images, image_size: [32, 32], batch_size: 8,
        validation_split: 0.25}}
model:
  type: functional
  inputs: [{{name: image, shape: [32, 32, 3]}}]
  layers:
    - {{type: Preprocess, application: MobileNetV2}}
    - {{type: MobileNetV2, alpha: 0.35, include_top: false, weights: backbone.weights.h5,
       pooling: avg, name: backbone, trainable: false}}
    - {{type: Dense, units: 2, activation: softmax, name: head}}
compile:
  optimizer: {{type: Adam, learning_rate: 1.0e-2}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
train:
  phases:
    - {{epochs: 1, callbacks: [{{type: ModelCheckpoint, filepath: phase1.keras}}]}}
    - {{epochs: 2, unfreeze: {{layer: backbone, from: {UNFROZEN_FROM}}},
       optimizer: {{type: Adam, learning_rate: 1.0e-3}}}}
"""


def _kexp(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The config, a generated folder of 32 x 32 PNG images of two classes (16 each), and
    backbone weights saved by the test (random, not Keras's initialisation)."""
    folder = tmp_path_factory.mktemp("phases")
    image_folder(folder / "images", per_class=16)
    rng = np.random.default_rng(0)
    backbone = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                              input_shape=(32, 32, 3), pooling="avg")
    backbone.set_weights([w + rng.normal(0, 0.01, w.shape).astype("float32")
                          for w in backbone.get_weights()])
    backbone.save_weights(folder / "backbone.weights.h5")
    (folder / "c.yaml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    result = _kexp("train", folder / "c.yaml", "--runs-dir", tmp_path_factory.mktemp("ref"))
    assert result.exit_code == 0, result.stderr
    return run_dir_of(result)


def layer_weights(path: Path, name: str = "backbone") -> dict[str, list[np.ndarray]]:
    """Each sublayer's weights (BatchNormalization's moving statistics included)."""
    model = keras.saving.load_model(path, compile=False)
    return {layer.name: [np.asarray(w) for w in layer.weights]
            for layer in model.get_layer(name).layers if layer.weights}


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_phase_1_trains_the_head_and_leaves_the_backbone_bit_identical(folder, reference):
    original = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                              input_shape=(32, 32, 3), pooling="avg")
    original.load_weights(folder / "backbone.weights.h5")
    after = layer_weights(reference / "phase1.keras")
    for layer in original.layers:
        for got, want in zip(after.get(layer.name, []), layer.weights, strict=True):
            assert np.array_equal(got, np.asarray(want)), layer.name  # BN statistics too
    rows = history(reference)
    assert float(rows[1]["loss"]) != float(rows[0]["loss"])  # the head did train


def test_phase_2_changes_the_unfrozen_blocks_only(reference):
    before, after = layer_weights(reference / "phase1.keras"), layer_weights(
        reference / "model.keras")
    names = list(before)
    first = names.index(UNFROZEN_FROM)
    model = keras.saving.load_model(reference / "model.keras", compile=False)
    kinds = {layer.name: type(layer).__name__ for layer in model.get_layer("backbone").layers}
    changed = {n for n in names if not all(np.array_equal(a, b)
                                           for a, b in zip(before[n], after[n], strict=True))}
    expected = {n for n in names[first:] if kinds[n] != "BatchNormalization"}
    assert changed == expected


def test_history_has_both_phases_with_continuing_epochs(reference):
    rows = history(reference)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [r["phase"] for r in rows] == ["0", "1", "1"]
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[:1] == pytest.approx([1e-2]) and rates[1:] == pytest.approx([1e-3] * 2)
    assert info(reference)["epochs_completed"] == 3 and info(reference)["status"] == "completed"


def test_kill_9_in_phase_2_then_resume_is_bit_identical(folder, reference, tmp_path):
    runs = tmp_path / "runs"
    proc = start_kexp("train", folder / "c.yaml", "--runs-dir", runs, log=tmp_path / "log")
    assert wait_for(lambda: any(runs.glob("*/*/state/epoch-0002")), proc, timeout=900)
    proc.kill()  # phase 2 has trained one of its two epochs
    proc.wait()
    run = only_run(runs)
    assert info(run)["status"] == "running"
    result = _kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert "at epoch 2 of 3" in result.stderr
    assert [(r["epoch"], r["phase"]) for r in history(run)] == [("0", "0"), ("1", "1"),
                                                               ("2", "1")]
    assert_same_weights(run / "model.keras", reference / "model.keras")


# A small model for what does not need a pretrained backbone: a kill at the very boundary of
# two phases, --smoke and the custom loop. A plugin callback of phase 2 waits a second before
# its first epoch, so that a kill lands between the phases.
SMALL = """
seed: 5
deterministic: true
plugins: [slow.py]
data: {type: random_classification, num_samples: 64, num_features: 6, num_classes: 3,
       batch_size: 16, validation_split: 0.25}
model:
  type: functional
  inputs: [{name: x, shape: [6]}]
  layers:
    - {type: Dense, units: 16, activation: relu, name: body, trainable: false}
    - {type: Dropout, rate: 0.3}
    - {type: Dense, units: 3, activation: softmax, name: head}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
train:
  phases:
    - {epochs: 2}
    - {epochs: 2, unfreeze: {layer: body}, optimizer: {type: SGD, learning_rate: 0.05},
       callbacks: [{type: Pause, seconds: 1.5}, {type: EarlyStopping, monitor: loss, patience: 9}]}
"""

SLOW = """
import time
import keras
from kexp.registry import CALLBACKS

@CALLBACKS.register()
class Pause(keras.callbacks.Callback):
    def __init__(self, seconds=1.0):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        time.sleep(self.seconds)
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    (folder / "slow.py").write_text(SLOW)
    (folder / "s.yaml").write_text(SMALL)
    return folder / "s.yaml"


def test_kill_9_between_two_phases_then_resume_is_bit_identical(small, tmp_path):
    loop = "custom"  # the MobileNetV2 run above resumes with fit
    reference = _kexp("train", small, "--runs-dir", tmp_path / "ref", "--set",
                      f"train.loop={loop}")
    assert reference.exit_code == 0, reference.stderr
    runs = tmp_path / "runs"
    proc = start_kexp("train", small, "--runs-dir", runs, "--set", f"train.loop={loop}",
                      log=tmp_path / "log")
    assert wait_for(lambda: any(runs.glob("*/*/state/epoch-0002")), proc, timeout=900)
    proc.kill()  # phase 1 saved, phase 2 pausing before its first epoch
    proc.wait()
    run = only_run(runs)
    assert not any(run.glob("state/epoch-0003")), "killed too late"
    result = _kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert "at epoch 2 of 4" in result.stderr
    assert [r["phase"] for r in history(run)] == ["0", "0", "1", "1"]
    assert_same_weights(run / "model.keras", run_dir_of(reference) / "model.keras")
    # A finished run gets more epochs in its last phase
    result = _kexp("train", "--resume", run, "--set", "train.phases[1].epochs=3")
    assert result.exit_code == 0, result.stderr
    assert [r["phase"] for r in history(run)] == ["0", "0", "1", "1", "1"]
    assert info(run)["epochs_completed"] == 5 and info(run)["status"] == "completed"


def test_smoke_runs_every_phase_for_one_epoch_and_phase_values_are_set_paths(small,
                                                                              tmp_path):
    result = _kexp("train", small, "--runs-dir", tmp_path, "--smoke",
                   "--set", "train.phases[1].optimizer.learning_rate=0.02")
    assert result.exit_code == 0, result.stderr
    run = run_dir_of(result)
    rows = history(run)
    assert [(r["epoch"], r["phase"]) for r in rows] == [("0", "0"), ("1", "1")]
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.02)
    assert info(run)["epochs_completed"] == 2


def test_a_phase_stopped_early_hands_over_to_the_next_one(small, tmp_path):
    result = _kexp("train", small, "--runs-dir", tmp_path, "--set", "train.phases[0].epochs=3",
                   "--set", "train.phases[0].callbacks=[{type: EarlyStopping, monitor: loss, "
                   "patience: 0, min_delta: 100}]", "--set", "train.phases[1].epochs=1")
    assert result.exit_code == 0, result.stderr
    run = run_dir_of(result)
    # no improvement of 100: phase 0 stops after epoch 1 (of 3); phase 1 starts at epoch 2
    assert [(r["epoch"], r["phase"]) for r in history(run)] == [("0", "0"), ("1", "0"),
                                                                 ("2", "1")]
    assert info(run)["epochs_completed"] == 3 and info(run)["status"] == "completed"
