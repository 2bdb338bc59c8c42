"""The dlclaims pytest plugin, driven through pytester: options, device skips, data errors,
report merging under xdist, baselines."""

import json
import os

import numpy as np
import pytest
import torch

from dlclaims import runtime

pytest_plugins = ["pytester"]

MARKERS = """
[pytest]
markers =
    gpu: cuda variant
    tpu: xla variant
"""

CLAIMS = """
import pytest
import torch
from dlclaims import stats
from dlclaims.verdict import equivalent, exactly

SOURCE = "synthetic coin flips"
PROTOCOL = {"smoke": {"flips": 300}, "full": {"flips": 3000}}

@pytest.mark.parametrize("p", [0.3, 0.7])
def test_coin(p, device, protocol, seed, claim):
    heads = stats.accuracy(torch.rand(protocol["flips"]) < p)
    claim.check(f"coin {p} lands heads at its rate", heads, equivalent(0.12, p), paper=p, unit="%")
    claim.control(f"coin {p} lands heads always", heads, exactly(1.0), unit="%")
    claim.record("seed", float(seed))

def test_without_device(claim):
    claim.record("a number", 42.0)
"""


@pytest.fixture
def project(pytester, monkeypatch):
    """A pytester folder set up like the project: the plugin loaded by a conftest, markers registered.

    In-process runs see this process's environment: they must not take themselves for an xdist
    worker of the outer run, and the GPU pin they apply is undone afterwards.
    """
    for name in ("PYTEST_XDIST_WORKER", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # records the original for the undo ...
        monkeypatch.delenv(name)  # ... which also holds for a variable that was unset
    pytester.makeconftest('pytest_plugins = ["dlclaims.pytest_plugin"]')
    pytester.makeini(MARKERS)
    return pytester


def run(pytester, *args):
    """runpytest in-process (the plugin keeps its state per config, so nesting is safe)."""
    return pytester.runpytest_inprocess(*args)


def test_bogus_scale_is_a_usage_error_listing_the_scales(project):
    result = run(project, "--scale=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--scale*invalid choice*'bogus'*smoke*full*"])


@pytest.mark.parametrize("marker,reason", [("gpu", "cuda variant: no CUDA device"),
                                           ("tpu", "xla variant: torch_xla is not installed")])
def test_accelerator_selection_without_the_accelerator_skips_everything_with_the_reason(
        project, monkeypatch, marker, reason):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without GPUs
    if marker == "tpu" and runtime.unavailable_reason("xla") is None:
        pytest.skip("torch_xla is installed here: the xla variants would run")
    project.makepyfile(test_claims=CLAIMS)
    result = run(project, "-m", marker, "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=2, deselected=5)
    result.stdout.fnmatch_lines([f"*{reason}*"])


DATA_TEST = """
from dlclaims import data

def test_load_mnist():
    data.load("mnist")
"""


def test_missing_data_folder_skips_naming_the_variable(project, monkeypatch):
    monkeypatch.setenv("DLCLAIMS_DATA", "/nonexistent")
    project.makepyfile(test_inner_data_load=DATA_TEST)
    result = run(project, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*data unavailable: DLCLAIMS_DATA=/nonexistent is not a directory*"])
    assert run(project, "--require-data").ret == pytest.ExitCode.TESTS_FAILED


def test_truncated_npz_is_an_error_naming_the_file(project, monkeypatch, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "mnist.npz"
    np.savez(path, x_train=np.zeros((60, 28, 28), np.uint8), y_train=np.zeros(60, np.int64),
             x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.zeros(10, np.int64))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    monkeypatch.setenv("DLCLAIMS_DATA", str(folder))
    project.makepyfile(test_inner_data_load=DATA_TEST)
    result = run(project)
    result.assert_outcomes(failed=1)  # a damaged file is never a skip
    result.stdout.fnmatch_lines([f"*DataCorrupt: {path} is unreadable*truncated or damaged*"])


def comparable_records(report_dir) -> list[dict]:
    records = json.loads((report_dir / "claims.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


PINNING = """
import os
from pathlib import Path

import pytest

@pytest.mark.parametrize("case", range(4))
def test_pinned_gpu(case):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "serial")
    Path(os.environ["PINNED_OUT"], f"{worker}-{case}").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
"""


def test_two_workers_merge_into_the_serial_report_and_get_one_gpu_each(project, monkeypatch, tmp_path):
    project.makepyfile(test_claims=CLAIMS, test_pinning=PINNING)
    monkeypatch.setenv(runtime.GPU_COUNT_ENV, "2")  # a fake 2-GPU machine: only the pinning sees it
    monkeypatch.setenv("PINNED_OUT", str(tmp_path))
    serial = run(project, "--report-dir", "serial")
    parallel = run(project, "-n", "2", "--report-dir", "parallel")
    for result in (serial, parallel):
        result.assert_outcomes(passed=3 + 4, skipped=4)
    records = comparable_records(project.path / "serial")
    assert len(records) == 2 * 3 + 1
    assert comparable_records(project.path / "parallel") == records

    pinned = {p.name.split("-")[0]: p.read_text() for p in tmp_path.iterdir()}
    assert pinned.pop("serial") == "unset"  # outside xdist nothing is pinned
    assert pinned and all(gpu == worker[2:] for worker, gpu in pinned.items())  # gw<i> → GPU i


BASELINE_TEST = """
import os

import pytest

from dlclaims.baselines import binomial, exact
from dlclaims.verdict import at_least

def test_numbers(baseline, claim):
    accuracy = 0.75 + float(os.environ.get("SHIFT", "0"))
    values = {"accuracy": binomial(accuracy, 10_000, "test accuracy"), "sizes": exact([3, 2, 1], "sizes")}
    if os.environ.get("ADD_KEY"):
        values["epochs"] = exact(7, "a count")
    if os.environ.get("DROP_KEY"):
        del values["sizes"]
    baseline.check(values)
    claim.check("accuracy ≥ 70 %", accuracy, at_least(float(os.environ.get("CLAIM_MIN", "0.7"))))
    if os.environ.get("XFAIL"):
        pytest.xfail("a claim that is expected to fail")
"""


def baseline_records(project) -> list[dict]:
    records = json.loads((project.path / "reports" / "claims.json").read_text())["records"]
    return [r for r in records if r["role"] == "baseline"]


def test_baselines_are_written_then_compared_and_keys_must_match_in_both_directions(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    project.makepyfile(test_baseline=BASELINE_TEST)
    created = run(project)
    created.assert_outcomes(passed=1)  # the first run writes the file and its fingerprint, and says so
    created.stdout.fnmatch_lines(["*baselines: 0 compared exactly*1 written*"])
    folder = project.path / "baselines/smoke/cpu/test_baseline"
    assert (folder / "test_numbers.npz").is_file() and (folder / "test_numbers.fingerprint.json").is_file()
    exact = run(project)
    exact.assert_outcomes(passed=1)
    exact.stdout.fnmatch_lines(["*baselines: 1 compared exactly (same code path), 0 within tolerance*"])

    monkeypatch.setenv("ADD_KEY", "1")  # the test records a key the baseline lacks
    added = run(project)
    added.assert_outcomes(failed=1)
    added.stdout.fnmatch_lines(["*new in this run (not in the baseline): epochs*"])

    monkeypatch.delenv("ADD_KEY")
    monkeypatch.setenv("DROP_KEY", "1")  # the baseline holds a key the test no longer records
    dropped = run(project)
    dropped.assert_outcomes(failed=1)
    dropped.stdout.fnmatch_lines(["*missing from this run (in the baseline): sizes*"])

    run(project, "--regen-baselines").assert_outcomes(passed=1)  # regenerating is explicit ...
    run(project).assert_outcomes(passed=1)  # ... and then the new keys are the baseline


def test_another_code_path_compares_by_tolerance_and_a_wrong_number_still_fails(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MKL_CBWR", raising=False)
    project.makepyfile(test_baseline=BASELINE_TEST)
    run(project).assert_outcomes(passed=1)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # part of the fingerprint: another BLAS code path
    monkeypatch.setenv("SHIFT", "0.01")  # one binomial-scale point: another draw of a trained model
    tolerant = run(project)
    tolerant.assert_outcomes(passed=1)
    tolerant.stdout.fnmatch_lines(["*0 compared exactly (same code path), 1 within tolerance*env MKL_CBWR)*"])
    for cbwr in ("COMPATIBLE", ""):  # 5 points on 10,000 images fails on either code path
        monkeypatch.setenv("MKL_CBWR", cbwr) if cbwr else monkeypatch.delenv("MKL_CBWR")
        monkeypatch.setenv("SHIFT", "0.05")
        wrong = run(project)
        wrong.assert_outcomes(failed=1)
        wrong.stdout.fnmatch_lines(["*BASELINE MISMATCH: test_baseline/test_numbers.npz*",
                                    "*accuracy (test accuracy*1/1 differ*"])


def test_a_baseline_mismatch_never_hides_a_claim(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    project.makepyfile(test_baseline=BASELINE_TEST)
    run(project).assert_outcomes(passed=1)
    monkeypatch.setenv("SHIFT", "-0.10")  # both the claim (≥ 70 %) and the baseline fail
    monkeypatch.setenv("CLAIM_MIN", "0.7")
    both = run(project)
    both.assert_outcomes(failed=1)
    both.stdout.fnmatch_lines(["*NOT REPRODUCED: accuracy ≥ 70 %*"])  # the claim's failure is the test's
    records = json.loads((project.path / "reports" / "claims.json").read_text())["records"]
    assert [r["verdict"] for r in records] == ["not reproduced", "BASELINE MISMATCH"]  # ... both reported

    monkeypatch.setenv("CLAIM_MIN", "0.5")  # the claim holds, the baseline does not: fails after the claim
    after = run(project)
    after.assert_outcomes(failed=1)
    records = json.loads((project.path / "reports" / "claims.json").read_text())["records"]
    assert [r["verdict"] for r in records] == ["reproduced", "BASELINE MISMATCH"]

    monkeypatch.setenv("XFAIL", "1")  # an xfail covers its claim, never a baseline mismatch
    covered = run(project)
    covered.assert_outcomes(failed=1)
    covered.stdout.fnmatch_lines(["*xfail covers its claim, not this baseline mismatch*"])


def test_ci_requires_committed_cpu_baselines(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_baseline=BASELINE_TEST)
    missing = run(project)
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*BASELINE MISSING*no baseline for cpu is committed*"])


FINDINGS = """
import os

from dlclaims.verdict import Finding, at_least, exactly

def test_claims(claim):
    claim.check("holds", 1.0, exactly(1.0))
    claim.check("fails here", float(os.environ["VALUE"]), at_least(0.5),
                finding=Finding(0.1, 0.3, "measured 0.1-0.3 over seed offsets 0-4"))
    if os.environ.get("LATER_FAILS"):
        claim.check("still asserted", 0.0, exactly(1.0))
    claim.check("straddles", stats_estimate(), at_least(0.5))

def stats_estimate():
    from dlclaims.stats import Estimate
    return Estimate(0.5, 0.45, 0.55, 100, "test")
"""


def test_a_finding_xfails_inside_its_range_and_fails_outside_after_every_other_check(project, monkeypatch):
    project.makepyfile(test_finding=FINDINGS)
    monkeypatch.setenv("VALUE", "0.2")
    monkeypatch.setenv("LATER_FAILS", "1")
    result = run(project, "-p", "no:cacheprovider", "-rx")
    result.assert_outcomes(failed=1)  # the later failure is not masked by the finding ...
    result.stdout.fnmatch_lines(["*NOT REPRODUCED: still asserted*"])
    verdicts = [r["verdict"] for r in json.loads((project.path / "reports" / "claims.json").read_text())["records"]]
    assert verdicts == ["reproduced", "not reproduced (known finding)", "not reproduced", "inconclusive"]  # ... nor
    # does a failing check stop the ones after it

    monkeypatch.delenv("LATER_FAILS")
    result = run(project, "-p", "no:cacheprovider", "-rx")
    result.assert_outcomes(xfailed=1)  # inside its registered range: a known finding
    result.stdout.fnmatch_lines(["*fails here: measured 0.2*known finding: measured 0.1-0.3 over seed offsets*"])
    report = (project.path / "reports" / "claims.md").read_text()
    assert "not reproduced (known finding): registered range [0.1, 0.3]" in report
    assert "| inconclusive |" in report and "| reproduced |" in report
    result.stdout.fnmatch_lines(["*1 reproduced, 1 inconclusive, 1 not reproduced (known finding)*"])

    monkeypatch.setenv("VALUE", "0.4")  # not reproduced, but outside the finding's range: someone must look
    result = run(project, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NOT REPRODUCED (FINDING LEFT ITS RANGE): fails here*registered finding's range*"])

    monkeypatch.setenv("VALUE", "0.7")  # the claim now holds: reproduced, the finding is not used
    run(project, "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_control_that_is_not_decisively_outside_fails_the_test(project):
    project.makepyfile(test_control='''
        from dlclaims.stats import Estimate
        from dlclaims.verdict import at_least

        def test_control(claim):
            claim.control("straddles the region", Estimate(0.5, 0.4, 0.6, 100, "test"), at_least(0.55))
    ''')
    result = run(project, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CONTROL DID NOT FAIL DECISIVELY: straddles the region*inconclusive*"])


def test_every_record_of_a_run_agrees_with_its_ci_and_region(project):
    project.makepyfile(test_claims=CLAIMS, test_finding=FINDINGS)
    os.environ["VALUE"] = "0.2"
    try:
        run(project, "-p", "no:cacheprovider")
    finally:
        del os.environ["VALUE"]
    from dlclaims import verdict

    records = json.loads((project.path / "reports" / "claims.json").read_text())["records"]
    decided = [r for r in records if r["role"] in ("claim", "control")]
    assert decided and all(verdict.check_record(r) is None for r in decided)
    for r in decided:
        assert set(r) >= {"verdict", "measured", "ci", "region", "ci_method", "trials"}
