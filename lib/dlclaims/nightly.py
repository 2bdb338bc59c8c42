"""The nightly GPU workflow's step logic, in one place a unit test can drive.

Each workflow step runs ``python -m dlclaims.nightly run STEP -- COMMAND...``: the command runs
under the step's time limit (SIGINT first, so pytest still writes its reports, then SIGTERM,
then SIGKILL), and the step's outcome is written to ``reports/nightly/STEP.json`` whatever
happens, so the report step and the upload see every step, failed or not. Policies:

- ``benchmarks``: ``--benchmark-compare`` / ``--benchmark-compare-fail`` are dropped when the
  storage holds no previous run for this machine (the first night, or a new runner): that night
  records the reference instead of failing with pytest-benchmark's usage error.
- ``summary``: renders reports/benchmarks.md when benchmarks ran, then writes the step table and
  the reports to $GITHUB_STEP_SUMMARY (or stdout).

Limits: the claims step gets the claims budget (``--budget`` of the plan, default 2 h) plus a
margin; the job's ``timeout-minutes`` in nightly-gpu.yml is the sum of these plus installation, so
a slow night ends each step by itself and the later steps still run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CLAIMS_BUDGET_S = 2 * 3600  # the plan's default --budget: claims at --scale=full on 4 GPUs
# Per-step limits (seconds): the command is interrupted after this long.
STEP_LIMITS = {
    "claims": CLAIMS_BUDGET_S + 15 * 60,  # the budget + reports, xdist teardown, a late estimate
    "multi-gpu": 20 * 60,
    "benchmarks": 40 * 60,
    "summary": 5 * 60,
}
STEPS = tuple(STEP_LIMITS)
INSTALL_S = 15 * 60  # checkout, venv, CUDA wheels
GRACE_S = 60  # SIGINT → SIGTERM → SIGKILL, each this long apart
COMPARE_FLAGS = ("--benchmark-compare", "--benchmark-compare-fail")


def job_timeout_minutes() -> int:
    """What nightly-gpu.yml's `timeout-minutes` must be at least: every step's limit, installation,
    and each step's interrupt grace (tests/test_nightly.py checks the workflow against it)."""
    total = INSTALL_S + sum(STEP_LIMITS.values()) + 2 * GRACE_S * len(STEPS)
    return -(-total // 60)


@dataclass
class StepResult:
    step: str
    command: list[str]
    returncode: int
    seconds: float
    timed_out: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# ---------------------------------------------------------------- benchmarks


def machine_id() -> str:
    """pytest-benchmark's storage folder for this machine (e.g. Linux-CPython-3.12-64bit)."""
    try:
        from pytest_benchmark.utils import get_machine_id
    except ImportError:  # pragma: no cover - pytest-benchmark is part of the test extra
        return "*"
    return get_machine_id()


def previous_benchmarks(storage: str | os.PathLike) -> list[Path]:
    """Saved runs in a pytest-benchmark file storage that `--benchmark-compare` would load."""
    root = Path(str(storage).removeprefix("file://"))
    return sorted(root.glob(f"{machine_id()}/[0-9][0-9][0-9][0-9]_*.json"))


def storage_of(command: list[str], default: str = ".benchmarks") -> str:
    for arg in command:
        if arg.startswith("--benchmark-storage="):
            return arg.split("=", 1)[1]
    return default


def benchmark_command(command: list[str]) -> tuple[list[str], str]:
    """The benchmark command for tonight and a note: compare only when a previous night exists."""
    storage = storage_of(command)
    previous = previous_benchmarks(storage)
    if previous:
        return command, f"compared with {previous[-1].name}"
    kept = [a for a in command if not any(a == f or a.startswith(f + "=") for f in COMPARE_FLAGS)]
    if "--benchmark-autosave" not in kept and not any(a.startswith("--benchmark-save") for a in kept):
        kept.append("--benchmark-autosave")
    return kept, (f"first night: no previous benchmarks in {storage} for {machine_id()}; "
                  f"this run is saved as the reference (no comparison)")


# ---------------------------------------------------------------- running a step


def _interrupt(proc: subprocess.Popen) -> None:
    """SIGINT (pytest writes its reports), then SIGTERM, then SIGKILL, to the whole process group."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_limited(command: list[str], limit_s: float, env: dict | None = None,
                cwd: str | os.PathLike | None = None) -> tuple[int, float, bool, str]:
    """Run `command` in its own process group for at most `limit_s` seconds.

    Returns (exit status, seconds, timed out, note): 124 after the limit (interrupted with SIGINT
    first, so pytest writes its reports), 127 when the command cannot start.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command, start_new_session=True, env=env, cwd=cwd)  # own group: stopped whole
    except OSError as exc:
        return 127, 0.0, False, f"could not start: {exc}"
    try:
        returncode = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        _interrupt(proc)
        return 124, time.monotonic() - start, True, f"interrupted after its {limit_s / 60:.1f}-minute limit"
    except KeyboardInterrupt:
        _interrupt(proc)
        raise
    return returncode, time.monotonic() - start, False, ""


def run_step(step: str, command: list[str], reports: str | os.PathLike = "reports",
             limit_s: float | None = None) -> StepResult:
    """Run one step's command under its limit and record the outcome in reports/nightly/STEP.json."""
    if step not in STEP_LIMITS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    note = ""
    if step == "benchmarks":
        command, note = benchmark_command(command)
    limit = STEP_LIMITS[step] if limit_s is None else limit_s
    print(f"[nightly] {step}: {' '.join(command)} (limit {limit / 60:.0f} min){' — ' + note if note else ''}",
          flush=True)
    returncode, seconds, timed_out, why = run_limited(command, limit)
    result = StepResult(step, command, returncode, seconds, timed_out, "; ".join(filter(None, (note, why))))
    out = Path(reports, "nightly")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{step}.json").write_text(json.dumps(asdict(result), indent=1) + "\n")
    print(f"[nightly] {step}: {'ok' if result.ok else f'exit {result.returncode}'} after "
          f"{result.seconds:.0f} s{' — ' + result.note if result.note else ''}", flush=True)
    return result


def read_results(reports: str | os.PathLike = "reports") -> list[StepResult]:
    folder = Path(reports, "nightly")
    found = []
    for step in STEPS:
        path = folder / f"{step}.json"
        if path.is_file():
            found.append(StepResult(**json.loads(path.read_text())))
    return found


def summary_markdown(reports: str | os.PathLike = "reports") -> str:
    """The step table, then claims.md and benchmarks.md where they exist."""
    results = {r.step: r for r in read_results(reports)}
    lines = ["## Nightly steps", "", "| step | outcome | minutes | note |", "|---|---|---|---|"]
    for step in STEPS:
        r = results.get(step)
        if r is None:
            lines.append(f"| {step} | did not run | — | |")
            continue
        outcome = "ok" if r.ok else ("timed out" if r.timed_out else f"failed (exit {r.returncode})")
        lines.append(f"| {step} | {outcome} | {r.seconds / 60:.1f} | {r.note} |")
    parts = ["\n".join(lines) + "\n"]
    for name in ("claims.md", "benchmarks.md"):
        path = Path(reports, name)
        if path.is_file():
            parts.append(path.read_text())
    return "\n".join(parts)


def summarize(reports: str | os.PathLike = "reports") -> int:
    """Render benchmarks.md (if benchmarks ran) and write the summary; never fails the job itself."""
    bench = Path(reports, "benchmarks.json")
    if bench.is_file():
        try:
            from . import benchreport

            benchreport.main([str(bench), "--out-dir", str(reports)])
        except Exception as exc:  # a broken report must not hide the rest of the summary
            print(f"[nightly] benchreport failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    text = summary_markdown(reports)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


def worst(results: list[StepResult]) -> int:
    return next((r.returncode for r in results if not r.ok), 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlclaims.nightly", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one step's command (after --) under its limit and record it")
    run.add_argument("step", choices=STEPS)
    run.add_argument("--reports", default="reports")
    run.add_argument("--limit", type=float, help="seconds (default: the step's limit)")
    run.add_argument("cmd", nargs="*", help="the command, after --")
    summary = sub.add_parser("summary", help="render the reports and write the step summary")
    summary.add_argument("--reports", default="reports")
    sub.add_parser("timeout", help="print the job timeout (minutes) the step limits add up to")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.command == "timeout":
        print(job_timeout_minutes())
        return 0
    if args.command == "summary":
        return summarize(args.reports)
    cmd = cmd or args.cmd
    if not cmd:
        parser.error("run needs the step's command after --")
    return run_step(args.step, cmd, args.reports, args.limit).returncode


if __name__ == "__main__":
    sys.exit(main())
