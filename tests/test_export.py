"""kexp export: digits and the chapter's ticket model (multi-input, multi-output), a
subclassed plugin model and a functional model with a plugin layer, in both formats; each
SavedModel loaded in a fresh process with TensorFlow only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import CONFIGS

RUNS = {
    "digits": ("digits_mlp.yaml", ["--set", "train.epochs=1"]),
    "ticket": ("ticket_model.yaml", ["--set", "data.num_samples=256"]),
    "subclassed": ("listing_7_14_subclassed.yaml", ["--set", "data.num_samples=256"]),
    "plugin_layer": ("listing_7_15_functional_with_subclass.yaml",
                     ["--set", "train.epochs=1"]),
}

FRESH = textwrap.dedent("""\
    import sys
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures["serve"]
    with np.load(sys.argv[2]) as f:
        inputs = {k: tf.constant(f[k]) for k in f.files}
    out = serve(**inputs)
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    print(sorted(serve.structured_input_signature[1]), sorted(out))
    print("kexp imported:", any(m == "kexp" or m.startswith("kexp.") for m in sys.modules))
    """)


def _kexp(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    out = {}
    for key, (config, args) in RUNS.items():
        result = _kexp("train", CONFIGS / config, "--runs-dir", root / key, *args)
        assert result.exit_code == 0, result.output
        out[key] = next((root / key).glob("*/*"))
    return out


def _inputs(run: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """An npz of the first validation samples, arrays named like the model's inputs."""
    from kexp.evaluation import load_run_config, load_run_splits

    split = load_run_splits(load_run_config(run)).validation
    x = split.x if isinstance(split.x, dict) else {"x": split.x}
    file = tmp_path / "x.npz"
    np.savez(file, **{k: v[:16] for k, v in x.items()})
    return file, list(x)


@pytest.mark.parametrize("key, outputs", [("digits", "digit"),
                                          ("ticket", "priority, department")])
@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_export_passes_its_check(runs, key, outputs, fmt, tmp_path):
    target = tmp_path / ("m" if fmt == "saved_model" else "m.tflite")
    result = _kexp("export", runs[key], "--format", fmt, "-o", target)
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.stdout and ": ok" in result.stdout
    diff = float(result.stdout.split("kexp predict ")[1].split()[0])
    assert diff <= (1e-5 if fmt == "saved_model" else 1e-4)
    assert f"outputs {outputs})" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no staging left over
    if fmt == "saved_model":
        _check_in_fresh_process(runs[key], target, result.stdout, tmp_path)
    else:
        assert target.read_bytes()[4:8] == b"TFL3"  # the FlatBuffer's file identifier


@pytest.mark.parametrize("key", ["subclassed", "plugin_layer"])
def test_subclassed_and_plugin_layer_models_export(runs, key, tmp_path):
    result = _kexp("export", runs[key])
    assert result.exit_code == 0, result.output
    saved = runs[key] / "export" / "final" / "saved_model"
    _check_in_fresh_process(runs[key], saved, result.stdout, tmp_path)


def _check_in_fresh_process(run: Path, saved: Path, said: str, tmp_path: Path) -> None:
    """The SavedModel, loaded by a process that imports TensorFlow only, predicts what
    `kexp predict` does."""
    x, names = _inputs(run, tmp_path)
    if names == ["x"]:  # a single input: the signature names it like the model's input
        with np.load(x) as f:
            np.savez(x, **{said.split("inputs ")[1].split(";")[0]: f["x"]})
    done = subprocess.run([sys.executable, "-c", FRESH, saved, x, tmp_path / "served.npz"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kexp imported: False" in done.stdout
    predicted = _kexp("predict", run, "--input", x, "--output", tmp_path / "p.npz")
    assert predicted.exit_code == 0, predicted.output
    with np.load(tmp_path / "served.npz") as served, np.load(tmp_path / "p.npz") as ours:
        assert len(ours["predictions" if "predictions" in ours else ours.files[0]]) == 16
        if list(ours.files) == ["predictions"]:
            assert len(served.files) == 1
            np.testing.assert_allclose(served[served.files[0]], ours["predictions"], atol=1e-5)
        else:
            assert sorted(served.files) == sorted(ours.files)
            for name in ours.files:
                np.testing.assert_allclose(served[name], ours[name], atol=1e-5)


def test_a_failed_check_writes_nothing_and_exits_1(runs, tmp_path, monkeypatch):
    from kexp import serving

    monkeypatch.setitem(serving.TOLERANCE, "saved_model", -1.0)
    result = _kexp("export", runs["digits"], "-o", tmp_path / "m")
    assert result.exit_code == 1
    assert "export check failed" in result.output and "differ" in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_bad_input(runs, tmp_path):
    bad = _kexp("export", runs["digits"], "--format", "onnx")
    assert bad.exit_code == 2
    missing = _kexp("export", tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"status": "failed"}))
    no_model = _kexp("export", tmp_path / "r")
    assert no_model.exit_code == 2 and "model.keras" in no_model.output
    taken = tmp_path / "project"
    (taken / "src").mkdir(parents=True)
    refused = _kexp("export", runs["digits"], "-o", taken)
    assert refused.exit_code == 2 and "not a SavedModel" in refused.output
    assert (taken / "src").is_dir()
    folder = _kexp("export", runs["digits"], "--format", "tflite", "-o", taken)
    assert folder.exit_code == 2 and "is a directory" in folder.output
