"""The kill soak, short: `make soak` runs 100 trials, then this test's 4, one per variant
(the resumes and the reference runs in this process), with `KEXP_SOAK=1`: random kills are a
soak, kept out of `make test`'s time budget (`tests/test_determinism.py` kills at fixed
moments there)."""

from __future__ import annotations

import os

import pytest

from kexp.tools.soak import VARIANTS, run_soak


@pytest.mark.skipif(not os.environ.get("KEXP_SOAK"), reason="a soak: make soak (KEXP_SOAK=1)")
def test_random_kills_leave_runs_that_resume_to_the_uninterrupted_weights(tmp_path):
    trials = len(VARIANTS)
    lines: list[str] = []
    result = run_soak(trials, tmp_path, in_process=True, report=lines.append)
    assert result.failed == [], result.summary() + "\n" + "\n".join(lines)
    assert result.passed == trials
    assert sum(result.outcomes.values()) == trials
    # Every variant was killed: both loops, with and without --smoke.
    assert all(any(v.label + " " in line for line in lines) for v in VARIANTS)


def test_the_file_checks_find_a_cut_png_or_zip_and_an_unknown_file(tmp_path):
    import zipfile

    from kexp.tools.soak import file_problems

    png = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND" + (0xAE426082).to_bytes(4, "big"))
    (tmp_path / "ok.png").write_bytes(png)
    (tmp_path / "cut.png").write_bytes(png[:-3])
    with zipfile.ZipFile(tmp_path / "ok.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    (tmp_path / "cut.keras").write_bytes((tmp_path / "ok.keras").read_bytes()[:-10])
    (tmp_path / "other.bin").write_bytes(b"x")
    (tmp_path / ".lock").write_bytes(b"")  # hidden: not part of the run
    found = {line.split(" does not parse")[0].rsplit("/", 1)[-1] for line in file_problems(tmp_path)}
    assert found == {"cut.png", "cut.keras", "other.bin"}
