"""The run directory's record, run.json (kexp.runs): typed fields, lenient reading, unknown
keys kept, atomic updates; the config hash --resume compares."""

from __future__ import annotations

import json

import pytest

from kexp.runs import Run, RunRecord, config_hash, find_runs, read_record, read_run_plugins


def _run(tmp_path, data=None) -> Run:
    path = tmp_path / "runs" / "x" / "20260101-000000"
    path.mkdir(parents=True)
    if data is not None:
        (path / "run.json").write_text(json.dumps(data))
    return Run(path)


def test_a_record_round_trips_through_run_json(tmp_path):
    run = _run(tmp_path)
    record = RunRecord(name="x", started="2026-01-01T00:00:00+00:00", seed=7, epochs=3,
                       epochs_completed=0, plugins=["p.py"], threads=1,
                       cluster={"strategy": "mirrored", "replicas": 2})
    run.write_record(record)
    data = json.loads(run.file("run.json").read_text())
    assert data["name"] == "x" and data["seed"] == 7 and data["cluster"]["replicas"] == 2
    assert data["config_file"] is None  # always written, null when there is no file
    # None fields and an empty resume list are left out.
    assert not {"ended", "reason", "final_metrics", "resumed", "preempted_step"} & set(data)
    assert run.record() == record


def test_update_sets_fields_and_refuses_a_name_that_is_not_one(tmp_path):
    run = _run(tmp_path, {"name": "x", "status": "running", "epochs_completed": 0})
    record = run.update(status="completed", epochs_completed=3, duration_seconds=1.5)
    assert record.status == "completed"
    data = json.loads(run.file("run.json").read_text())
    assert data["status"] == "completed" and data["epochs_completed"] == 3
    with pytest.raises(TypeError):
        run.update(epochs_complete=4)  # a misspelt key is an error, not a new key
    assert json.loads(run.file("run.json").read_text()) == data  # nothing written


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    run = _run(tmp_path, {"name": "x", "status": "running", "phase": "warmup",
                          "load_average": [1.0]})
    record = run.record()
    assert record.extra == {"phase": "warmup", "load_average": [1.0]}
    run.update(status="failed", reason="boom")
    data = json.loads(run.file("run.json").read_text())
    assert data["phase"] == "warmup" and data["reason"] == "boom"


@pytest.mark.parametrize("content", ['{"status": "compl', "[1, 2]", ""])
def test_an_unreadable_or_missing_run_json_has_no_record(tmp_path, content):
    run = _run(tmp_path)
    if content:
        run.file("run.json").write_text(content)
    assert read_record(run.path) is None
    assert read_run_plugins(run.path) == []
    assert run.record() == RunRecord()


def test_a_partial_run_json_reads_with_defaults(tmp_path):
    record = read_record(_run(tmp_path, {"name": "old", "status": "completed"}).path)
    assert record.name == "old" and record.finished
    assert record.epochs_completed is None and record.resumed == [] and record.plugins == []


def test_find_runs_orders_by_the_recorded_start(tmp_path):
    early = tmp_path / "r" / "b" / "1"
    late = tmp_path / "r" / "a" / "2"
    for path, started in ((late, "2026-01-02T00:00:00"), (early, "2026-01-01T00:00:00")):
        path.mkdir(parents=True)
        (path / "run.json").write_text(json.dumps({"started": started}))
    assert find_runs(tmp_path / "r") == [early, late]


def test_the_config_hash_ignores_key_order_and_sees_every_value():
    one = {"seed": 1, "train": {"epochs": 2, "loop": "fit"}}
    assert config_hash(one) == config_hash({"train": {"loop": "fit", "epochs": 2}, "seed": 1})
    assert config_hash(one) != config_hash({"seed": 1, "train": {"epochs": 3, "loop": "fit"}})
    assert len(config_hash(one)) == 16
