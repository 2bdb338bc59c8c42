"""Time plan of a GPU run: each claim test's declared cost, tiers, the wall time on N workers, a
budget, per-test timeouts and progress lines.

A claim module declares the cost of its tests' CUDA variants at each scale in a `COST` table::

    COST = {
        "test_wide_cnn_memorizes_narrow_cnn_does_not[cifar10-20k]": {
            "full": {"gpu_s": 2400, "peak_gib": 6, "measured_on": "estimate"}},
        "test_arora_full_cntk[GAP]": {
            "full": {"gpu_s": 5.5e6, "peak_gib": 60, "measured_on": "estimate", "tier": "paper"}},
        "test_cnn_vs_cntk": {"smoke": {...}, "full": {...}},
    }

keyed by the test function's name, optionally with its parameters (the test id without the device,
e.g. ``[GAP]``; the more specific key wins), then by scale. ``gpu_s`` is GPU-seconds on one GPU,
``peak_gib`` the peak GPU memory, ``measured_on`` the card the figures come from or "estimate",
``tier`` "nightly" (default) or "paper": a paper-tier test is too big for the nightly budget and runs
only under ``--tier=paper`` (a separate manual workflow, sharded over `dlclaims.tiles`).

The plugin's options: ``--plan`` prints the plan without running anything; ``--budget`` (default
2 h, the nightly's) refuses, as a usage error naming the longest tests, a run whose planned wall
time exceeds it; ``--tier``; ``--progress`` prints a line per test start and end (test, elapsed,
estimate) — visible under xdist, where pytest shows only dots; ``--timeout-factor`` gives each
CUDA test with a declared cost a time limit of factor × estimate + 5 minutes.

Only CUDA variants are planned (their figures are GPU-seconds); CPU and XLA variants pass through.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

TIERS = ("nightly", "paper")
DEFAULT_BUDGET_S = 2 * 3600
PLANNED_DEVICE = "cuda"
TIMEOUT_MARGIN_S = 300
DEFAULT_GPU_GIB = 80.0  # H100-class


@dataclass(frozen=True)
class Cost:
    gpu_s: float
    peak_gib: float
    measured_on: str = "estimate"
    tier: str = "nightly"

    @classmethod
    def from_dict(cls, where: str, d: dict) -> Cost:
        unknown = set(d) - {"gpu_s", "peak_gib", "measured_on", "tier"}
        if unknown or "gpu_s" not in d:
            raise ValueError(f"{where}: a cost needs gpu_s (and peak_gib, measured_on, tier); "
                             f"got {sorted(d)}")
        tier = d.get("tier", "nightly")
        if tier not in TIERS:
            raise ValueError(f"{where}: tier must be one of {TIERS}, got {tier!r}")
        return cls(float(d["gpu_s"]), float(d.get("peak_gib", 0.0)), str(d.get("measured_on", "estimate")), tier)


@dataclass
class Entry:
    nodeid: str
    cost: Cost | None


def parse_duration(text: str) -> float:
    """"2h", "90m", "1h30m", "45s", "7200" → seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 2h, 90m, 1h30m, 7200)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return 3600 * h + 60 * m + s


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    text = str(_dt.timedelta(seconds=rest))
    return f"{days}d {text}" if days else text


# ---------------------------------------------------------------- node ids and costs


def split_nodeid(nodeid: str) -> tuple[str, str, list[str]]:
    """("claims/test_x.py", "test_y", ["cuda", "GAP"]) from "claims/test_x.py::test_y[cuda-GAP]".

    Parameter ids are split on "-", so a value containing "-" comes back in pieces; `key_params`
    joins what is left after removing the device.
    """
    path, _, rest = nodeid.partition("::")
    name, _, params = rest.partition("[")
    name = name.split("::")[-1]
    return path, name, params.rstrip("]").split("-") if params else []


DEVICE_IDS = ("cpu", "cuda", "xla")


def device_of(nodeid: str) -> str | None:
    _, _, params = split_nodeid(nodeid)
    return next((p for p in params if p in DEVICE_IDS), None)


def key_params(nodeid: str) -> str:
    """The test id's parameters without the device: "cuda-cifar10-500-8px" → "cifar10-500-8px"."""
    _, _, params = split_nodeid(nodeid)
    device = device_of(nodeid)
    if device is not None:
        params = list(params)
        params.remove(device)
    return "-".join(params)


def lookup(table: dict | None, nodeid: str, scale: str) -> Cost | None:
    """The declared cost of `nodeid` at `scale`: COST[name[params]] before COST[name]."""
    if not table:
        return None
    path, name, _ = split_nodeid(nodeid)
    params = key_params(nodeid)
    for key in ([f"{name}[{params}]"] if params else []) + [name]:
        by_scale = table.get(key)
        if by_scale and scale in by_scale:
            return Cost.from_dict(f"{path} COST[{key!r}][{scale!r}]", by_scale[scale])
    return None


_MODULE_COSTS: dict[Path, dict | None] = {}


def module_cost_table(path: Path) -> dict | None:
    """COST of the module at `path`, imported under a private name (the xdist controller has not
    imported the claim modules; their workers have)."""
    path = path.resolve()
    if path not in _MODULE_COSTS:
        table = None
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"_dlclaims_plan_{abs(hash(path))}", path)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
                table = getattr(module, "COST", None)
            finally:
                sys.path.remove(str(path.parent))
        _MODULE_COSTS[path] = table
    return _MODULE_COSTS[path]


def entries_for_nodeids(nodeids, rootpath: Path, scale: str) -> list[Entry]:
    """Entries of the CUDA tests among `nodeids`, their costs read from each module's COST."""
    out = []
    for nodeid in nodeids:
        if device_of(nodeid) != PLANNED_DEVICE:
            continue
        table = module_cost_table(Path(rootpath, split_nodeid(nodeid)[0]))
        out.append(Entry(nodeid, lookup(table, nodeid, scale)))
    return out


def entry_for_item(item, scale: str) -> Entry | None:
    if device_of(item.nodeid) != PLANNED_DEVICE:
        return None
    return Entry(item.nodeid, lookup(getattr(getattr(item, "module", None), "COST", None), item.nodeid, scale))


# ---------------------------------------------------------------- schedule


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of list scheduling in the given order (each test to the first free worker), as
    pytest-xdist's load scheduling roughly does."""
    free = [0.0] * max(1, workers)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free) if durations else 0.0


@dataclass
class Plan:
    scale: str
    workers: int
    tier: str
    budget_s: float
    entries: list[Entry] = field(default_factory=list)  # this run's CUDA tests, collection order
    other_tier: list[Entry] = field(default_factory=list)  # deselected by tier

    @property
    def known(self) -> list[Entry]:
        return [e for e in self.entries if e.cost is not None]

    @property
    def unknown(self) -> list[Entry]:
        return [e for e in self.entries if e.cost is None]

    def gpu_s(self, entries=None) -> float:
        return sum(e.cost.gpu_s for e in (self.known if entries is None else entries) if e.cost)

    def wall_s(self, entries=None) -> float:
        entries = self.known if entries is None else [e for e in entries if e.cost]
        return makespan([e.cost.gpu_s for e in entries], self.workers)

    def longest_first_s(self, entries=None) -> float:
        entries = self.known if entries is None else [e for e in entries if e.cost]
        return makespan(sorted((e.cost.gpu_s for e in entries), reverse=True), self.workers)

    @property
    def over_budget(self) -> bool:
        return self.wall_s() > self.budget_s

    def refusal(self) -> str:
        longest = sorted(self.known, key=lambda e: -e.cost.gpu_s)
        named = ", ".join(f"{e.nodeid} ({fmt(e.cost.gpu_s)})" for e in longest[:8])
        more = f" and {len(longest) - 8} more" if len(longest) > 8 else ""
        return (f"planned wall time {fmt(self.wall_s())} on {self.workers} worker(s) exceeds --budget "
                f"{fmt(self.budget_s)} ({fmt(self.gpu_s())} GPU time; tier {self.tier}, --scale={self.scale}). "
                f"Longest tests: {named}{more}. Deselect tests, add workers, raise --budget, or move a test "
                f"to the paper tier in its module's COST. (--plan prints the whole plan.)")

    def lines(self, gpu_gib: float = DEFAULT_GPU_GIB) -> list[str]:
        head = (f"dlclaims plan: --scale={self.scale}, tier {self.tier}, {self.workers} worker(s) with one GPU "
                f"each, budget {fmt(self.budget_s)}")
        out = [head]
        out += self._table(self.entries, gpu_gib)
        verdict = "over budget" if self.over_budget else "within budget"
        out.append(f"  total {fmt(self.gpu_s())} GPU time over {self.workers} worker(s): wall ≈ {fmt(self.wall_s())} "
                   f"in collection order (longest first {fmt(self.longest_first_s())}; longest test "
                   f"{fmt(max((e.cost.gpu_s for e in self.known), default=0))}) — {verdict}")
        if self.unknown:
            out.append(f"  {len(self.unknown)} test(s) without a declared cost (?) are not counted: "
                       f"add them to their module's COST")
        if self.other_tier:
            other = "paper" if self.tier == "nightly" else "nightly"
            out.append(f"{other} tier (deselected here; --tier={other} runs it): "
                       f"{fmt(self.gpu_s(self.other_tier))} GPU time, wall ≈ {fmt(self.wall_s(self.other_tier))} "
                       f"on {self.workers} worker(s)")
            out += self._table(self.other_tier, gpu_gib)
        return out

    @staticmethod
    def _table(entries: list[Entry], gpu_gib: float) -> list[str]:
        rows = ["  estimate   peak GiB  figures from        test"]
        for e in sorted(entries, key=lambda e: -(e.cost.gpu_s if e.cost else -1)):
            if e.cost is None:
                rows.append(f"  {'?':>9}  {'?':>8}  {'(no COST entry)':<18}  {e.nodeid}")
                continue
            warn = f"  (over {gpu_gib:g} GiB)" if e.cost.peak_gib > gpu_gib else ""
            rows.append(f"  {fmt(e.cost.gpu_s):>9}  {e.cost.peak_gib:8.1f}  {e.cost.measured_on[:18]:<18}  "
                        f"{e.nodeid}{warn}")
        return rows


def split_tiers(entries: list[Entry], tier: str) -> tuple[list[Entry], list[Entry]]:
    """(this tier's entries, the other tier's). Tests without a cost belong to the nightly tier."""
    def tier_of(e: Entry) -> str:
        return e.cost.tier if e.cost else "nightly"
    if tier == "all":
        return entries, []
    return [e for e in entries if tier_of(e) == tier], [e for e in entries if tier_of(e) != tier]


# ---------------------------------------------------------------- the pytest side


def workers_of(config) -> int:
    n = getattr(config.option, "numprocesses", None)
    return int(n) if isinstance(n, int) and n > 0 else 1


def timeout_for(cost: Cost | None, factor: float) -> float | None:
    """factor × the declared estimate + 5 minutes; None without a cost or with factor 0."""
    if cost is None or not factor or factor <= 0:
        return None
    return factor * cost.gpu_s + TIMEOUT_MARGIN_S


class TestTimeout(Exception):
    """A test ran past its time limit (factor × its declared cost + a margin)."""

    __test__ = False  # not a test class, despite the name


class deadline:  # noqa: N801 - a context manager used like a function
    """SIGALRM after `limit` seconds raises TestTimeout in the main thread (no-op without a limit,
    off the main thread, or where SIGALRM does not exist). A test stuck inside one long CUDA call is
    interrupted when that call returns to Python."""

    def __init__(self, limit: float | None, nodeid: str = "", cost: Cost | None = None):
        self.limit, self.nodeid, self.cost = limit, nodeid, cost
        self.armed = False

    def _fire(self, signum, frame):
        estimate = f" (estimate {fmt(self.cost.gpu_s)})" if self.cost else ""
        raise TestTimeout(f"{self.nodeid} exceeded its time limit of {fmt(self.limit)}{estimate}")

    def __enter__(self):
        if (self.limit and hasattr(signal, "SIGALRM")
                and threading.current_thread() is threading.main_thread()):
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.limit)
            self.armed = True
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        return False
