"""Run a command and record its wall time, exit code and peak memory:
``python bench/launch.py RESULT.json COMMAND...``.

Why a launcher: a child's ``ru_maxrss`` counts the memory of the process it was forked from
(Linux keeps the high-water mark across ``exec``), so a child of the benchmark, which holds
the data sets, would report at least the benchmark's own size. Forked from this small
process instead, the command's figure is its own. Standard library only, so it stays small.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    """Fork, exec ``argv[2:]``, wait; write ``seconds``, ``exit_code``, ``maxrss_kb``."""
    result, command = argv[1], argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    with open(result, "w") as f:
        json.dump({"seconds": seconds, "exit_code": os.waitstatus_to_exitcode(status),
                   "maxrss_kb": usage.ru_maxrss}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
