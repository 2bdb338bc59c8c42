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

from .stats import Estimate

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
CONTROL_FAILS = "control fails as expected"
CONTROL_HOLDS = "control does not fail (test cannot fail)"
RECORDED = "recorded"
BASELINE = "baseline"  # role of the regression-baseline comparison, reported beside the claims


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
    threshold: str = ""
    unit: str = ""  # "%" → fractions shown as percent
    details: dict = field(default_factory=dict)


def _measured_fields(measured) -> dict:
    if isinstance(measured, Estimate):
        return dict(measured=measured.value, ci=(measured.lo, measured.hi),
                    ci_method=f"{measured.method} {measured.level:.0%}", n=measured.n)
    return dict(measured=None if measured is None else float(measured))


class ClaimFailed(AssertionError):
    pass


KNOWN_FINDING = "not reproduced (known finding)"


@dataclass
class ClaimLog:
    """The records of one test. `context` (test id, device, scale, seed) is added to each."""

    context: dict = field(default_factory=dict)
    source: str = ""
    figure_dir: Path | None = None
    records: list[ClaimRecord] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # failed checks the protocol expected may fail

    def _add(self, statement, role, verdict, measured, source, **kw) -> ClaimRecord:
        rec = ClaimRecord(statement, role, verdict, source=source or self.source, **_measured_fields(measured), **kw)
        self.records.append(rec)
        return rec

    def check(self, statement: str, measured, *, holds: bool, threshold: str, paper=None,
              source: str = "", unit: str = "", finding: str | None = None, **details) -> None:
        """Record the claim and assert it (`holds` is the assertion's truth value).

        `finding`: the protocol's reason to expect that this claim may not reproduce here (the
        measured numbers that showed it, e.g. at some seed offsets of a small smoke protocol).
        A failing check with a finding does not stop the test: the rest is still asserted, and
        the test ends as xfail with the finding and this run's numbers; where the claim holds,
        it is reported as reproduced.
        """
        holds = bool(holds)
        verdict = REPRODUCED if holds else (KNOWN_FINDING if finding else NOT_REPRODUCED)
        rec = self._add(statement, "claim", verdict, measured, source,
                        paper=paper, threshold=threshold, unit=unit, details=details)
        if holds:
            return
        message = (f"NOT REPRODUCED: {statement}: measured {format_measured(rec)}, required {threshold}"
                   + (f" (paper: {format_value(paper, unit)})" if paper is not None else ""))
        if finding:
            self.findings.append(f"{finding}; this run: {message}")
            return
        raise ClaimFailed(message)

    def control(self, statement: str, measured, *, holds: bool, threshold: str, paper=None,
                source: str = "", unit: str = "", **details) -> None:
        """Record a control and assert that the claim's assertion fails for it."""
        holds = bool(holds)
        rec = self._add(statement, "control", CONTROL_HOLDS if holds else CONTROL_FAILS, measured, source,
                        paper=paper, threshold=threshold, unit=unit, details=details)
        if holds:
            raise ClaimFailed(f"CONTROL DID NOT FAIL: {statement}: measured {format_measured(rec)} satisfies "
                              f"{threshold}, so the claim's assertion cannot distinguish it")

    def record(self, statement: str, measured=None, *, paper=None, source: str = "", unit: str = "",
               **details) -> None:
        """Keep a number in the report without asserting anything about it."""
        self._add(statement, "record", RECORDED, measured, source, paper=paper, unit=unit, details=details)

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

