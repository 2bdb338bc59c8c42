"""The GPU smoke command (dlclaims.gpu_smoke, .ci/gpu-smoke) and the data pack it travels with."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dlclaims import data, gpu_smoke, nightly, runtime

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the pack


@pytest.fixture
def source_dir(tmp_path, monkeypatch):
    """A DLCLAIMS_DATA folder with small full-layout MNIST and CIFAR-10 files (random pixels)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "full"
    folder.mkdir()
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
             y_train=np.tile(np.arange(10), 6000).astype(np.int64),
             x_test=rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
             y_test=np.tile(np.arange(10), 1000).astype(np.int64))
    np.savez(folder / "cifar10.npz", x_train=rng.integers(0, 256, (20000, 32, 32, 3), dtype=np.uint8),
             y_train=np.tile(np.arange(10), 2000).astype(np.int64),
             x_test=rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8),
             y_test=np.tile(np.arange(10), 1000).astype(np.int64))
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    return folder


def test_pack_writes_loadable_balanced_subsets_with_their_record(source_dir, tmp_path, monkeypatch):
    out = tmp_path / "pack"
    assert data.main(["pack", str(out), "--sizes", "mnist=500:300,cifar10=200:100"]) == 0
    monkeypatch.setenv(data.DATA_ENV, str(out))
    mnist, cifar = data.load("mnist"), data.load("cifar10")
    assert mnist.x_train.shape == (500, 1, 28, 28) and mnist.x_test.shape == (300, 1, 28, 28)
    assert cifar.x_train.shape == (200, 3, 32, 32) and torch.bincount(cifar.y_train).tolist() == [20] * 10
    assert "packed subset: 500 train / 300 test images" in mnist.source
    original = np.load(source_dir / "mnist.npz")
    record = json.loads(str(np.load(out / "mnist.npz")[data.PACKED_KEY]))
    assert record["counts"] == {"train": 500, "test": 300} and record["source"] == str(source_dir / "mnist.npz")
    # the packed images are the source's own images, labels kept with them
    x, y = mnist.x_train[:, 0].numpy(), mnist.y_train.numpy()
    flat = original["x_train"].reshape(60000, -1)
    rows = [int(np.nonzero((flat == img.reshape(-1)).all(axis=1))[0][0]) for img in x[:5]]
    assert [int(original["y_train"][r]) for r in rows] == y[:5].tolist()
    # a protocol that needs more than the pack holds skips with the reason
    with pytest.raises(data.InsufficientData):
        data.balanced_indices(mnist.y_train, 1000, seed=0)


def test_a_pack_over_its_size_limit_is_refused_and_removed(source_dir, tmp_path):
    out = tmp_path / "pack"
    with pytest.raises(ValueError, match="over the 0.1 MB limit"):
        data.pack(out, {"mnist": (2000, 1000)}, max_mb=0.1)
    assert not list(out.glob("*.npz"))
    assert data.main(["pack", str(out), "--sizes", "mnist=2000:1000", "--max-mb", "0.1"]) == 1


def test_a_packed_file_must_hold_what_it_declares(source_dir, tmp_path, monkeypatch):
    out = tmp_path / "pack"
    data.pack(out, {"mnist": (100, 100)})
    arrays = dict(np.load(out / "mnist.npz"))
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:50], arrays["y_train"][:50]
    np.savez(out / "mnist.npz", **arrays)
    monkeypatch.setenv(data.DATA_ENV, str(out))
    with pytest.raises(data.DataCorrupt, match="the pack declares 100"):
        data.load("mnist")


def test_the_default_pack_covers_the_smoke_protocols_within_40_mb():
    assert data.SMOKE_PACK_MAX_MB <= 40
    mnist_train, mnist_test = data.SMOKE_PACK["mnist"]
    cifar_train, cifar_test = data.SMOKE_PACK["cifar10"]
    assert mnist_train >= 2000 and mnist_test >= 2000  # memorization: 1,000 + 1,000 held out; 2,000 test
    assert cifar_train >= 3000 and cifar_test >= 1000  # vertical flip: 3,000 images, a 1,000-image curve


# ---------------------------------------------------------------- the smoke command


def test_without_cuda_the_smoke_skips_cleanly_saying_why(tmp_path, monkeypatch, capsys):
    if runtime.unavailable_reason("cuda") is None:
        pytest.skip("this machine has a CUDA device")
    monkeypatch.setattr(nightly, "run_limited", lambda *a, **k: pytest.fail("nothing may run without a GPU"))
    assert gpu_smoke.main(["--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "skipped — no CUDA device" in text and "would run: -m pytest tests claims -m gpu --scale=smoke" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "no CUDA device" in summary["skipped"] and {p["part"] for p in summary["parts"]} == {"tests", "benchmarks"}


def test_forced_on_a_cpu_machine_every_cuda_variant_skips_with_its_reason(tmp_path):
    if runtime.unavailable_reason("cuda") is None:
        pytest.skip("this machine has a CUDA device")
    rc = gpu_smoke.main(["--out", str(tmp_path), "--force", "--no-benchmarks", "-n", "1",
                         "tests/test_train.py::test_divergence_is_recorded_not_raised"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0 and summary["outcomes"] == {"skipped": 1}  # the cuda variant (-m gpu selects it alone)
    assert any("no CUDA device" in reason for reason in summary["skip_reasons"])


def test_the_smoke_runs_tests_claims_and_cuda_benchmarks_and_leaves_out_the_paper_tier(tmp_path):
    (tests, test_cmd), (bench, bench_cmd) = gpu_smoke.pytest_commands(tmp_path, ["tests", "claims"])
    assert (tests, bench) == ("tests", "benchmarks")
    assert test_cmd[test_cmd.index("pytest") + 1:][:5] == ["tests", "claims", "-m", "gpu", "--scale=smoke"]
    assert "claims/test_arora_table1.py::test_arora_2k_gap" in test_cmd  # --deselect: ≈ 1 GPU-day
    assert "claims/test_arora_table1.py::test_arora_2k_v" in test_cmd  # the paper's 2K protocol
    assert test_cmd[test_cmd.index("-n") + 1] == "4"  # workers sharing the one GPU
    assert bench_cmd[bench_cmd.index("pytest") + 1:][:5] == ["benchmarks", "-m", "gpu", "-k",
                                                             "test_engine or test_scaling"]
    assert any(a.startswith("--benchmark-json=") for a in bench_cmd)
    only_tests = gpu_smoke.pytest_commands(tmp_path, ["tests"], benchmarks=False)
    assert len(only_tests) == 1 and "--deselect" not in only_tests[0][1]


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="claims.test_theorem1" name="test_theorem1_mnist_random_labels[cuda]" time="12.5"/>
<testcase classname="claims.test_memorization" name="test_wide_cnn[cuda]" time="80.0">
  <failure message="AssertionError: c = 4 fits p = 1">trace</failure></testcase>
<testcase classname="tests.test_multi_gpu" name="test_two_workers[cuda]" time="0.1">
  <skipped message="needs 2 GPUs">skip</skipped></testcase>
</testsuite></testsuites>
"""


def test_with_a_gpu_the_summary_reports_parts_failures_skips_and_rates(tmp_path, monkeypatch, capsys):
    """A fake CUDA machine: the runner is replaced by one that writes what pytest would."""
    monkeypatch.setattr(runtime, "unavailable_reason", lambda device_type: None)
    monkeypatch.setattr(gpu_smoke, "card_name", lambda gpu: "NVIDIA H100 80GB HBM3, 81559 MiB")
    fake_root = tmp_path / "root"
    monkeypatch.setattr(gpu_smoke, "ROOT", fake_root)
    pack = tmp_path / "pack"
    pack.mkdir()
    np.savez(pack / "mnist.npz", **{data.PACKED_KEY: np.array("{}")})
    seen = []

    def fake_run(cmd, limit, env=None, cwd=None):
        seen.append((cmd, limit, env["CUDA_VISIBLE_DEVICES"], env["DLCLAIMS_DATA"]))
        out = tmp_path / "out"
        if "benchmarks" in cmd:
            (out / "benchmarks.json").write_text(json.dumps({"benchmarks": [
                {"name": "test_engine[cuda-cntk-gap-21-fused-float32]",
                 "extra_info": {"entries_per_s": 2.5e4, "kernel": "cntk-gap", "depth": 21, "backend": "fused",
                                "dtype": "float32"}}]}))
            return 124, limit, True, "interrupted after its 2.4-minute limit"
        (out / "junit-tests.xml").write_text(JUNIT)
        (out / "reports").mkdir(parents=True)
        (out / "reports" / "claims.json").write_text(json.dumps({"records": [{"verdict": "reproduced"}] * 3}))
        new = fake_root / "baselines" / "smoke" / "cuda" / "test_theorem1" / "test_x.npz"
        new.parent.mkdir(parents=True)
        new.write_bytes(b"from the pack")
        return 1, 95.0, False, ""

    monkeypatch.setattr(nightly, "run_limited", fake_run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    rc = gpu_smoke.main(["--out", str(tmp_path / "out"), "--data", str(pack)])
    text = capsys.readouterr().out
    assert rc == 124  # over the limit wins over a failure: the run is incomplete
    assert [s[2] for s in seen] == ["3", "3"] and seen[0][1] == pytest.approx(0.7 * 480)
    assert "GPU smoke on NVIDIA H100" in text and "FAILED claims.test_memorization::test_wide_cnn[cuda]" in text
    assert "skipped ×1: needs 2 GPUs" in text and "rate: 2.5e+04 entries/s  cntk-gap depth 21 fused" in text
    assert "claims: 3 reproduced" in text and "over its limit" in text
    moved = tmp_path / "out" / "baselines-from-pack" / "smoke" / "cuda" / "test_theorem1" / "test_x.npz"
    assert moved.read_bytes() == b"from the pack" and not (fake_root / "baselines" / "smoke" / "cuda" /
                                                           "test_theorem1" / "test_x.npz").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outcomes"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert summary["slowest"][0]["test"].endswith("test_wide_cnn[cuda]")


def test_the_script_is_valid_bash_and_calls_the_module():
    script = ROOT / ".ci" / "gpu-smoke"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "-m dlclaims.gpu_smoke" in script.read_text()
