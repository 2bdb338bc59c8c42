"""The one decision rule: a claim is a region for a measured quantity; its verdict comes from the
measurement's confidence interval and that region only.

    reproduced      the whole CI lies inside the region
    not reproduced  the whole CI lies outside it
    inconclusive    the CI straddles an edge

A control must be *not reproduced* (decisively outside). Equivalence claims ("within ±m of c")
are TOST-style: reproduced only when the whole CI lies inside [c − m, c + m]. A number computed
without sampling (a rank, a parameter count, a residual of a deterministic solve) has the
degenerate CI [v, v]. A trained-model quantity measured from a single training run cannot show
run-to-run variance, and one from two runs only half of it (a bootstrap over T trials keeps a
(T − 1)/T share of their variance), so either is at most inconclusive (`MIN_TRIALS`).

A claim that does not reproduce fails, unless it carries a registered `Finding`: the range its
measured value took at seed offsets 0–4 and the reason. The run then ends as xfail while the
value stays inside that range, and fails when it leaves it (the finding changed; someone must look).

Pure functions over plain values: the pytest plugin and the report call them, nothing here
knows about pytest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
KNOWN_FINDING = "not reproduced (known finding)"
FINDING_CHANGED = "not reproduced (finding left its range)"
CONTROL_FAILS = "control fails as required"
CONTROL_HOLDS = "control does not fail decisively (test cannot fail)"
RECORDED = "recorded"
ERROR = "error"

BASELINE_FAILURES = ("BASELINE MISMATCH", "BASELINE MISSING")  # dlclaims.baselines' failing statuses

# A CI of a trained model needs at least this many independent training runs to be "reproduced"
# (the project's rule: several trials; with 2 a trials bootstrap keeps half the run-to-run variance).
MIN_TRIALS = 3


def _fmt(x: float, unit: str) -> str:
    if unit == "%":
        return f"{100 * x:.4g} %"
    return f"{x:.4g}"


@dataclass(frozen=True)
class Region:
    """Where the measured quantity must lie: [lo, hi] with None for an open side.

    `kind` only words the threshold text ("at least", "at most", "between", "within ±m of c");
    the decision uses lo and hi alone.
    """

    lo: float | None = None
    hi: float | None = None
    kind: str = "between"

    def __post_init__(self):
        if self.lo is None and self.hi is None:
            raise ValueError("a region needs at least one edge")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"empty region [{self.lo}, {self.hi}]")

    def contains(self, x: float) -> bool:
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)

    def text(self, unit: str = "") -> str:
        """The threshold as the report prints it, generated from the edges (no second prose copy)."""
        if self.kind == "equivalent":
            centre, margin = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
            return f"within ±{_fmt(margin, unit)} of {_fmt(centre, unit)} (whole CI, TOST)"
        if self.hi is None:
            return f"≥ {_fmt(self.lo, unit)}"
        if self.lo is None:
            return f"≤ {_fmt(self.hi, unit)}"
        if self.lo == self.hi:
            return f"= {_fmt(self.lo, unit)}"
        return f"in [{_fmt(self.lo, unit)}, {_fmt(self.hi, unit)}]"

    def as_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi}


def at_least(x: float) -> Region:
    return Region(lo=float(x), kind="at least")


def at_most(x: float) -> Region:
    return Region(hi=float(x), kind="at most")


def one_test_image(n_test: int) -> float:
    """The edge of a "non-zero change" in an accuracy over n_test images, placed at half an image.

    Accuracies and their paired differences move in steps of 1/n_test, so every change of at least
    one image lies above 0.5/n_test and "no change" (0) below it. An edge of exactly 1/n_test would sit
    on that grid, where float rounding (k/n − (k−1)/n falls just below 1/n for some k) or a quantile's
    interpolation decides the verdict of a CI ending at one image.
    """
    return 0.5 / n_test


def between(lo: float, hi: float) -> Region:
    return Region(lo=float(lo), hi=float(hi), kind="between")


def exactly(x: float) -> Region:
    return Region(lo=float(x), hi=float(x), kind="between")


def equivalent(margin: float, centre: float = 0.0) -> Region:
    """Equivalence (TOST-style): the whole CI within ±margin of centre."""
    return Region(lo=float(centre - margin), hi=float(centre + margin), kind="equivalent")


@dataclass(frozen=True)
class Finding:
    """A registered non-reproduction: the measured value's range at seed offsets 0–4, and why.

    `lo`/`hi` are in the measured quantity's own unit (fractions for "%").
    """

    lo: float
    hi: float
    reason: str

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"empty finding range [{self.lo}, {self.hi}]")

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def as_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "reason": self.reason}


def decide(ci: tuple[float, float], region: Region, trials: int | None = None) -> str:
    """reproduced / not reproduced / inconclusive from the CI and the region only.

    `trials`: independent training runs behind the CI (None: not a trained-model quantity). With
    fewer than MIN_TRIALS the CI carries too little run-to-run variance, so "inside" is only
    inconclusive.
    """
    lo, hi = float(ci[0]), float(ci[1])
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if lo > hi:
        raise ValueError(f"CI [{lo}, {hi}] is reversed")
    if region.contains(lo) and region.contains(hi):
        return INCONCLUSIVE if trials is not None and trials < MIN_TRIALS else REPRODUCED
    outside_below = region.hi is not None and lo > region.hi
    outside_above = region.lo is not None and hi < region.lo
    return NOT_REPRODUCED if outside_below or outside_above else INCONCLUSIVE


@dataclass(frozen=True)
class Outcome:
    """What one claim or control does to its test: "pass", "xfail" or "fail", and the message."""

    verdict: str  # the verdict the report shows
    action: str
    message: str = ""


def claim_outcome(verdict: str, measured: float, finding: Finding | None) -> Outcome:
    """A claim: reproduced / inconclusive pass; not reproduced fails unless a registered finding
    covers this run's value (xfail); a finding whose range the value left fails."""
    if verdict in (REPRODUCED, INCONCLUSIVE):
        return Outcome(verdict, "pass")
    if finding is None:
        return Outcome(NOT_REPRODUCED, "fail")
    if finding.covers(measured):
        return Outcome(KNOWN_FINDING, "xfail", finding.reason)
    return Outcome(FINDING_CHANGED, "fail",
                   f"the registered finding's range is [{finding.lo:.4g}, {finding.hi:.4g}] ({finding.reason})")


def control_outcome(verdict: str) -> Outcome:
    """A control passes only when the claim's region decisively excludes it."""
    if verdict == NOT_REPRODUCED:
        return Outcome(CONTROL_FAILS, "pass")
    return Outcome(CONTROL_HOLDS, "fail", f"the control's verdict is {verdict!r}, not {NOT_REPRODUCED!r}")


def check_record(record: dict) -> str | None:
    """Why a claims.json record's verdict disagrees with its ci and region (None when it agrees)."""
    if record.get("role") not in ("claim", "control") or record.get("verdict") == ERROR:
        return None
    region = record.get("region")
    ci = record.get("ci")
    if not region or ci is None:
        return "a claim or control without a region or CI"
    decided = decide(ci, Region(region["lo"], region["hi"]), record.get("trials"))
    if record["role"] == "control":
        expected = control_outcome(decided).verdict
        return None if record["verdict"] == expected else f"control verdict {record['verdict']!r} ≠ {expected!r}"
    if decided == NOT_REPRODUCED:
        ok = record["verdict"] in (NOT_REPRODUCED, KNOWN_FINDING, FINDING_CHANGED, NOT_REPRODUCED + " (xfail)")
    else:
        ok = record["verdict"] == decided
    return None if ok else f"verdict {record['verdict']!r} but ci {ci} vs region {region} gives {decided!r}"


# ------------------------------------------------------------------ one session's records


def finalize(records_by_test: list[tuple[str, list[dict]]], outcomes: dict[str, dict]) -> list[dict]:
    """Join the records each test made with its pytest outcome; a test that failed outside its
    claim checks (an exception, a baseline mismatch alone is reported by its own record) gets an
    "error" record so that the report never shows a failed test as all reproduced."""
    final = []
    for nodeid, recs in records_by_test:
        outcome = outcomes.get(nodeid, {})
        for r in recs:
            final.append(dict(r, outcome=outcome.get("outcome", "passed"), seconds=outcome.get("seconds", 0.0)))
        explained = any(r.get("action") == "fail" for r in recs) or any(
            r["role"] == "baseline" and r["verdict"] in BASELINE_FAILURES for r in recs)
        if outcome.get("outcome") == "failed" and not explained:
            final.append({"test": nodeid, "statement": "test failed outside its claim checks", "role": "error",
                          "verdict": ERROR, "measured": None, "ci": None, "region": None, "unit": "",
                          "threshold": "", "details": {"reason": outcome.get("reason", "")}, "index": 10**6,
                          "device": recs[0]["device"] if recs else "", "scale": recs[0]["scale"] if recs else "",
                          "seconds": outcome.get("seconds", 0.0)})
    return final


def counts(records: list[dict]) -> dict[str, int]:
    """The summary the terminal and the report print: one count per outcome."""
    keys = (REPRODUCED, INCONCLUSIVE, KNOWN_FINDING, NOT_REPRODUCED, FINDING_CHANGED, CONTROL_FAILS, CONTROL_HOLDS,
            RECORDED, ERROR)
    tally = dict.fromkeys(keys, 0)
    for r in records:
        if r["role"] == "baseline":
            continue
        tally[r["verdict"]] = tally.get(r["verdict"], 0) + 1
    return {k: v for k, v in tally.items() if v}
