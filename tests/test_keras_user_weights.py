"""Class and sample weights, and metrics.json after a restore (issue #21 items 6 and 9), end to
end through the `kexp` command (in-process), configs written as a Keras user writes them;
checked against Keras's own `fit(class_weight=...)` and `evaluate(sample_weight=...)`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import read_history, read_run_json, run_dir_of
from tests.test_keras_user import TICKETS

CONFIG = """
seed: 3
data:
  type: npz
  path: train.npz
  features: x
  targets: y
  batch_size: 16
  shuffle: false
  validation: {{type: npz, path: val.npz, features: x, targets: y{val_weight}}}{train_weight}
model:
  type: sequential
  input_shape: [4]
  layers:
    - {{type: Dense, units: 8, activation: relu}}
    - {{type: Dense, units: 3, activation: softmax}}
compile:
  optimizer: {{type: SGD, learning_rate: {lr}}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
  weighted_metrics: [accuracy]
train:
  epochs: 2{class_weight}
"""


@pytest.fixture
def data(tmp_path) -> dict[str, np.ndarray]:
    """96 samples of 3 imbalanced classes (about 60/25/15%), per-sample weights; 64 to train
    on, 32 to validate on."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1], [0.3, 1.0]).astype("int64")
    w = rng.uniform(0.2, 2.0, size=96).astype("float32")
    yb = (x[:, 0] - x[:, 2] > 0).astype("float32")
    np.savez(tmp_path / "train.npz", x=x[:64], y=y[:64], w=w[:64], yb=yb[:64])
    np.savez(tmp_path / "val.npz", x=x[64:], y=y[64:], w=w[64:], yb=yb[64:])
    assert set(np.unique(y[:64])) == {0, 1, 2}
    return {"x": x[:64], "y": y[:64], "w": w[:64], "xv": x[64:], "yv": y[64:], "wv": w[64:]}


def config(tmp_path: Path, name: str, lr: float = 0.0, class_weight: str = "",
           weights: bool = False) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(
        lr=lr, class_weight=f"\n  class_weight: {class_weight}" if class_weight else "",
        train_weight="\n  sample_weight: w" if weights else "",
        val_weight=", sample_weight: w" if weights else "")).lstrip())
    return path


def train(kexp, config: Path, loop: str, *sets: str) -> Path:
    args = [a for s in sets for a in ("--set", s)]
    result = kexp("train", config, "--runs-dir", config.parent / "runs", "-q",
                  "--set", f"train.loop={loop}", *args)
    assert result.exit_code == 0, result.stderr
    return run_dir_of(result)


def keras_model(run: Path):
    """The run's model (its initial weights: the learning rate is 0), compiled as the run."""
    import keras

    model = keras.saving.load_model(run / "model.keras")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], weighted_metrics=["accuracy"])
    return model


def assert_rows_equal(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    assert [set(r) for r in a] == [set(r) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=rel, abs=1e-7), key


def test_class_weight_weighs_the_loss_as_keras_fit_does_in_both_loops(kexp, tmp_path, data):
    cw = config(tmp_path, "cw", class_weight="{0: 1.0, 2: 3.0}")
    runs = {loop: train(kexp, cw, loop) for loop in ("fit", "custom")}
    history = {loop: read_history(run, numbers=True) for loop, run in runs.items()}
    assert_rows_equal(history["fit"], history["custom"])

    model = keras_model(runs["fit"])
    ref = model.fit(data["x"], data["y"], batch_size=16, epochs=1, shuffle=False, verbose=0,
                    class_weight={0: 1.0, 2: 3.0}).history
    row = history["fit"][0]
    assert row["loss"] == pytest.approx(ref["loss"][0], rel=1e-5)
    assert row["weighted_accuracy"] == pytest.approx(ref["weighted_accuracy"][0], rel=1e-5)
    assert row["accuracy"] == pytest.approx(ref["accuracy"][0], rel=1e-5)
    unweighted = model.evaluate(data["x"], data["y"], batch_size=16, verbose=0,
                                return_dict=True)
    assert abs(row["loss"] - unweighted["loss"]) > 1e-3  # the weights changed the loss
    # validation data is not weighed by class (as in Keras's fit)
    assert row["val_accuracy"] == pytest.approx(row["val_weighted_accuracy"], rel=1e-6)
    # recorded: the numbers in run.json, the mapping in config.yaml (rerunnable)
    assert read_run_json(runs["custom"])["class_weight"] == {"0": 1.0, "2": 3.0}
    assert "class_weight:\n    0: 1.0\n    2: 3.0" in (runs["fit"] / "config.yaml").read_text()

    # `balanced`: n_samples / (n_classes * count), from the training labels
    balanced = train(kexp, cw, "custom", "train.class_weight=balanced")
    counts = np.bincount(data["y"])
    expected = {str(c): 64 / (3 * counts[c]) for c in range(3)}
    recorded = read_run_json(balanced)["class_weight"]
    assert recorded == pytest.approx(expected, rel=1e-9)
    ref = keras_model(balanced).fit(
        data["x"], data["y"], batch_size=16, epochs=1, shuffle=False, verbose=0,
        class_weight={int(k): v for k, v in expected.items()}).history
    assert read_history(balanced, numbers=True)[0]["loss"] == pytest.approx(ref["loss"][0],
                                                                            rel=1e-5)
    assert "class_weight: balanced" in (balanced / "config.yaml").read_text()


def test_sample_weights_weigh_loss_and_weighted_metrics_alike_in_both_loops(kexp, tmp_path,
                                                                           data):
    sw = config(tmp_path, "sw", lr=0.1, weights=True)
    runs = {loop: train(kexp, sw, loop) for loop in ("fit", "custom")}
    history = {loop: read_history(run, numbers=True) for loop, run in runs.items()}
    assert_rows_equal(history["fit"], history["custom"])
    last = history["fit"][-1]
    assert last["val_accuracy"] != pytest.approx(last["val_weighted_accuracy"], rel=1e-4)

    import keras

    model = keras.saving.load_model(runs["custom"] / "model.keras")
    ref = model.evaluate(data["xv"], data["yv"], sample_weight=data["wv"], batch_size=16,
                         verbose=0, return_dict=True)
    saved = json.loads((runs["custom"] / "metrics.json").read_text())["validation"]
    for key in ("loss", "accuracy", "weighted_accuracy"):
        assert saved[key] == pytest.approx(ref[key], rel=1e-5), key



def test_resume_with_weights_equals_an_uninterrupted_run(kexp, tmp_path, data):
    """Class weights (the mapping read back from config.yaml) and shuffled sample weights
    (validation too) on a resume: the history and weights of an uninterrupted run."""
    from tests.test_resume import assert_same_weights

    base = config(tmp_path, "resume", lr=0.1, class_weight="{0: 1.0, 2: 3.0}")
    sets = ("deterministic=true", "data.shuffle=true", "data.validation.sample_weight=w")
    whole = train(kexp, base, "custom", "train.epochs=3", *sets)
    part = train(kexp, base, "custom", "train.epochs=2", *sets)
    result = kexp("train", "--resume", part, "--set", "train.epochs=3")
    assert result.exit_code == 0, result.stderr
    assert_rows_equal(read_history(part, numbers=True), read_history(whole, numbers=True),
                      rel=0)
    assert_same_weights(part / "model.keras", whole / "model.keras")


BAD = {
    # (config text, the path and line the error names, words of the message)
    "negative": ("train: {class_weight: {0: 1.0, 1: -2.0}}",
                 "bad.yaml:4:", "greater than or equal to 0"),
    "two outputs": (TICKETS.lstrip() % ("val_loss", "val_loss") + "  class_weight: {0: 2.0}\n",
                    "bad.yaml:18:", "2 (priority, department)"),
    "both weights": ("""
        data: {type: npz, path: train.npz, features: x, targets: y, sample_weight: w}
        model: {type: sequential, input_shape: [4], layers: [{type: Dense, units: 3}]}
        compile: {loss: sparse_categorical_crossentropy}
        train: {class_weight: balanced}
        """, "bad.yaml:4:", "not both"),
    "balanced streamed": ("""
        data: {type: image_directory, path: ., image_size: [8, 8]}
        model: {type: sequential, layers: [{type: Flatten}, {type: Dense, units: 2}]}
        compile: {loss: sparse_categorical_crossentropy}
        train: {class_weight: balanced}
        """, "bad.yaml:4:", "streamed"),
    "weights on a stream": ("""
        data: {type: csv, path: t.csv, stream: true, targets: y, sample_weight: w}
        model: {type: sequential, layers: [{type: Dense, units: 1}]}
        compile: {loss: mse}
        """, "bad.yaml:1:", "streamed csv"),
}

DIGITS = """
data: {type: digits, batch_size: 32}
model: {type: sequential, input_shape: [64], layers: [{type: Dense, units: 10, activation: softmax}]}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
train:
  epochs: 1
"""


@pytest.mark.parametrize("case", list(BAD))
def test_validate_refuses_class_weights_keras_would_refuse_or_misapply(kexp, tmp_path, case):
    text, where, words = BAD[case]
    body = DIGITS.replace("train:\n  epochs: 1\n", "") + text if case == "negative" else text
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(body).lstrip())
    result = kexp("validate", path)
    assert result.exit_code == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert where in result.stderr and words in result.stderr, result.stderr


def test_train_refuses_a_class_the_model_has_not_before_making_a_run(kexp, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(DIGITS).lstrip() + "  class_weight: {3: 1.0, 12: 2.0}\n")
    result = kexp("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    for word in ("train.class_weight", "class 12 is not a class", "10 classes", "bad.yaml:6:"):
        assert word in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_class_weights_need_class_labels(kexp, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3))
    rows = "\n".join(",".join(f"{v:.4f}" for v in (*r, r.sum())) for r in x)
    (tmp_path / "reg.csv").write_text("a,b,c,price\n" + rows + "\n")
    path = tmp_path / "reg.yaml"
    path.write_text(textwrap.dedent("""
        data: {type: csv, path: reg.csv, targets: price}
        model: {type: sequential, input_shape: [3], layers: [{type: Dense, units: 1}]}
        compile: {loss: mse}
        train: {class_weight: {0: 1.0, 1: 2.0}}
        """).lstrip())
    result = kexp("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "train.class_weight" in result.stderr and "reg.yaml:4:" in result.stderr
    assert "class labels" in result.stderr and "reg.csv" in result.stderr
    assert not (tmp_path / "runs").exists()


RESTORE = """
seed: 1
data:
  type: npz
  path: train.npz
  features: x
  targets: yb
  batch_size: 16
  validation: {type: npz, path: val.npz, features: x, targets: yb}
model:
  type: sequential
  input_shape: [4]
  layers: [{type: Dense, units: 1, activation: sigmoid}]
compile:
  optimizer: {type: SGD, learning_rate: 0.5}
  loss: binary_crossentropy
  metrics: [accuracy, {type: AUC}]
train:
  epochs: 4
  # the "best" val_loss is the highest one: the first epoch's, restored when training stops
  callbacks: [{type: EarlyStopping, monitor: val_loss, mode: max, patience: 1,
               restore_best_weights: true}]
"""


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_metrics_json_scores_the_weights_early_stopping_restored(kexp, tmp_path, data, loop):
    path = tmp_path / "restore.yaml"
    path.write_text(textwrap.dedent(RESTORE).lstrip())
    run = train(kexp, path, loop)
    rows = read_history(run, numbers=True)
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # stopped after epoch 1
    assert rows[1]["val_loss"] < rows[0]["val_loss"]
    assert "val_auc" in rows[0]  # the start-up probe's metrics did not rename the run's
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epoch"] == 0 and "EarlyStopping" in metrics["restored_by"]
    assert metrics["train"]["loss"] == pytest.approx(rows[0]["loss"])
    result = kexp("evaluate", run, "--split", "validation", "-q")
    assert result.exit_code == 0, result.stderr
    evaluated = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert set(evaluated) == set(metrics["validation"])
    for key, value in evaluated.items():
        assert metrics["validation"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert metrics["validation"]["loss"] != pytest.approx(rows[1]["val_loss"], rel=1e-4)
    assert read_run_json(run)["final_metrics"] == metrics


def test_class_weights_on_streamed_data_in_both_loops(kexp, tmp_path):
    """A streamed csv takes class weights as a mapping (Keras's map on each batch); fit and
    the custom loop log the same weighted history."""
    from tests.conftest import CONFIGS

    runs = {}
    for loop in ("fit", "custom"):
        result = kexp("train", CONFIGS / "csv_stream.yaml", "--runs-dir", tmp_path, "-q",
                      "--set", "train.epochs=1", "--set", f"train.loop={loop}",
                      "--set", "train.class_weight={0: 1.0, 2: 4.0}",
                      "--set", "compile.weighted_metrics=[accuracy]")
        assert result.exit_code == 0, result.stderr
        runs[loop] = run_dir_of(result)
    rows = {loop: read_history(run, numbers=True) for loop, run in runs.items()}
    assert_rows_equal(rows["fit"], rows["custom"])
    row = rows["fit"][0]
    assert row["weighted_accuracy"] != pytest.approx(row["accuracy"], rel=1e-3)
    assert row["val_weighted_accuracy"] == pytest.approx(row["val_accuracy"], rel=1e-6)
    assert read_run_json(runs["custom"])["class_weight"] == {"0": 1.0, "2": 4.0}
