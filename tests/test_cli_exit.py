"""How the kexp process ends: exit codes, flushed output and atexit handlers, with or without
the interpreter's teardown (skipped once TensorFlow is loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A stand-in module named tensorflow: `_exit` only asks whether TensorFlow was loaded.
PROBE = """
import atexit, sys, types
if sys.argv[1] == "tf":
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")
from kexp.cli.app import _exit
atexit.register(lambda: print("atexit ran", flush=False))
print("buffered", end="")
sys.stderr.write("to stderr")
_exit(eval(sys.argv[2]))
"""


@pytest.mark.parametrize("tf", ["tf", "no-tf"])
@pytest.mark.parametrize(("code", "returncode"), [("0", 0), ("None", 0), ("3", 3),
                                                  ("'a message'", 1)])
def test_exit_keeps_the_code_the_output_and_atexit_handlers(tf, code, returncode):
    done = subprocess.run([sys.executable, "-c", PROBE, tf, code], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == returncode
    assert done.stdout == "bufferedatexit ran\n"
    assert done.stderr.startswith("to stderr")
    if code == "'a message'":
        assert "a message" in done.stderr
