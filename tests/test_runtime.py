"""dlclaims.runtime on CPU: worker → GPU mapping with fake environments, devices, seeds."""

import random

import numpy as np
import pytest
import torch

from dlclaims import runtime


def fake_env(gpus: int | None = None, visible: str | None = None, worker: str | None = None) -> dict:
    env = {}
    if gpus is not None:
        env[runtime.GPU_COUNT_ENV] = str(gpus)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    if worker is not None:
        env["PYTEST_XDIST_WORKER"] = worker
    return env


@pytest.mark.parametrize("gpus", [0, 1, 2, 4, 8])
def test_gpu_count_override(gpus):
    assert runtime.physical_gpu_count(fake_env(gpus)) == gpus
    assert runtime.visible_gpus(fake_env(gpus)) == [str(i) for i in range(gpus)]


@pytest.mark.parametrize("visible,expected", [
    ("3,5", ["3", "5"]), (" 2 , 7 ,", ["2", "7"]), ("", []), ("-1", []),
    ("GPU-8f2a,GPU-c01d", ["GPU-8f2a", "GPU-c01d"]),  # UUIDs pass through untouched
])
def test_outer_visible_devices_win_over_the_count(visible, expected):
    assert runtime.visible_gpus(fake_env(gpus=8, visible=visible)) == expected


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_workers_up_to_the_gpu_count_get_distinct_gpus(gpus):
    visible = runtime.visible_gpus(fake_env(gpus))
    pinned = [runtime.gpu_for_worker(f"gw{i}", visible) for i in range(gpus)]
    assert sorted(pinned) == visible


def test_more_workers_than_gpus_share_round_robin():
    pinned = [runtime.gpu_for_worker(f"gw{i}", ["0", "1"]) for i in range(5)]
    assert pinned == ["0", "1", "0", "1", "0"]


@pytest.mark.parametrize("worker,visible", [("gw0", []), ("master", ["0"]), ("", ["0"])])
def test_nothing_to_pin(worker, visible):
    assert runtime.gpu_for_worker(worker, visible) is None


def test_pin_worker_gpu_picks_from_the_outer_list():
    env = fake_env(gpus=8, visible="4,5,6,7", worker="gw2")
    assert runtime.pin_worker_gpu(env) == "6"
    assert env["CUDA_VISIBLE_DEVICES"] == "6"


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_pin_worker_gpu_gives_each_worker_its_own_gpu(gpus):
    envs = [fake_env(gpus=gpus, worker=f"gw{i}") for i in range(gpus)]
    assert sorted(runtime.pin_worker_gpu(env) for env in envs) == [str(i) for i in range(gpus)]
    assert len({env["CUDA_VISIBLE_DEVICES"] for env in envs}) == gpus


@pytest.mark.parametrize("env", [
    fake_env(gpus=4),  # not under xdist: all GPUs stay visible
    fake_env(gpus=0, worker="gw1"),  # no GPUs: nothing to pin
    fake_env(gpus=4, visible="", worker="gw1"),  # GPUs hidden from the outside stay hidden
])
def test_pin_worker_gpu_leaves_the_environment_alone(env):
    before = dict(env)
    assert runtime.pin_worker_gpu(env) is None
    assert env == before


def test_gpu_count_from_nvidia_smi_when_the_driver_has_no_proc_entries(monkeypatch, tmp_path):
    class Listing:
        stdout = "GPU 0: NVIDIA H100 (UUID: GPU-1)\nGPU 1: NVIDIA H100 (UUID: GPU-2)\n"

    monkeypatch.setattr(runtime, "Path", lambda _: tmp_path / "no-proc-entries")
    monkeypatch.setattr(runtime.subprocess, "run", lambda *a, **k: Listing())
    assert runtime.physical_gpu_count({}) == 2

    def no_driver(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(runtime.subprocess, "run", no_driver)
    assert runtime.physical_gpu_count({}) == 0


def test_every_accelerator_has_a_marker():
    assert set(runtime.DEVICE_MARKERS) == set(runtime.DEVICE_TYPES)
    assert runtime.DEVICE_MARKERS == {"cpu": None, "cuda": "gpu", "xla": "tpu"}


def test_unavailable_devices_say_why():
    assert runtime.unavailable_reason("cpu") is None
    assert "unknown device type" in runtime.unavailable_reason("npu")
    if not torch.cuda.is_available():
        assert "no CUDA device" in runtime.unavailable_reason("cuda")


def test_xla_variant_follows_torch_xla():
    """Where torch_xla is installed the xla variant runs; elsewhere it skips naming torch_xla."""
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        assert "torch_xla is not installed" in runtime.unavailable_reason("xla")
    else:
        assert runtime.unavailable_reason("xla") is None
        assert runtime.torch_device("xla").type == "xla"


def test_derived_seeds_are_stable_and_offset():
    seed = runtime.derive_seed("claims/test_x.py::test_y")
    assert seed == runtime.derive_seed("claims/test_x.py::test_y")
    assert 0 <= seed < 2**31 - 1
    assert runtime.derive_seed("claims/test_x.py::test_y", 3) == (seed + 3) % (2**31 - 1)
    assert seed != runtime.derive_seed("claims/test_x.py::test_z")


def test_seed_everything_makes_draws_repeat():
    def draws():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed_everything(123, deterministic=True)
    first = draws()
    runtime.seed_everything(123, deterministic=True)
    assert draws() == first
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    runtime.seed_everything(123, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
