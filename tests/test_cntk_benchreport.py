"""dlclaims.benchreport: pytest-benchmark JSON → reports/benchmarks.md + bar chart."""

from __future__ import annotations

import json

import pytest

from dlclaims import benchreport


def _run_json(path, datetime, rates, commit="abc1234def", peak=None, scaling=None, nominal=None):
    benchmarks = [
        {"name": f"test_{impl}[{kernel}-{depth}-{backend}-{dtype}]", "stats": {"mean": 1.0},
         "extra_info": {"entries_per_s": rate, "n_entries": 4, "device": "cpu (test, 1 threads)",
                        "device_type": "cpu", "dtype": dtype, "kernel": kernel, "depth": depth,
                        "implementation": impl, "backend": backend, "spread": 1.25,
                        "max_relative_error": 3e-7, "peak_mib": 12.5, "versions": "torch 9"}}
        for (kernel, depth, impl, backend, dtype), rate in rates.items()]
    benchmarks.append({"name": "test_unrelated", "stats": {"mean": 1.0}, "extra_info": {}})
    if peak:
        benchmarks.append({"name": "test_machine_peak", "stats": {"mean": 1.0},
                           "extra_info": {"kind": "peak", "ops_per_s": peak, "device_type": "cpu",
                                          **({"nominal_ops_per_s": nominal} if nominal else {})}})
    if scaling:
        benchmarks.append({"name": "test_scaling", "stats": {"mean": 1.0}, "extra_info": scaling})
    path.write_text(json.dumps({"datetime": datetime, "commit_info": {"id": commit},
                                "benchmarks": benchmarks}))
    return path


RATES = {("cntk-v", 21, "engine", "fused", "float32"): 100_000.0,
         ("cntk-v", 21, "engine", "torch", "float32"): 10_000.0,
         ("cntk-v", 21, "engine", "torch", "float64"): 1000.0,
         ("cntk-v", 21, "reference", "per-pair", "float64"): 0.5,
         ("cntk-gap", 21, "engine", "fused", "float32"): 20.0,
         ("cntk-gap", 21, "engine", "torch", "float32"): 10.0,
         ("cntk-gap", 3, "engine", "fused", "float32"): 400.0,
         ("cntk-gap", 3, "neural-tangents", "jax", "float32"): 4.0}
SCALING = {"kind": "scaling", "mode": "gram", "kernel": "cntk-v", "depth": 21, "dtype": "float32",
           "backend": "fused", "device_type": "cpu", "device": "cpu (test, 1 threads)",
           "rows": [{"n": 16, "entries_per_s": 90_000.0, "spread": 1.1, "peak_mib": 1.0}]}


def test_render_writes_table_targets_roofline_projection_history_and_chart(tmp_path):
    old = _run_json(tmp_path / "old.json", "2026-01-01T00:00:00",
                    {("cntk-v", 21, "engine", "torch", "float64"): 500.0})
    new = _run_json(tmp_path / "new.json", "2026-02-01T00:00:00", RATES, peak=1e11, scaling=SCALING)
    markdown = benchreport.render([new, old], out_dir=tmp_path / "reports")
    text = markdown.read_text()
    assert markdown == tmp_path / "reports" / "benchmarks.md"
    assert (tmp_path / "reports" / "benchmarks.png").stat().st_size > 0
    # dtype and backend are part of the key: float32 and float64 torch rows both survive.
    assert "| cpu (test, 1 threads) | cntk-v | 21 | engine | torch | float32 | 10,000 |" in text
    assert "| cpu (test, 1 threads) | cntk-v | 21 | engine | torch | float64 | 1,000 |" in text
    # fused float32 row: 10 µs/entry, 10× torch float32, 200,000× the reference; roofline:
    # 1e5 entries/s × 48 ops × 1024 cells × 20 layers / 1e11 ops/s = 98.3 %.
    assert ("| cpu (test, 1 threads) | cntk-v | 21 | engine | fused | float32 | 100,000 | 10 µs | "
            "1.25 | 3.0e-07 | 12.5 | 10.0× | 200,000.0× | – | 98.3 |") in text
    assert "| cpu (test, 1 threads) | cntk-v | 21 | fused float32 ≤ 15 µs per entry | 10 µs | met |" in text
    assert "| cpu (test, 1 threads) | cntk-v | 21 | fused ≥ 5× torch engine, float32 | 10.0× | met |" in text
    assert "| cpu (test, 1 threads) | cntk-gap | 21 | fused ≥ 4× torch engine, float32 | 2.0× | NOT met |" in text
    assert "| cpu (test, 1 threads) | cntk-gap | 3 | fused ≥ 50× neural-tangents, float32 | 100.0× | met |" in text
    assert "| cuda | cntk-v | 21 | fused float32 ≤ 0.1 µs per entry | – | not measured |" in text
    assert "## Roofline" in text and "| cpu | 1e+11 |" in text
    assert "| cpu (test, 1 threads) | cntk-v | gram | 16 | 90,000 | 1.10 | 1.0 |" in text
    # 1,750,025,000 entries at 1000/s ≈ 20.3 days.
    assert "| cpu (test, 1 threads) | cntk-v | 21 | engine | torch | float64 | 1,000 | 20.3 days |" in text
    assert "## History" in text and "| 500 | 1,000 |" in text
    assert "test_unrelated" not in text


def test_roofline_ceiling_is_the_larger_of_measured_and_nominal_peak(tmp_path):
    """A GEMM that does not reach the core's peak (MKL on AMD) must not put a kernel above
    100 %: the nominal peak, when larger, is the ceiling."""
    run = benchreport.load_run(_run_json(tmp_path / "run.json", "2026-02-01T00:00:00", RATES,
                                         peak=1e11, nominal=4e11))
    assert run.peaks == {"cpu": 4e11}
    fused = benchreport.latest([run])[("cpu", "cntk-v", 21, "engine", "fused", "float32")]
    assert benchreport.roofline_percent(fused, run.peaks) == pytest.approx(24.576)
    text = benchreport.render_markdown([run], chart_name=None)
    assert "| cpu | 1e+11 | 4e+11 | 4e+11 | 2.46 µs | 2.52 ms |" in text


def test_cli(tmp_path, capsys):
    run = _run_json(tmp_path / "run.json", "2026-02-01T00:00:00", RATES)
    assert benchreport.main([str(run), "--out-dir", str(tmp_path / "out")]) == 0
    assert "benchmarks.md" in capsys.readouterr().out
    assert "## History" not in (tmp_path / "out" / "benchmarks.md").read_text()


def test_render_refuses_json_without_cntk_benchmarks(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"datetime": "2026-01-01T00:00:00", "benchmarks": []}))
    with pytest.raises(ValueError, match="no CNTK throughput benchmarks"):
        benchreport.render([empty], out_dir=tmp_path)
