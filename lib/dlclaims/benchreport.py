"""Render pytest-benchmark JSON runs of the CNTK throughput benchmarks into a report.

    python -m dlclaims.benchreport bench.json [older.json ...] [--out-dir reports]

writes ``reports/benchmarks.md`` (throughput table with ratios against the reference
transcription and neural-tangents, the issue's ratio targets, a projection to the full
CIFAR-10 kernel, and one history column per run) and ``reports/benchmarks.png``.
Benchmarks count when their ``extra_info`` has ``entries_per_s``, ``kernel``, ``depth``,
``implementation`` and ``device_type`` (see benchmarks/test_cntk_throughput.py).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENGINE, REFERENCE, NEURAL_TANGENTS = "engine", "reference", "neural-tangents"
# Issue 5: (kernel, baseline implementation, minimum engine speed-up on the same device).
TARGETS = (("cntk-gap", NEURAL_TANGENTS, 5.0), ("cntk-v", REFERENCE, 20.0))
# Full CIFAR-10 kernel: one triangle (with diagonal) of the 50k train Gram + 50k × 10k test.
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
CIFAR_ENTRIES = CIFAR_TRAIN * (CIFAR_TRAIN + 1) // 2 + CIFAR_TRAIN * CIFAR_TEST
_REQUIRED = ("entries_per_s", "kernel", "depth", "implementation", "device_type")
_IMPLEMENTATION_ORDER = {ENGINE: 0, REFERENCE: 1, NEURAL_TANGENTS: 2}


@dataclass(frozen=True)
class Measurement:
    run: str  # label of the run it came from
    device_type: str
    device: str
    kernel: str
    depth: int
    implementation: str
    entries_per_s: float
    n_entries: int

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.device_type, self.kernel, self.depth, self.implementation)


@dataclass(frozen=True)
class Run:
    label: str
    timestamp: str
    measurements: tuple[Measurement, ...]


def load_run(path: str | Path) -> Run:
    data = json.loads(Path(path).read_text())
    timestamp = data.get("datetime", "")
    commit = (data.get("commit_info") or {}).get("id") or ""
    label = f"{timestamp[:16].replace('T', ' ')}" + (f" @{commit[:7]}" if commit else "")
    label = label.strip() or Path(path).stem
    measurements = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if not all(k in info for k in _REQUIRED):
            continue
        measurements.append(Measurement(
            run=label, device_type=info["device_type"], device=info.get("device", info["device_type"]),
            kernel=info["kernel"], depth=int(info["depth"]), implementation=info["implementation"],
            entries_per_s=float(info["entries_per_s"]), n_entries=int(info.get("n_entries", 0))))
    return Run(label=label, timestamp=timestamp, measurements=tuple(measurements))


def latest(runs: Sequence[Run]) -> dict[tuple, Measurement]:
    """Each (device, kernel, depth, implementation) from the newest run that measured it."""
    merged: dict[tuple, Measurement] = {}
    for run in sorted(runs, key=lambda r: r.timestamp):
        for m in run.measurements:
            merged[m.key] = m
    return merged


def _ratio(measurements: dict[tuple, Measurement], m: Measurement, baseline: str) -> float | None:
    base = measurements.get((m.device_type, m.kernel, m.depth, baseline))
    return m.entries_per_s / base.entries_per_s if base else None


def _fmt_rate(x: float) -> str:
    return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}×"


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400.0), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def _series_key(device_type: str, implementation: str):
    return (device_type, _IMPLEMENTATION_ORDER.get(implementation, len(_IMPLEMENTATION_ORDER)),
            implementation)


def _sort_key(m: Measurement):
    return (m.kernel, m.depth) + _series_key(m.device_type, m.implementation)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(runs: Sequence[Run], chart_name: str | None) -> str:
    current = latest(runs)
    ordered = sorted(current.values(), key=_sort_key)
    lines = ["# CNTK throughput", "",
             "Kernel entries per second (an entry is one K(x, z) value; every benchmark computes "
             "a cross kernel, so each entry is really computed). Runs: "
             + ", ".join(r.label for r in sorted(runs, key=lambda r: r.timestamp)) + ".", ""]
    lines += _table(
        ["device", "kernel", "depth", "implementation", "entries/s", "× reference", "× neural-tangents"],
        ([m.device, m.kernel, str(m.depth), m.implementation, _fmt_rate(m.entries_per_s),
          _fmt_ratio(_ratio(current, m, REFERENCE)) if m.implementation != REFERENCE else "",
          _fmt_ratio(_ratio(current, m, NEURAL_TANGENTS)) if m.implementation != NEURAL_TANGENTS else ""]
         for m in ordered))

    lines += ["", "## Targets (issue 5)", "",
              "CNTK-GAP engine ≥ 5× neural-tangents; CNTK-V engine ≥ 20× the reference "
              "transcription, on the same device.", ""]
    target_rows = []
    for kernel, baseline, minimum in TARGETS:
        for m in ordered:
            if m.implementation == ENGINE and m.kernel == kernel:
                ratio = _ratio(current, m, baseline)
                verdict = "not measured" if ratio is None else ("met" if ratio >= minimum else "NOT met")
                target_rows.append([m.device, kernel, str(m.depth), f"≥ {minimum:g}× {baseline}",
                                    _fmt_ratio(ratio), verdict])
    lines += _table(["device", "kernel", "depth", "target", "measured", "verdict"], target_rows)

    lines += ["", "## Projection: the full CIFAR-10 kernel", "",
              f"{CIFAR_TRAIN:,} × {CIFAR_TRAIN:,} train Gram (one triangle) + {CIFAR_TRAIN:,} × "
              f"{CIFAR_TEST:,} test = {CIFAR_ENTRIES:,} entries, at the measured rate on one device.", ""]
    lines += _table(["device", "kernel", "depth", "implementation", "entries/s", "projected time"],
                    ([m.device, m.kernel, str(m.depth), m.implementation, _fmt_rate(m.entries_per_s),
                      _fmt_duration(CIFAR_ENTRIES / m.entries_per_s)] for m in ordered))

    if len(runs) > 1:
        history = sorted(runs, key=lambda r: r.timestamp)
        by_run = [{m.key: m for m in run.measurements} for run in history]
        keys = sorted({m.key for run in history for m in run.measurements},
                      key=lambda k: _sort_key(current[k]))
        lines += ["", "## History (entries/s per run)", ""]
        lines += _table(["device", "kernel", "depth", "implementation"] + [r.label for r in history],
                        ([k[0], k[1], str(k[2]), k[3]]
                         + [_fmt_rate(run[k].entries_per_s) if k in run else "–" for run in by_run]
                         for k in keys))
    if chart_name:
        lines += ["", f"![entries per second]({chart_name})"]
    return "\n".join(lines) + "\n"


def render_chart(runs: Sequence[Run], path: Path) -> None:
    """Grouped bars (log scale): one panel per kernel, depths on x, a bar per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    current = sorted(latest(runs).values(), key=_sort_key)
    kernels = sorted({m.kernel for m in current})
    fig, axes = plt.subplots(1, max(1, len(kernels)), figsize=(6 * max(1, len(kernels)), 4),
                             squeeze=False)
    for ax, kernel in zip(axes[0], kernels):
        rows = [m for m in current if m.kernel == kernel]
        depths = sorted({m.depth for m in rows})
        series = sorted({(m.device_type, m.implementation) for m in rows},
                        key=lambda s: _series_key(*s))
        width = 0.8 / max(1, len(series))
        for i, (device_type, implementation) in enumerate(series):
            values = {m.depth: m.entries_per_s for m in rows
                      if (m.device_type, m.implementation) == (device_type, implementation)}
            xs = [d_i + i * width for d_i, d in enumerate(depths) if d in values]
            ax.bar(xs, [values[d] for d in depths if d in values], width,
                   label=f"{implementation} ({device_type})")
        ax.set_xticks([d_i + 0.4 - width / 2 for d_i in range(len(depths))], [str(d) for d in depths])
        ax.set_yscale("log")
        ax.set_xlabel("depth")
        ax.set_ylabel("kernel entries / s")
        ax.set_title(kernel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(json_paths: Sequence[str | Path], out_dir: str | Path = "reports") -> Path:
    """Write benchmarks.md and benchmarks.png under ``out_dir``; returns the markdown path."""
    if isinstance(json_paths, (str, Path)):
        json_paths = [json_paths]
    runs = [load_run(p) for p in json_paths]
    if not any(run.measurements for run in runs):
        raise ValueError(f"no CNTK throughput benchmarks (extra_info with {_REQUIRED}) in {list(json_paths)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart = out / "benchmarks.png"
    render_chart(runs, chart)
    markdown = out / "benchmarks.md"
    markdown.write_text(render_markdown(runs, chart.name))
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlclaims.benchreport",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json files (any order)")
    parser.add_argument("--out-dir", default="reports")
    args = parser.parse_args(argv)
    print(render(args.json, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
