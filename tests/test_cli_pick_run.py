"""``kexp evaluate runs/<name>`` uses the newest run that has a model, and says which, when a
newer run failed before saving one (issue #21 item 8)."""

from __future__ import annotations

import json
import shutil

from conftest import run_dir_of, run_kexp

CONFIG = """
name: pick
runs_dir: runs
data: {type: random_classification, num_samples: 64, num_features: 4, num_classes: 2,
       validation_split: 0.25}
model:
  type: sequential
  layers: [{type: Dense, units: 2, activation: softmax}]
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 1}
"""


def test_evaluate_passes_over_a_newer_run_without_a_model(write, tmp_path):
    result = run_kexp("train", write("pick.yaml", CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    good = tmp_path / run_dir_of(result)
    failed = good.with_name(good.name + "-9")              # a newer run that saved no model
    shutil.copytree(good, failed)
    for model in failed.rglob("*.keras"):
        model.unlink()
    record = json.loads((failed / "run.json").read_text())
    record.update(status="failed", started="2999-01-01T00:00:00+00:00")
    (failed / "run.json").write_text(json.dumps(record))

    result = run_kexp("evaluate", tmp_path / "runs" / "pick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"using {good}:" in result.stderr
    assert failed.name in result.stderr
    assert (good / "evaluation.json").is_file()
    assert not (failed / "evaluation.json").exists()

    result = run_kexp("evaluate", failed, cwd=tmp_path)      # named itself: said plainly
    assert result.returncode == 2
    assert "model.keras" in result.stderr and "Traceback" not in result.stderr
