"""dlclaims.benchreport: pytest-benchmark JSON → reports/benchmarks.md + bar chart."""

from __future__ import annotations

import json

import pytest

from dlclaims import benchreport


def _run_json(path, datetime, rates, commit="abc1234def"):
    benchmarks = [
        {"name": f"test_{impl}[{kernel}-{depth}]", "stats": {"mean": 1.0},
         "extra_info": {"entries_per_s": rate, "n_entries": 4, "device": "cpu (test, 1 threads)",
                        "device_type": "cpu", "dtype": "float64", "kernel": kernel, "depth": depth,
                        "implementation": impl}}
        for (kernel, depth, impl), rate in rates.items()]
    benchmarks.append({"name": "test_unrelated", "stats": {"mean": 1.0}, "extra_info": {}})
    path.write_text(json.dumps({"datetime": datetime, "commit_info": {"id": commit},
                                "benchmarks": benchmarks}))
    return path


RATES = {("cntk-v", 21, "engine"): 1000.0, ("cntk-v", 21, "reference"): 0.5,
         ("cntk-gap", 21, "engine"): 2.0, ("cntk-gap", 21, "neural-tangents"): 0.25,
         ("cntk-gap", 3, "engine"): 9.0}


def test_render_writes_table_targets_projection_history_and_chart(tmp_path):
    old = _run_json(tmp_path / "old.json", "2026-01-01T00:00:00", {("cntk-v", 21, "engine"): 500.0})
    new = _run_json(tmp_path / "new.json", "2026-02-01T00:00:00", RATES)
    markdown = benchreport.render([new, old], out_dir=tmp_path / "reports")
    text = markdown.read_text()
    assert markdown == tmp_path / "reports" / "benchmarks.md"
    assert (tmp_path / "reports" / "benchmarks.png").stat().st_size > 0
    assert "| cpu (test, 1 threads) | cntk-v | 21 | engine | 1,000 | 2,000.0× | – |" in text
    assert "| cpu (test, 1 threads) | cntk-gap | 21 | ≥ 5× neural-tangents | 8.0× | met |" in text
    assert "| cpu (test, 1 threads) | cntk-gap | 3 | ≥ 5× neural-tangents | – | not measured |" in text
    # 1,750,025,000 entries at 1000/s ≈ 20.3 days.
    assert "| cpu (test, 1 threads) | cntk-v | 21 | engine | 1,000 | 20.3 days |" in text
    assert "## History" in text and "| 500 | 1,000 |" in text
    assert "test_unrelated" not in text


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
