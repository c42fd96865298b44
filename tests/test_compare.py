"""kexp compare and kexp runs' sorting, filtering and formats, over three real digits runs
that differ in learning rate and units; the overlaid plot."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import CONFIGS

VARIANTS = [("0.01", "64"), ("0.001", "128"), ("0.003", "32")]
LR = "compile.optimizer.learning_rate"
UNITS = "model.layers[0].units"
# matplotlib's first three colours (C0, C1, C2): one curve each.
CYCLE = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C)]


def _kexp(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("cmp") / "runs"
    for lr, units in VARIANTS:
        result = _kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", runs,
                       "--set", "train.epochs=2", "--set", f"{LR}={lr}",
                       "--set", f"{UNITS}={units}")
        assert result.exit_code == 0, result.output
    return runs


def _best_accuracy(run: Path) -> float:
    with open(run / "history.csv", newline="") as f:
        return max(float(r["val_accuracy"]) for r in csv.DictReader(f))


def test_compare_shows_exactly_the_differing_values_sorted_by_the_metric(runs):
    result = _kexp("compare", runs / "digits-mlp", "--metric", "val_accuracy",
                   "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["run", UNITS, LR, "status", "epochs", "best val_accuracy",
                             "final val_accuracy", "duration_seconds"]
    assert len(rows) == 3
    best = [float(r["best val_accuracy"]) for r in rows]
    assert best == sorted(best, reverse=True)
    for row in rows:
        run = runs / row["run"]
        assert float(row["best val_accuracy"]) == pytest.approx(_best_accuracy(run))
        assert (row[LR], row[UNITS]) in {(str(float(lr)), u) for lr, u in VARIANTS}
        assert row["status"] == "completed" and row["epochs"] == "2"

    table = _kexp("compare", runs / "digits-mlp", "-m", "val_accuracy")
    assert table.exit_code == 0 and UNITS in table.stdout and LR in table.stdout
    assert "data.batch_size" not in table.stdout and "seed" not in table.stdout


def test_compare_defaults_to_the_monitored_metric_and_sorts_loss_upwards(runs):
    result = _kexp("compare", *sorted((runs / "digits-mlp").iterdir()), "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["metrics"] == ["val_loss"] and data["differing"] == [UNITS, LR]
    losses = [r["best val_loss"] for r in data["runs"]]
    assert losses == sorted(losses)
    markdown = _kexp("compare", runs, "-f", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| run | ") and markdown[1].startswith("|---|")
    assert len(markdown) == 5


def test_compare_plot_overlays_one_labelled_curve_per_run(runs, tmp_path):
    from kexp.comparison import compare_runs

    png = tmp_path / "curves.png"
    result = _kexp("compare", runs / "digits-mlp", "-m", "val_accuracy", "--plot", png)
    assert result.exit_code == 0, result.output
    pixels = _pixels(png)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400
    for colour in CYCLE:
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 50, colour
    labels = compare_runs([runs / "digits-mlp"], ["val_accuracy"]).labels()
    assert sorted(labels) == sorted(f"units={u}, learning_rate={float(lr)}"
                                    for lr, u in VARIANTS)

    two = tmp_path / "two.png"
    assert _kexp("compare", runs, "-m", "val_accuracy", "-m", "val_loss",
                 "--plot", two).exit_code == 0
    assert _pixels(two).shape[1] > pixels.shape[1] * 1.5  # two panels side by side


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def test_compare_bad_input(runs, tmp_path):
    missing = _kexp("compare", tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = _kexp("compare", tmp_path)
    assert empty.exit_code == 2 and "holds no run" in empty.output
    not_png = _kexp("compare", runs, "--plot", tmp_path / "x.pdf")
    assert not_png.exit_code == 2 and ".png" in not_png.output
    assert not (tmp_path / "x.pdf").exists()


def test_compare_finds_the_trials_of_a_sweep_directory(runs, tmp_path):
    sweep = tmp_path / "digits-mlp" / "sweep-20260101-000000"
    for i, run in enumerate(sorted((runs / "digits-mlp").iterdir())):
        shutil.copytree(run, sweep / "trials" / f"{i:04d}",
                        ignore=shutil.ignore_patterns("*.keras", "logs", "state"))
    data = json.loads(_kexp("compare", sweep, "-f", "json").stdout)
    assert len(data["runs"]) == 3 and data["differing"] == [UNITS, LR]


def test_compare_and_runs_do_not_import_tensorflow(runs):
    script = textwrap.dedent(f"""\
        import sys
        from typer.testing import CliRunner
        from kexp.cli.app import app
        for args in (["compare", {str(runs)!r}], ["runs", {str(runs)!r}, "-f", "json"]):
            assert CliRunner().invoke(app, args).exit_code == 0
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


# --------------------------------------------------------------------------- kexp runs


def test_runs_sort_status_last_and_formats(runs):
    result = _kexp("runs", runs, "--sort", "val_accuracy", "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    best = [r["best"]["val_accuracy"] for r in rows]
    assert len(rows) == 3 and best == sorted(best, reverse=True)
    by_loss = [r["best"]["val_loss"] for r in json.loads(
        _kexp("runs", runs, "--sort", "val_loss", "-f", "json").stdout)]
    assert by_loss == sorted(by_loss)

    table = _kexp("runs", runs, "--sort", "val_accuracy")
    assert "best val_accuracy" in table.stdout

    newest = json.loads(_kexp("runs", runs, "--last", "2", "-f", "json").stdout)
    everything = json.loads(_kexp("runs", runs, "-f", "json").stdout)
    assert [r["path"] for r in newest] == [r["path"] for r in everything[-2:]]

    assert json.loads(_kexp("runs", runs, "--status", "failed", "-f", "json").stdout) == []
    assert len(json.loads(_kexp("runs", runs, "--status", "completed",
                                "-f", "json").stdout)) == 3
    rows = list(csv.DictReader(io.StringIO(_kexp("runs", runs, "-f", "csv").stdout)))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    assert float(rows[0]["best val_accuracy"]) > 0.1

    bad = _kexp("runs", runs, "--status", "done")
    assert bad.exit_code == 2 and "completed" in bad.output


def test_compare_json_of_a_run_that_ended_on_nan_is_strict_json(tmp_path):
    from kexp.comparison import compare_runs

    for stamp, last in (("20260101-000000", "nan"), ("20260101-000001", "0.5")):
        run = tmp_path / "r" / stamp
        run.mkdir(parents=True)
        (run / "run.json").write_text('{"status": "failed", "monitor": "val_loss"}')
        (run / "config.yaml").write_text(f"seed: {stamp[-1]}\n")
        (run / "history.csv").write_text(f"epoch,loss,val_loss\n0,1.0,0.9\n1,{last},{last}\n")
    data = json.loads(compare_runs([tmp_path / "r"]).render("json"),
                      parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [r["final val_loss"] for r in data["runs"]] == [0.5, None]
    assert [r["best val_loss"] for r in data["runs"]] == [0.5, 0.9]
    assert data["differing"] == ["seed"]
