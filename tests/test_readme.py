"""The README's shell examples stay true: every `kexp ...` line names a real command and real
options, and the quick ones run, as written, in a scratch copy of the repository's configs."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer.main
from conftest import REPO, run_kexp

README = REPO / "README.md"


def _commands() -> list[tuple[int, str]]:
    """(line, command) for each `kexp ...` line of the README's shell blocks: prompts
    (`$ `, `host1$ `) and comments dropped, `\\` continuations joined."""
    text = README.read_text()
    found = []
    for block in re.finditer(r"```(?:sh|bash|console|shell)\n(.*?)```", text, re.S):
        first = text.count("\n", 0, block.start()) + 2
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            line, number = lines[i], first + i
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            line = re.sub(r"^\s*(\w+\$\s+|\$\s+)", "", line)
            if re.match(r"\s*kexp\b", line):
                found.append((number, shlex.split(line, comments=True)))
    return found


COMMANDS = _commands()


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[str(n) for n, _ in COMMANDS])
def test_readme_command_names_real_options(line, argv):
    from kexp.cli.app import app

    group = typer.main.get_command(app)
    args = argv[1:]
    while args and args[0].startswith("-"):                      # kexp --debug ...
        assert args[0] in _options(group), f"README.md:{line}: no global option {args[0]}"
        args = args[1:]
    if not args:
        return
    command = group.commands.get(args[0])
    assert command is not None, f"README.md:{line}: no command `kexp {args[0]}`"
    known = _options(command)
    for token in args[1:]:
        option = token.split("=", 1)[0]
        if option.startswith("-") and option != "-":
            assert option in known, f"README.md:{line}: `kexp {args[0]}` has no {option}"


def test_the_readme_has_commands_to_check():
    commands = {argv[1] for _, argv in COMMANDS if len(argv) > 1}
    assert {"train", "evaluate", "runs", "compare", "sweep"} <= commands


# Lines run as written: quick ones, in this order (later ones use earlier ones' runs).
RUN = (
    "kexp train configs/digits_mlp.yaml --set train.epochs=3",
    "kexp train configs/digits_mlp.yaml --set train.epochs=3 --set "
    "compile.optimizer.learning_rate=0.01",
    "kexp compare runs/digits-mlp --metric val_accuracy --plot cmp.png",
    "kexp evaluate runs/digits-mlp",
    "kexp runs",
    "kexp config configs/listing_7_11_ticket_named.yaml --explain --set train.epochs=3",
    "kexp train configs/digits_mlp.yaml --smoke",
)


def test_readme_commands_run_as_written(tmp_path):
    written = {" ".join(argv) for _, argv in COMMANDS}
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for command in RUN:
        assert command in written, f"the README no longer shows: {command}"
        result = run_kexp(*shlex.split(command)[1:], cwd=tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    assert len(list((tmp_path / "runs" / "digits-mlp").glob("*/evaluation.json"))) == 1
    assert list(Path(tmp_path / "runs" / "_smoke").glob("*/*/model.keras"))
