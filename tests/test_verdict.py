"""The decision rule: every combination of CI and region, findings inside / outside their range,
controls, the trial cap, and the report's consistency check."""

import itertools

import numpy as np
import pytest

from dlclaims import stats, verdict
from dlclaims.verdict import (
    CONTROL_FAILS,
    CONTROL_HOLDS,
    FINDING_CHANGED,
    INCONCLUSIVE,
    KNOWN_FINDING,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    Region,
    at_least,
    at_most,
    between,
    decide,
    equivalent,
    exactly,
)

# CIs placed against the region [0, 1]: below, touching the lower edge, straddling it, inside,
# straddling the upper edge, above, and straddling both edges.
CASES = {
    (-0.5, -0.1): {"between": NOT_REPRODUCED, "at_least": NOT_REPRODUCED, "at_most": REPRODUCED},
    (-0.2, 0.0): {"between": INCONCLUSIVE, "at_least": INCONCLUSIVE, "at_most": REPRODUCED},
    (-0.2, 0.3): {"between": INCONCLUSIVE, "at_least": INCONCLUSIVE, "at_most": REPRODUCED},
    (0.0, 1.0): {"between": REPRODUCED, "at_least": REPRODUCED, "at_most": REPRODUCED},
    (0.2, 0.8): {"between": REPRODUCED, "at_least": REPRODUCED, "at_most": REPRODUCED},
    (0.7, 1.3): {"between": INCONCLUSIVE, "at_least": REPRODUCED, "at_most": INCONCLUSIVE},
    (1.1, 1.5): {"between": NOT_REPRODUCED, "at_least": REPRODUCED, "at_most": NOT_REPRODUCED},
    (-0.5, 1.5): {"between": INCONCLUSIVE, "at_least": INCONCLUSIVE, "at_most": INCONCLUSIVE},
}
REGIONS = {"between": between(0, 1), "at_least": at_least(0), "at_most": at_most(1)}


@pytest.mark.parametrize("ci,kind", list(itertools.product(CASES, REGIONS)))
def test_every_ci_against_every_region(ci, kind):
    assert decide(ci, REGIONS[kind]) == CASES[ci][kind]


def test_equivalence_is_tost_the_whole_ci_inside_the_margin():
    region = equivalent(0.03)
    assert decide((-0.01, 0.02), region) == REPRODUCED
    assert decide((0.003, 0.0403), region) == INCONCLUSIVE  # excludes 0 and leaves the band: not "≈"
    assert decide((0.007, 0.0317), region) == INCONCLUSIVE  # a CI that merely touches the band
    assert decide((0.031, 0.05), region) == NOT_REPRODUCED
    assert region.text("%") == "within ±3 % of 0 % (whole CI, TOST)"


def test_a_point_value_is_its_own_ci():
    assert decide((3.0, 3.0), exactly(3)) == REPRODUCED
    assert decide((2.0, 2.0), exactly(3)) == NOT_REPRODUCED


def test_one_training_run_is_at_most_inconclusive():
    assert decide((0.2, 0.8), between(0, 1), trials=1) == INCONCLUSIVE
    assert decide((0.2, 0.8), between(0, 1), trials=2) == INCONCLUSIVE  # half the run-to-run variance
    assert decide((0.2, 0.8), between(0, 1), trials=verdict.MIN_TRIALS) == REPRODUCED
    assert decide((1.2, 1.8), between(0, 1), trials=1) == NOT_REPRODUCED  # outside stays outside
    assert decide((0.2, 0.8), between(0, 1), trials=None) == REPRODUCED  # no trained model: sampling only


def test_nan_is_inconclusive_and_reversed_or_empty_inputs_are_errors():
    assert decide((float("nan"), 1.0), at_least(0)) == INCONCLUSIVE
    with pytest.raises(ValueError):
        decide((1.0, 0.0), at_least(0))
    with pytest.raises(ValueError):
        Region()
    with pytest.raises(ValueError):
        between(1, 0)
    with pytest.raises(ValueError):
        Finding(0.5, 0.1, "reversed")


def test_threshold_text_is_generated_from_the_region():
    assert at_least(0.99).text("%") == "≥ 99 %"
    assert at_most(0.05).text() == "≤ 0.05"
    assert between(0, 0.05).text("%") == "in [0 %, 5 %]"
    assert exactly(500).text() == "= 500"


@pytest.mark.parametrize("decided,measured,finding,expected", [
    (REPRODUCED, 0.9, None, ("pass", REPRODUCED)),
    (INCONCLUSIVE, 0.9, None, ("pass", INCONCLUSIVE)),
    (NOT_REPRODUCED, 0.2, None, ("fail", NOT_REPRODUCED)),
    (NOT_REPRODUCED, 0.2, Finding(0.1, 0.3, "r"), ("xfail", KNOWN_FINDING)),
    (NOT_REPRODUCED, 0.1, Finding(0.1, 0.3, "r"), ("xfail", KNOWN_FINDING)),  # edges belong to the range
    (NOT_REPRODUCED, 0.35, Finding(0.1, 0.3, "r"), ("fail", FINDING_CHANGED)),
    (NOT_REPRODUCED, 0.05, Finding(0.1, 0.3, "r"), ("fail", FINDING_CHANGED)),
    (REPRODUCED, 0.9, Finding(0.1, 0.3, "r"), ("pass", REPRODUCED)),  # holds now: the finding is unused
    (INCONCLUSIVE, 0.45, Finding(0.1, 0.3, "r"), ("pass", INCONCLUSIVE)),
])
def test_claim_outcomes_with_and_without_findings(decided, measured, finding, expected):
    outcome = verdict.claim_outcome(decided, measured, finding)
    assert (outcome.action, outcome.verdict) == expected


@pytest.mark.parametrize("decided,expected", [
    (NOT_REPRODUCED, ("pass", CONTROL_FAILS)),
    (INCONCLUSIVE, ("fail", CONTROL_HOLDS)),  # a control must land decisively outside
    (REPRODUCED, ("fail", CONTROL_HOLDS)),
])
def test_a_control_must_be_not_reproduced(decided, expected):
    outcome = verdict.control_outcome(decided)
    assert (outcome.action, outcome.verdict) == expected


def test_check_record_catches_a_verdict_that_disagrees_with_ci_and_region():
    good = {"role": "claim", "verdict": REPRODUCED, "ci": [0.2, 0.3], "region": {"lo": 0.1, "hi": None},
            "trials": 3}
    assert verdict.check_record(good) is None
    assert verdict.check_record(dict(good, verdict=INCONCLUSIVE)) is not None
    assert verdict.check_record(dict(good, trials=1)) is not None  # one run cannot be "reproduced"
    assert verdict.check_record(dict(good, ci=[0.0, 0.05], verdict=KNOWN_FINDING)) is None
    control = {"role": "control", "verdict": CONTROL_FAILS, "ci": [0.0, 0.05], "region": {"lo": 0.1, "hi": None}}
    assert verdict.check_record(control) is None
    assert verdict.check_record(dict(control, ci=[0.05, 0.15])) is not None
    assert verdict.check_record({"role": "record", "verdict": "recorded"}) is None


def test_trials_ci_carries_run_to_run_variance():
    rng = np.random.default_rng(0)
    n = 2000
    steady = (rng.random((3, n)) < 0.7).astype(float)  # three runs of the same accuracy
    scattered = (rng.random((3, n)) < np.array([[0.6], [0.7], [0.8]])).astype(float)  # seeds disagree
    narrow, wide = stats.trials_ci(steady), stats.trials_ci(scattered)
    assert wide.hi - wide.lo > 2 * (narrow.hi - narrow.lo)
    assert narrow.lo <= narrow.value <= narrow.hi and "hierarchical" in narrow.method
    paired = stats.trials_ci(scattered, steady)  # two arms on the same images: the difference
    assert paired.lo <= paired.value <= paired.hi and abs(paired.value - (scattered.mean() - steady.mean())) < 1e-12
    assert stats.trial_count(scattered, steady[:1]) == 1
    with pytest.raises(ValueError):
        stats.trials_ci(steady, steady[:, :10])


def test_counts_and_finalize_add_an_error_record_for_an_unexplained_failure():
    recs = [{"test": "t", "role": "claim", "verdict": REPRODUCED, "action": "pass", "device": "cpu",
             "scale": "smoke"}]
    final = verdict.finalize([("t", recs)], {"t": {"outcome": "failed", "reason": "boom", "seconds": 1.0}})
    assert [r["verdict"] for r in final] == [REPRODUCED, verdict.ERROR]
    assert verdict.counts(final) == {REPRODUCED: 1, verdict.ERROR: 1}


def test_the_baseline_failure_statuses_are_the_baseline_modules():
    from dlclaims import baselines

    assert set(verdict.BASELINE_FAILURES) == {baselines.MISMATCH, baselines.MISSING}


@pytest.mark.parametrize("n_test", [500, 1000, 2000, 10000])
def test_one_test_image_edge_separates_no_change_from_every_one_image_change(n_test):
    edge = verdict.one_test_image(n_test)
    k = np.arange(1, n_test + 1)
    one_image = k / n_test - (k - 1) / n_test  # as accuracies subtract: some fall just below 1 / n_test
    assert (one_image > edge).all() and 0.0 < edge
    assert verdict.at_least(edge).contains(float(one_image.min())) and not verdict.at_least(edge).contains(0.0)
    assert verdict.decide((float(one_image.min()), 0.1), verdict.at_least(edge)) == verdict.decide(
        (0.05, 0.1), verdict.at_least(edge))  # a CI ending at one image is as inside as any above it
