"""The time plan of GPU runs (dlclaims.plan and the plugin's --plan, --budget, --tier, --progress,
--timeout-factor), driven through pytester with claim-like modules that declare a COST table."""

from __future__ import annotations

import os
import time

import pytest

from dlclaims import plan, pytest_plugin

pytest_plugins = ["pytester"]

MARKERS = """
[pytest]
markers =
    gpu: cuda variant
    tpu: xla variant
"""

# Stand-ins for claim modules: "cuda" variants without the device fixture (which would skip them
# here), so that their bodies run; costs in GPU-seconds.
HEAVY = """
import os, time
import pytest

COST = {
    "test_train": {"smoke": {"gpu_s": 30, "peak_gib": 2, "measured_on": "NVIDIA H100 80GB HBM3"},
                   "full": {"gpu_s": 3000, "peak_gib": 12}},
    "test_grid[big]": {"full": {"gpu_s": 5000, "peak_gib": 70}},
    "test_grid": {"full": {"gpu_s": 600, "peak_gib": 4}},
    "test_paper_row": {"smoke": {"gpu_s": 86400, "peak_gib": 20, "tier": "paper"},
                       "full": {"gpu_s": 5e6, "peak_gib": 90, "tier": "paper"}},
}

@pytest.mark.parametrize("where", ["cpu", "cuda"])
def test_train(where):
    time.sleep(float(os.environ.get("SLEEP", "0")))

@pytest.mark.parametrize("where", ["cuda"])
@pytest.mark.parametrize("size", ["big", "small"])
def test_grid(size, where):
    pass

@pytest.mark.parametrize("where", ["cuda"])
def test_paper_row(where):
    pass

@pytest.mark.parametrize("where", ["cuda"])
def test_without_cost(where):
    pass
"""


@pytest.fixture
def project(pytester, monkeypatch):
    for name in ("PYTEST_XDIST_WORKER", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    pytester.makeconftest('pytest_plugins = ["dlclaims.pytest_plugin"]')
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_heavy=HEAVY)
    return pytester


def run(pytester, *args):
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def esc(pattern: str) -> str:
    """Square brackets taken literally by fnmatch_lines (test ids carry them)."""
    return "".join({"[": "[[]", "]": "[]]"}.get(c, c) for c in pattern)


# ---------------------------------------------------------------- pieces


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45),
                                          ("7200", 7200), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert plan.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "two hours", "5x"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        plan.parse_duration(text)


def test_node_ids_and_lookup():
    assert plan.split_nodeid("claims/t.py::test_y[50k-cuda]") == ("claims/t.py", "test_y", ["50k", "cuda"])
    assert plan.device_of("claims/t.py::test_y[cuda-cifar10-500-8px]") == "cuda"
    assert plan.key_params("claims/t.py::test_y[cuda-cifar10-500-8px]") == "cifar10-500-8px"
    assert plan.device_of("claims/t.py::test_y") is None
    table = {"test_y[GAP]": {"full": {"gpu_s": 9, "tier": "paper"}}, "test_y": {"full": {"gpu_s": 1}}}
    assert plan.lookup(table, "c.py::test_y[cuda-GAP]", "full") == plan.Cost(9.0, 0.0, "estimate", "paper")
    assert plan.lookup(table, "c.py::test_y[cuda-V]", "full").gpu_s == 1
    assert plan.lookup(table, "c.py::test_y[cuda-V]", "smoke") is None
    with pytest.raises(ValueError, match="tier must be one of"):
        plan.lookup({"test_y": {"full": {"gpu_s": 1, "tier": "weekly"}}}, "c.py::test_y[cuda]", "full")
    with pytest.raises(ValueError, match="needs gpu_s"):
        plan.lookup({"test_y": {"full": {"seconds": 1}}}, "c.py::test_y[cuda]", "full")


def test_wall_time_is_list_scheduling_over_the_workers():
    assert plan.makespan([3, 3, 3, 3], 4) == 3
    assert plan.makespan([1, 1, 1, 1, 4], 4) == 5  # collection order: the long one comes last
    assert plan.makespan([4, 1, 1, 1, 1], 4) == 4
    assert plan.makespan([], 4) == 0 and plan.makespan([5], 0) == 5


def test_deadline_interrupts_a_test_that_runs_past_its_limit():
    with pytest.raises(plan.TestTimeout, match=r"exceeded its time limit of 0:00:00 \(estimate 0:00:00\)"):
        with plan.deadline(0.2, "t::x[cuda]", plan.Cost(0.1, 0)):
            time.sleep(5)
    with plan.deadline(None):
        time.sleep(0.01)
    assert plan.timeout_for(plan.Cost(100, 1), 3.0) == 3 * 100 + plan.TIMEOUT_MARGIN_S
    assert plan.timeout_for(plan.Cost(100, 1), 0) is None and plan.timeout_for(None, 3.0) is None


# ---------------------------------------------------------------- through pytest


def test_plan_prints_estimates_and_wall_time_without_running(project):
    result = run(project, "--scale=full", "--plan", "-n", "2", "-m", "not nothing")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert "dlclaims plan: --scale=full, tier nightly, 2 worker(s) with one GPU each, budget 2:00:00" in out
    result.stdout.fnmatch_lines([esc(line) for line in [
        "*1:23:20*70.0*estimate*test_heavy.py::test_grid[big-cuda]*",
        "*0:50:00*12.0*estimate*test_heavy.py::test_train[cuda]*",
        "*0:10:00*4.0*test_heavy.py::test_grid[small-cuda]*",
        "*?*(no COST entry)*test_heavy.py::test_without_cost[cuda]*",
        # 3000 + 5000 + 600 s in collection order on 2 workers: 3000 → w1, 5000 → w2, 600 → w1
        "*total 2:23:20 GPU time over 2 worker(s): wall ≈ 1:23:20 in collection order*within budget*",
        "*1 test(s) without a declared cost*",
        "paper tier (deselected here; --tier=paper runs it): 57d 20:53:20 GPU time*",
        "*57d 20:53:20*90.0*test_heavy.py::test_paper_row[cuda]*",
    ]])
    assert "passed" not in out and "(over 80 GiB)" in out  # the paper row's 90 GiB is flagged


def test_a_run_over_the_budget_is_a_usage_error_naming_the_longest_tests(project):
    result = run(project, "--scale=full", "--budget", "1h")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([esc("*planned wall time 2:23:20 on 1 worker(s) exceeds --budget 1:00:00*"
                                     "Longest tests: test_heavy.py::test_grid[big-cuda] (1:23:20), "
                                     "test_heavy.py::test_train[cuda] (0:50:00)*")])
    assert run(project, "--scale=full", "--budget", "1h", "--plan").ret == pytest.ExitCode.USAGE_ERROR


def test_the_paper_tier_is_left_out_unless_asked_for(project):
    nightly = run(project, "--scale=full", "--budget", "3h", "-v")
    nightly.assert_outcomes(passed=5)  # cpu + cuda train, two grid sizes, the test without a cost
    assert "test_paper_row" not in nightly.stdout.str().split("passed")[0].split("collected")[1]
    paper = run(project, "--scale=full", "--tier=paper", "--budget", "2000h", "-v")
    paper.assert_outcomes(passed=2)  # the paper row, and the CPU variant (tiers are for CUDA tests)
    paper.stdout.fnmatch_lines([esc("*test_paper_row[cuda] PASSED*")])
    # at smoke scale too: the paper row's smoke protocol is a GPU-day
    run(project, "--scale=smoke").assert_outcomes(passed=5)


def test_smoke_runs_on_cpu_ci_are_not_planned(project, monkeypatch):
    """Without --plan/--budget/--progress and below full scale no plan is made nor refused, and the
    xdist controller imports no test module (the costs on the items serve tiers and time limits)."""
    monkeypatch.setattr(plan.Plan, "over_budget", property(lambda self: pytest.fail("planned")))
    monkeypatch.setattr(plan, "entries_for_nodeids", lambda *a, **k: pytest.fail("controller imported modules"))
    run(project).assert_outcomes(passed=5)


def test_an_unplanned_xdist_controller_imports_nothing(pytestconfig, monkeypatch):
    plugin = pytest_plugin.PlanPlugin(pytestconfig)
    if plugin.active:
        pytest.skip("this run is itself planned (--scale=full, --plan, --progress or --budget)")
    monkeypatch.setattr(plan, "entries_for_nodeids", lambda *a, **k: pytest.fail("controller imported modules"))
    plugin.pytest_xdist_node_collection_finished(node=None, ids=["claims/test_x.py::test_y[cuda]"])
    assert not plugin.checked


def test_under_xdist_the_controller_refuses_from_the_workers_collection(project):
    result = run(project, "--scale=full", "-n", "2", "--budget", "1h")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*planned wall time 1:23:20 on 2 worker(s) exceeds --budget 1:00:00*"])


def test_progress_lines_under_xdist(project):
    result = run(project, "--scale=full", "-n", "2", "--progress", "--budget", "3h")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([esc("*[dlclaims] *start test_heavy.py::test_grid[big-cuda] (estimate 1:23:20)*"),
                                 esc("*[dlclaims] *passed test_heavy.py::test_grid[big-cuda] in 0:00:00 "
                                     "(estimate 1:23:20)*finished*of estimated wall left*")])
    assert "test_train[cpu]" not in "".join(line for line in result.outlines if "[dlclaims]" in line)


def test_a_cuda_test_past_its_time_limit_fails_naming_the_limit(project, monkeypatch):
    monkeypatch.setattr(plan, "TIMEOUT_MARGIN_S", 0)
    monkeypatch.setenv("SLEEP", "3")
    result = run(project, "--scale=smoke", "--timeout-factor", "0.01", "-k", "test_train")
    result.assert_outcomes(passed=1, failed=1)  # cpu: no limit; cuda: 0.01 × 30 s
    result.stdout.fnmatch_lines([esc("*TestTimeout: test_heavy.py::test_train[cuda] exceeded its time limit of "
                                     "0:00:00 (estimate 0:00:30)*")])


def test_the_repositorys_nightly_plan_fits_two_hours_on_four_gpus_and_prints_the_paper_tier():
    """The acceptance line of the GPU issue, on this repository's COST tables (collection only)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pytest", "claims", "-m", "gpu", "-n", "4", "--scale=full",
                             "--plan", "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "within budget" in result.stdout and "(no COST entry)" not in result.stdout
    assert "paper tier (deselected here; --tier=paper runs it)" in result.stdout
