"""The Python API (SPEC §5): every function driven from Python, errors as exceptions (never
SystemExit), and `import kexp` without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kexp
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> kexp.Run:
    runs_dir = tmp_path_factory.mktemp("api") / "runs"
    return kexp.train(CONFIGS / "digits_mlp.yaml", overrides={"train.epochs": 2},
                      runs_dir=runs_dir)


def test_import_kexp_is_light():
    script = ("import sys, kexp; kexp.Run; kexp.runs; kexp.ConfigError; "
              "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'optuna') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_train_returns_the_run(run):
    assert run.status == "completed"
    assert run.path.parent.name == "digits-mlp" and (run.path / "run.json").is_file()
    assert run.history["epoch"] == [0, 1]
    assert len(run.history["val_loss"]) == 2
    assert run.metrics["validation"]["accuracy"] == pytest.approx(run.history["val_accuracy"][-1])
    assert run.config["train"]["epochs"] == 2
    assert run.info["command"][0] == "kexp.train"
    assert kexp.Run(run.path.parent) == run  # runs/<name>: its newest run


def test_load_model_evaluate_and_predict(run):
    model = run.load_model("best")
    assert model.count_params() == 64 * 128 + 128 + 128 * 10 + 10
    metrics = kexp.evaluate(run, split="validation")
    assert set(metrics) == {"loss", "accuracy"} and 0.0 < metrics["accuracy"] <= 1.0
    recorded = json.loads((run.path / "evaluation.json").read_text())
    assert recorded["metrics"] == metrics

    x = np.random.default_rng(0).random((5, 64)).astype("float32")
    out = kexp.predict(run, x)
    assert list(out) == ["predictions"] and out["predictions"].shape == (5, 10)
    np.testing.assert_allclose(out["predictions"], run.load_model()(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["predictions"].sum(axis=1), 1.0, atol=1e-5)


def test_runs_compare_and_export(run, tmp_path):
    found = kexp.runs(run.path.parent.parent)
    assert found == [run]
    assert kexp.runs(run.path.parent.parent, status="failed") == []

    comparison = kexp.compare(run, metric="val_accuracy")
    assert comparison.rows[0]["best val_accuracy"] == pytest.approx(
        max(run.history["val_accuracy"]))
    assert comparison.render("csv").splitlines()[0].startswith("run,status,epochs")

    exported = kexp.export(run, output=tmp_path / "sm")
    assert exported.path == tmp_path / "sm" and (tmp_path / "sm" / "saved_model.pb").is_file()
    assert exported.max_abs_diff <= 1e-5 and exported.outputs == ["digit"]


def test_sweep_runs_its_trials(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(textwrap.dedent(f"""\
        extends: {CONFIGS / "digits_mlp.yaml"}
        train: {{epochs: 1}}
        sweep:
          metric: val_accuracy
          trials: 1
          sampler: random
          params:
            model.layers[0].units: {{type: int, low: 8, high: 16}}
        """))
    result = kexp.sweep(config, runs_dir=tmp_path / "runs")
    assert result.path.name.startswith("sweep-") and result.metric == "val_accuracy"
    assert result.direction == "maximize"
    trials = result.trials
    assert len(trials) == 1 and trials[0].status == "completed"
    assert result.best == trials[0]  # one trial (each is a process): the wrapper is the point
    assert result.best.path.parent == result.path / "trials"
    assert 16 >= result.best.config["model"]["layers"][0]["units"] >= 8


def test_errors_are_exceptions_never_system_exit(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        data: {type: digits}
        model:
          type: sequential
          layers:
            - {type: Dense, units: 10, activation: rleu}
        compile: {optimizer: adam, loss: mse}
        """))
    with pytest.raises(kexp.ConfigError) as error:
        kexp.train(bad, runs_dir=tmp_path / "runs")
    assert f"{bad}:5:" in str(error.value) and "rleu" in str(error.value)
    assert error.value.problems[0].path == "model.layers[0].activation"
    assert not (tmp_path / "runs").exists()

    with pytest.raises(kexp.ConfigError, match="--set train.epoch=2"):
        kexp.train(CONFIGS / "digits_mlp.yaml", overrides={"train.epoch": 2})
    with pytest.raises(kexp.DataError, match="does not exist"):
        kexp.Run(tmp_path / "nope")
    with pytest.raises(kexp.DataError):
        kexp.compare(tmp_path / "nope")
    with pytest.raises(kexp.DataError):
        kexp.runs(tmp_path / "nope")
