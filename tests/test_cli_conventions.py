"""What a user reaches for: --version, python -m kexp, shell completion, kexp config
(--explain), -q/--quiet, and progress output that honours NO_COLOR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, REPO, run_kexp

# Runs the app as `kexp` does and reports the heavy modules it imported.
PROBE = """
import sys
from kexp.cli.app import app
code = 0
try:
    app(sys.argv[1:], prog_name="kexp")
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
print("HEAVY:", heavy, "CODE:", code)
"""


def probe(*args, cwd=REPO, env=None) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return out.stdout + out.stderr


def test_version_names_every_version_without_tensorflow():
    out = probe("--version")
    assert "HEAVY: [] CODE: 0" in out
    python = ".".join(map(str, sys.version_info[:3]))
    line = out.splitlines()[0]
    assert line == (f"kexp {metadata.version('kexp')} (Python {python}, TensorFlow "
                    f"{metadata.version('tensorflow')}, Keras {metadata.version('keras')})")
    assert run_kexp("-V").stdout.strip() == line


def test_python_dash_m_kexp_is_the_same_program():
    as_module = subprocess.run([sys.executable, "-m", "kexp", "validate",
                                CONFIGS / "digits_mlp.yaml"], capture_output=True, text=True,
                               cwd=REPO, timeout=120)
    assert as_module.returncode == 0, as_module.stderr
    assert as_module.stdout == run_kexp("validate", CONFIGS / "digits_mlp.yaml").stdout
    bad = subprocess.run([sys.executable, "-m", "kexp", "validate", "nope.yaml"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "nope.yaml does not exist" in bad.stderr
    helped = subprocess.run([sys.executable, "-m", "kexp", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert "Usage: kexp" in helped.stdout


# --------------------------------------------------------------------------- completion


def complete(words: str, cwd=None) -> list[str]:
    """Bash completion as the script Typer installs asks for it (COMP_WORDS, COMP_CWORD),
    in-process; ``probe`` runs the same in a fresh process."""
    from typer.testing import CliRunner

    from kexp.cli.app import app

    parts = words.split(" ")
    env = {"_KEXP_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1)}
    old = Path.cwd()
    os.chdir(cwd or REPO)
    try:
        result = CliRunner().invoke(app, [], env=env, prog_name="kexp")
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_completion_answers_without_importing_tensorflow():
    env = {"_KEXP_COMPLETE": "complete_bash", "COMP_CWORD": "3"}
    out = probe(env={**env, "COMP_WORDS": "kexp train --set model.layers[0].type=Dens"})
    assert out.splitlines() == ["model.layers[0].type=Dense", "HEAVY: [] CODE: 0"]
    out = probe(env={**env, "COMP_WORDS": "kexp train --set train.l"})
    assert out.splitlines() == ["train.loop=", "HEAVY: [] CODE: 0"]


def test_completion_of_commands_and_options():
    words = complete("kexp ")
    assert {"train", "validate", "config", "evaluate", "runs", "list"} <= set(words)
    assert complete("kexp tr") == ["train"]
    options = complete("kexp train --")
    assert {"--set", "--plugin", "--resume", "--quiet", "--smoke"} <= set(options)
    assert {"--explain", "--format"} <= set(complete("kexp config --"))


def test_completion_of_config_files_and_run_directories(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("seed: 1\n")
    (tmp_path / "configs" / "notes.txt").write_text("")
    run = tmp_path / "runs" / "digits-mlp" / "20261201-101500"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (tmp_path / "runs" / "empty").mkdir()
    assert complete("kexp validate conf", cwd=tmp_path) == ["configs/"]
    assert complete("kexp train configs/", cwd=tmp_path) == ["configs/a.yaml"]
    assert complete("kexp evaluate ", cwd=tmp_path) == ["runs/"]
    assert complete("kexp evaluate runs/", cwd=tmp_path) == ["runs/digits-mlp/"]
    words = complete("kexp train --resume runs/digits-mlp/", cwd=tmp_path)
    assert words == ["runs/digits-mlp/20261201-101500"]


def test_completion_of_set_paths_and_values():
    words = complete("kexp train configs/digits_mlp.yaml --set train.")
    assert {"train.epochs=", "train.loop=", "train.callbacks=", "train.threads="} <= set(words)
    assert "data." in complete("kexp train --set da")
    assert complete("kexp train --set train.loop=") == ["train.loop=fit", "train.loop=custom"]
    dense = complete("kexp train --set model.layers[0].type=Den")
    assert "model.layers[0].type=Dense" in dense
    assert complete("kexp train --set compile.optimizer=rms") == ["compile.optimizer=rmsprop"]
    datasets = complete("kexp validate --set data.type=")
    assert {"data.type=digits", "data.type=npz", "data.type=csv"} <= set(datasets)
    callbacks = complete("kexp train --set train.callbacks[0].type=Early")
    assert callbacks == ["train.callbacks[0].type=EarlyStopping"]


# --install-completion / --show-completion detect the shell from the parent processes; in
# tests (which may run without a shell above them) the shell is named, as Typer's tests do.
PINNED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


def test_completion_for_zsh_and_fish_and_the_script():
    out = probe(env={"_KEXP_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "kexp val"})
    assert '"validate"' in out and "HEAVY: []" in out
    out = probe(env={"_KEXP_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                     "_TYPER_COMPLETE_ARGS": "kexp train --set train.ep"})
    assert "train.epochs=" in out
    script = run_kexp("--show-completion", "bash", env=PINNED_SHELL)
    assert script.returncode == 0 and "_KEXP_COMPLETE=complete_bash" in script.stdout


def test_install_completion_writes_the_shell_script(tmp_path):
    result = run_kexp("--install-completion", "bash", env={"HOME": str(tmp_path), **PINNED_SHELL})
    assert result.returncode == 0, result.stderr
    assert "_KEXP_COMPLETE" in (tmp_path / ".bash_completions" / "kexp.sh").read_text()
    assert ".bash_completions/kexp.sh" in (tmp_path / ".bashrc").read_text()


# --------------------------------------------------------------------------- kexp config


def test_config_prints_what_the_run_config_yaml_holds():
    from kexp.config import load_config

    out = probe("config", CONFIGS / "listing_7_11_ticket_named.yaml", "--set", "train.epochs=3")
    assert "HEAVY: [] CODE: 0" in out
    expected = load_config(CONFIGS / "listing_7_11_ticket_named.yaml",
                           ["train.epochs=3"]).to_yaml_dict()
    text = out.rsplit("HEAVY:", 1)[0]
    assert yaml.safe_load(text) == expected
    as_json = run_kexp("config", CONFIGS / "listing_7_11_ticket_named.yaml", "--set",
                       "train.epochs=3", "--format", "json")
    assert json.loads(as_json.stdout) == expected


def _explained(*args) -> dict[str, tuple[str, str]]:
    result = run_kexp("config", *args, "--explain")
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(\S+): (.*?)\s+# (.+)$", line)
        assert match, line
        rows[match[1]] = (match[2], match[3])
    return rows


def test_explain_names_the_file_and_line_the_set_or_the_default():
    rows = _explained(CONFIGS / "ticket_model.yaml", "--set", "train.epochs=3")
    assert rows["train.epochs"] == ("3", "--set train.epochs=3")
    assert rows["name"] == ("ticket-classifier", "configs/ticket_model.yaml:3")
    assert rows["model.layers[1].units"] == ("64", "configs/ticket_model.yaml:14")
    assert rows["train.loop"] == ("fit", "default")
    assert rows["compile.optimizer.type"] == ("rmsprop", "configs/ticket_model.yaml:19")
    # a value from the base file, with the base file's name and line
    rows = _explained(CONFIGS / "listing_7_11_ticket_named.yaml")
    assert rows["model.layers[1].units"] == ("64", "configs/ticket_model.yaml:14")
    assert rows["compile.loss_weights.department"] == (
        "1.0", "configs/listing_7_11_ticket_named.yaml:6")


def test_explain_as_json_and_config_errors():
    result = run_kexp("config", CONFIGS / "digits_mlp.yaml", "--explain", "--format", "json")
    doc = json.loads(result.stdout)
    assert doc["config"]["train"]["epochs"] == 30
    assert doc["from"]["train.epochs"] == "configs/digits_mlp.yaml:22"
    assert doc["from"]["seed"] == "configs/digits_mlp.yaml:4"
    bad = run_kexp("config", CONFIGS / "digits_mlp.yaml", "--set", "train.epochs=x")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--set train.epochs=x: train.epochs: expected an integer" in bad.stderr


# --------------------------------------------------------------------------- --quiet


def test_quiet_train_and_evaluate_print_only_the_final_lines(tmp_path):
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path,
                      "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run directory: ") and len(result.stdout.splitlines()) == 1
    assert "epoch 1/1" not in result.stderr
    run_dir = result.stdout.split(": ", 1)[1].strip()
    evaluated = run_kexp("evaluate", run_dir, "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    lines = [line.split() for line in evaluated.stdout.splitlines()]
    assert sorted(name for name, _ in lines) == ["accuracy", "loss"]  # no header, no "wrote"
    recorded = json.loads((Path(run_dir) / "evaluation.json").read_text())["metrics"]
    assert dict(lines) == {name: f"{value:.6g}" for name, value in recorded.items()}


def _on_a_terminal(args, env) -> str:
    """Run kexp with a pseudo-terminal as stdout and stderr; everything it wrote."""
    import pty

    leader, follower = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    proc = subprocess.Popen([sys.executable, "-m", "kexp", *map(str, args)], cwd=REPO,
                            stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
                            env={**base, "TERM": "xterm-256color", "COLUMNS": "100", **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_honours_no_color_on_a_terminal(tmp_path):
    args = ["train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path,
            "--set", "train.tensorboard=false"]
    color = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")
    colored = _on_a_terminal(args, {})
    plain = _on_a_terminal(args, {"NO_COLOR": "1"})
    assert "epoch 1/1" in plain and "run directory:" in plain
    assert color.search(colored), repr(colored[:400])  # the live bar is coloured...
    assert not color.search(plain), repr(plain[:400])  # ...unless NO_COLOR is set


def test_progress_off_a_terminal_is_one_line_per_epoch(tmp_path):
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path)
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("epoch ")][0] \
        .startswith("epoch 1/1  ")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_for_each_shell(shell):
    result = run_kexp("--show-completion", shell, env=PINNED_SHELL)
    assert result.returncode == 0 and "_KEXP_COMPLETE" in result.stdout


def test_quiet_sweep_prints_the_sweep_directory_and_the_best_trial(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text((CONFIGS / "digits_mlp.yaml").read_text().replace("epochs: 30", "epochs: 1")
                      + "sweep:\n  params:\n    model.layers[0].units: {type: int, low: 8, "
                      "high: 16}\n")
    result = run_kexp("sweep", config, "--runs-dir", tmp_path / "runs", "--trials", "1", "-q")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sweep directory: ")
    assert any(line.startswith("best trial: 0 ") for line in lines)
    assert not any(" at once; " in line or re.match(r"\[\d+/\d+\] trial", line)
                   for line in lines), lines
    assert "epoch 1/1" not in result.stderr + result.stdout
