"""Render recorded claim results as reports/claims.json and reports/claims.md.

Renders only what tests recorded (see `dlclaims.record`); computes nothing new.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from . import baselines
from .record import (
    BASELINE,
    CONTROL_FAILS,
    KNOWN_FINDING,
    NOT_REPRODUCED,
    RECORDED,
    REPRODUCED,
    format_measured,
    format_value,
)

_ORDER = {"claim": 0, "control": 1, "record": 2, BASELINE: 3}


def _sorted(records: list[dict]) -> list[dict]:
    # Stable across -n N: by test id, then the order the test recorded in.
    return sorted(records, key=lambda r: (r.get("test", ""), r.get("index", 0)))


def summarize(records: list[dict]) -> Counter:
    return Counter(r["verdict"] for r in records if r["role"] != BASELINE)


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


def write(records: list[dict], out_dir: str | os.PathLike, meta: dict) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = _sorted(records)
    json_path = out / "claims.json"
    json_path.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    md_path = out / "claims.md"
    md_path.write_text(render_markdown(records, meta, out))
    return md_path, json_path


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(records: list[dict], meta: dict, out_dir: Path) -> str:
    counts = summarize(records)
    lines = [
        "# dlclaims report",
        "",
        (f"Scale `{meta.get('scale')}`, seed offset {meta.get('seed_offset')}, "
         f"torch {meta.get('torch')}, devices: {', '.join(meta.get('devices', [])) or '—'}, "
         f"written {meta.get('written')}."),
        "",
        (f"**{counts.get(REPRODUCED, 0)} reproduced, "
         f"{sum(v for k, v in counts.items() if k.startswith(NOT_REPRODUCED))} not reproduced** "
         f"({counts.get(KNOWN_FINDING, 0)} of them known findings of the protocol); "
         f"{counts.get(CONTROL_FAILS, 0)} controls fail as they should; {counts.get(RECORDED, 0)} numbers recorded "
         f"without an assertion."),
        "",
        *([baseline_summary(records), ""] if any(r["role"] == BASELINE for r in records) else []),
        "Accuracies in %; the interval is the measured value's confidence interval.",
        "",
        "| claim | test | device | scale | paper | measured [CI] | threshold | verdict | s | figures |",
        "|---|---|---|---|---|---|---|---|---|---|",
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
                format_value(r.get("paper"), r.get("unit", "")), measured, threshold,
                r["verdict"], f"{r.get('seconds', 0):.1f}", figures,
            )) + " |"
        )
    sources = sorted({r["source"] for r in records if r.get("source")})
    if sources:
        lines += ["", "## Sources", ""] + [f"- {s}" for s in sources]
    return "\n".join(lines) + "\n"


def summary_table(records: list[dict]) -> str:
    """A compact markdown table of the asserted claims only (paper vs measured, verdict), for the README."""
    lines = ["| claim | test | paper | ours [CI] | verdict |", "|---|---|---|---|---|"]
    for r in _sorted(records):
        if r["role"] != "claim":
            continue
        test = r.get("test", "").split("::")[-1]
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["statement"], f"`{test}`", format_value(r.get("paper"), r.get("unit", "")), format_measured(r),
            r["verdict"])) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m dlclaims.report reports/claims.json → the README's claims table
    import sys

    print(summary_table(json.loads(Path(sys.argv[1]).read_text())["records"]), end="")
