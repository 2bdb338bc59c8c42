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


def worker_index(worker: str) -> int | None:
    """The index of an xdist worker id ("gw3" → 3); None for anything else."""
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    return int(worker[2:])


def gpu_for_worker(worker: str, visible: list[str]) -> str | None:
    """The GPU an xdist worker ("gw3") prefers: visible[index mod len(visible)].

    This is the whole mapping when nothing else is known: gw0..gw(G-1) get distinct GPUs, and more
    workers than GPUs share them round-robin. A *replacement* worker (xdist starts gw4 after gw3
    crashes with 4 GPUs) would land on GPU 0 beside gw0; `claim_worker_gpu` corrects that by taking
    the GPU no live worker holds. No GPUs → None (nothing to pin).
    """
    index = worker_index(worker)
    if not visible or index is None:
        return None
    return visible[index % len(visible)]


# Open lock files of the GPU this process holds: the kernel releases a flock when its process dies,
# so a crashed worker's GPU becomes free for its replacement without any clean-up.
_HELD_GPU_LOCKS: list = []


def _try_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # held open for the life of the process: the lock lives as long
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def claim_worker_gpu(worker: str, visible: list[str], lock_dir: str | os.PathLike,
                     held: list | None = None) -> tuple[str | None, str]:
    """The GPU for `worker`, coordinated through lock files in `lock_dir` (one per GPU id).

    Order: the preferred GPU (`gpu_for_worker`: index mod count), then every other visible GPU in
    order; the first one whose lock no live process holds is taken, and its lock stays held (in
    `held`, default this module's list) until this process exits. When every GPU is held (more
    workers than GPUs) the preferred GPU is shared, as plain round-robin would. Returns
    (gpu, how) with `how` one of "preferred", "free" (a replacement worker took a freed GPU) or
    "shared".
    """
    preferred = gpu_for_worker(worker, visible)
    if preferred is None:
        return None, "none"
    held = _HELD_GPU_LOCKS if held is None else held
    start = visible.index(preferred)
    for gpu in visible[start:] + visible[:start]:
        lock = _try_lock(Path(lock_dir, f"gpu-{gpu}.lock"))
        if lock is not None:
            held.append(lock)
            return gpu, "preferred" if gpu == preferred else "free"
    return preferred, "shared"


def gpu_lock_dir(environ=os.environ) -> Path | None:
    """Where the workers of one xdist run coordinate their GPUs (None outside xdist).

    Keyed by xdist's test-run id, which every worker of a run, replacements included, shares;
    separate pytest sessions do not see each other's locks (as before: each maps on its own).
    """
    run_id = environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        return None
    import tempfile

    return Path(environ.get("DLCLAIMS_GPU_LOCKS") or tempfile.gettempdir(), f"dlclaims-gpus-{run_id}")


def pin_worker_gpu(environ=os.environ) -> str | None:
    """Under pytest-xdist, restrict this worker to one GPU before CUDA initialises.

    Returns the pinned id (None outside xdist or without GPUs). The outer
    CUDA_VISIBLE_DEVICES is respected: the worker gets one entry of that list. Inside a real
    xdist run (PYTEST_XDIST_TESTRUNUID set) the GPU is claimed through lock files, so that a
    replacement worker takes the GPU of the worker that crashed (`claim_worker_gpu`).
    """
    worker = environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return None
    visible = visible_gpus(environ)
    lock_dir = gpu_lock_dir(environ)
    if lock_dir is None or not visible:
        gpu = gpu_for_worker(worker, visible)
    else:
        gpu, how = claim_worker_gpu(worker, visible, lock_dir)
        if how == "shared":
            import warnings

            warnings.warn(f"{worker}: every visible GPU ({', '.join(visible)}) is held by another worker; "
                          f"sharing GPU {gpu} (more workers than GPUs)", stacklevel=2)
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
        return xla_unavailable_reason()
    return f"unknown device type {device_type!r}"


def _probe_xla(environ=os.environ) -> tuple[str, int]:
    """(hardware kind, number of devices) of torch_xla's runtime: ("TPU", 4), ("CPU", 1), ...

    Importing torch_xla succeeds on machines without any accelerator (its PJRT runtime then falls
    back to, or is configured for, CPU), so the import alone says nothing. Raises ImportError
    without torch_xla; any runtime error propagates (the caller reports it).
    """
    import torch_xla  # noqa: F401

    try:  # torch_xla >= 2.1
        import torch_xla.runtime as xr

        count = xr.global_runtime_device_count()  # starts the runtime, which picks PJRT_DEVICE
        kind = xr.device_type() or environ.get("PJRT_DEVICE", "")
    except (ImportError, AttributeError):  # older releases
        import torch_xla.core.xla_model as xm

        devices = xm.get_xla_supported_devices()
        kind = xm.xla_device_hw(devices[0]) if devices else ""
        count = len(devices or [])
    return str(kind).upper(), int(count)


def xla_unavailable_reason(probe=_probe_xla, environ=os.environ) -> str | None:
    """Why the xla variant cannot run here (None when an XLA accelerator exists).

    Available only when torch_xla reports at least one device of accelerator hardware (TPU,
    GPU/CUDA, NEURON ...). XLA on the CPU backend counts only when asked for explicitly with
    PJRT_DEVICE=CPU (testing the XLA path without a TPU); otherwise it would rerun every CPU claim
    through XLA on a machine with no accelerator.
    """
    try:
        kind, count = probe()
    except ImportError:
        return "torch_xla is not installed (no XLA/TPU device)"
    except Exception as exc:  # the runtime failed to start: no usable device
        return f"torch_xla found no usable XLA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return f"torch_xla reports no XLA device (PJRT_DEVICE={environ.get('PJRT_DEVICE', 'unset')})"
    if kind == "CPU" and environ.get("PJRT_DEVICE", "").upper() != "CPU":
        return ("torch_xla runs on its CPU backend only (no TPU or other XLA accelerator); "
                "set PJRT_DEVICE=CPU to test the XLA path on the CPU anyway")
    return None


def has_generator(device) -> bool:
    """Whether torch can make a random Generator on `device` (CPU, CUDA, MPS yes; XLA and meta no)."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return True
    try:
        torch.Generator(device=device)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def generator(device, seed: int):
    """A seeded torch.Generator on `device`, or on the CPU where `device` has none (XLA).

    Draw with ``device=gen.device`` and move the result to `device`: that works on both kinds.
    """
    import torch

    device = torch.device(device)
    where = device if has_generator(device) else torch.device("cpu")
    return torch.Generator(device=where).manual_seed(int(seed))


def torch_device(device_type: str):
    import torch

    if device_type == "xla":
        import torch_xla

        if hasattr(torch_xla, "device"):  # torch_xla >= 2.5; xla_device() is deprecated there
            return torch_xla.device()
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


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions on Ampere+ GPUs (10-bit mantissa inputs,
    float32 accumulation; several times the float32 throughput). No effect on CPUs.

    `seed_everything` turns it off before every test; a claim whose protocol says its precision
    allows TF32 turns it on with `tf32(protocol.get("tf32", False))` (docs/writing-claims.md).
    Uses the flags both torch 2.11 and 2.14 read (torch.backends.{cuda.matmul,cudnn}.allow_tf32).
    """
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def tf32_enabled() -> bool:
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)


class tf32:  # lower case: used like a function, `with runtime.tf32(protocol.get("tf32", False)):`
    """Context manager: TF32 on (or off) for matmuls and convolutions inside, restored after.

    `enabled=False` is a no-op switch (the test's default, TF32 off, stays), so a claim can wrap its
    training unconditionally and let its protocol decide.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)

    def __enter__(self):
        import torch

        self._before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        set_tf32(self.enabled)
        return self

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._before
        return False


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed python, numpy and torch; TF32 off; deterministic kernels where asked (CPU runs)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    set_tf32(False)  # a protocol that allows TF32 turns it on itself (`tf32`)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
