"""The kill soak, short: `make soak` runs 100 trials; here 10 run in the test suite (the
resumes and the reference runs in this process, to stay within the suite's time budget)."""

from __future__ import annotations

from kexp.tools.soak import VARIANTS, run_soak


def test_ten_random_kills_leave_runs_that_resume_to_the_uninterrupted_weights(tmp_path):
    lines: list[str] = []
    result = run_soak(10, tmp_path, in_process=True, report=lines.append)
    assert result.failed == [], result.summary() + "\n" + "\n".join(lines)
    assert result.passed == 10
    assert sum(result.outcomes.values()) == 10
    # Every variant was killed: both loops, with and without --smoke.
    assert all(any(v.label + " " in line for line in lines) for v in VARIANTS)
