"""``kexp evaluate`` and ``kexp predict`` on tiny runs trained by the real ``kexp train``."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import read_history

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ROWS = 200


def _kexp(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _train(*args: str) -> Path:
    result = _kexp("train", *args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


def _write_csv(path: Path, rng: np.random.Generator, rows: int, with_target: bool = True):
    x = rng.normal(size=(rows, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c"] + (["y"] if with_target else []))
        for features, label in zip(x, y, strict=True):
            writer.writerow([f"{v:.5f}" for v in features] + ([label] if with_target else []))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three runs: digits (the acceptance run), a csv run with a test split, the ticket
    model (multi-input, multi-output)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    runs_dir = tmp / "runs"
    rng = np.random.default_rng(0)
    _write_csv(tmp / "train.csv", rng, ROWS)
    _write_csv(tmp / "test.csv", rng, 60)
    (tmp / "tiny.yaml").write_text(textwrap.dedent("""\
        name: tiny
        seed: 1
        data:
          type: csv
          path: train.csv
          targets: y
          batch_size: 16
          validation_split: 0.25
          test: {type: csv, path: test.csv, targets: y}
        model:
          type: sequential
          input_shape: [3]
          layers:
            - {type: Dense, units: 4, activation: relu}
            - {type: Dense, units: 2, activation: softmax, name: label}
        compile:
          optimizer: adam
          loss: sparse_categorical_crossentropy
          metrics: [accuracy]
        train: {epochs: 2}
        """))
    return {
        "tmp": tmp,
        "digits": _train(CONFIGS / "digits_mlp.yaml", "--runs-dir", runs_dir,
                         "--set", "train.epochs=2"),
        "tiny": _train(tmp / "tiny.yaml", "--runs-dir", runs_dir),
        "ticket": _train(CONFIGS / "listing_7_11_ticket_named.yaml", "--runs-dir", runs_dir,
                         "--set", "data.num_samples=200"),
    }


# --------------------------------------------------------------------------- evaluate


def test_evaluate_reproduces_the_last_epochs_validation_metrics(runs):
    run = runs["digits"]
    result = _kexp("evaluate", run)
    assert result.exit_code == 0, result.output
    assert "validation split" in result.output and "accuracy" in result.output
    record = json.loads((run / "evaluation.json").read_text())
    assert record["checkpoint"] == "final" and record["split"] == "validation"
    last = read_history(run)[-1]
    assert record["metrics"]["loss"] == pytest.approx(float(last["val_loss"]), abs=1e-4)
    assert record["metrics"]["accuracy"] == pytest.approx(float(last["val_accuracy"]),
                                                          abs=1e-4)
    assert f"{record['metrics']['loss']:.6g}" in result.output
    assert record["evaluated_at"]


def test_evaluate_defaults_to_test_and_keeps_earlier_evaluations(runs):
    run = runs["tiny"]
    first = _kexp("evaluate", run)
    assert first.exit_code == 0, first.output
    assert json.loads((run / "evaluation.json").read_text())["split"] == "test"
    second = _kexp("evaluate", run, "--split", "validation", "--checkpoint", "last")
    assert second.exit_code == 0, second.output
    record = json.loads((run / "evaluation.json").read_text())
    assert (record["checkpoint"], record["split"]) == ("last", "validation")
    assert set(record["evaluations"]) == {"final/test", "last/validation"}
    assert record["evaluations"]["final/test"]["samples"] == 60
    # last.keras is the model after the last epoch, as model.keras
    last = read_history(run)[-1]
    assert record["metrics"]["loss"] == pytest.approx(float(last["val_loss"]), abs=1e-4)


def test_evaluate_runs_name_means_the_newest_run(runs):
    result = _kexp("evaluate", runs["tiny"].parent, "--checkpoint", "best")
    assert result.exit_code == 0, result.output
    record = json.loads((runs["tiny"] / "evaluation.json").read_text())
    assert "best/test" in record["evaluations"]


def test_evaluate_data_override_resolves_against_the_cwd(runs, monkeypatch):
    tmp = runs["tmp"]
    lines = (tmp / "test.csv").read_text().splitlines()
    work = tmp / "elsewhere"
    work.mkdir(exist_ok=True)
    (work / "subset.csv").write_text("\n".join(lines[:41]) + "\n")
    monkeypatch.chdir(work)
    result = _kexp("evaluate", runs["tiny"], "--data", "test.path=subset.csv")
    assert result.exit_code == 0, result.output
    record = json.loads((runs["tiny"] / "evaluation.json").read_text())
    assert record["samples"] == 40
    assert record["data"] == ["test.path=subset.csv"]
    assert "final/test [test.path=subset.csv]" in record["evaluations"]

    missing = _kexp("evaluate", runs["tiny"], "--data", "test.path=nope.csv")
    assert missing.exit_code == 2
    assert "nope.csv" in missing.output and "not found" in missing.output
    bad = _kexp("evaluate", runs["tiny"], "--data", "no-equals-sign")
    assert bad.exit_code == 2 and "P=VALUE" in bad.output


def test_evaluate_missing_split_checkpoint_or_run_is_exit_2(runs, tmp_path):
    no_test = _kexp("evaluate", runs["digits"], "--split", "test")
    assert no_test.exit_code == 2
    assert "no test split" in no_test.output and "--split validation" in no_test.output

    copy = tmp_path / "tiny" / runs["tiny"].name
    shutil.copytree(runs["tiny"], copy)
    (copy / "checkpoints" / "best.keras").unlink()
    no_best = _kexp("evaluate", copy, "--checkpoint", "best")
    assert no_best.exit_code == 2
    assert "checkpoints/best.keras" in no_best.output and "final / last" in no_best.output

    not_a_run = _kexp("evaluate", tmp_path / "nothing")
    assert not_a_run.exit_code == 2 and "does not exist" in not_a_run.output
    assert "Traceback" not in not_a_run.output


def test_evaluate_refuses_a_lambda_layer(runs, tmp_path):
    copy = tmp_path / "lambda" / runs["tiny"].name
    shutil.copytree(runs["tiny"], copy)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Lambda(lambda x: x * 2.0),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(copy / "model.keras")
    before = (copy / "evaluation.json").read_text()
    result = _kexp("evaluate", copy)
    assert result.exit_code == 2
    assert "Lambda" in result.output and "safe mode" in result.output
    assert (copy / "evaluation.json").read_text() == before  # nothing recorded


# --------------------------------------------------------------------------- predict


def _ticket_inputs(n: int, title: int = 10000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "title": (rng.random((n, title)) < 0.01).astype("float32"),
        "text_body": (rng.random((n, 10000)) < 0.01).astype("float32"),
        "tags": (rng.random((n, 100)) < 0.1).astype("float32"),
    }


def test_predict_multi_output_npz_by_input_name(runs, tmp_path, monkeypatch):
    inputs = _ticket_inputs(5)
    np.savez(tmp_path / "new.npz", **inputs)
    monkeypatch.chdir(tmp_path)
    result = _kexp("predict", runs["ticket"], "--input", tmp_path / "new.npz")
    assert result.exit_code == 0, result.output
    out = np.load(tmp_path / "new.predictions.npz")  # default: in the current directory
    assert sorted(out.files) == ["department", "priority"]
    assert out["priority"].shape == (5, 1) and out["department"].shape == (5, 4)
    model = keras.saving.load_model(runs["ticket"] / "model.keras")
    expected = model.predict(inputs, verbose=0)
    expected = dict(zip(model.output_names, expected, strict=True))
    np.testing.assert_allclose(out["department"], expected["department"], rtol=1e-5)
    np.testing.assert_allclose(out["priority"], expected["priority"], rtol=1e-5)


def test_predict_to_csv_has_one_column_per_output_unit(runs, tmp_path):
    np.savez(tmp_path / "new.npz", **_ticket_inputs(4))
    target = tmp_path / "out.csv"
    result = _kexp("predict", runs["ticket"], "--input", tmp_path / "new.npz", "-o", target)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(target.open()))
    assert rows[0] == ["priority", "department_0", "department_1", "department_2",
                       "department_3"]
    assert len(rows) == 5
    department = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    np.testing.assert_allclose(department.sum(axis=1), 1.0, atol=1e-5)  # softmax rows


def test_predict_mismatched_inputs_list_expected_and_given(runs, tmp_path):
    inputs = _ticket_inputs(3)
    del inputs["tags"]
    np.savez(tmp_path / "missing.npz", **inputs)
    result = _kexp("predict", runs["ticket"], "--input", tmp_path / "missing.npz")
    assert result.exit_code == 2
    assert "expected: title (10000,), text_body (10000,), tags (100,)" in result.output
    assert "given:    title, text_body" in result.output

    np.savez(tmp_path / "shapes.npz", **_ticket_inputs(3, title=50))
    result = _kexp("predict", runs["ticket"], "--input", tmp_path / "shapes.npz")
    assert result.exit_code == 2
    assert "shapes differ" in result.output and "title (50,)" in result.output
    assert not (tmp_path / "shapes.predictions.npz").exists()


def test_predict_single_input_from_csv_and_npz(runs, tmp_path):
    tmp = runs["tmp"]
    # the test file still has its target column: it is left out of the features
    with_y = _kexp("predict", runs["tiny"], "--input", tmp / "test.csv",
                   "-o", tmp_path / "a.npz")
    assert with_y.exit_code == 0, with_y.output
    predictions = np.load(tmp_path / "a.npz")["predictions"]
    assert predictions.shape == (60, 2)

    _write_csv(tmp_path / "new.csv", np.random.default_rng(5), 7, with_target=False)
    without_y = _kexp("predict", runs["tiny"], "--input", tmp_path / "new.csv",
                      "-o", tmp_path / "b.csv")
    assert without_y.exit_code == 0, without_y.output
    rows = list(csv.reader((tmp_path / "b.csv").open()))
    assert rows[0] == ["predictions_0", "predictions_1"] and len(rows) == 8

    np.savez(tmp_path / "digits.npz", pixels=np.zeros((3, 64), "float32"))
    digits = _kexp("predict", runs["digits"], "--input", tmp_path / "digits.npz",
                   "-o", tmp_path / "d.npz")
    assert digits.exit_code == 0, digits.output
    assert np.load(tmp_path / "d.npz")["predictions"].shape == (3, 10)

    wrong = _kexp("predict", runs["digits"], "--input", tmp_path / "new.csv")
    assert wrong.exit_code == 2 and "expected: " in wrong.output


def test_predict_rejects_an_unknown_output_format(runs, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3), "float32"))
    result = _kexp("predict", runs["tiny"], "--input", tmp_path / "x.npz", "-o",
                   tmp_path / "out.txt")
    assert result.exit_code == 2 and ".npz or .csv" in result.output


def test_a_fresh_process_imports_the_runs_plugins(tmp_path):
    """Listing 7.14's subclassed model comes from a plugin file; evaluate and predict find
    it through the run alone, from another directory, in a process that never imported it."""
    run = _train(CONFIGS / "listing_7_14_subclassed.yaml", "--runs-dir", tmp_path / "runs",
                 "--set", "data.num_samples=200")
    np.savez(tmp_path / "new.npz", **_ticket_inputs(3))
    script = textwrap.dedent(f"""\
        import sys
        from typer.testing import CliRunner
        from kexp.cli.app import app
        for args in (["evaluate", {str(run)!r}],
                     ["predict", {str(run)!r}, "--input", "new.npz", "-o", "p.npz"]):
            result = CliRunner().invoke(app, args)
            print(result.output)
            print("exit", result.exit_code)
        print("plugins", [m for m in sys.modules if m.startswith("kexp_plugins.tickets")])
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.stdout.count("exit 0") == 2, done.stdout + done.stderr
    assert "plugins ['kexp_plugins.tickets_" in done.stdout
    record = json.loads((run / "evaluation.json").read_text())
    last = read_history(run)[-1]
    assert record["metrics"]["loss"] == pytest.approx(float(last["val_loss"]), abs=1e-4)
    out = np.load(tmp_path / "p.npz")
    assert out["priority"].shape == (3, 1) and out["department"].shape == (3, 4)


def test_predict_takes_npz_arrays_by_input_name_or_by_the_configs_mapping(tmp_path):
    rng = np.random.default_rng(2)
    xa, xb = rng.normal(size=(80, 2)), rng.normal(size=(80, 3))
    np.savez(tmp_path / "pair.npz", xa=xa, xb=xb, y=xa.sum(axis=1) - xb.sum(axis=1))
    (tmp_path / "pair.yaml").write_text(textwrap.dedent("""\
        name: pair
        data: {type: npz, path: pair.npz, features: {a: xa, b: xb}, targets: y,
               validation_split: 0.25}
        model:
          type: functional
          inputs: [{name: a, shape: [2]}, {name: b, shape: [3]}]
          layers:
            - {type: Concatenate, name: both, inputs: [a, b]}
            - {type: Dense, units: 1, name: out}
          outputs: out
        compile: {optimizer: adam, loss: mse}
        train: {epochs: 1}
        """))
    run = _train(tmp_path / "pair.yaml", "--runs-dir", tmp_path / "runs")
    by_config = _kexp("predict", run, "--input", tmp_path / "pair.npz", "-o", tmp_path / "c.npz")
    assert by_config.exit_code == 0, by_config.output
    np.savez(tmp_path / "named.npz", a=xa[:5], b=xb[:5])
    by_name = _kexp("predict", run, "--input", tmp_path / "named.npz", "-o", tmp_path / "n.npz")
    assert by_name.exit_code == 0, by_name.output
    first = np.load(tmp_path / "c.npz")["predictions"]
    assert first.shape == (80, 1)
    np.testing.assert_allclose(np.load(tmp_path / "n.npz")["predictions"], first[:5],
                               rtol=1e-5)
