"""What a claim test records: each checked statement with the paper's number, ours, its
interval, the threshold and the verdict, plus figures.

`ClaimLog.check` asserts the claim; `ClaimLog.control` asserts that the same statement
FAILS for the control (too small a model, nonzero init, no flip ...), so every claim
test demonstrably can fail. Records are plain JSON-able dicts, so they travel from
pytest-xdist workers to the controller in `user_properties`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import verdict as _verdict
from .stats import Estimate
from .verdict import (  # noqa: F401  (re-exported: the report and older callers import them from here)
    CONTROL_FAILS,
    CONTROL_HOLDS,
    INCONCLUSIVE,
    KNOWN_FINDING,
    NOT_REPRODUCED,
    RECORDED,
    REPRODUCED,
    Finding,
    Region,
)

BASELINE = "baseline"  # role of the regression-baseline comparison, reported beside the claims
POINT_CI = "point value (no sampling: CI = [v, v])"


@dataclass
class ClaimRecord:
    statement: str
    role: str  # "claim", "control", "record" (a number kept without an assertion) or "baseline"
    verdict: str
    source: str = ""
    paper: Any = None  # the paper's number (fraction for accuracies) or text
    measured: float | None = None
    ci: tuple[float, float] | None = None
    ci_method: str = ""
    n: int | None = None
    trials: int | None = None  # independent training runs behind the CI (None: no trained model)
    region: dict | None = None  # {"lo": x or None, "hi": y or None}, same unit as measured
    threshold: str = ""  # generated from the region
    finding: dict | None = None  # the registered finding's {"lo", "hi", "reason"}
    action: str = ""  # what the record did to its test: "pass", "xfail" or "fail"
    unit: str = ""  # "%" → fractions shown as percent
    details: dict = field(default_factory=dict)


def _measured_fields(measured, *, point_ci: bool) -> dict:
    if isinstance(measured, Estimate):
        return dict(measured=measured.value, ci=(measured.lo, measured.hi),
                    ci_method=f"{measured.method} {measured.level:.0%}", n=measured.n)
    if measured is None:
        return dict(measured=None)
    value = float(measured)
    return dict(measured=value, **(dict(ci=(value, value), ci_method=POINT_CI) if point_ci else {}))


class ClaimFailed(AssertionError):
    pass


@dataclass
class ClaimLog:
    """The records of one test. `context` (test id, device, scale, seed) is added to each."""

    context: dict = field(default_factory=dict)
    source: str = ""
    figure_dir: Path | None = None
    records: list[ClaimRecord] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # known findings of this run (the test ends as xfail)
    failures: list[str] = field(default_factory=list)  # failing claims/controls, raised after the test body

    def _add(self, statement, role, verdict, measured, source, *, point_ci=False, **kw) -> ClaimRecord:
        rec = ClaimRecord(statement, role, verdict, source=source or self.source,
                          **_measured_fields(measured, point_ci=point_ci), **kw)
        self.records.append(rec)
        return rec

    def _decided(self, statement, role, measured, region: Region, trials, source, **kw) -> ClaimRecord:
        if not isinstance(region, Region):
            raise TypeError(f"{statement}: region must be a dlclaims.verdict.Region (at_least, at_most, "
                            f"between, equivalent), not {region!r}")
        rec = self._add(statement, role, "", measured, source, point_ci=True, trials=trials,
                        region=region.as_dict(), threshold=region.text(kw.get("unit", "")), **kw)
        if rec.ci is None or rec.measured is None:
            raise TypeError(f"{statement}: a claim or control needs a measured value")
        rec.verdict = _verdict.decide(rec.ci, region, trials)
        return rec

    def check(self, statement: str, measured, region: Region, *, paper=None, source: str = "", unit: str = "",
              trials: int | None = None, finding: Finding | None = None, **details) -> str:
        """Record the claim and decide it from the CI of `measured` and `region` (`dlclaims.verdict`).

        `measured`: an `Estimate` (value + CI) or a plain number computed without sampling (CI [v, v]).
        `trials`: independent training runs behind the CI, for trained-model quantities (one run →
        at most inconclusive). `finding`: the registered range of this value at seed offsets 0–4 and
        the reason it does not reproduce; then a not-reproduced verdict ends the test as xfail while
        the value stays in that range, and fails when it leaves it. Reproduced and inconclusive pass.
        Every check runs (a failing one does not stop the test); the test fails at its end.
        Returns the verdict.
        """
        rec = self._decided(statement, "claim", measured, region, trials, source, paper=paper, unit=unit,
                            finding=finding.as_dict() if finding else None, details=details)
        outcome = _verdict.claim_outcome(rec.verdict, rec.measured, finding)
        rec.verdict, rec.action = outcome.verdict, outcome.action
        if outcome.action == "xfail":
            self.findings.append(f"{statement}: measured {format_measured(rec)} (known finding: {outcome.message})")
        elif outcome.action == "fail":
            self.failures.append(f"{rec.verdict.upper()}: {statement}: measured {format_measured(rec)}, "
                                 f"required {rec.threshold}" + (f"; {outcome.message}" if outcome.message else "")
                                 + (f" (paper: {format_value(paper, unit)})" if paper is not None else ""))
        return rec.verdict

    def control(self, statement: str, measured, region: Region, *, paper=None, source: str = "",
                unit: str = "", trials: int | None = None, **details) -> str:
        """Record a control: the claim's region applied to it must give "not reproduced" (decisively
        outside); otherwise the test fails, since its claim could not have failed."""
        rec = self._decided(statement, "control", measured, region, trials, source, paper=paper, unit=unit,
                            details=details)
        outcome = _verdict.control_outcome(rec.verdict)
        rec.verdict, rec.action = outcome.verdict, outcome.action
        if outcome.action == "fail":
            self.failures.append(f"CONTROL DID NOT FAIL DECISIVELY: {statement}: measured {format_measured(rec)} "
                                 f"vs {rec.threshold} ({outcome.message})")
        return rec.verdict

    def raise_failures(self) -> None:
        """Called after the test body: every check has been recorded; now the failing ones fail the test."""
        if self.failures:
            raise ClaimFailed("\n".join(self.failures))

    def record(self, statement: str, measured=None, *, paper=None, source: str = "", unit: str = "",
               trials: int | None = None, **details) -> None:
        """Keep a number in the report without asserting anything about it."""
        self._add(statement, "record", RECORDED, measured, source, paper=paper, unit=unit, details=details,
                  **({"trials": trials} if trials is not None else {}))

    def baseline(self, outcome: dict) -> None:
        """Keep the regression-baseline comparison (`dlclaims.baselines.Outcome.as_dict()`) beside the claims."""
        self._add(f"regression baseline {outcome['name']}", BASELINE, outcome["status"], None, "",
                  threshold=outcome["why"], details=outcome)

    def figure(self, fig, name: str) -> Path | None:
        """Save a matplotlib figure as <figure_dir>/<name>.png and link it from the report."""
        if self.figure_dir is None:
            return None
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append(str(path))
        return path

    def as_dicts(self) -> list[dict]:
        """Plain JSON values only (numpy/torch scalars and arrays converted): the records cross
        process boundaries (xdist's execnet) and land in claims.json."""
        records = [{**self.context, **asdict(r), "figures": list(self.figures)} for r in self.records]
        return json.loads(json.dumps(records, default=_plain))


def _plain(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    return str(value)


def format_value(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        return f"{100 * value:.2f} %" if unit == "%" else f"{value:.4g}"
    return str(value)


def format_measured(rec: ClaimRecord | dict) -> str:
    r = rec if isinstance(rec, dict) else asdict(rec)
    text = format_value(r["measured"], r["unit"])
    if r.get("ci"):
        lo, hi = r["ci"]
        text += (f" [{100 * lo:.2f}, {100 * hi:.2f}]" if r["unit"] == "%" else f" [{lo:.4g}, {hi:.4g}]")
    return text

