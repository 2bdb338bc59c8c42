"""Render pytest-benchmark JSON runs of the CNTK throughput benchmarks into a report.

    python -m dlclaims.benchreport bench.json [older.json ...] [--out-dir reports]

writes ``reports/benchmarks.md`` (throughput per device, kernel, depth, implementation,
backend and dtype, with the spread across rounds, accuracy against the float64 engine, peak
memory, ratios against the torch engine, the reference transcription and neural-tangents, the
percent of a measured roofline, the issue's targets, scaling with n, a projection to the full
CIFAR-10 kernel, and one history column per run) and ``reports/benchmarks.png``.
Benchmarks count when their ``extra_info`` has ``entries_per_s``, ``kernel``, ``depth``,
``implementation`` and ``device_type`` (see benchmarks/test_cntk_throughput.py); a run's
``kind="peak"`` entry gives the roofline, ``kind="scaling"`` entries the scaling table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ENGINE, REFERENCE, NEURAL_TANGENTS = "engine", "reference", "neural-tangents"
TORCH, FUSED = "torch", "fused"
# Issue 17's targets: (device type, kernel, depth, what, number). "max_us": at most that many
# µs per entry (fused float32); "vs_torch": at least × the torch engine in the same dtype;
# "vs_nt": at least × neural-tangents in the same dtype.
TARGETS = (
    ("cpu", "cntk-v", 21, "max_us", 15.0), ("cpu", "cntk-v", 21, "vs_torch", 5.0),
    ("cpu", "cntk-gap", 21, "max_us", 25_000.0), ("cpu", "cntk-gap", 21, "vs_torch", 4.0),
    ("cpu", "cntk-gap", 3, "vs_nt", 50.0),
    ("cuda", "cntk-v", 21, "max_us", 0.1), ("cuda", "cntk-gap", 21, "max_us", 100.0),
)
# Full CIFAR-10 kernel: one triangle (with diagonal) of the 50k train Gram + 50k × 10k test.
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
CIFAR_ENTRIES = CIFAR_TRAIN * (CIFAR_TRAIN + 1) // 2 + CIFAR_TRAIN * CIFAR_TEST
# Roofline model of one CNTK entry at 32×32: every layer updates each cell of its offset
# classes (H·W cells for CNTK-V, (H·W)² for GAP) with ≈ 48 float32 operations (an FMA
# counts 2): two 3×3 box sums done separably (8 adds), Σ and Θ scalings (3), P, Σ², P − Σ²,
# max, √ (5), the atan2 polynomial with its reduction (≈ 28: |x|, max, min, ÷, t², 8 FMAs,
# ×, 2 × (− and select)), J and D (3), the class masks (2). Memory traffic is negligible:
# everything stays in L1 (CPU) or registers / shared memory (GPU), so the roofline is the
# arithmetic peak of the same run's `test_machine_peak` (the larger of a float32 matrix product
# and, on CPU, the nominal FMA peak: MKL's GEMM does not reach the AMD core's peak),
# with every non-FMA CNTK operation counted as one FMA-slot operation — a conservative percent.
OPS_PER_CELL_LAYER = 48
IMAGE_SIDE = 32
_REQUIRED = ("entries_per_s", "kernel", "depth", "implementation", "device_type")
_IMPLEMENTATION_ORDER = {ENGINE: 0, REFERENCE: 1, NEURAL_TANGENTS: 2}
_BACKEND_ORDER = {FUSED: 0, TORCH: 1}


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
    backend: str = ""
    dtype: str = "float64"
    spread: float | None = None  # slowest / fastest round
    max_relative_error: float | None = None  # against the float64 torch engine
    peak_mib: float | None = None
    versions: str = ""

    @property
    def key(self) -> tuple[str, str, int, str, str, str]:
        return (self.device_type, self.kernel, self.depth, self.implementation, self.backend,
                self.dtype)

    @property
    def us_per_entry(self) -> float:
        return 1e6 / self.entries_per_s


@dataclass(frozen=True)
class Run:
    label: str
    timestamp: str
    measurements: tuple[Measurement, ...]
    peaks: dict = field(default_factory=dict)  # device_type → float32 ops/s (the ceiling)
    # device_type → (measured matrix product, nominal peak or None): what the ceiling came from
    peak_sources: dict = field(default_factory=dict)
    scaling: tuple[dict, ...] = ()


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def load_run(path: str | Path) -> Run:
    data = json.loads(Path(path).read_text())
    timestamp = data.get("datetime", "")
    commit = (data.get("commit_info") or {}).get("id") or ""
    label = f"{timestamp[:16].replace('T', ' ')}" + (f" @{commit[:7]}" if commit else "")
    label = label.strip() or Path(path).stem
    measurements, peaks, peak_sources, scaling = [], {}, {}, []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if info.get("kind") == "peak":
            # The ceiling: the larger of the measured product and the nominal peak (CPU).
            measured = float(info["ops_per_s"])
            nominal = _optional_float(info.get("nominal_ops_per_s"))
            peaks[info["device_type"]] = max(measured, nominal or 0.0)
            peak_sources[info["device_type"]] = (measured, nominal)
            continue
        if info.get("kind") == "scaling":
            scaling.append(info)
            continue
        if not all(k in info for k in _REQUIRED):
            continue
        measurements.append(Measurement(
            run=label, device_type=info["device_type"], device=info.get("device", info["device_type"]),
            kernel=info["kernel"], depth=int(info["depth"]), implementation=info["implementation"],
            entries_per_s=float(info["entries_per_s"]), n_entries=int(info.get("n_entries", 0)),
            backend=info.get("backend", ""), dtype=info.get("dtype", "float64"),
            spread=_optional_float(info.get("spread")),
            max_relative_error=_optional_float(info.get("max_relative_error")),
            peak_mib=_optional_float(info.get("peak_mib")), versions=info.get("versions", "")))
    return Run(label=label, timestamp=timestamp, measurements=tuple(measurements), peaks=peaks,
               peak_sources=peak_sources,
               scaling=tuple(scaling))


def latest(runs: Sequence[Run]) -> dict[tuple, Measurement]:
    """Each (device, kernel, depth, implementation, backend, dtype) from the newest run that
    measured it."""
    merged: dict[tuple, Measurement] = {}
    for run in sorted(runs, key=lambda r: r.timestamp):
        for m in run.measurements:
            merged[m.key] = m
    return merged


def latest_peaks(runs: Sequence[Run]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for run in sorted(runs, key=lambda r: r.timestamp):
        peaks.update(run.peaks)
    return peaks


def ops_per_entry(kernel: str, depth: int, side: int = IMAGE_SIDE) -> float:
    """Roofline operations of one kernel entry (see `OPS_PER_CELL_LAYER`)."""
    cells = side * side if kernel == "cntk-v" else (side * side) ** 2
    return OPS_PER_CELL_LAYER * cells * (depth - 1)


def _find(measurements: dict[tuple, Measurement], m: Measurement, implementation: str,
          backend: str, dtype: str | None = None) -> Measurement | None:
    return measurements.get((m.device_type, m.kernel, m.depth, implementation, backend,
                             m.dtype if dtype is None else dtype))


def _ratio(m: Measurement, base: Measurement | None) -> float | None:
    return m.entries_per_s / base.entries_per_s if base else None


def _vs_torch(current, m: Measurement) -> float | None:
    return _ratio(m, _find(current, m, ENGINE, TORCH))


def _vs_reference(current, m: Measurement) -> float | None:
    return _ratio(m, _find(current, m, REFERENCE, "per-pair", "float64"))


def _vs_neural_tangents(current, m: Measurement) -> float | None:
    return _ratio(m, _find(current, m, NEURAL_TANGENTS, "jax"))


def roofline_percent(m: Measurement, peaks: dict[str, float]) -> float | None:
    peak = peaks.get(m.device_type)
    if not peak:
        return None
    return 100.0 * m.entries_per_s * ops_per_entry(m.kernel, m.depth) / peak


def _fmt_rate(x: float) -> str:
    return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}×"


def _fmt_optional(x: float | None, pattern: str) -> str:
    return "–" if x is None else format(x, pattern)


def _fmt_time(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:,.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:,.2f} ms"
    return f"{us:,.3g} µs"


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400.0), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def _series_key(device_type: str, implementation: str, backend: str = "", dtype: str = ""):
    return (device_type, _IMPLEMENTATION_ORDER.get(implementation, len(_IMPLEMENTATION_ORDER)),
            implementation, _BACKEND_ORDER.get(backend, len(_BACKEND_ORDER)), backend, dtype)


def _sort_key(m: Measurement):
    return (m.kernel, m.depth) + _series_key(m.device_type, m.implementation, m.backend, m.dtype)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _target_rows(current: dict[tuple, Measurement]) -> list[list[str]]:
    rows = []
    for device_type, kernel, depth, what, number in TARGETS:
        fused = [m for m in current.values()
                 if (m.device_type, m.kernel, m.depth, m.implementation, m.backend, m.dtype)
                 == (device_type, kernel, depth, ENGINE, FUSED, "float32")]
        if not fused:
            rows.append([device_type, kernel, str(depth), _target_text(what, number),
                         "–", "not measured"])
            continue
        m = fused[0]
        if what == "max_us":
            value, met, shown = m.us_per_entry, m.us_per_entry <= number, _fmt_time(m.us_per_entry)
        else:
            ratio = _vs_torch(current, m) if what == "vs_torch" else _vs_neural_tangents(current, m)
            value, met, shown = ratio, ratio is not None and ratio >= number, _fmt_ratio(ratio)
        verdict = "not measured" if value is None else ("met" if met else "NOT met")
        rows.append([m.device, kernel, str(depth), _target_text(what, number), shown, verdict])
    return rows


def _target_text(what: str, number: float) -> str:
    return {"max_us": f"fused float32 ≤ {_fmt_time(number)} per entry",
            "vs_torch": f"fused ≥ {number:g}× torch engine, float32",
            "vs_nt": f"fused ≥ {number:g}× neural-tangents, float32"}[what]


def render_markdown(runs: Sequence[Run], chart_name: str | None) -> str:
    current = latest(runs)
    peaks = latest_peaks(runs)
    ordered = sorted(current.values(), key=_sort_key)
    lines = ["# CNTK throughput", "",
             "Kernel entries per second (an entry is one K(x, z) value; every benchmark computes "
             "a cross kernel, so each entry is really computed) at 32×32×3, fastest of the rounds, "
             "with the spread (slowest / fastest round), the largest relative error against the "
             "float64 torch engine, and the peak memory one call adds. Runs: "
             + ", ".join(r.label for r in sorted(runs, key=lambda r: r.timestamp)) + ".", ""]
    devices = sorted({(m.device, m.versions) for m in ordered})
    lines += ["Devices: " + "; ".join(f"{d} — {v}" if v else d for d, v in devices) + ".", ""]
    lines += _table(
        ["device", "kernel", "depth", "implementation", "backend", "dtype", "entries/s",
         "time / entry", "spread", "max rel. error", "peak MiB", "× torch", "× reference",
         "× neural-tangents", "% roofline"],
        ([m.device, m.kernel, str(m.depth), m.implementation, m.backend, m.dtype,
          _fmt_rate(m.entries_per_s), _fmt_time(m.us_per_entry),
          _fmt_optional(m.spread, ".2f"), _fmt_optional(m.max_relative_error, ".1e"),
          _fmt_optional(m.peak_mib, ",.1f"),
          _fmt_ratio(_vs_torch(current, m)) if m.backend != TORCH else "",
          _fmt_ratio(_vs_reference(current, m)) if m.implementation != REFERENCE else "",
          _fmt_ratio(_vs_neural_tangents(current, m)) if m.implementation != NEURAL_TANGENTS else "",
          _fmt_optional(roofline_percent(m, peaks), ".1f")]
         for m in ordered))

    lines += ["", "## Targets (issue 17)", "",
              ("On the 2-core CPU the issue measured (ratios side by side in one run); GPU "
              "targets on an H100/H200."), ""]
    lines += _table(["device", "kernel", "depth", "target", "measured", "verdict"],
                    _target_rows(current))

    lines += ["", "## Roofline", "",
              (f"One entry costs ≈ {OPS_PER_CELL_LAYER} float32 operations per cell and layer "
              f"(H·W cells for CNTK-V, (H·W)² for GAP; see `OPS_PER_CELL_LAYER`), all in cache, "
              f"so the ceiling is the arithmetic peak: the larger of a float32 matrix product "
              f"measured in the same run and, on CPU, the nominal peak (threads × clock × SIMD "
              f"lanes × 2 FMA units × 2):"), ""]
    sources = {}
    for run in sorted(runs, key=lambda r: r.timestamp):
        sources.update(run.peak_sources)
    lines += _table(["device type", "matrix product (float32 ops/s)", "nominal peak",
                     "ceiling", "CNTK-V depth 21 floor", "CNTK-GAP depth 21 floor"],
                    ([d, *(_fmt_optional(x, ".3g") for x in sources.get(d, (None, None))), f"{p:.3g}",
                      _fmt_time(1e6 * ops_per_entry("cntk-v", 21) / p),
                      _fmt_time(1e6 * ops_per_entry("cntk-gap", 21) / p)]
                     for d, p in sorted(peaks.items())))

    scaling = [s for run in sorted(runs, key=lambda r: r.timestamp)[-1:] for s in run.scaling]
    if scaling:
        lines += ["", "## Scaling with n (fused float32, depth 21)", "",
                  ("Cross: n × n kernel; Gram: the symmetric n × n matrix (n(n + 1)/2 pairs "
                  "computed, n² entries delivered)."), ""]
        lines += _table(["device", "kernel", "mode", "n", "entries/s", "spread", "peak MiB"],
                        ([s.get("device", s["device_type"]), s["kernel"], s["mode"], str(r["n"]),
                          _fmt_rate(r["entries_per_s"]), _fmt_optional(r.get("spread"), ".2f"),
                          _fmt_optional(r.get("peak_mib"), ",.1f")]
                         for s in scaling for r in s["rows"]))

    lines += ["", "## Projection: the full CIFAR-10 kernel", "",
              (f"{CIFAR_TRAIN:,} × {CIFAR_TRAIN:,} train Gram (one triangle) + {CIFAR_TRAIN:,} × "
              f"{CIFAR_TEST:,} test = {CIFAR_ENTRIES:,} entries, at the measured rate on one device."), ""]
    lines += _table(["device", "kernel", "depth", "implementation", "backend", "dtype", "entries/s",
                     "projected time"],
                    ([m.device, m.kernel, str(m.depth), m.implementation, m.backend, m.dtype,
                      _fmt_rate(m.entries_per_s), _fmt_duration(CIFAR_ENTRIES / m.entries_per_s)]
                     for m in ordered))

    if len(runs) > 1:
        history = sorted(runs, key=lambda r: r.timestamp)
        by_run = [{m.key: m for m in run.measurements} for run in history]
        keys = sorted({m.key for run in history for m in run.measurements},
                      key=lambda k: _sort_key(current[k]))
        lines += ["", "## History (entries/s per run)", ""]
        lines += _table(["device", "kernel", "depth", "implementation", "backend", "dtype"]
                        + [r.label for r in history],
                        ([k[0], k[1], str(k[2]), k[3], k[4], k[5]]
                         + [_fmt_rate(run[k].entries_per_s) if k in run else "–" for run in by_run]
                         for k in keys))
    if chart_name:
        lines += ["", f"![entries per second]({chart_name})"]
    return "\n".join(lines) + "\n"


def render_chart(runs: Sequence[Run], path: Path) -> None:
    """Grouped bars (log scale): one panel per kernel, depths on x, a bar per series
    (device, implementation, backend, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    current = sorted(latest(runs).values(), key=_sort_key)
    kernels = sorted({m.kernel for m in current})
    fig, axes = plt.subplots(1, max(1, len(kernels)), figsize=(7 * max(1, len(kernels)), 4.5),
                             squeeze=False)
    for ax, kernel in zip(axes[0], kernels):
        rows = [m for m in current if m.kernel == kernel]
        depths = sorted({m.depth for m in rows})
        series = sorted({(m.device_type, m.implementation, m.backend, m.dtype) for m in rows},
                        key=lambda s: _series_key(*s))
        width = 0.8 / max(1, len(series))
        for i, (device_type, implementation, backend, dtype) in enumerate(series):
            values = {m.depth: m.entries_per_s for m in rows
                      if (m.device_type, m.implementation, m.backend, m.dtype)
                      == (device_type, implementation, backend, dtype)}
            xs = [d_i + i * width for d_i, d in enumerate(depths) if d in values]
            label = f"{implementation}{'/' + backend if backend else ''} {dtype} ({device_type})"
            ax.bar(xs, [values[d] for d in depths if d in values], width, label=label)
        ax.set_xticks([d_i + 0.4 - width / 2 for d_i in range(len(depths))], [str(d) for d in depths])
        ax.set_yscale("log")
        ax.set_xlabel("depth")
        ax.set_ylabel("kernel entries / s")
        ax.set_title(kernel)
        ax.legend(fontsize=7)
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
