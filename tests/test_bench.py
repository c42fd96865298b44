"""The benchmark harness (``bench/``) on tiny sizes: data, workers, summary, report."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench import report  # noqa: E402
from bench.run import Group, Plan, run_benchmark, time_process  # noqa: E402
from bench.workloads import Variant, make_mnist_like, make_tickets  # noqa: E402


def test_mnist_like_data_is_seeded_mnist_shaped_and_labelled_from_x():
    x, y = make_mnist_like(300, seed=1)
    again_x, again_y = make_mnist_like(300, seed=1)
    assert x.shape == (300, 784) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))
    assert len(np.unique(y)) == 10
    np.testing.assert_array_equal(x, again_x)
    np.testing.assert_array_equal(y, again_y)


def test_tickets_have_the_chapter_shapes():
    arrays = make_tickets(50)
    assert {k: v.shape for k, v in arrays.items()} == {
        "title": (50, 10_000), "text_body": (50, 10_000), "tags": (50, 100),
        "priority": (50, 1), "department": (50, 4)}
    np.testing.assert_allclose(arrays["department"].sum(axis=1), 1.0)


def test_time_process_reports_exit_code_and_this_childs_peak_memory(tmp_path):
    code = "import numpy as np, sys; a = np.ones(40_000_000, np.uint8); sys.exit(3)"
    seconds, exit_code, rss_kb = time_process([sys.executable, "-c", code], tmp_path / "log")
    assert exit_code == 3
    assert rss_kb > 40_000  # KB: the 40 MB array was touched
    assert 0 < seconds < 30


def _run(group: str, name: str, rep: int, rate: float, loss: float, rss: float) -> dict:
    return {"group": group, "variant": name, "rep": rep, "batch": 32, "workload": "mnist",
            "samples_per_epoch": 1000, "epoch_seconds": [1000 / rate],
            "period_seconds": [1000 / rate + 0.01], "final_loss": loss, "peak_rss_mb": rss,
            "steps_per_execution": 1}


def test_summary_pairs_runs_by_repetition_with_both_baselines_and_checks_targets():
    variants = [Variant("plain fit", "plain", "mnist", 32),
                Variant("plain fit, tuned", "tuned", "mnist", 32),
                Variant("kexp fit", "kexp", "mnist", 32),
                Variant("kexp custom/epoch", "kexp", "mnist", 32, loop="custom")]
    group = Group("g", variants, reps=3)
    runs = [_run("g", "plain fit", 0, 100, 0.20, 1000), _run("g", "kexp fit", 0, 150, 0.205, 1100),
            _run("g", "plain fit, tuned", 0, 120, 0.20, 1000),
            _run("g", "kexp custom/epoch", 0, 200, 0.30, 1100),
            _run("g", "plain fit", 1, 50, 0.20, 1000), _run("g", "kexp fit", 1, 60, 0.205, 1100),
            _run("g", "plain fit, tuned", 1, 100, 0.20, 1000),
            _run("g", "plain fit", 2, 100, 0.20, 1000), _run("g", "kexp fit", 2, 110, 0.2, 1100),
            _run("g", "plain fit, tuned", 2, 100, 0.20, 1000),
            {"group": "g", "variant": "kexp custom/epoch", "rep": 1, "error": "exit code 1"}]
    processes = {"kexp --help": {"seconds": 0.2, "median_seconds": 0.25, "reps": 7,
                                 "peak_rss_mb": 50},
                 "kexp validate": {"seconds": 0.3, "median_seconds": 0.35, "reps": 7,
                                   "peak_rss_mb": 60},
                 report.BARE_IMPORT: {"seconds": 0.1, "median_seconds": 0.125, "reps": 7},
                 "kexp train --smoke": {"seconds": 5.0, "peak_rss_mb": 800},
                 "plain Keras script": {"seconds": 4.0, "peak_rss_mb": 790},
                 "plain Keras script, same shortcuts": {"seconds": 2.5, "peak_rss_mb": 700}}
    # The roofline is the higher peak of the two thread settings.
    roofline = {"default": {"peak_gflops": 160.0, "roofline_samples_per_s": 800.0,
                            "mlp_matmuls_samples_per_s": 500.0},
                "one_thread": {"peak_gflops": 80.0, "roofline_samples_per_s": 400.0,
                               "mlp_matmuls_samples_per_s": 300.0}}
    results = report.summarize({}, [group], runs, processes, seconds=1.0, roofline=roofline)
    rows = {row["variant"]: row for row in results["rows"]}
    # Ratios are per repetition, then the median and the min-max: to the default baseline
    # 1.5, 1.2, 1.1; to the tuned one 1.25, 0.6, 1.1.
    fit = rows["kexp fit"]
    assert (fit["ratio"], fit["ratio_min"], fit["ratio_max"]) == pytest.approx((1.2, 1.1, 1.5))
    assert (fit["tuned_ratio"], fit["tuned_ratio_min"], fit["tuned_ratio_max"]) == \
        pytest.approx((1.1, 0.6, 1.25))
    assert rows["plain fit, tuned"]["ratio"] == pytest.approx(1.2)
    assert rows["plain fit, tuned"]["tuned_ratio"] == pytest.approx(1.0)
    assert fit["loss_ok"] and not rows["kexp custom/epoch"]["loss_ok"]
    assert rows["kexp custom/epoch"]["reps"] == 1
    assert rows["kexp custom/epoch"]["tuned_ratio"] == pytest.approx(200 / 120)
    assert results["errors"] == ["g / kexp custom/epoch rep 2: exit code 1"]
    targets = {t["target"]: t for t in results["targets"]}
    # Targets use the tuned baseline: 1.1x passes fit's >= 1.0x.
    assert targets["kexp fit vs tuned plain fit, MLP batch 32"]["measured"] == pytest.approx(1.1)
    assert targets["kexp fit vs tuned plain fit, MLP batch 32"]["passed"]
    assert "0.60–1.25" in targets["kexp fit vs tuned plain fit, MLP batch 32"]["detail"]
    custom = targets["kexp custom/epoch vs tuned plain fit, MLP batch 32, same loss"]
    assert not custom["passed"]  # 1.67x, but the loss is off
    # Start-up: the median of the runs, and its ratio to the bare import of typer, yaml and
    # pydantic; 0.35 s is over the 0.3 s target.
    assert targets["kexp --help wall time, median"]["measured"] == 0.25
    assert targets["kexp --help wall time, median"]["passed"]
    assert "2.00x" in targets["kexp --help wall time, median"]["detail"]
    assert not targets["kexp validate wall time, median"]["passed"]
    # The custom loop's one run (200 samples/s) against a roofline of 800: 25% < 30%.
    fraction = targets["kexp custom/epoch, fraction of the matmul roofline, MLP batch 32"]
    assert fraction["measured"] == pytest.approx(0.25) and not fraction["passed"]
    assert fraction["detail"].endswith("500/s (default pools), 300/s (one thread per pool)")
    assert targets["kexp train --smoke vs plain Keras script, wall time"]["passed"]  # 1.25x
    shortcuts = targets["kexp train --smoke vs plain script with kexp's shortcuts, wall time"]
    assert shortcuts["measured"] == pytest.approx(2.0) and not shortcuts["passed"]

    from rich.console import Console

    out = io.StringIO()
    report.print_report(results, Console(file=out, width=250))
    text = out.getvalue()
    assert "kexp custom/epoch" in text and "PASS" in text and "FAIL" in text
    assert "1.10x (0.60–1.25)" in text  # the spread is in the table
    json.dumps(results)  # what latest.json holds


def test_convnet_target_takes_the_best_kexp_loop_against_tuned():
    variants = [Variant("plain fit", "plain", "convnet", 128),
                Variant("plain fit, tuned", "tuned", "convnet", 128),
                Variant("kexp fit", "kexp", "convnet", 128),
                Variant("kexp custom/epoch", "kexp", "convnet", 128, loop="custom")]
    runs = [{**_run("c", name, 0, rate, 0.2, 900), "workload": "convnet", "batch": 128}
            for name, rate in [("plain fit", 80), ("plain fit, tuned", 100), ("kexp fit", 90),
                               ("kexp custom/epoch", 105)]]
    results = report.summarize({}, [Group("c", variants, reps=1)], runs, {}, seconds=1.0)
    target = next(t for t in results["targets"] if "convnet batch 128" in t["target"])
    assert target["measured"] == pytest.approx(1.05) and target["passed"]
    assert target["detail"].startswith("kexp custom/epoch")


def test_a_tiny_benchmark_runs_every_kind_of_variant(tmp_path):
    """Each variant in its own worker process; results come back with timings and losses."""
    from rich.console import Console

    variants = [Variant("plain fit", "plain", "mnist", 32, epochs=2),
                Variant("plain fit, tuned", "tuned", "mnist", 32, epochs=2),
                Variant("kexp custom/epoch", "kexp", "mnist", 32, loop="custom", epochs=2),
                Variant("hand-written epoch fn", "reference", "mnist", 32, epochs=2)]
    convnet = [Variant("plain fit, tuned", "tuned", "convnet", 32, epochs=2),
               Variant("kexp fit", "kexp", "convnet", 32, epochs=2)]
    plan = Plan(mnist_samples=256, ticket_samples=0, convnet_samples=64,
                groups=[Group("tiny", variants, reps=1), Group("conv", convnet, reps=1)],
                processes=False, roofline=False)
    results = run_benchmark(plan, tmp_path, Console(file=io.StringIO()))
    assert results["errors"] == []
    for row in results["rows"]:
        assert row["reps"] == 1
        assert row["samples_per_s"] > 0 and np.isfinite(row["final_loss"])
        assert row["peak_rss_mb"] > 100
    run = next(r for r in results["runs"] if r["variant"] == "kexp custom/epoch")
    assert len(run["epoch_seconds"]) == 1 and len(run["losses"]) == 2
    assert run["samples_per_epoch"] == 256
    # The tuned baseline runs 32 steps per execution; plain fit keeps Keras's default 1.
    by_name = {(r["group"], r["variant"]): r for r in results["runs"]}
    assert by_name[("tiny", "plain fit, tuned")]["steps_per_execution"] == 32
    assert by_name[("tiny", "plain fit")]["steps_per_execution"] == 1
    assert by_name[("conv", "kexp fit")]["samples_per_epoch"] == 64
    # kexp wrote its run directory as a user gets it.
    assert list((tmp_path).glob("**/checkpoints/last.keras"))


def test_roofline_counts_the_mlps_matmul_flops_and_measures_them():
    from bench import roofline

    # Forward x W1 and h W2, weight gradients x^T dh and h^T dy, hidden gradient dy W2^T.
    assert roofline.MLP_FLOPS_PER_SAMPLE == 2 * (784 * 512 + 512 * 10) * 2 + 2 * 512 * 10
    assert roofline.mlp_flops_per_sample(4, 3, 2) == 2 * (2 * 4 * 3 + 3 * 3 * 2)
    figures = roofline.measure(size=128, seconds=0.01)
    assert figures["peak_gflops"] > 0 and figures["mlp_matmuls_samples_per_s"] > 0
    assert figures["roofline_samples_per_s"] == pytest.approx(
        figures["peak_gflops"] * 1e9 / roofline.MLP_FLOPS_PER_SAMPLE)
