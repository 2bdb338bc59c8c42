"""Code-path fingerprints and per-nature tolerances of the regression baselines (dlclaims.baselines)."""

import json

import numpy as np
import pytest

from dlclaims import baselines
from dlclaims.baselines import binomial, conditioned, exact, spread, trajectory

HERE = {"cpu_model": "AMD EPYC", "blas": "mkl", "env MKL_CBWR": "unset"}
ELSEWHERE = {**HERE, "env MKL_CBWR": "COMPATIBLE"}


def numbers(accuracy=0.5, weights=2050, error=5.0e-8, loss=(2.3, 1.1)):
    return {
        "accuracy": binomial(accuracy, 10_000, "test accuracy"),
        "weights": exact(weights, "a parameter count"),
        "error": conditioned(error, 1e9, "a residual"),
        "loss": trajectory(list(loss), "a loss curve"),
    }


def make_check(tmp_path, fingerprint, **kw) -> baselines.BaselineCheck:
    kw.setdefault("deterministic", True)
    return baselines.BaselineCheck(path=tmp_path / "test_x" / "test_numbers.npz", device_type="cpu",
                                   fingerprint=lambda: fingerprint, **kw)


def run(tmp_path, fingerprint, values, **kw) -> baselines.Outcome:
    check = make_check(tmp_path, fingerprint, **kw)
    check.check(values)
    return check.run()


@pytest.fixture
def written(tmp_path):
    outcome = run(tmp_path, HERE, numbers())
    assert outcome.status == baselines.WRITTEN and outcome.ok
    stored = json.loads((tmp_path / "test_x" / "test_numbers.fingerprint.json").read_text())
    assert stored["fingerprint"] == HERE and stored["numbers"]["weights"].startswith("exact: a parameter count")
    return tmp_path


def test_same_fingerprint_compares_exactly(written):
    outcome = run(written, HERE, numbers())
    assert outcome.status == baselines.MATCH_EXACT and outcome.why == "same code path"
    assert outcome.counts == {"exact": 1 + 1 + 1 + 2}  # every number, whatever its nature
    one_ulp = np.nextafter(0.5, 1.0)
    failed = run(written, HERE, numbers(accuracy=one_ulp))
    assert failed.status == baselines.MISMATCH and "accuracy" in failed.message()
    assert run(written, HERE, numbers(loss=(2.3, 1.1000001))).status == baselines.MISMATCH


def test_different_fingerprint_compares_by_nature(written):
    moved = numbers(accuracy=0.5 + 0.02, error=7.0e-8, loss=(2.4, 0.9))  # another draw; the trajectory diverged
    outcome = run(written, ELSEWHERE, moved)
    assert outcome.status == baselines.MATCH_TOLERANT, outcome.message()
    assert "env MKL_CBWR: unset → COMPATIBLE" in outcome.why
    assert outcome.counts == {"binomial": 1, "exact": 1, "conditioned": 1, "trajectory (not compared)": 2}
    assert outcome.closest.startswith("accuracy (binomial)")


@pytest.mark.parametrize("wrong", [
    {"accuracy": 0.5 + 0.05},  # 5 points on 10,000 images: 7 binomial SEs of a difference
    {"accuracy": 0.5 - 0.05},
    {"weights": 2051},  # a count is exact everywhere
    {"error": 1e-3},  # beyond 10·κ·ε = 2.2e-6
])
def test_a_wrong_number_beyond_its_tolerance_fails_on_either_code_path(written, wrong):
    for fingerprint in (HERE, ELSEWHERE):
        outcome = run(written, fingerprint, numbers(**wrong))
        assert outcome.status == baselines.MISMATCH and not outcome.ok
        assert next(iter(wrong)) in outcome.message()


def test_binomial_tolerance_follows_the_standard_error():
    allowed = binomial(0.5, 10_000, "").allowed_deviation(np.array([0.5]))
    assert allowed[0] == pytest.approx(4 * np.sqrt(2) * 0.005, rel=1e-3)
    # at 100 % a retrained model may still leave a few of 1000 training images unfitted
    assert 0.002 < binomial(1.0, 1000, "").allowed_deviation(np.array([1.0]))[0] < 0.01


def test_spread_and_conditioned_tolerances_broadcast_per_element():
    sd = spread([[10, 12, 11], [40, 52, 47]], [[1.0], [5.0]], "epochs")
    allowed = sd.allowed_deviation(np.zeros((2, 3)))
    assert allowed.shape == (2, 3) and allowed[1, 0] == pytest.approx(5 * allowed[0, 0])
    c = conditioned([1.0, 2.0], [1e3, 1e6], "risks", scale=0.5)
    assert c.allowed_deviation(np.array([1.0, 2.0]))[1] == pytest.approx(10 * 1e6 * 2 * np.finfo(float).eps)


def test_non_deterministic_device_is_tolerant_even_on_its_own_fingerprint(written):
    outcome = run(written, HERE, numbers(accuracy=0.51), deterministic=False)
    assert outcome.status == baselines.MATCH_TOLERANT and "not deterministic" in outcome.why


def test_keys_must_match_in_both_directions(written):
    extra = {**numbers(), "new": exact(1, "a count")}
    assert "new in this run (not in the baseline): new" in run(written, ELSEWHERE, extra).message()
    fewer = numbers()
    del fewer["loss"]
    assert "missing from this run (in the baseline): loss" in run(written, ELSEWHERE, fewer).message()


def test_missing_baseline_is_written_or_an_error_where_committed_ones_are_required(tmp_path):
    missing = run(tmp_path, HERE, numbers(), missing_is_error=True)
    assert missing.status == baselines.MISSING and not missing.ok
    assert not (tmp_path / "test_x" / "test_numbers.npz").exists()
    assert run(tmp_path, HERE, numbers()).status == baselines.WRITTEN


def test_regeneration_rewrites_and_keeps_how_the_old_one_compared(written):
    outcome = run(written, ELSEWHERE, numbers(accuracy=0.9), regenerate=True)
    assert outcome.status == baselines.WRITTEN and "BASELINE MISMATCH" in outcome.previous
    assert run(written, ELSEWHERE, numbers(accuracy=0.9)).status == baselines.MATCH_EXACT


def test_other_seed_offsets_are_not_compared(tmp_path):
    assert run(tmp_path, HERE, numbers(), compare_enabled=False) is None
    assert not (tmp_path / "test_x").exists()


def test_undeclared_numbers_are_refused(tmp_path):
    check = make_check(tmp_path, HERE)
    with pytest.raises(TypeError, match="declare the nature of accuracy"):
        check.check({"accuracy": 0.5})


def test_fingerprint_names_the_code_path(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    fp = baselines.fingerprint("cpu")
    for key in ("torch", "blas", "lapack", "cpu_model", "aten_cpu_capability", "threads", "env ONEDNN_MAX_CPU_ISA"):
        assert key in fp
    assert fp["env MKL_CBWR"] == "COMPATIBLE"
    monkeypatch.delenv("MKL_CBWR")
    assert baselines.fingerprint_differences(fp, baselines.fingerprint("cpu")) == ["env MKL_CBWR: COMPATIBLE → unset"]
    assert baselines.fingerprint_differences(None, fp) == ["no fingerprint stored with the baseline"]


def test_summary_counts_exact_and_tolerant_baselines_and_says_why():
    outcomes = [baselines.Outcome("a", baselines.MATCH_EXACT, "same code path", {"exact": 3}).as_dict(),
                baselines.Outcome("b", baselines.MATCH_TOLERANT, "code path differs: env MKL_CBWR: unset → COMPATIBLE",
                                  {"binomial": 4, "trajectory (not compared)": 2}).as_dict(),
                baselines.Outcome("c", baselines.WRITTEN, "first run on cuda", {"binomial": 1}).as_dict()]
    line = baselines.summary(outcomes)
    assert line.startswith("baselines: 1 compared exactly (same code path), 1 within tolerance "
                           "(code path differs in env MKL_CBWR), 1 written")
    assert "numbers: 4 binomial, 3 exact, 2 trajectory (not compared)" in line
