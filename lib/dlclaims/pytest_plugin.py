"""The dlclaims pytest plugin: options, thin fixtures and hooks. The work lives in the library.

Options: --scale {smoke,full}, --seed-offset N, --require-data, --report-dir DIR.
Fixtures: device (cpu / cuda[gpu] / xla[tpu] variants), scale, protocol, seed, claim, baseline.
Hooks: GPU pinning per xdist worker, seeding, data-unavailable → skip, claim records
gathered from workers and written to reports/claims.{md,json} at the end of the session.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

import pytest

from . import runtime
from .data import DataUnavailable
from .record import NOT_REPRODUCED, ClaimLog

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


def pytest_configure(config):
    # Before any test module imports torch and initialises CUDA: one GPU per xdist worker.
    config._dlclaims_pinned_gpu = runtime.pin_worker_gpu()
    # One intra-op thread per process unless DLCLAIMS_THREADS says otherwise: CPU reductions
    # then sum in the same order in `pytest` and `pytest -n N`, so numbers match bit for bit
    # (parallelise with -n). Benchmarks set their own thread count.
    import torch

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
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
    """The test id without its device: the CPU and CUDA variants share a seed."""
    callspec = getattr(item, "callspec", None)
    params = {k: v for k, v in callspec.params.items() if k != "device"} if callspec else {}
    base = item.nodeid.split("[", 1)[0]
    return base + (repr(sorted((k, repr(v)) for k, v in params.items())) if params else "")


@pytest.fixture
def seed(request) -> int:
    return runtime.derive_seed(_seed_identity(request.node), request.config.getoption("seed_offset"))


@pytest.fixture(autouse=True)
def _seeded(request, seed):
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
    result = yield from _data_unavailable_is_skip(item)
    log = getattr(item, "_dlclaims_log", None)
    if log is not None and log.findings:  # everything else held: end as xfail naming the findings
        pytest.xfail(" | ".join(log.findings))
    return result


def _data_unavailable_is_skip(item):
    try:
        return (yield)
    except DataUnavailable as exc:
        if item.config.getoption("require_data"):
            raise
        pytest.skip(f"data unavailable: {exc}")


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


def _final_records(state) -> list[dict]:
    records = []
    for nodeid, recs in state["records"]:
        outcome = state["outcomes"].get(nodeid, {})
        for r in recs:
            r = dict(r, outcome=outcome.get("outcome", "passed"), seconds=outcome.get("seconds", 0.0))
            if r["outcome"] == "xfailed" and r["role"] == "claim" and r["verdict"] == NOT_REPRODUCED:
                r["verdict"] = NOT_REPRODUCED + " (xfail)"
            records.append(r)
        if outcome.get("outcome") == "failed" and not any(r["verdict"] != "reproduced" for r in recs):
            records.append({"test": nodeid, "statement": "test failed outside its claim checks", "role": "error",
                            "verdict": "error", "measured": None, "unit": "", "threshold": "",
                            "details": {"reason": outcome.get("reason", "")}, "index": 10**6,
                            "device": recs[0]["device"] if recs else "", "scale": recs[0]["scale"] if recs else "",
                            "seconds": outcome.get("seconds", 0.0)})
    return records


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes the report
        return
    state = config._dlclaims
    records = _final_records(state)
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
    md, _ = report.write(records, out_dir, meta)
    state["written"] = (md, report.summarize(records))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = getattr(config, "_dlclaims", {}).get("written")
    if not written:
        return
    md, counts = written
    terminalreporter.write_sep("-", "dlclaims")
    terminalreporter.write_line(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"  → {md}")


# ---------------------------------------------------------------- regression baselines


@pytest.fixture
def original_datadir(request, scale) -> Path:
    """pytest-regressions' baseline folder: baselines/<scale>/<device>/<module>/ under the root."""
    module = Path(request.node.fspath).stem
    return Path(request.config.rootpath, "baselines", scale, _device_type(request.node), module)


class Baseline:
    """Exact (CPU) or tolerant (accelerator) comparison of a test's deterministic numbers."""

    def __init__(self, ndarrays_regression, basename: str, exact: bool, compare: bool):
        self._regression = ndarrays_regression
        self._basename = basename
        self.exact = exact
        self.compare = compare

    def check(self, values: dict, *, rtol: float = 1e-4, atol: float = 1e-6, tolerances: dict | None = None):
        import numpy as np

        if not self.compare:  # baselines pin the default seed; other offsets test the claim only
            return

        arrays = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in values.items()}
        if self.exact:
            tol = {k: dict(rtol=0.0, atol=0.0) for k in arrays}
        else:
            tol = {k: dict(rtol=rtol, atol=atol) for k in arrays}
            tol.update(tolerances or {})
        self._regression.check(arrays, basename=self._basename, tolerances=tol)


@pytest.fixture
def baseline(request, ndarrays_regression) -> Baseline:
    """Numbers checked against baselines/<scale>/<device>/<module>/<test>.npz (--force-regen rewrites).

    Baselines hold the default seed (--seed-offset 0); under another offset the claim is
    still asserted but its numbers are not compared (there is no baseline for them).
    """
    name = request.node.name.split("[", 1)[0]
    callspec = getattr(request.node, "callspec", None)
    extra = "-".join(str(v) for k, v in callspec.params.items() if k != "device") if callspec else ""
    basename = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{extra}" if extra else name)
    return Baseline(ndarrays_regression, basename, exact=_device_type(request.node) == "cpu",
                    compare=request.config.getoption("seed_offset") == 0)
