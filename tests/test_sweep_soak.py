"""The sweep acceptance runs (``make soak-sweep``; skipped otherwise: about 15 minutes on 2 cores).

- A 12-trial tpe sweep of ``configs/digits_sweep.yaml`` (learning rate on a log scale, units,
  dropout; ``jobs: 2``): its best ``val_accuracy`` is at least that of
  ``configs/digits_mlp.yaml`` trained as written, and ``kexp train best.yaml`` reproduces the
  best trial's history exactly.
- The same sweep killed with ``kill -9`` (the sweep process and its trial processes) at a
  random moment five times in a row, then ``--resume``: exactly 12 finished trials, each
  number once, every file parses.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, run_kexp
from tests.test_sweep import _check_every_file_parses, _start, _sweep_dir, _trials_csv

pytestmark = pytest.mark.skipif(not os.environ.get("KEXP_SOAK"),
                                reason="a soak run: make soak-sweep (KEXP_SOAK=1)")


def _best_val_accuracy(run_dir: Path) -> float:
    with open(run_dir / "history.csv") as f:
        return max(float(row["val_accuracy"]) for row in csv.DictReader(f))


def test_twelve_trial_tpe_sweep_beats_the_config_as_written(tmp_path):
    baseline = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path / "base")
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    base_dir = Path(baseline.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    swept = run_kexp("sweep", CONFIGS / "digits_sweep.yaml", "--runs-dir", tmp_path / "runs",
                     timeout=3600)
    assert swept.returncode == 0, swept.stderr[-3000:]
    print(swept.stdout)
    sweep_dir = _sweep_dir(tmp_path / "runs")
    rows = _trials_csv(sweep_dir)
    assert len(rows) == 12 and all(r["state"] in ("completed", "pruned") for r in rows)
    info = json.loads((sweep_dir / "sweep.json").read_text())
    best, base = info["best"]["value"], _best_val_accuracy(base_dir)
    print(f"\nbest trial {info['best']['trial']}: val_accuracy {best:.4f} "
          f"(digits_mlp.yaml as written: {base:.4f}); pruned "
          f"{sum(r['state'] == 'pruned' for r in rows)} of 12")
    assert best >= base
    again = run_kexp("train", sweep_dir / "best.yaml", "--runs-dir", tmp_path / "again")
    assert again.returncode == 0, again.stderr[-2000:]
    run_dir = Path(again.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    best_dir = Path(info["best"]["run_dir"])
    assert (run_dir / "history.csv").read_text() == (best_dir / "history.csv").read_text()


def test_kill_9_five_times_then_resume(tmp_path):
    rng = random.Random(0)
    runs = tmp_path / "runs"
    args = ["sweep", CONFIGS / "digits_sweep.yaml", "--runs-dir", runs,
            "--set", "train.epochs=8"]
    sweep_dir = None
    for kill in range(5):
        process = _start(*(args if sweep_dir is None else ["sweep", "--resume", sweep_dir]))
        time.sleep(rng.uniform(8, 40))
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its trial processes
        process.wait(timeout=60)
        sweep_dir = sweep_dir or _sweep_dir(runs)
        print(f"kill {kill + 1}: {len(_trials_csv(sweep_dir)) if (sweep_dir / 'trials.csv').exists() else 0} trials finished")
    final = run_kexp("sweep", "--resume", sweep_dir, timeout=3600)
    assert final.returncode == 0, final.stderr[-3000:]
    rows = _trials_csv(sweep_dir)
    assert [int(r["number"]) for r in rows] == list(range(12))
    assert all(r["state"] in ("completed", "pruned") for r in rows)
    for row in rows:
        with open(Path(row["run_dir"]) / "history.csv") as f:
            epochs = [int(h["epoch"]) for h in csv.DictReader(f)]
        assert epochs == list(range(len(epochs)))  # none repeated, none missing
    _check_every_file_parses(sweep_dir)
