"""``kexp sweep``: bad sweep blocks refused before any trial, and real sweeps on digits (a few
trials of two or three epochs) — results, best.yaml, pruning, failure, Ctrl-C, kill -9 and
resume, two processes on one study (SQLite, PostgreSQL), TensorBoard's HParams endpoint."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest

BASE = """\
name: dsweep
seed: 7
data: {type: digits, batch_size: 64, validation_split: 0.2}
model:
  type: sequential
  input_shape: [64]
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dropout, rate: 0.1}
    - {type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 1.0e-3}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 2}
"""


def _config(tmp_path: Path, sweep: str, base: str = BASE) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(base + textwrap.dedent(sweep))
    return path


def _sweep_dir(runs: Path) -> Path:
    found = sorted(runs.glob("*/sweep-*"))
    assert len(found) == 1, found
    return found[0]


def _trials_csv(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- bad blocks

BAD = {
    "unknown path": ("""
        sweep:
          params:
            model.layers[5].units: {type: int, low: 8, high: 32}
        """, 19, "model.layers[5].units is not a path in this config"),
    "empty choices": ("""
        sweep:
          params:
            compile.optimizer.type: {type: categorical, choices: []}
        """, 19, "choices"),
    "low above high": ("""
        sweep:
          params:
            model.layers[0].units: {type: int, low: 64, high: 8}
        """, 19, "low must not exceed high"),
    "log with low <= 0": ("""
        sweep:
          params:
            compile.optimizer.learning_rate: {type: float, low: 0.0, high: 0.1, log: true}
        """, 19, "a log scale needs low > 0"),
    "metric not in history.csv": ("""
        sweep:
          metric: val_acuracy
          params:
            model.layers[0].units: {type: int, low: 8, high: 32}
        """, 18, "did you mean 'val_accuracy'"),
    "a choice the config check refuses": ("""
        sweep:
          params:
            compile.optimizer.type: {type: categorical, choices: [adam, rmsprp]}
        """, 19, "the value \"rmsprp\" is refused"),
    "a value out of the schema's range": ("""
        sweep:
          params:
            train.epochs: {type: int, low: 0, high: 3}
        """, 19, "the value 0 is refused: input should be greater than 0"),
    "unknown pruner argument": ("""
        sweep:
          pruner: {type: median, n_startup: 2}
          params:
            model.layers[0].units: {type: int, low: 8, high: 32}
        """, 18, "sweep.pruner"),
    "grid with a continuous float": ("""
        sweep:
          sampler: grid
          params:
            compile.optimizer.learning_rate: {type: float, low: 0.001, high: 0.1}
        """, 20, "needs finitely many values"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_sweep_blocks_exit_2_with_path_and_line(case, tmp_path, kexp):
    text, line, expected = BAD[case]
    config = _config(tmp_path, text)
    result = kexp("sweep", config, "--runs-dir", tmp_path / "runs", "--trials", "1")
    assert result.exit_code == 2, result.output
    assert f"{config}:{line}:" in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written, no trial started


def test_unreachable_storage_exit_2_without_the_password(tmp_path, kexp):
    config = _config(tmp_path, """
        sweep:
          params:
            model.layers[0].units: {type: int, low: 8, high: 32}
        """)
    url = "postgresql://kexp:s3cret-pw@127.0.0.1:1/none"  # port 1: nothing listens
    result = kexp("sweep", config, "--runs-dir", tmp_path / "runs", "--storage", url)
    assert result.exit_code == 2, result.output
    assert "--storage" in result.stderr and "cannot use the study storage" in result.stderr
    assert "s3cret-pw" not in result.stderr and "kexp:***@" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_config_without_sweep_block(tmp_path, kexp):
    config = _config(tmp_path, "")
    result = kexp("sweep", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "no `sweep:` block" in result.stderr


def test_train_ignores_the_sweep_block(tmp_path, kexp):
    """`kexp validate` and `kexp train` read the block (schema-checked) and ignore it."""
    config = _config(tmp_path, """
        sweep:
          metric: val_accuracy
          params:
            model.layers[0].units: {type: int, low: 8, high: 32}
        """)
    assert kexp("validate", config).exit_code == 0
