"""Multi-GPU correctness: under `pytest -n 2` each xdist worker runs on its own GPU, and a small
claim measures the same numbers as in a serial run. Needs ≥ 2 GPUs visible to this process,
so run this file without -n (the nightly workflow does: `pytest tests -m gpu`)."""

import json
import os

import pytest

from dlclaims import runtime

pytestmark = pytest.mark.gpu
pytest_plugins = ["pytester"]

SMALL_CLAIM = """
import json
import os
from pathlib import Path

import pytest
import torch
from dlclaims.verdict import at_least, between

SOURCE = "multi-GPU check"
PROTOCOL = {"smoke": {"n": 512}, "full": {"n": 512}}

@pytest.mark.parametrize("case", range(4))
def test_small_claim(case, device, protocol, seed, claim):
    x = torch.randn(protocol["n"], 64, device=device)  # seeded by the plugin from the test id
    w = torch.randn(64, 10, device=device)
    confidence = (x @ w).softmax(-1).max(-1).values.mean().item()
    claim.check("mean top-class probability is a probability", confidence, between(0, 1))
    claim.control("mean top-class probability is at least 1.5", confidence, at_least(1.5))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "serial")
    Path(os.environ["MULTI_GPU_OUT"], f"{worker}-{case}.json").write_text(json.dumps({
        "worker": worker, "case": case, "value": confidence,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "uuid": str(torch.cuda.get_device_properties(device).uuid)}))
"""


@pytest.fixture
def two_gpus():
    import torch

    visible = runtime.visible_gpus(os.environ)
    if len(visible) < 2:
        pytest.skip(f"needs ≥ 2 visible GPUs, this process sees {len(visible)} "
                    f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}); "
                    "under pytest -n each worker is pinned to one GPU: run this file without -n")
    if not torch.cuda.is_available():
        pytest.skip("the driver lists GPUs but torch.cuda.is_available() is False")
    return visible


def run_small_claim(pytester, monkeypatch, tmp_path, name: str, *args) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    monkeypatch.setenv("MULTI_GPU_OUT", str(out))
    result = pytester.runpytest_subprocess("-m", "gpu", "--report-dir", f"reports-{name}", *args)
    result.assert_outcomes(passed=4)
    return sorted((json.loads(p.read_text()) for p in out.iterdir()), key=lambda r: r["case"])


def test_two_workers_use_two_gpus_and_match_the_serial_run(two_gpus, pytester, monkeypatch, tmp_path):
    pytester.makeconftest('pytest_plugins = ["dlclaims.pytest_plugin"]')
    pytester.makeini("[pytest]\nmarkers =\n    gpu: cuda variant\n    tpu: xla variant\n")
    pytester.makepyfile(test_small_claim=SMALL_CLAIM)
    monkeypatch.setenv("DLCLAIMS_DEVICES", "cuda")

    serial = run_small_claim(pytester, monkeypatch, tmp_path, "serial")
    parallel = run_small_claim(pytester, monkeypatch, tmp_path, "parallel", "-n", "2")

    by_worker = {r["worker"]: r for r in parallel}
    assert sorted(by_worker) == ["gw0", "gw1"], "both workers ran a case"
    assert {by_worker[w]["visible"] for w in by_worker} == set(two_gpus[:2])  # one pinned entry each
    assert len({by_worker[w]["uuid"] for w in by_worker}) == 2  # ... that are two physical GPUs
    for worker in by_worker:
        assert len({r["uuid"] for r in parallel if r["worker"] == worker}) == 1  # a worker stays put
    assert [r["value"] for r in parallel] == pytest.approx([r["value"] for r in serial], rel=1e-6)
