"""The dlclaims pytest plugin: options, thin fixtures and hooks. The work lives in the library.

Options: --scale {smoke,full}, --seed-offset N, --require-data, --report-dir DIR, --regen-baselines;
the time plan of GPU runs (dlclaims.plan): --plan, --budget, --tier, --progress, --timeout-factor, --gpu-memory.
Fixtures: device (cpu / cuda[gpu] / xla[tpu] variants), scale, protocol, seed, claim, baseline.
Hooks: GPU pinning per xdist worker, seeding, data-unavailable → skip, claim records
gathered from workers and written to reports/claims.{md,json} at the end of the session.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import time as _time
from pathlib import Path

import pytest

from . import baselines, plan, runtime, verdict
from .data import DataUnavailable
from .data import skip_reason as data_skip_reason
from .record import ClaimLog

SCALES = ("smoke", "full")
DEVICES_ENV = "DLCLAIMS_DEVICES"  # e.g. "cpu" to instantiate only CPU variants
THREADS_ENV = "DLCLAIMS_THREADS"
_RECORDS_KEY = "dlclaims_records"


def pytest_addoption(parser):
    group = parser.getgroup("dlclaims", "dlclaims claims")
    group.addoption("--scale", choices=SCALES, default="smoke",
                    help="protocol scale: smoke = minutes on a laptop CPU, full = the paper's protocol (GPU hours)")
    group.addoption("--seed-offset", type=int, default=0,
                    help="added to every test's derived seed; claims must hold for any offset")
    group.addoption("--require-data", action="store_true",
                    help="missing datasets are errors instead of skips")
    group.addoption("--report-dir", default="reports", help="where claims.md, claims.json and figures go")
    group.addoption("--regen-baselines", action="store_true",
                    help="rewrite the regression baselines (and their code-path fingerprints) of the tests run; "
                         "review the diff and commit it")
    # The time plan of GPU runs (dlclaims.plan: each claim module's COST table).
    group.addoption("--plan", action="store_true", dest="dlclaims_plan",
                    help="print each CUDA test's declared cost (GPU-seconds, peak memory) and the wall time on "
                         "the -n workers, then stop without running anything")
    group.addoption("--budget", type=_duration, default=None, dest="dlclaims_budget", metavar="DURATION",
                    help="refuse (usage error naming the tests) a run whose planned wall time exceeds this "
                         "(e.g. 2h, 90m; default 2h; checked for --scale=full, --plan, --progress or an explicit "
                         "--budget)")
    group.addoption("--tier", choices=("nightly", "paper", "all"), default="nightly", dest="dlclaims_tier",
                    help="which CUDA tests run: nightly (default; paper-tier tests are deselected), paper (only "
                         "those, too big for the nightly), or all")
    group.addoption("--progress", action="store_true", dest="dlclaims_progress",
                    help="a line per CUDA test start and end (test, elapsed, estimate), also under xdist")
    group.addoption("--timeout-factor", type=float, default=3.0, dest="dlclaims_timeout_factor",
                    help="a CUDA test with a declared cost fails after factor × its estimate + 5 min (0: no limit)")
    group.addoption("--gpu-memory", type=float, default=80.0, dest="dlclaims_gpu_gib", metavar="GIB",
                    help="GPU memory the plan flags tests against (default 80, H100-class)")


def _duration(text: str) -> float:
    from .plan import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # --plan collects in this process and stops: no xdist workers (-n still sets the plan's worker count).
    if config.getoption("dlclaims_plan") and hasattr(config.option, "dist"):
        config.option.dist = "no"

    config.pluginmanager.register(PlanPlugin(config), f"dlclaims-plan-{id(config)}")
    # Before any test module imports torch and initialises CUDA: one GPU per xdist worker.
    config._dlclaims_pinned_gpu = runtime.pin_worker_gpu()
    # One intra-op thread per process unless DLCLAIMS_THREADS says otherwise: CPU reductions
    # then sum in the same order in `pytest` and `pytest -n N`, so numbers match bit for bit
    # (parallelise with -n). Benchmarks set their own thread count.
    import torch

    config._dlclaims_threads = int(os.environ.get(THREADS_ENV, "1"))
    torch.set_num_threads(config._dlclaims_threads)
    config._dlclaims = {"records": [], "outcomes": {}}
    config.pluginmanager.register(_Collector(config._dlclaims), f"dlclaims-collector-{id(config)}")
    # Progress of long runs (one line per N epochs) shows live at -v; quiet otherwise.
    if config.option.verbose > 0 and config.getoption("log_cli_level", None) is None:
        config.option.log_cli_level = "INFO"


def pytest_report_header(config):
    data = os.environ.get("DLCLAIMS_DATA", "(unset: torchvision download into the cache)")
    return (f"dlclaims: scale={config.getoption('scale')} seed-offset={config.getoption('seed_offset')} "
            f"DLCLAIMS_DATA={data}")


# ---------------------------------------------------------------- devices


def _device_types() -> list[str]:
    chosen = os.environ.get(DEVICES_ENV)
    if not chosen:
        return list(runtime.DEVICE_TYPES)
    return [d for d in (s.strip() for s in chosen.split(",")) if d in runtime.DEVICE_TYPES]


def pytest_generate_tests(metafunc):
    if "device" not in metafunc.fixturenames:
        return
    params = []
    for device_type in _device_types():
        marker = runtime.DEVICE_MARKERS[device_type]
        marks = [getattr(pytest.mark, marker)] if marker else []
        params.append(pytest.param(device_type, marks=marks, id=device_type))
    metafunc.parametrize("device", params, indirect=True)


@pytest.fixture
def device(request):
    """The torch device of this variant; skips with the reason when it is not present."""
    reason = runtime.unavailable_reason(request.param)
    if reason:
        pytest.skip(f"{request.param} variant: {reason}")
    return runtime.torch_device(request.param)


def _device_type(item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("device", "cpu") if callspec else "cpu"


# ---------------------------------------------------------------- scale, protocol, seeds


@pytest.fixture(scope="session")
def scale(pytestconfig) -> str:
    return pytestconfig.getoption("scale")


@pytest.fixture
def protocol(request, scale):
    """This module's PROTOCOL[scale]: the one table of dataset sizes, models, budgets, thresholds."""
    table = getattr(request.module, "PROTOCOL", None)
    if table is None:
        raise pytest.UsageError(f"{request.module.__name__} has no PROTOCOL table")
    if scale not in table:
        pytest.skip(f"{request.module.__name__} defines no {scale!r} protocol")
    return table[scale]


def _seed_identity(item) -> str:
    """The test id without its device: the CPU and CUDA variants share a seed. A claim module
    that was moved or split names its former path in ``SEED_MODULE``: its tests keep the seeds
    they had there, so its baselines and the findings measured at seed offsets 0–4 carry over."""
    callspec = getattr(item, "callspec", None)
    params = {k: v for k, v in callspec.params.items() if k != "device"} if callspec else {}
    base = item.nodeid.split("[", 1)[0]
    former_module = getattr(getattr(item, "module", None), "SEED_MODULE", None)
    if former_module and "::" in base:
        base = former_module + "::" + base.split("::", 1)[1]
    return base + (repr(sorted((k, repr(v)) for k, v in params.items())) if params else "")


@pytest.fixture
def seed(request) -> int:
    return runtime.derive_seed(_seed_identity(request.node), request.config.getoption("seed_offset"))


@pytest.fixture(autouse=True)
def _seeded(request, seed):
    import torch

    # Re-pinned per test: a kernel that changes the process's thread count (numba's layer after the
    # fused CNTK kernel left torch at 2) must not change the next test's reductions, nor its baselines.
    torch.set_num_threads(getattr(request.config, "_dlclaims_threads", 1))
    runtime.seed_everything(seed, deterministic=_device_type(request.node) == "cpu")


# ---------------------------------------------------------------- claims and the report


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")


@pytest.fixture
def claim(request, scale, seed):
    """Record and assert claims: claim.check(...), claim.control(...), claim.record(...), claim.figure(...)."""
    node = request.node
    report_dir = Path(request.config.rootpath, request.config.getoption("report_dir"))
    log = ClaimLog(
        context={"test": node.nodeid, "device": _device_type(node), "scale": scale, "seed": seed,
                 "device_name": None},
        source=getattr(request.module, "SOURCE", ""),
        figure_dir=report_dir / "figures" / _slug(node.nodeid),
    )
    request.node._dlclaims_log = log
    yield log
    log.context["device_name"] = runtime.device_name(_device_type(node))
    records = log.as_dicts()
    for i, r in enumerate(records):
        r["index"] = i
    node.user_properties.append((_RECORDS_KEY, records))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _data_unavailable_is_skip(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        result = yield from _data_unavailable_is_skip(item)
    except (pytest.skip.Exception, KeyboardInterrupt):
        raise
    except BaseException:  # the test body broke: its baseline is still compared and reported beside it
        _compare_baseline(item)
        raise
    outcome = _compare_baseline(item)
    log = getattr(item, "_dlclaims_log", None)
    baseline_failure = [outcome.message()] if outcome is not None and not outcome.ok else []
    if log is not None and log.failures:  # claims that failed, recorded after every other check ran
        pytest.fail("\n".join(log.failures + baseline_failure), pytrace=False)
    findings = log.findings if log is not None else []
    if baseline_failure:  # every claim held (or is a finding inside its range): now the baseline
        pytest.fail(baseline_failure[0] + "".join(f"\nknown finding: {f}" for f in findings), pytrace=False)
    if findings:  # everything else held: end as xfail naming the findings and this run's values
        pytest.xfail(" | ".join(findings))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    failure = getattr(item, "_dlclaims_baseline_failure", None)
    if call.when == "call" and failure and hasattr(report, "wasxfail"):
        # An xfail marker covers the claim it names, never a baseline mismatch.
        del report.wasxfail
        report.outcome = "failed"
        report.longrepr = f"{failure}\n(the test's xfail covers its claim, not this baseline mismatch)"
    return report


def _data_unavailable_is_skip(item):
    try:
        return (yield)
    except DataUnavailable as exc:
        reason = data_skip_reason(exc, item.config.getoption("require_data"))
        if reason is None:
            raise
        pytest.skip(reason)


class _Collector:
    """Gathers one session's outcomes and claim records (xdist workers' reports included).

    Registered per config rather than as module hooks, so a nested in-process pytest run
    (pytester) never writes into the outer session's state.
    """

    def __init__(self, state: dict):
        self.state = state

    def pytest_runtest_logreport(self, report):
        outcome = self.state["outcomes"].setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        outcome["seconds"] += getattr(report, "duration", 0.0)
        if hasattr(report, "wasxfail"):
            outcome["outcome"] = "xfailed"
            outcome["reason"] = report.wasxfail
        elif report.failed:
            outcome["outcome"] = "failed"
            outcome["reason"] = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""
        elif report.skipped and report.when in ("setup", "call"):
            outcome["outcome"] = "skipped"
        for key, value in report.user_properties:
            if key == _RECORDS_KEY:
                self.state["records"].append((report.nodeid, value))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes the report
        return
    state = config._dlclaims
    records = verdict.finalize(state["records"], state["outcomes"])
    if not records:
        return
    import torch

    from . import report

    meta = {
        "scale": config.getoption("scale"),
        "seed_offset": config.getoption("seed_offset"),
        "torch": torch.__version__,
        "devices": sorted({f"{r.get('device')}: {r.get('device_name')}" for r in records if r.get("device_name")}),
        "written": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "args": list(config.invocation_params.args),
    }
    out_dir = Path(config.rootpath, config.getoption("report_dir"))
    registry = Path(config.rootpath, "claims", "coverage.toml")
    coverage = report.load_coverage(registry) if registry.is_file() else None
    md, _ = report.write(records, out_dir, meta, coverage)
    state["written"] = (md, report.summarize(records), report.baseline_summary(records))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = getattr(config, "_dlclaims", {}).get("written")
    if not written:
        return
    md, counts, baseline_line = written
    terminalreporter.write_sep("-", "dlclaims")
    terminalreporter.write_line(", ".join(f"{v} {k}" for k, v in counts.items()) + f"  → {md}")
    if baseline_line:
        terminalreporter.write_line(baseline_line)


# ---------------------------------------------------------------- regression baselines


@pytest.fixture
def baseline(request, scale, claim) -> baselines.BaselineCheck:
    """`baseline.check({...})`: the test's numbers against baselines/<scale>/<device>/<module>/<test>.npz.

    Compared after the test body (a mismatch never hides a claim): exactly on the code path the
    baseline was made on, by each number's declared nature elsewhere (`dlclaims.baselines`).
    Baselines hold the default seed (--seed-offset 0); under another offset the claim is still
    asserted but its numbers are not compared. --regen-baselines rewrites them.
    """
    node = request.node
    name = node.name.split("[", 1)[0]
    callspec = getattr(node, "callspec", None)
    extra = "-".join(str(v) for k, v in callspec.params.items() if k != "device") if callspec else ""
    basename = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{extra}" if extra else name)
    device_type = _device_type(node)
    config = request.config
    check = baselines.BaselineCheck(
        path=Path(config.rootpath, "baselines", scale, device_type, Path(node.fspath).stem, basename + ".npz"),
        device_type=device_type,
        fingerprint=lambda: baselines.fingerprint(device_type, runtime.device_name(device_type)),
        deterministic=device_type == "cpu",
        compare_enabled=config.getoption("seed_offset") == 0,
        regenerate=config.getoption("regen_baselines"),
        # CI on CPU compares against committed baselines; accelerator baselines are written by their first run.
        missing_is_error=device_type == "cpu" and os.environ.get("CI", "").lower() in ("1", "true"),
    )
    node._dlclaims_baseline = check
    return check


def _compare_baseline(item) -> baselines.Outcome | None:
    """Run the test's deferred baseline comparison and keep its outcome beside the claims."""
    check = getattr(item, "_dlclaims_baseline", None)
    outcome = check.run() if check is not None else None
    log = getattr(item, "_dlclaims_log", None)
    if outcome is not None and log is not None:
        log.baseline(outcome.as_dict())
    if outcome is not None and not outcome.ok:
        item._dlclaims_baseline_failure = outcome.message()
    return outcome


# ---------------------------------------------------------------- the time plan of GPU runs (dlclaims.plan)


class PlanPlugin:
    """Registered by dlclaims.pytest_plugin: tiers, --plan, --budget, --progress, --timeout-factor."""

    def __init__(self, config):
        self.config = config
        self.scale = config.getoption("scale")
        self.tier = config.getoption("dlclaims_tier")
        budget = config.getoption("dlclaims_budget")
        self.budget_s = plan.DEFAULT_BUDGET_S if budget is None else budget
        self.show_plan = config.getoption("dlclaims_plan")
        self.progress = config.getoption("dlclaims_progress")
        self.timeout_factor = config.getoption("dlclaims_timeout_factor")
        self.gpu_gib = config.getoption("dlclaims_gpu_gib")
        # Planned (costs looked up, the budget enforced) when asked for, and for every full-scale
        # run (the nightly's): a smoke run on CPU CI pays nothing.
        self.active = bool(self.show_plan or self.progress or budget is not None or self.scale == "full")
        self.workers = plan.workers_of(config)
        self.costs: dict[str, plan.Cost | None] = {}
        self.checked = False
        self.start = _time.monotonic()
        self.done_gpu_s = 0.0
        self.finished = 0
        self.planned = 0

    def _terminal(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def _write(self, line: str) -> None:
        terminal = self._terminal()
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line, flush=True)

    def _plan(self, entries: list[plan.Entry], other: list[plan.Entry]) -> plan.Plan:
        return plan.Plan(self.scale, self.workers, self.tier, self.budget_s, entries, other)

    def _check(self, plan: plan.Plan) -> None:
        """Print the plan (--plan, then stop) or refuse an over-budget run; remember the costs."""
        self.checked = True
        self.costs = {e.nodeid: e.cost for e in plan.entries}
        self.planned = len(plan.known)
        if self.show_plan:
            for line in plan.lines(self.gpu_gib):
                self._write(line)
        if plan.over_budget and plan.known:
            raise pytest.UsageError(plan.refusal())

    # Collection in this process (serial, --plan, or an xdist worker): tiers, costs on the items.
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        keep, deselected, entries, other = [], [], [], []
        for item in items:
            entry = plan.entry_for_item(item, self.scale)
            if entry is None:
                keep.append(item)
                continue
            tier = entry.cost.tier if entry.cost else "nightly"
            if self.tier != "all" and tier != self.tier:
                deselected.append(item)
                other.append(entry)
                continue
            item._dlclaims_cost = entry.cost
            keep.append(item)
            entries.append(entry)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = keep
        if self.active and not hasattr(config, "workerinput"):  # serial (or --plan); xdist's below
            self._check(self._plan(entries, other))
        if self.show_plan:  # printed: nothing runs
            config.hook.pytest_deselected(items=list(items))
            items[:] = []

    def pytest_sessionfinish(self, session, exitstatus):
        if self.show_plan and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # the plan was the point

    # The xdist controller never collects: it plans from the first worker's collected ids (the
    # paper tier is already deselected there, so its section comes from the other tier's lookup).
    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        if self.checked or not self.active:
            return
        entries = plan.entries_for_nodeids(ids, self.config.rootpath, self.scale)
        self._check(self._plan(entries, []))

    def pytest_runtest_logstart(self, nodeid, location):
        if not self.progress or plan.device_of(nodeid) != plan.PLANNED_DEVICE:
            return
        cost = self.costs.get(nodeid)
        self._write(f"[dlclaims] {plan.fmt(_time.monotonic() - self.start)} start {nodeid} "
                    f"(estimate {plan.fmt(cost.gpu_s) if cost else '?'})")

    def pytest_runtest_logreport(self, report):
        """One line when a CUDA test ends (its call, or a setup that skipped or failed)."""
        if not self.progress or plan.device_of(report.nodeid) != plan.PLANNED_DEVICE:
            return
        if not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        cost = self.costs.get(report.nodeid)
        self.finished += 1
        self.done_gpu_s += cost.gpu_s if cost else 0.0
        total = sum(c.gpu_s for c in self.costs.values() if c)
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        self._write(f"[dlclaims] {plan.fmt(_time.monotonic() - self.start)} {outcome} {report.nodeid} in "
                    f"{plan.fmt(report.duration)} (estimate {plan.fmt(cost.gpu_s) if cost else '?'}); {self.finished} "
                    f"finished, ≈ {plan.fmt(max(total - self.done_gpu_s, 0.0) / self.workers)} of estimated wall left")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item):
        cost = getattr(item, "_dlclaims_cost", None)
        limit = plan.timeout_for(cost, self.timeout_factor)
        with plan.deadline(limit, item.nodeid, cost):
            return (yield)
