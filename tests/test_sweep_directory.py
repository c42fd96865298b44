"""A sweep directory appears whole or not at all (issue #16's rule for every directory kexp
creates and later resumes)."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS


def _cfg(tmp_path):
    from kexp.config import load_config

    return load_config(CONFIGS / "digits_sweep.yaml", [f"runs_dir={tmp_path / 'runs'}"])


def test_a_sweep_directory_appears_with_its_files(tmp_path):
    from kexp.sweep.directory import create_sweep, reopen_sweep

    sweep = create_sweep(_cfg(tmp_path), None, None)
    assert {p.name for p in sweep.dir.iterdir()} >= {"config.yaml", "sweep.json"}
    info = json.loads((sweep.dir / "sweep.json").read_text())
    assert info["study"] == f"digits-sweep/{sweep.dir.name}" == sweep.study
    assert not [p for p in sweep.dir.parent.iterdir() if p.name.startswith(".tmp-")]
    assert reopen_sweep(sweep.dir, None, None, None).study == sweep.study


def test_a_kill_after_the_rename_still_resumes(tmp_path):
    from kexp.sweep.directory import create_sweep, reopen_sweep

    sweep = create_sweep(_cfg(tmp_path), None, None)
    info = json.loads((sweep.dir / "sweep.json").read_text())
    info["study"] = None                       # as written before the directory had its name
    (sweep.dir / "sweep.json").write_text(json.dumps(info))
    assert reopen_sweep(sweep.dir, None, None, None).study == sweep.study


def test_a_failure_while_creating_leaves_no_sweep_directory(tmp_path, monkeypatch):
    from kexp.sweep import directory

    calls = []

    def failing_write(path, text):
        calls.append(path.name)
        if path.name == "sweep.json":
            raise OSError("disk full")
        path.write_text(text)

    monkeypatch.setattr(directory, "atomic_write", failing_write)
    with pytest.raises(OSError):
        directory.create_sweep(_cfg(tmp_path), None, None)
    assert calls == ["config.yaml", "sweep.json"]
    parent = tmp_path / "runs" / "digits-sweep"
    assert list(parent.iterdir()) == []
