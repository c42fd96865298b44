"""``kexp sweep``: bad sweep blocks refused before any trial, and real sweeps on digits (a few
trials of two or three epochs) — results, best.yaml, pruning, failure, Ctrl-C, kill -9 and
resume, two processes on one study (SQLite, PostgreSQL), TensorBoard's HParams endpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_kexp

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
    assert "connect" in result.stderr.lower()  # the server, not a missing driver
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


# --------------------------------------------------------------------------- a real sweep

PARAMS = """
sweep:
  metric: val_accuracy
  trials: 3
  jobs: 2
  sampler: {type: tpe, n_startup_trials: 2}
  params:
    compile.optimizer.learning_rate: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
    model.layers[0].units: {type: int, low: 8, high: 32}
    model.layers[1].rate: {type: float, low: 0.0, high: 0.3}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 3-trial tpe sweep (2 at once) and its command's output."""
    tmp = tmp_path_factory.mktemp("sweep")
    config = _config(tmp, PARAMS)
    result = run_kexp("sweep", config, "--runs-dir", tmp / "runs", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return _sweep_dir(tmp / "runs"), result


def test_sweep_results(sweep):
    sweep_dir, result = sweep
    rows = _trials_csv(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"completed"}
    progress = [line for line in result.stdout.splitlines() if "] trial " in line]
    assert len(progress) == 3 and progress[-1].startswith("[3/3] trial ")
    assert "best trial:" in result.stdout and f"sweep directory: {sweep_dir}" in result.stdout
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert info["status"] == "completed" and info["finished_trials"] == 3
    assert info["direction"] == "maximize" and info["storage"] == "embedded"
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert info["best"]["trial"] == int(best["number"])
    for row in rows:  # every trial is an ordinary run, given its values
        run_dir = Path(row["run_dir"])
        assert run_dir == sweep_dir / "trials" / f"{int(row['number']):04d}"
        run = json.loads((run_dir / "run.json").read_text())
        assert run["status"] == "completed" and run["sweep"]["trial"] == int(row["number"])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert "sweep" not in config
        assert config["model"]["layers"][0]["units"] == int(row["model.layers[0].units"])
        assert config["compile"]["optimizer"]["learning_rate"] == pytest.approx(
            float(row["compile.optimizer.learning_rate"]))
        with open(run_dir / "history.csv") as f:
            history = list(csv.DictReader(f))
        assert max(float(h["val_accuracy"]) for h in history) == float(row["val_accuracy"])
    for plot in ("history.png", "importances.png", "parallel_coordinates.png"):
        assert (sweep_dir / plot).read_bytes()[:4] == b"\x89PNG"


def test_best_yaml_reproduces_the_best_trial(sweep, tmp_path):
    sweep_dir, _ = sweep
    info = json.loads((sweep_dir / "sweep.json").read_text())
    result = run_kexp("train", sweep_dir / "best.yaml", "--runs-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    best = Path(info["best"]["run_dir"])
    assert (run_dir / "history.csv").read_text() == (best / "history.csv").read_text()


def test_runs_groups_the_trials_under_the_sweep(sweep, kexp):
    sweep_dir, _ = sweep
    result = kexp("runs", sweep_dir.parent.parent)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if sweep_dir.name in line)
    assert "sweep completed" in lines[head] and "3/3 trials" in lines[head]
    assert [line.split()[1] for line in lines[head + 1:head + 4]] == [
        "trials/0000", "trials/0001", "trials/0002"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def test_tensorboard_hparams_lists_every_trial(sweep):
    sweep_dir, _ = sweep
    port = _free_port()
    board = subprocess.Popen([sys.executable, "-m", "kexp.cli.app", "tensorboard", sweep_dir,
                              "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin/hparams"
        deadline = time.monotonic() + 120
        while True:
            try:
                experiment = _post(f"{base}/experiment", {"experimentName": ""})
                groups = _post(f"{base}/session_groups", {
                    "experimentName": "", "startIndex": 0, "sliceSize": 100,
                    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                        "STATUS_RUNNING"]})
                if len(groups.get("sessionGroups", [])) == 3:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not list the trials"
            time.sleep(1)
    finally:
        board.terminate()
        board.wait(timeout=30)
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert names == {"compile.optimizer.learning_rate", "model.layers[0].units",
                     "model.layers[1].rate"}
    rows = {int(r["number"]): r for r in _trials_csv(sweep_dir)}
    for group in groups["sessionGroups"]:
        row = rows[int(group["name"])]
        assert group["hparams"]["model.layers[0].units"] == float(row["model.layers[0].units"])
        metrics = {m["name"]["tag"] for m in group["metricValues"]}
        assert "epoch_accuracy" in metrics


# --------------------------------------------------------------------------- pruning, failure

PRUNED = """
sweep:
  metric: val_accuracy
  trials: 4
  sampler: grid          # with seed 5: 0.05, 1e-6, 1e30, 1e-5 (one trial at a time)
  pruner: {type: median, n_startup_trials: 1}
  params:
    compile.optimizer.learning_rate: {type: categorical, choices: [0.05, 1.0e-6, 1.0e+30, 1.0e-5]}
"""


def test_median_pruner_prunes_hopeless_trials_and_a_failure_is_recorded(tmp_path):
    config = _config(tmp_path, PRUNED, BASE.replace("seed: 7", "seed: 5").replace(
        "epochs: 2", "epochs: 3"))
    result = run_kexp("sweep", config, "--runs-dir", tmp_path / "runs", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {float(r["compile.optimizer.learning_rate"]): r
            for r in _trials_csv(_sweep_dir(tmp_path / "runs"))}
    assert rows[0.05]["state"] == "completed" and float(rows[0.05]["val_accuracy"]) > 0.5
    assert rows[1e30]["state"] == "failed" and "non-finite" in rows[1e30]["reason"]
    pruned = [r for lr, r in rows.items() if lr < 1e-4 and r["state"] == "pruned"]
    assert pruned, rows
    for row in pruned:  # stopped in the epoch the pruner decided
        run = json.loads((Path(row["run_dir"]) / "run.json").read_text())
        history = (Path(row["run_dir"]) / "history.csv").read_text().strip().splitlines()
        assert run["status"] == "pruned" and len(history) - 1 == run["pruned_epoch"] + 1 < 3


# --------------------------------------------------------------------------- nothing is lost

SMALL = """
sweep:
  metric: val_accuracy
  trials: {trials}
  jobs: {jobs}
  sampler: random
  params:
    compile.optimizer.learning_rate: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    model.layers[0].units: {{type: int, low: 8, high: 32}}
"""


def _start(*args, cwd=REPO) -> subprocess.Popen:
    """`kexp ...` in the background, in a process group of its own (kill -9 reaches its
    trial processes too)."""
    return subprocess.Popen([sys.executable, "-m", "kexp.cli.app", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(condition, timeout: float = 600, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)
    return found


def _saved_epochs(sweep_dir: Path) -> int:
    """Epochs saved so far by all the trials (their state/epoch-* folders)."""
    return len(list(sweep_dir.glob("trials/*/state/epoch-*")))


def _check_every_file_parses(sweep_dir: Path) -> None:
    for path in sweep_dir.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".csv":
            list(csv.DictReader(path.open()))


def test_ctrl_c_and_kill_9_then_resume_lose_nothing(tmp_path):
    config = _config(tmp_path, SMALL.format(trials=3, jobs=2),
                     BASE.replace("epochs: 2", "epochs: 4"))
    runs = tmp_path / "runs"
    first = _start("sweep", config, "--runs-dir", runs)
    sweep_dir = _wait_for(lambda: next(iter(runs.glob("*/sweep-*")), None), process=first)
    _wait_for(lambda: _saved_epochs(sweep_dir) >= 1, process=first)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.wait(timeout=300) == 130, first.stderr.read()[-2000:]
    assert json.loads((sweep_dir / "sweep.json").read_text())["status"] == "interrupted"
    stopped = [json.loads(p.read_text())["status"] for p in sweep_dir.glob("trials/*/run.json")]
    assert "interrupted" in stopped, stopped

    second = _start("sweep", "--resume", sweep_dir)
    saved = _saved_epochs(sweep_dir)
    _wait_for(lambda: _saved_epochs(sweep_dir) > saved, process=second)
    os.killpg(second.pid, signal.SIGKILL)  # the sweep and its trial processes
    second.wait(timeout=60)

    final = run_kexp("sweep", "--resume", sweep_dir, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    rows = _trials_csv(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"completed"}
    assert json.loads((sweep_dir / "sweep.json").read_text())["status"] == "completed"
    resumed = 0
    for row in rows:
        run = json.loads((Path(row["run_dir"]) / "run.json").read_text())
        resumed += bool(run.get("resumed"))
        with open(Path(row["run_dir"]) / "history.csv") as f:
            assert [int(h["epoch"]) for h in csv.DictReader(f)] == [0, 1, 2, 3]
    assert resumed >= 1  # a trial continued from its own run directory
    assert not list(sweep_dir.glob("trials/.tmp-*"))
    _check_every_file_parses(sweep_dir)


def test_two_processes_share_the_embedded_study(tmp_path):
    config = _config(tmp_path, SMALL.format(trials=4, jobs=1),
                     BASE.replace("epochs: 2", "epochs: 1"))
    runs = tmp_path / "runs"
    first = _start("sweep", config, "--runs-dir", runs)
    sweep_dir = _wait_for(lambda: next(iter(runs.glob("*/sweep-*/sweep.json")), None),
                          process=first).parent
    second = _start("sweep", "--resume", sweep_dir)  # joins the running sweep
    for process in (first, second):
        assert process.wait(timeout=900) == 0, process.stderr.read()[-2000:]
    rows = _trials_csv(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert {r["state"] for r in rows} == {"completed"}
    assert len({r["worker"] for r in rows}) == 2  # both processes ran trials
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir() if p.is_dir()) == [
        "0000", "0001", "0002", "0003"]


# --------------------------------------------------------------------------- PostgreSQL

PG_PASSWORD = "kexp-Secret-4711"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class _Cluster:
    """A throw-away PostgreSQL cluster in ``home``, run as ``as_user``."""

    def __init__(self, bin_dir: Path, home: Path, as_user: list[str]):
        self.bin_dir, self.home, self.as_user = bin_dir, home, as_user
        self.port = _free_port()
        self.url = f"postgresql://kexp:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(self.bin_dir / tool), *map(str, args)],
                              capture_output=True, text=True, timeout=120, cwd=self.home)

    def start(self) -> None:
        started = self.run("pg_ctl", "-D", self.home / "data", "-l", self.home / "log", "-w",
                           "-o", f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1",
                           "start")
        assert started.returncode == 0, started.stderr + (self.home / "log").read_text()

    def stop(self) -> None:
        self.run("pg_ctl", "-D", self.home / "data", "-m", "fast", "-w", "stop")


@pytest.fixture
def postgresql():
    """A throw-away PostgreSQL cluster on a free local port (user kexp, password auth), run
    as `nobody` (initdb refuses root), removed afterwards."""
    import pwd
    import shutil
    import tempfile

    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install "
                    "postgresql-15); .ci/run installs them")
    home = Path(tempfile.mkdtemp(prefix="kexp-pg-"))
    (home / "pw").write_text(PG_PASSWORD)
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
        for path in (home, home / "pw"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    cluster = _Cluster(bin_dir, home, as_user)
    try:
        made = cluster.run("initdb", "-D", home / "data", "-U", "kexp", "--auth=md5",
                           f"--pwfile={home / 'pw'}", "-E", "UTF8")
        assert made.returncode == 0, made.stderr
        cluster.start()
        yield cluster
    finally:
        cluster.run("pg_ctl", "-D", home / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def test_two_processes_share_a_postgresql_study(postgresql, tmp_path):
    import optuna

    # Four trials (each its own `kexp train` process) between two sweep processes that start
    # together: each claims its first trial at once, so both run some.
    config = _config(tmp_path, SMALL.format(trials=4, jobs=1),
                     BASE.replace("epochs: 2", "epochs: 1"))
    args = ["--storage", postgresql.url, "--study", "shared"]
    processes = [_start("sweep", config, "--runs-dir", tmp_path / f"runs{i}", *args)
                 for i in (1, 2)]
    for process in processes:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-2000:]
    from kexp.sweep.study import driver_url

    study = optuna.load_study(study_name="shared", storage=driver_url(postgresql.url))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    ran = [sorted((tmp_path / f"runs{i}").glob("*/sweep-*/trials/[0-9]*")) for i in (1, 2)]
    assert all(ran) and sum(map(len, ran)) == 4  # both processes ran trials, 4 in all
    numbers = [p.name for dirs in ran for p in dirs]
    assert len(set(numbers)) == 4
    for i in (1, 2):  # the password is in no file kexp wrote
        sweep_dir = _sweep_dir(tmp_path / f"runs{i}")
        assert "kexp:***@127.0.0.1" in (sweep_dir / "sweep.json").read_text()
        for path in sweep_dir.rglob("*"):
            assert not path.is_file() or PG_PASSWORD.encode() not in path.read_bytes(), path


def test_postgresql_gone_mid_sweep_then_resume(postgresql, tmp_path):
    config = _config(tmp_path, SMALL.format(trials=2, jobs=1),
                     BASE.replace("epochs: 2", "epochs: 3"))
    runs = tmp_path / "runs"
    sweep = _start("sweep", config, "--runs-dir", runs, "--storage", postgresql.url)
    sweep_dir = _wait_for(lambda: next(iter(runs.glob("*/sweep-*")), None), process=sweep)
    _wait_for(lambda: _saved_epochs(sweep_dir) >= 1, process=sweep)
    postgresql.stop()
    assert sweep.wait(timeout=300) == 1
    stderr = sweep.stderr.read()
    assert "stopped answering" in stderr and f"--resume {sweep_dir}" in stderr, stderr
    assert "Traceback" not in stderr and PG_PASSWORD not in stderr
    postgresql.start()
    again = run_kexp("sweep", "--resume", sweep_dir, timeout=900)
    assert again.returncode == 2 and "--storage" in again.stderr  # the password is not kept
    again = run_kexp("sweep", "--resume", sweep_dir, "--storage", postgresql.url, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = _trials_csv(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1"]
    assert {r["state"] for r in rows} == {"completed"}
    for row in rows:
        with open(Path(row["run_dir"]) / "history.csv") as f:
            assert [int(h["epoch"]) for h in csv.DictReader(f)] == [0, 1, 2]


# --------------------------------------------------------------------------- the space


def test_categorical_choices_may_be_components(tmp_path, kexp):
    """Mappings are choices too: Optuna holds them as JSON text, trials get the mapping, and
    each is checked like the config's own optimizer (a misspelt argument is refused)."""
    import optuna

    from kexp.config import load_config
    from kexp.sweep.space import as_set, suggest

    config = _config(tmp_path, """
        sweep:
          params:
            compile.optimizer: {type: categorical, choices: [adam, {type: SGD, momentum: 0.9}]}
        """)
    cfg = load_config(config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [suggest(study.ask(), cfg.sweep.params)["compile.optimizer"] for _ in range(12)]
    assert {"adam", '{"momentum": 0.9, "type": "SGD"}'} != set(map(str, seen))
    assert "adam" in seen and {"type": "SGD", "momentum": 0.9} in seen
    assert as_set("compile.optimizer", {"type": "SGD", "momentum": 0.9}) == \
        'compile.optimizer={"type": "SGD", "momentum": 0.9}'
    bad = _config(tmp_path, """
        sweep:
          params:
            compile.optimizer: {type: categorical, choices: [adam, {type: SGD, momentm: 0.9}]}
        """)
    result = kexp("sweep", bad, "--runs-dir", tmp_path / "runs", "--trials", "1")
    assert result.exit_code == 2 and f"{bad}:19:" in result.stderr
    assert "did you mean 'momentum'" in result.stderr, result.stderr
