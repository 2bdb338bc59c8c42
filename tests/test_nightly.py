"""The nightly GPU workflow's step logic (dlclaims.nightly) and its wiring in nightly-gpu.yml:
the first night records the benchmark reference instead of failing, a failing or slow step never
keeps the later steps from running and uploading, and the limits add up to the job timeout."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from dlclaims import nightly

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflows")

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY_YML = ROOT / ".github" / "workflows" / "nightly-gpu.yml"
PY = sys.executable
BENCH = ["--benchmark-storage=file://{storage}", "--benchmark-autosave", "--benchmark-compare",
         "--benchmark-compare-fail=mean:10%", "--benchmark-json={reports}/benchmarks.json"]


def bench_args(storage, reports):
    return [a.format(storage=storage, reports=reports) for a in BENCH]


def echo_argv(path: Path) -> list[str]:
    """A command that writes the arguments it was given to `path` (standing in for pytest)."""
    return [PY, "-c", "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))", str(path)]


# ---------------------------------------------------------------- benchmarks: first night


def test_the_first_night_records_the_reference_instead_of_comparing(tmp_path):
    storage, reports = tmp_path / ".benchmarks", tmp_path / "reports"
    seen = tmp_path / "argv.json"
    result = nightly.run_step("benchmarks", echo_argv(seen) + bench_args(storage, reports), reports)
    args = json.loads(seen.read_text())
    assert result.ok and "first night" in result.note
    assert not [a for a in args if a.startswith("--benchmark-compare")]  # no usage error on empty storage
    assert "--benchmark-autosave" in args and f"--benchmark-json={reports}/benchmarks.json" in args
    recorded = json.loads((reports / "nightly" / "benchmarks.json").read_text())
    assert recorded["returncode"] == 0 and "first night" in recorded["note"]


def test_later_nights_compare_with_the_last_stored_run(tmp_path):
    storage, reports = tmp_path / ".benchmarks", tmp_path / "reports"
    machine = storage / nightly.machine_id()
    machine.mkdir(parents=True)
    (machine / "0001_abc_20260101_000000.json").write_text("{}")
    (machine / "0002_def_20260102_000000.json").write_text("{}")
    seen = tmp_path / "argv.json"
    result = nightly.run_step("benchmarks", echo_argv(seen) + bench_args(storage, reports), reports)
    assert result.ok and "0002_def" in result.note
    assert {"--benchmark-compare", "--benchmark-compare-fail=mean:10%"} <= set(json.loads(seen.read_text()))


def test_another_machines_runs_are_no_reference(tmp_path):
    other = tmp_path / ".benchmarks" / "Darwin-CPython-3.9-64bit"
    other.mkdir(parents=True)
    (other / "0001_x.json").write_text("{}")
    command, note = nightly.benchmark_command(["pytest"] + bench_args(tmp_path / ".benchmarks", tmp_path))
    assert "--benchmark-compare" not in command and "first night" in note


# ---------------------------------------------------------------- failures and limits


def test_a_failing_step_is_recorded_and_the_next_steps_still_run_and_report(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "claims.md").write_text("# Claims\n\n| claim | verdict |\n")
    failed = nightly.run_step("claims", [PY, "-c", "raise SystemExit(3)"], reports)
    ok = nightly.run_step("multi-gpu", [PY, "-c", "pass"], reports)
    assert (failed.returncode, ok.returncode) == (3, 0) and nightly.worst([failed, ok]) == 3
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert nightly.main(["summary", "--reports", str(reports)]) == 0
    text = summary.read_text()
    assert "| claims | failed (exit 3) |" in text and "| multi-gpu | ok |" in text
    assert "| benchmarks | did not run |" in text and "# Claims" in text


def test_a_step_over_its_limit_is_interrupted_so_that_it_can_still_write_its_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(nightly, "GRACE_S", 10)
    written = tmp_path / "written-on-interrupt"
    script = ("import time, pathlib\n"
              "try:\n    time.sleep(120)\n"
              f"except KeyboardInterrupt:\n    pathlib.Path({str(written)!r}).write_text('report')\n    raise\n")
    result = nightly.run_step("claims", [PY, "-c", script], tmp_path / "reports", limit_s=1.5)
    assert result.timed_out and result.returncode == 124 and "limit" in result.note
    assert written.read_text() == "report" and result.seconds < 60  # SIGINT reached it: pytest writes reports


def test_a_command_that_cannot_start_is_a_failed_step(tmp_path):
    result = nightly.run_step("multi-gpu", [str(tmp_path / "no-such-binary")], tmp_path)
    assert result.returncode == 127 and "could not start" in result.note
    assert nightly.read_results(tmp_path)[0].returncode == 127


def test_command_line(tmp_path):
    assert nightly.main(["run", "multi-gpu", "--reports", str(tmp_path), "--", PY, "-c", "raise SystemExit(2)"]) == 2
    with pytest.raises(SystemExit):
        nightly.main(["run", "multi-gpu", "--reports", str(tmp_path)])


# ---------------------------------------------------------------- the workflow's conditions


def load_steps() -> tuple[dict, list[dict]]:
    workflow = yaml.safe_load(NIGHTLY_YML.read_text())
    (job,) = workflow["jobs"].values()
    return job, job["steps"]


def evaluate(condition: str | None, outcomes: dict[str, str], cancelled: bool, inputs: dict) -> bool:
    """GitHub's `if:` for the expressions this workflow uses (status functions, steps.*.outcome,
    inputs.*, ==, !=, &&, ||, !, parentheses). No `if:` means success()."""
    expr = (condition or "success()").strip()
    expr = expr.removeprefix("${{").removesuffix("}}").strip()
    failed = any(o == "failure" for o in outcomes.values())
    names = {"always": lambda: True, "cancelled": lambda: cancelled,
             "success": lambda: not failed and not cancelled, "failure": lambda: failed}
    expr = re.sub(r"steps\.([\w-]+)\.outcome", lambda m: repr(outcomes.get(m.group(1), "skipped")), expr)
    expr = re.sub(r"inputs\.(\w+)", lambda m: repr(inputs.get(m.group(1), False)), expr)
    expr = expr.replace("&&", " and ").replace("||", " or ").replace("!=", "≠").replace("!", " not ")
    expr = expr.replace("≠", "!=")
    return bool(eval(expr, {"__builtins__": {}}, names))  # noqa: S307 - our own workflow's expressions


def simulate(results: dict[str, str], cancel_during: str | None = None, inputs: dict | None = None) -> list[str]:
    """Which steps run, given each step's outcome if it runs (default success) and the step during
    which the job is cancelled (a manual cancel or the job timeout)."""
    _, steps = load_steps()
    outcomes, ran, cancelled = {}, [], False
    for step in steps:
        name = step.get("id") or step.get("name") or step.get("uses")
        if step.get("uses", "").startswith("actions/checkout"):
            ran.append("checkout")
            continue
        if not evaluate(step.get("if"), outcomes, cancelled, inputs or {}):
            outcomes[name] = "skipped"
            continue
        ran.append(name)
        outcomes[name] = results.get(name, "success")
        if name == cancel_during:
            cancelled, outcomes[name] = True, "cancelled"
    return ran


def named(ran: list[str]) -> set[str]:
    return {r.split()[0] for r in ran}


def test_failed_claims_still_run_every_later_step_and_upload():
    ran = simulate({"claims": "failure"})
    assert {"multi-gpu", "benchmarks", "Summary", "Upload", "Restore"} <= named(ran)


def test_failed_benchmarks_still_summarise_and_upload_but_keep_the_old_reference():
    ran = simulate({"benchmarks": "failure"})
    assert {"Summary", "Upload"} <= named(ran) and "Keep" not in named(ran)
    assert "Keep" in named(simulate({"benchmarks": "failure"}, inputs={"accept_benchmarks": True}))
    assert "Keep" in named(simulate({}))  # the first night's successful run becomes the reference


def test_a_cancelled_or_timed_out_job_still_summarises_and_uploads():
    ran = named(simulate({}, cancel_during="claims"))
    assert {"Summary", "Upload"} <= ran and not {"multi-gpu", "benchmarks"} & ran


def test_a_failed_installation_runs_nothing_but_the_report():
    ran = named(simulate({"install": "failure"}))
    assert {"Summary", "Upload"} <= ran and not {"claims", "multi-gpu", "benchmarks", "Keep"} & ran


def test_every_work_step_goes_through_the_step_runner_in_order():
    _, steps = load_steps()
    runner = [re.search(r"dlclaims\.nightly run ([\w-]+) --", s.get("run", "")) for s in steps]
    assert [m.group(1) for m in runner if m] == ["claims", "multi-gpu", "benchmarks"]
    assert any("dlclaims.nightly summary" in s.get("run", "") for s in steps)


def test_the_job_timeout_covers_every_step_limit():
    job, steps = load_steps()
    assert job["timeout-minutes"] >= nightly.job_timeout_minutes()
    by_id = {s.get("id"): s for s in steps}
    for step, limit in nightly.STEP_LIMITS.items():
        if step in by_id:  # a step's own timeout is a backstop above the runner's limit and grace
            assert by_id[step]["timeout-minutes"] * 60 >= limit + 2 * nightly.GRACE_S, step
    assert nightly.STEP_LIMITS["claims"] >= nightly.CLAIMS_BUDGET_S == 2 * 3600


# ---------------------------------------------------------------- the paper tier's manual workflow

PAPER_YML = ROOT / ".github" / "workflows" / "paper-gpu.yml"


def test_the_paper_workflow_plans_then_runs_only_the_paper_tier(pytestconfig, tmp_path):
    import shlex
    import shutil
    import subprocess

    workflow = yaml.safe_load(PAPER_YML.read_text())
    on = workflow.get("on", workflow.get(True))
    assert list(on) == ["workflow_dispatch"]  # manual only
    (job,) = workflow["jobs"].values()
    commands = []
    for step in job["steps"]:
        line = step.get("run", "").replace("\n", " ")
        if "-m pytest" in line:
            args = shlex.split(line.replace('"$WORKERS"', "4").replace('"$SCALE"', "full")
                               .replace('"$BUDGET"', "30h").replace('"$SELECT"', "x"))
            commands.append(args[args.index("pytest") + 1:])
    plan_cmd, run_cmd = commands
    assert "--plan" in plan_cmd and "--plan" not in run_cmd
    for args in commands:
        assert {"--tier=paper", "--budget"} <= set(args) and args[:3] == ["claims", "-m", "gpu"]
        _, unknown = pytestconfig._parser.parse_known_and_unknown_args(args)
        assert [a for a in unknown if a.startswith("-")] == [], args
    binary = Path(sys.executable).with_name("actionlint")
    binary = str(binary) if binary.is_file() else shutil.which("actionlint")
    if binary is None:
        pytest.skip("actionlint is not installed")
    config = tmp_path / "actionlint.yaml"
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": ["gpu"]}}))
    result = subprocess.run([binary, "-config-file", str(config), str(PAPER_YML)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
