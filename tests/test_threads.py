"""train.threads: TensorFlow's thread pools, auto-sized from the batch, recorded in run.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kexp.training.threads import auto_threads
from tests.conftest import CONFIGS, read_run_json, run_dir_of, run_kexp


@pytest.mark.parametrize(("batch", "x", "cores", "expected"), [
    (32, np.zeros((10, 784)), 2, 1),             # the chapter's MNIST network at batch 32
    (64, np.zeros((10, 28, 28)), 2, 1),          # every axis after the first counts
    (128, np.zeros((10, 784)), 2, 0),            # a bigger batch: TensorFlow's default
    (32, {"title": np.zeros((10, 10_000)), "tags": np.zeros((10, 100))}, 2, 0),  # wide
    (32, [np.zeros((10, 1000)), np.zeros((10, 1048))], 2, 1),  # 32 x 2048 = 65,536
    (32, [np.zeros((10, 1000)), np.zeros((10, 1049))], 2, 0),
    (32, np.zeros((10, 784)), 1, 1),
    (32, np.zeros((10, 784)), 4, 0),             # more cores than measured: the default
])
def test_auto_threads_is_one_for_small_batches_on_few_cores(batch, x, cores, expected):
    assert auto_threads(batch, x, cores=cores) == expected


@pytest.mark.parametrize(("share", "batch", "expected"), [
    ("4", 1024, 4),   # 8 cores, jobs: 2 -> 4 threads each for a big batch
    ("1", 1024, 1),   # 2 cores, jobs: 2
    ("4", 32, 4),     # 4 cores of 8: 4 threads (TensorFlow's default would take all 8)
    ("2", 32, 1),     # a small batch on few cores: one thread, as without a sweep
])
def test_auto_threads_divides_the_cores_between_sweep_jobs(share, batch, expected, monkeypatch):
    """`kexp sweep` gives each of its `jobs` trial processes KEXP_CORES = cores // jobs."""
    monkeypatch.setenv("KEXP_CORES", share)
    assert auto_threads(batch, np.zeros((10, 784))) == expected


def _run_json(tmp_path: Path, *sets: str) -> dict:
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path,
                      "--set", "train.epochs=1", *[a for s in sets for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    return read_run_json(run_dir_of(result))


def test_run_json_records_the_threads_auto_picked_and_the_ones_set(tmp_path):
    expected = 1 if auto_threads(32, np.zeros((1, 64))) else "default"
    assert _run_json(tmp_path / "auto")["threads"] == expected
    assert _run_json(tmp_path / "three", "train.threads=3")["threads"] == 3
    assert _run_json(tmp_path / "tf", "train.threads=0")["threads"] == "default"


def test_a_negative_thread_count_is_a_config_error(write):
    config = write("bad.yaml", """
        extends: {base}
        train:
          threads: -2
    """.replace("{base}", str(CONFIGS / "digits_mlp.yaml")))
    result = run_kexp("validate", config)
    assert result.returncode == 2
    assert "bad.yaml:3" in result.stderr and "train.threads" in result.stderr
    assert "Traceback" not in result.stderr
