"""Render recorded claim results as reports/claims.json and reports/claims.md.

Renders only what tests recorded (see `dlclaims.record`); computes nothing new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import baselines, verdict
from .record import BASELINE, format_measured, format_value
from .verdict import (
    CONTROL_FAILS,
    CONTROL_HOLDS,
    ERROR,
    FINDING_CHANGED,
    INCONCLUSIVE,
    KNOWN_FINDING,
    NOT_REPRODUCED,
    RECORDED,
    REPRODUCED,
)

_ORDER = {"claim": 0, "control": 1, "record": 2, BASELINE: 3}


def _sorted(records: list[dict]) -> list[dict]:
    # Stable across -n N: by test id, then the order the test recorded in.
    return sorted(records, key=lambda r: (r.get("test", ""), r.get("index", 0)))


def summarize(records: list[dict]) -> dict[str, int]:
    """One count per outcome (reproduced, inconclusive, findings, not reproduced, controls, ...)."""
    return verdict.counts(records)


def summary_line(records: list[dict]) -> str:
    c = summarize(records)
    failing = c.get(NOT_REPRODUCED, 0) + c.get(FINDING_CHANGED, 0) + c.get(CONTROL_HOLDS, 0) + c.get(ERROR, 0)
    return (f"**{c.get(REPRODUCED, 0)} reproduced, {c.get(INCONCLUSIVE, 0)} inconclusive, "
            f"{c.get(KNOWN_FINDING, 0)} not reproduced (registered findings, inside their range)**; "
            f"{c.get(CONTROL_FAILS, 0)} controls fail as required; {c.get(RECORDED, 0)} numbers recorded without "
            f"an assertion; {failing} failing (not reproduced without a finding, a finding out of its range, "
            f"a control that holds, an error).")


def baseline_summary(records: list[dict]) -> str:
    """How many baselines were compared exactly, by tolerance (and why), written or failed."""
    return baselines.summary([r["details"] for r in records if r["role"] == BASELINE])


def _baseline_cells(r: dict) -> tuple[str, str]:
    """(measured, threshold) cells of a baseline row: numbers per kind, and why exact or tolerant."""
    d = r.get("details", {})
    counted = ", ".join(f"{v} {k}" for k, v in sorted(d.get("counts", {}).items())) or "—"
    failures = " ".join(f.strip() for f in d.get("failures", []))
    closest = f" (closest: {d['closest']})" if d.get("closest") else ""
    return counted + closest + (f": {failures}" if failures else ""), baselines.short_reason(d.get("why", ""))


def write(records: list[dict], out_dir: str | os.PathLike, meta: dict,
          coverage: list[dict] | None = None) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = _sorted(records)
    json_path = out / "claims.json"
    json_path.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    md_path = out / "claims.md"
    text = render_markdown(records, meta, out)
    if coverage:
        text += "\n" + coverage_table(coverage, records)
    md_path.write_text(text)
    return md_path, json_path


# ------------------------------------------------------------------ coverage of the seeds' claims

COVERAGE_STATUSES = ("smoke", "full", "recorded", "not tested")


def load_coverage(path: str | os.PathLike) -> list[dict]:
    """The registry of every testable seed claim (`claims/coverage.toml`): one entry per claim with
    seed, quote, quantity, status (smoke / full / recorded / not tested), tests, match, reason."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)["claim"]


def _run_verdicts(entry: dict, records: list[dict]) -> str:
    """This run's verdicts of the claim records an entry points at (its tests × its statement match)."""
    tests = tuple(entry.get("tests", []))
    match = entry.get("match", "")
    if not tests:
        return "—"
    hits = [r for r in records if r["role"] in ("claim", "record")
            and r.get("test", "").split("[", 1)[0] in tests and match in r.get("statement", "")]
    if not hits:
        return "not run"
    tally: dict[str, int] = {}
    for r in hits:
        tally[r["verdict"]] = tally.get(r["verdict"], 0) + 1
    return ", ".join(f"{v} {k}" for k, v in tally.items())


def coverage_counts(coverage: list[dict]) -> dict[str, int]:
    return {status: sum(e["status"] == status for e in coverage) for status in COVERAGE_STATUSES}


def coverage_table(coverage: list[dict], records: list[dict] | None = None) -> str:
    """Every testable claim of the seeds, one row each: where it is asserted, and (given a run's
    records) what this run said about it."""
    c = coverage_counts(coverage)
    lines = [
        "## Coverage of the seeds' claims",
        "",
        (f"{len(coverage)} testable claims: {c['smoke']} asserted at smoke scale, {c['full']} asserted at full "
         f"scale only, {c['recorded']} recorded without an assertion, {c['not tested']} not tested "
         f"(`claims/coverage.toml`). A smoke assertion tests the claim at the smoke protocol, not at the "
         f"paper's scale."),
        "",
        "| seed | claim | the seed says | quantity and region | asserted | tests | this run | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in coverage:
        tests = " ".join(f"`{t.split('::')[-1]}`" for t in e.get("tests", [])) or "—"
        lines.append("| " + " | ".join(_cell(x) for x in (
            e["seed"], e["id"], e.get("quote", ""), e.get("quantity", ""), e["status"], tests,
            _run_verdicts(e, records or []), e.get("reason", ""))) + " |")
    return "\n".join(lines) + "\n"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(records: list[dict], meta: dict, out_dir: Path) -> str:
    lines = [
        "# dlclaims report",
        "",
        (f"Scale `{meta.get('scale')}`, seed offset {meta.get('seed_offset')}, "
         f"torch {meta.get('torch')}, devices: {', '.join(meta.get('devices', [])) or '—'}, "
         f"written {meta.get('written')}."),
        "",
        summary_line(records),
        "",
        ("Verdicts come from the CI and the claim's region only (`dlclaims.verdict`): reproduced = the whole CI "
         "inside, not reproduced = the whole CI outside, inconclusive = the CI straddles an edge; a trained-model "
         "number from a single run is at most inconclusive. A smoke-scale verdict is about the smoke protocol "
         "(the claim file's PROTOCOL table), not a reproduction of the paper-scale experiment."),
        "",
        *([baseline_summary(records), ""] if any(r["role"] == BASELINE for r in records) else []),
        "Accuracies in %; the interval is the measured value's confidence interval.",
        "",
        ("| claim | test | device | scale | paper | measured [CI] | region | CI method | trials | verdict | s "
        "| figures |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r.get("test", ""), _ORDER.get(r["role"], 3), r.get("index", 0))):
        role = "" if r["role"] == "claim" else f"*{r['role']}*: "
        figures = " ".join(
            f"[{Path(f).stem}]({os.path.relpath(f, out_dir)})" for f in r.get("figures", []) if r["role"] == "claim"
        )
        measured, threshold = (_baseline_cells(r) if r["role"] == BASELINE
                               else (format_measured(r), r.get("threshold", "")))
        lines.append(
            "| " + " | ".join(_cell(c) for c in (
                role + r["statement"], f"`{r.get('test', '')}`", r.get("device", ""), r.get("scale", ""),
                format_value(r.get("paper"), r.get("unit", "")), measured, threshold, r.get("ci_method", ""),
                r.get("trials") or "", _verdict_cell(r), f"{r.get('seconds', 0):.1f}", figures,
            )) + " |"
        )
    sources = sorted({r["source"] for r in records if r.get("source")})
    if sources:
        lines += ["", "## Sources", ""] + [f"- {s}" for s in sources]
    return "\n".join(lines) + "\n"


def _verdict_cell(r: dict) -> str:
    finding = r.get("finding")
    if r["verdict"] in (KNOWN_FINDING, FINDING_CHANGED) and finding:
        unit = r.get("unit", "")
        lo, hi = format_value(finding["lo"], unit), format_value(finding["hi"], unit)
        return f"{r['verdict']}: registered range [{lo}, {hi}]; {finding['reason']}"
    return r["verdict"]


def summary_table(records: list[dict]) -> str:
    """A compact markdown table of the asserted claims only (paper vs measured, region, verdict), for the README."""
    lines = ["| claim | test | scale | paper | ours [CI] | region | trials | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in _sorted(records):
        if r["role"] != "claim":
            continue
        test = r.get("test", "").split("::")[-1]
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["statement"], f"`{test}`", r.get("scale", ""), format_value(r.get("paper"), r.get("unit", "")),
            format_measured(r), r.get("threshold", ""), r.get("trials") or "", r["verdict"])) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # python -m dlclaims.report reports/claims.json [claims/coverage.toml]
    #   → the README's claims table (and coverage table)
    import sys

    run_records = json.loads(Path(sys.argv[1]).read_text())["records"]
    print(summary_line(run_records) + "\n")
    print(summary_table(run_records), end="")
    if len(sys.argv) > 2:
        print("\n" + coverage_table(load_coverage(sys.argv[2]), run_records), end="")
