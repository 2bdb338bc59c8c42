"""CNTK throughput: kernel entries per second of every backend, dtype and depth of the engine,
the reference transcription of Arora et al.'s per-pair algorithm (tests/cntk_reference.py) and
neural-tangents (when installed), in the same run, plus the machine's measured arithmetic peak
(the roofline `dlclaims.benchreport` derives).

Inputs are CIFAR-shaped (3×32×32); every implementation computes a cross kernel K(x1, x2) so
each of its n1·n2 entries is really computed, except `test_scaling`'s symmetric Gram rows,
which count the n² entries a user gets from n(n+1)/2 computed pairs. Run serially::

    pytest benchmarks/test_cntk_throughput.py --benchmark-json=bench.json
    python -m dlclaims.benchreport bench.json

`benchmark.extra_info` carries what the report tabulates (rate, dtype, backend, device with CPU
model, cores and library versions, peak memory, max relative error against the float64 torch
engine). Rates use the fastest round, the one least disturbed by other work on a shared
machine; the spread (slowest / fastest round) is recorded beside it. For a fair CPU comparison
every implementation gets the same threads: DLCLAIMS_BENCH_THREADS (default: every core). XLA
(neural-tangents) runs on every core by default and single-threaded when DLCLAIMS_BENCH_THREADS=1
(set through XLA_FLAGS before JAX loads); other counts it cannot be held to, so the
neural-tangents rows skip there.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time

import numpy as np
import pytest
import torch
from cntk_reference import reference_cntk

from dlclaims import runtime
from dlclaims.cntk import cntk

DEPTHS = (3, 4, 6, 11, 21)
KERNELS = {"cntk-v": "flatten", "cntk-gap": "gap"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
BACKENDS = ("torch", "fused")
IMAGE_SHAPE = (3, 32, 32)
# (n1, n2) per device type, kernel and backend: up to about a second per round (depth 21, float32)
# on a 2-core CPU, so that per-call costs (the images' own variance maps, dispatch) stay small: the
# fused CNTK-V took 15.8 µs per entry at 64 × 64 and 13.0 at 256 × 256 on 2 threads.
ENGINE_SIZES = {
    "cpu": {("cntk-v", "torch"): (64, 64), ("cntk-v", "fused"): (256, 256),
            ("cntk-gap", "torch"): (1, 1), ("cntk-gap", "fused"): (4, 4)},
    "cuda": {("cntk-v", "torch"): (256, 256), ("cntk-v", "fused"): (1024, 1024),
             ("cntk-gap", "torch"): (16, 16), ("cntk-gap", "fused"): (64, 64)},
}
REFERENCE_SIZE = (1, 1)
# neural-tangents computes each image's own GAP covariance as well: its cost per entry
# falls from 1×1 to 2×2 and measured flat from there (4×4), so 2×2 is its large-Gram rate.
NEURAL_TANGENTS_SIZES = {"cntk-v": (16, 16), "cntk-gap": (2, 2)}
ROUNDS = 3
# Scaling with n: fused float32 at depth 21, cross kernel and symmetric Gram.
SCALING_SIZES = {"cntk-v": (16, 64, 256), "cntk-gap": (2, 4, 8)}

pytestmark = pytest.mark.benchmark
THREADS_ENV = "DLCLAIMS_BENCH_THREADS"


def _threads() -> int:
    return int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1)


if _threads() == 1:  # XLA reads its flags once, when JAX initialises its CPU client
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false",
                                        "intra_op_parallelism_threads=1"]).strip()


@pytest.fixture(autouse=True)
def cpu_threads(_seeded):
    """Every benchmark on `_threads()` threads. Function-scoped and after the plugin's `_seeded`,
    which pins each test to DLCLAIMS_THREADS (default 1) for bit-repeatable claims: a module-scoped
    setting is undone before every test (it was, until 2026-12-02: CPU rows ran on one thread)."""
    torch.set_num_threads(_threads())  # the fused CPU kernel takes torch's thread count too
    yield


def _check_threads() -> int:
    """The threads torch (and with it the fused kernel) really uses; fails on a mismatch."""
    threads = torch.get_num_threads()
    if threads != _threads():
        raise RuntimeError(f"benchmark running on {threads} threads, not the {_threads()} it reports")
    return threads


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nominal_cpu_peak(threads: int) -> dict:
    """The CPU's nominal float32 FMA peak: threads × clock × SIMD lanes (16 with AVX-512, 8
    with AVX2) × 2 FMA units (current x86 server cores have two) × 2 operations per FMA. The
    clock is cpufreq's maximum where Linux exposes it, else /proc/cpuinfo's "cpu MHz" (a VM
    reports its nominal clock there; turbo can run above it). {} where /proc/cpuinfo is absent."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as max_freq:
            hz = int(max_freq.read()) * 1e3
    except (OSError, ValueError):
        mhz = [float(line.split(":", 1)[1]) for line in text.splitlines()
               if line.startswith("cpu MHz")]
        if not mhz:
            return {}
        hz = max(mhz) * 1e6
    return {"nominal_ops_per_s": threads * hz * lanes * 2 * 2, "clock_hz": hz, "simd_lanes": lanes}


def _versions() -> str:
    names = ["torch", "numba", "triton", "numpy", "jax", "neural_tangents"]
    found = []
    for name in names:
        try:
            module = __import__(name)
        except ImportError:
            continue
        found.append(f"{name} {getattr(module, '__version__', '?')}")
    return ", ".join(found)


def _device_info(device: torch.device) -> dict:
    threads = _check_threads()
    if device.type == "cuda":
        return {"device": runtime.device_name("cuda"), "cpu_model": _cpu_model(),
                "cores": os.cpu_count(), "threads": threads, "versions": _versions()}
    return {"device": f"{_cpu_model()} ({os.cpu_count()} cores, {threads} threads)",
            "cpu_model": _cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "versions": _versions()}


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *IMAGE_SHAPE, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))
    except (OSError, StopIteration):
        return None


def _peak_memory_mib(fn, device: torch.device) -> float | None:
    """Peak memory one call adds: CUDA's allocator peak, or the host's resident-set peak
    (VmHWM, reset through /proc/self/clear_refs) over the resident size before the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_kib("VmRSS:")
    fn()
    peak = _status_kib("VmHWM:")
    return None if before is None or peak is None else max(peak - before, 0) / 1024


@functools.cache
def _exact(kernel: str, depth: int, n1: int, n2: int) -> torch.Tensor:
    """The float64 torch engine on the benchmark's inputs: the accuracy column's reference."""
    return cntk(_images(n1, 1), _images(n2, 2), depth=depth, pooling=KERNELS[kernel],
                device="cpu", backend="torch")


def _max_relative_error(values: torch.Tensor, kernel: str, depth: int) -> float:
    exact = _exact(kernel, depth, *values.shape)
    return float(((values.cpu() - exact).abs() / exact.abs()).max())


def _synchronised(fn, device: torch.device):
    def run():
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result
    return run


def _run(benchmark, fn, *, rounds: int, warmup_rounds: int, n_entries: int,
         device: torch.device, **info) -> None:
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    stats = benchmark.stats.stats
    benchmark.extra_info.update(
        entries_per_s=n_entries / stats.min, n_entries=n_entries, seconds_per_entry=stats.min / n_entries,
        spread=stats.max / stats.min, device_type=device.type, **_device_info(device), **info)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_engine(benchmark, device, kernel, depth, backend, dtype):
    sizes = ENGINE_SIZES.get(device.type)
    if sizes is None:
        pytest.skip(f"no engine benchmark sizes for {device.type}")
    if device.type == "cuda" and backend == "fused" and dtype != "float32":
        pytest.skip("the Triton kernel runs in float32 only")
    n1, n2 = sizes[(kernel, backend)]
    x1, x2 = _images(n1, 1), _images(n2, 2)
    benchmark.group = f"{kernel} depth {depth}"

    def compute():
        return cntk(x1, x2, depth=depth, pooling=KERNELS[kernel], device=device,
                    dtype=DTYPES[dtype], backend=backend)

    fn = _synchronised(compute, device)
    values = fn()  # warm-up: numba / Triton compile, caches; also the accuracy check
    _run(benchmark, fn, rounds=ROUNDS, warmup_rounds=0, n_entries=n1 * n2, device=device,
         kernel=kernel, depth=depth, implementation="engine", backend=backend, dtype=dtype,
         max_relative_error=_max_relative_error(values, kernel, depth),
         peak_mib=_peak_memory_mib(fn, device))


@pytest.mark.parametrize("mode", ["cross", "gram"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_scaling(benchmark, device, kernel, mode):
    """Fused float32 at depth 21 for growing n: n×n cross kernel, or the n×n symmetric Gram
    (n(n+1)/2 pairs computed, n² entries delivered)."""
    if device.type not in ENGINE_SIZES:
        pytest.skip(f"no engine benchmark sizes for {device.type}")
    rows = []
    for n in SCALING_SIZES[kernel] if device.type == "cpu" else [16 * s for s in SCALING_SIZES[kernel]]:
        x1, x2 = _images(n, 1), (None if mode == "gram" else _images(n, 2))
        fn = _synchronised(lambda x1=x1, x2=x2: cntk(x1, x2, depth=21, pooling=KERNELS[kernel],
                                                     device=device, dtype=torch.float32,
                                                     backend="fused"), device)
        fn()
        seconds = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        rows.append({"n": n, "entries_per_s": n * n / min(seconds), "spread": max(seconds) / min(seconds),
                     "peak_mib": _peak_memory_mib(fn, device)})
    benchmark.group = f"{kernel} scaling"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="scaling", mode=mode, kernel=kernel, depth=21, dtype="float32",
                                backend="fused", device_type=device.type, rows=rows,
                                **_device_info(device))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_reference(benchmark, device, kernel, depth):
    if device.type not in ENGINE_SIZES:
        pytest.skip(f"the reference runs on cpu and cuda, not {device.type}")
    n1, n2 = REFERENCE_SIZE
    x1, x2 = _images(n1, 1), _images(n2, 2)
    benchmark.group = f"{kernel} depth {depth}"
    fn = _synchronised(lambda: reference_cntk(x1, x2, depth=depth, pooling=KERNELS[kernel],
                                              device=device), device)
    _run(benchmark, fn, rounds=1, warmup_rounds=0, n_entries=n1 * n2, device=device,
         kernel=kernel, depth=depth, implementation="reference", backend="per-pair",
         dtype="float64")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_neural_tangents(benchmark, kernel, depth, dtype):
    """neural-tangents on its default JAX backend, compiled ahead of the timed rounds."""
    if _threads() not in (1, os.cpu_count()):
        pytest.skip(f"XLA runs on 1 or all {os.cpu_count()} cores, not {THREADS_ENV}={_threads()}")
    jax = pytest.importorskip("jax")
    stax = pytest.importorskip("neural_tangents").stax
    from jax.experimental import enable_x64

    n1, n2 = NEURAL_TANGENTS_SIZES[kernel]
    layers = [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()] * (depth - 1)
    readout = stax.Flatten() if kernel == "cntk-v" else stax.GlobalAvgPool()
    _, _, kernel_fn = stax.serial(*layers, readout, stax.Dense(1, W_std=1.0))
    with enable_x64(dtype == "float64"):
        x1 = jax.numpy.asarray(_images(n1, 1).permute(0, 2, 3, 1).numpy().astype(dtype))
        x2 = jax.numpy.asarray(_images(n2, 2).permute(0, 2, 3, 1).numpy().astype(dtype))
        compiled = jax.jit(kernel_fn, static_argnames="get").lower(x1, x2, get="ntk").compile()
        jax_device = x1.devices().pop()
        jax_platform = "cuda" if jax_device.platform in ("gpu", "cuda") else jax_device.platform
        benchmark.group = f"{kernel} depth {depth}"
        values = np.asarray(compiled(x1, x2))
        benchmark.pedantic(lambda: compiled(x1, x2).block_until_ready(), rounds=ROUNDS,
                           iterations=1, warmup_rounds=0)
    stats = benchmark.stats.stats
    exact = _exact(kernel, depth, n1, n2).numpy()
    info = _device_info(torch.device("cpu" if jax_platform == "cpu" else "cuda"))
    if jax_platform != "cpu":
        info["device"] = f"{jax_platform} ({jax_device.device_kind})"
    benchmark.extra_info.update(
        entries_per_s=n1 * n2 / stats.min, n_entries=n1 * n2, seconds_per_entry=stats.min / (n1 * n2),
        spread=stats.max / stats.min, device_type=jax_platform, dtype=dtype, kernel=kernel,
        depth=depth, implementation="neural-tangents", backend="jax",
        max_relative_error=float(np.max(np.abs(values - exact) / np.abs(exact))), **info)


def test_machine_peak(benchmark, device):
    """The roofline's ceiling: float32 FMA throughput, as a float32 matrix product (2n³
    operations; an FMA counts 2) without TF32, on the benchmark's threads, and on CPU the
    nominal peak beside it (`_nominal_cpu_peak`; the report takes the larger: MKL's GEMM on
    an AMD CPU measured 96–184 GFLOP/s on this 2-core box, below the fused CNTK kernel's own
    rate). A CNTK operation that is not an FMA (add, compare, √, ÷) occupies an FMA slot or
    more, so percents of this peak are conservative."""
    if device.type not in ("cpu", "cuda"):
        pytest.skip(f"no peak measurement for {device.type}")
    side = 2048 if device.type == "cpu" else 8192
    a = torch.rand(side, side, device=device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        fn = _synchronised(lambda: a @ a, device)
        fn()
        benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    info = _device_info(device)
    nominal = _nominal_cpu_peak(info["threads"]) if device.type == "cpu" else {}
    benchmark.extra_info.update(kind="peak", ops_per_s=2 * side**3 / benchmark.stats.stats.min,
                                dtype="float32", device_type=device.type, **info, **nominal)
    assert math.isfinite(benchmark.extra_info["ops_per_s"])
