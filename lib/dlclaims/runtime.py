"""Devices, GPU pinning for parallel workers, and seeding: the runtime facts a claim depends on.

Pure functions of their inputs where possible (the environment is passed in), so the
worker → GPU mapping is unit-testable on a machine without GPUs.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import numpy as np

DEVICE_TYPES = ("cpu", "cuda", "xla")
# The pytest marker that selects each device type's variants (`-m gpu` → cuda).
DEVICE_MARKERS = {"cpu": None, "cuda": "gpu", "xla": "tpu"}
GPU_COUNT_ENV = "DLCLAIMS_NUM_GPUS"


def physical_gpu_count(environ=os.environ) -> int:
    """Number of NVIDIA GPUs on the machine, found without initialising CUDA.

    `DLCLAIMS_NUM_GPUS` overrides; else the driver's /proc entries; else `nvidia-smi -L`.
    (torch.cuda.device_count() would cache its answer before the worker's pin applies.)
    """
    if environ.get(GPU_COUNT_ENV):
        return int(environ[GPU_COUNT_ENV])
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPU ids this process may use: the outer CUDA_VISIBLE_DEVICES list, else 0..count-1."""
    outer = environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [d.strip() for d in outer.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(physical_gpu_count(environ))]


def gpu_for_worker(worker: str, visible: list[str]) -> str | None:
    """The one visible GPU an xdist worker ("gw3") uses: round-robin by worker index.

    More workers than GPUs share GPUs round-robin; no GPUs → None (nothing to pin).
    """
    if not visible or not worker.startswith("gw"):
        return None
    return visible[int(worker[2:]) % len(visible)]


def pin_worker_gpu(environ=os.environ) -> str | None:
    """Under pytest-xdist, restrict this worker to one GPU before CUDA initialises.

    Returns the pinned id (None outside xdist or without GPUs). The outer
    CUDA_VISIBLE_DEVICES is respected: the worker gets one entry of that list.
    """
    worker = environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return None
    gpu = gpu_for_worker(worker, visible_gpus(environ))
    if gpu is not None:
        environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def unavailable_reason(device_type: str) -> str | None:
    """Why `device_type` cannot run here (None when it can)."""
    import torch

    if device_type == "cpu":
        return None
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"
    if device_type == "xla":
        try:
            import torch_xla.core.xla_model as xm  # noqa: F401
        except ImportError:
            return "torch_xla is not installed (no XLA/TPU device)"
        return None
    return f"unknown device type {device_type!r}"


def torch_device(device_type: str):
    import torch

    if device_type == "xla":
        import torch_xla.core.xla_model as xm

        return xm.xla_device()
    return torch.device(device_type)


def device_name(device_type: str) -> str:
    """Human-readable hardware name for reports ("NVIDIA H100 80GB HBM3", "cpu (x86_64, 2 threads)")."""
    import platform

    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    if device_type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return device_type


def derive_seed(test_id: str, offset: int = 0) -> int:
    """A 31-bit seed from a test's identity plus the run's --seed-offset."""
    digest = hashlib.sha256(test_id.encode()).digest()
    return (int.from_bytes(digest[:4], "little") + int(offset)) % (2**31 - 1)


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed python, numpy and torch; TF32 off; deterministic kernels where asked (CPU runs)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
