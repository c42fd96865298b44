"""Creating a run directory atomically (``Run.create``, ``create_dir_atomically``): a kill at
any moment leaves no run directory or one that `kexp train --resume` continues; temporaries
a kill leaves are never listed and are removed by the next `kexp train`; concurrent creators
get their own directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kexp import runs as kr
from kexp.runs import Run, create_dir_atomically, find_runs, remove_stale_temporaries
from tests.conftest import REPO

CONFIG = """
name: atomic
seed: 3
deterministic: true
data: {type: digits, batch_size: 64, validation_split: 0.2}
model:
  type: sequential
  input_shape: [64]
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 2, progress: false, tensorboard: false}
"""

# In a process without TensorFlow: for k = 1, 2, ... fork a child that runs `Run.create`
# and dies with os._exit (what SIGKILL does: no handler, no `finally`) just before, or just
# after, the k-th file-system operation it makes; stop at the first k it survives. The
# first files are those `kexp train` writes: the resolved config.yaml and run.json.
KILLER = r"""
import builtins, fcntl, json, os, sys
from pathlib import Path
import kexp.runs as kr
from kexp.config import load_config
from kexp.runs import config_hash

cfg = load_config(sys.argv[1])
base = Path(sys.argv[2])

def populate(run):
    run.write_yaml("config.yaml", cfg.to_yaml_dict())
    run.write_json("run.json", {"name": cfg.run_name(), "status": "running",
                                "config_hash": config_hash(cfg.to_yaml_dict()), "seed": cfg.seed,
                                "epochs": cfg.train.epochs, "smoke": False,
                                "epochs_completed": 0})

OPS = [(os, "mkdir"), (os, "open"), (os, "close"), (os, "rename"), (os, "replace"),
       (os, "fsync"), (os, "unlink"), (fcntl, "flock"), (builtins, "open"),
       (kr, "_rename_no_replace")]

def kill_at(k):
    count = [0]
    def tick():
        count[0] += 1
        if count[0] == k:
            os._exit(137)
    for owner, name in OPS:
        real = getattr(owner, name)
        def wrapper(*args, _real=real, **kwargs):
            tick()
            result = _real(*args, **kwargs)
            tick()
            return result
        setattr(owner, name, wrapper)

exit_code = os._exit
points = 0
for k in range(1, 1000):
    pid = os.fork()
    if pid == 0:
        kill_at(k)
        kr.Run.create(base / f"k{k:03d}", cfg.run_name(), populate)
        exit_code(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        break
    assert os.waitstatus_to_exitcode(status) == 137, status
    points = k
print(json.dumps({"points": points}))
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "atomic.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def killed(config, tmp_path_factory) -> tuple[Path, int]:
    """One runs directory per kill point: ``<base>/k<k>/atomic/...``."""
    base = tmp_path_factory.mktemp("killed")
    result = subprocess.run([sys.executable, "-c", KILLER, str(config), str(base)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return base, json.loads(result.stdout)["points"]


def test_a_kill_at_any_step_of_run_create_leaves_no_run_or_a_resumable_one(killed):
    from kexp.training.resume import plan_resume

    base, points = killed
    assert points >= 30  # mkdir, lock, two atomic writes, rename, fsyncs: before and after
    outcomes = []
    for k in range(1, points + 1):
        runs = base / f"k{k:03d}"
        named = runs / "atomic"
        entries = sorted(p.name for p in named.iterdir()) if named.is_dir() else []
        visible = [n for n in entries if not n.startswith(".")]
        assert all(n.startswith(".tmp-") for n in entries if n.startswith(".")), entries
        assert len(visible) <= 1, f"kill {k}: {entries}"
        found = find_runs(runs)
        if not visible:
            assert found == [] and kr.resolve_run_dir(named) is None, f"kill {k}"
            outcomes.append("absent")
            continue
        run = named / visible[0]
        assert found == [run], f"kill {k}: {found}"
        plan = plan_resume(run)  # what `kexp train --resume` checks before training
        assert plan.record.status == "running" and plan.cfg.run_name() == "atomic"
        outcomes.append("resumable")
    # Both sides of the rename were hit, and once renamed the directory stays whole.
    first = outcomes.index("resumable")
    assert "absent" in outcomes and set(outcomes[first:]) == {"resumable"}, outcomes


def test_temporaries_of_killed_creators_are_removed_once_their_lock_is_free(killed, tmp_path):
    base, points = killed
    base = Path(shutil.copytree(base, tmp_path / "copy", symlinks=True))  # others use them
    temporaries = [t for k in range(1, points + 1)
                   for t in (base / f"k{k:03d}" / "atomic").glob(".tmp-*")]
    assert temporaries
    locked = [t for t in temporaries if (t / ".lock").exists()]
    unlocked = [t for t in temporaries if not (t / ".lock").exists()]  # killed before locking
    assert locked and unlocked
    for tmp in temporaries:
        remove_stale_temporaries(tmp.parent)
    assert not any(t.exists() for t in locked)
    assert all(t.exists() for t in unlocked)  # too young to tell from a creator at work
    old = time.time() - 3600
    for tmp in unlocked:
        os.utime(tmp, (old, old))
        remove_stale_temporaries(tmp.parent)
        assert not tmp.exists()


def test_a_live_creators_temporary_is_left_alone(tmp_path):
    seen = {}

    def populate(tmp: Path) -> None:
        seen["removed"] = remove_stale_temporaries(tmp.parent)  # another process's cleaner
        (tmp / "data.txt").write_text("x")

    path = create_dir_atomically(tmp_path, "out", populate)
    assert seen["removed"] == [] and (path / "data.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (path / ".lock").exists()  # only Run.create keeps it (the run's lock)


def test_kexp_runs_ignores_and_kexp_train_removes_a_killed_start(killed, config, kexp,
                                                                 tmp_path):
    base, points = killed
    # The last kill before the rename: config.yaml and run.json written, never renamed.
    k = max(k for k in range(1, points + 1)
            if not [p for p in (base / f"k{k:03d}" / "atomic").glob("[!.]*")])
    runs = Path(shutil.copytree(base / f"k{k:03d}", tmp_path / "runs"))  # others use it
    [tmp] = (runs / "atomic").glob(".tmp-*")
    assert (tmp / "run.json").is_file() and (tmp / "config.yaml").is_file()

    listed = kexp("runs", runs)
    assert listed.exit_code == 0 and "no runs under" in listed.stdout
    refused = kexp("train", "--resume", tmp)
    assert refused.exit_code == 2 and "not a run directory" in refused.stderr

    trained = kexp("train", config, "--runs-dir", runs)
    assert trained.exit_code == 0, trained.stderr
    assert not tmp.exists()
    [run] = find_runs(runs)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_run_killed_right_after_its_rename_resumes_from_epoch_0(killed, kexp, tmp_path):
    base, points = killed
    k = min(k for k in range(1, points + 1) if find_runs(base / f"k{k:03d}"))
    [run] = find_runs(shutil.copytree(base / f"k{k:03d}", tmp_path / "runs"))
    result = kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert "at epoch 0 of 2" in result.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    assert (run / "model.keras").is_file()


class Killed(BaseException):
    """Raised where a kill would land (in-process: handlers still run)."""


@pytest.mark.parametrize("step", ["populate", "fsync_dir", "_rename_no_replace"])
def test_a_failure_inside_create_leaves_nothing(tmp_path, monkeypatch, step):
    def fail(*args, **kwargs):
        raise Killed

    def populate(run: Run) -> None:
        run.write_text("config.yaml", "a: 1\n")
        if step == "populate":
            raise Killed

    if step != "populate":
        monkeypatch.setattr(kr, step, fail)
    with pytest.raises(Killed):
        Run.create(tmp_path, "name", populate)
    assert list((tmp_path / "name").iterdir()) == []


def _create_in_processes(parent: Path, n: int) -> list[Path]:
    """``n`` processes creating ``parent/same`` at the same moment; each writes its pid."""
    script = ("import os, sys, time; from pathlib import Path; "
              "from kexp.runs import create_dir_atomically as c; "
              "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
              "p = c(Path(sys.argv[1]), 'same', "
              "lambda t: (t / 'pid').write_text(str(os.getpid()))); print(p)")
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(parent), start], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n
    return [Path(out.strip()) for out in outs]


def test_concurrent_processes_each_get_their_own_directory_with_their_own_content(tmp_path):
    made = _create_in_processes(tmp_path, 6)
    names = sorted(p.name for p in made)
    assert names == sorted(["same", *(f"same-{i}" for i in range(2, 7))])
    pids = {(p / "pid").read_text() for p in made}
    assert len(pids) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporaries left


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "os.rename"])
def test_concurrent_threads_never_share_or_replace_a_directory(tmp_path, monkeypatch,
                                                               renameat2):
    if not renameat2:
        monkeypatch.setattr(kr, "_renameat2", lambda: None)
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "keep").write_text("first")  # an existing directory is never replaced
    barrier = threading.Barrier(8)
    made: list[Path] = []

    def create(i: int) -> None:
        barrier.wait()
        made.append(create_dir_atomically(tmp_path, "same",
                                          lambda t: (t / "i").write_text(str(i))))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in made) == sorted(f"same-{i}" for i in range(2, 10))
    assert sorted((p / "i").read_text() for p in made) == [str(i) for i in range(8)]
    assert (tmp_path / "same" / "keep").read_text() == "first"


def test_renameat2_refuses_an_existing_empty_directory(tmp_path):
    if kr._renameat2() is None:
        pytest.skip("no renameat2 here")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        kr._rename_no_replace(tmp_path / "a", tmp_path / "b")


def _interrupt_renames(monkeypatch) -> None:
    """Every write stops where a kill between writing and renaming would stop it."""
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(kr.os, "replace", killed)


def test_evaluate_and_predict_outputs_are_written_then_renamed(tmp_path, monkeypatch):
    import numpy as np

    from kexp.evaluation import Evaluation, record_evaluation, write_predictions

    first = record_evaluation(tmp_path, Evaluation("final", "test", {"loss": 0.5}, 10))
    write_predictions({"predictions": np.zeros((2, 3))}, tmp_path / "p.npz")
    write_predictions({"predictions": np.zeros((2, 3))}, tmp_path / "p.csv")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    _interrupt_renames(monkeypatch)
    with pytest.raises(Killed):
        record_evaluation(tmp_path, Evaluation("best", "test", {"loss": 0.1}, 10))
    for name in ("p.npz", "p.csv"):
        with pytest.raises(Killed):
            write_predictions({"predictions": np.ones((2, 3))}, tmp_path / name)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads((tmp_path / "evaluation.json").read_text()) == first
