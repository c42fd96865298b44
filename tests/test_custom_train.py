"""kexp train with `train.loop: custom`, custom train steps inside fit, and features from a
run — end to end, as the chapter's last third does them."""

from __future__ import annotations

import json

import keras
import pytest

from kexp.tools.smoke import missing_requirement
from tests.conftest import CONFIGS, run_dir_of
from tests.conftest import read_history as history


def train(kexp, *args):
    result = kexp("train", *args)
    assert result.exit_code == 0, result.stderr
    return run_dir_of(result)


def test_custom_loop_matches_fit_on_the_digits_config(kexp, tmp_path):
    fit_run = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--set",
                    "train.epochs=8")
    custom_run = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--set",
                       "train.epochs=8", "--set", "train.loop=custom")
    fit_rows, custom_rows = history(fit_run), history(custom_run)
    assert list(fit_rows[0]) == list(custom_rows[0])  # exactly the same columns, same order
    assert len(fit_rows) == len(custom_rows) == 8
    fit_acc, custom_acc = (float(r[-1]["val_accuracy"]) for r in (fit_rows, custom_rows))
    assert abs(fit_acc - custom_acc) <= 0.02 and custom_acc >= 0.9
    assert json.loads((custom_run / "run.json").read_text())["loop"] == "custom"
    assert sorted(p.name for p in custom_run.iterdir()) == sorted(p.name for p in fit_run.iterdir())


@pytest.mark.parametrize("mode", ["eager", "step", "epoch"])
def test_every_compile_mode_trains(kexp, tmp_path, mode):
    run = train(kexp, CONFIGS / "listing_7_21_custom_loop.yaml", "--runs-dir", tmp_path,
                "--set", f"train.compile_mode={mode}", "--set", "train.epochs=2")
    rows = history(run)
    assert len(rows) == 2 and float(rows[1]["loss"]) < float(rows[0]["loss"])


def test_ticket_model_with_the_custom_loop_keyed_by_output_name(kexp, tmp_path):
    run = train(kexp, CONFIGS / "listing_7_11_ticket_named.yaml", "--runs-dir", tmp_path,
                "--set", "train.loop=custom")
    assert {"priority_loss", "department_loss", "priority_mean_absolute_error",
            "department_accuracy", "val_priority_loss"} <= set(history(run)[0])


def test_early_stopping_stops_the_custom_loop_after_three_epochs(kexp, tmp_path):
    run = train(kexp, CONFIGS / "listing_7_19_callbacks.yaml", "--runs-dir", tmp_path,
                "--set", "compile.optimizer.learning_rate=0", "--set", "train.loop=custom")
    assert len(history(run)) == 3
    assert keras.saving.load_model(run / "checkpoint_path.keras").name == "digits_mlp"


def test_a_plugin_train_step_logs_its_own_metric_inside_fit(kexp, tmp_path):
    run = train(kexp, CONFIGS / "listing_7_4_5_train_step.yaml", "--runs-dir", tmp_path,
                "--set", "train.epochs=2")
    rows = history(run)
    assert float(rows[0]["grad_norm"]) > 0 and "accuracy" in rows[0]
    run = train(kexp, CONFIGS / "listing_7_4_5_loss_tracker.yaml", "--runs-dir", tmp_path,
                "--set", "train.epochs=2")
    assert set(history(run)[0]) == {"epoch", "loss", "val_loss", "learning_rate"}


def test_feature_extraction_from_a_ticket_run(kexp, tmp_path):
    base = train(kexp, CONFIGS / "ticket_model.yaml", "--runs-dir", tmp_path)
    run = train(kexp, CONFIGS / "listing_7_13_feature_extraction.yaml", "--runs-dir", tmp_path,
                "--set", f"model.base={base}")
    model = keras.saving.load_model(run / "model.keras")
    assert model.output_names == ["priority", "department", "difficulty"]
    assert {"difficulty_accuracy", "val_difficulty_loss"} <= set(history(run)[0])
    # a runs/<name> folder means its newest run
    run = train(kexp, CONFIGS / "listing_7_13_feature_extraction.yaml", "--runs-dir", tmp_path,
                "--set", f"model.base={base.parent}", "--smoke")
    assert (run / "model.keras").exists()


def test_smoke_skips_configs_that_need_absent_files(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    why = missing_requirement(CONFIGS / "listing_7_17_mnist.yaml")
    assert "mnist" in why and str(tmp_path) in why
    assert missing_requirement(CONFIGS / "digits_mlp.yaml") == ""
