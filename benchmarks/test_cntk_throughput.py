"""CNTK throughput: kernel entries per second of the engine, the reference transcription
(tests/cntk_reference.py) and neural-tangents (when installed), in the same run.

Inputs are CIFAR-shaped (3×32×32); every implementation computes a cross kernel
K(x1, x2) so each of its n1·n2 entries is really computed. Run serially, e.g.::

    pytest benchmarks/test_cntk_throughput.py --benchmark-json=bench.json
    python -m dlclaims.benchreport bench.json

`benchmark.extra_info` carries what `dlclaims.benchreport` tabulates; entries/s uses the
fastest round, the one least disturbed by other work on a shared machine. For a fair CPU
comparison give every implementation the same cores, e.g. one each::

    DLCLAIMS_BENCH_THREADS=1 \
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" pytest ...
"""

from __future__ import annotations

import os

import pytest
import torch
from cntk_reference import reference_cntk

from dlclaims import runtime
from dlclaims.cntk import cntk

DEPTHS = (3, 11, 21)
KERNELS = {"cntk-v": "flatten", "cntk-gap": "gap"}
IMAGE_SHAPE = (3, 32, 32)
# (n1, n2) per device type and kernel: a few seconds per round on a 2-core CPU.
ENGINE_SIZES = {
    "cpu": {"cntk-v": (16, 16), "cntk-gap": (2, 2)},
    "cuda": {"cntk-v": (256, 256), "cntk-gap": (32, 32)},
}
REFERENCE_SIZE = (1, 1)
# neural-tangents computes each image's own GAP covariance as well: its cost per entry
# falls from 1×1 to 2×2 and measured flat from there (4×4), so 2×2 is its large-Gram rate.
NEURAL_TANGENTS_SIZES = {"cntk-v": (16, 16), "cntk-gap": (2, 2)}
ROUNDS = {"cntk-v": 3, "cntk-gap": 2}
NEURAL_TANGENTS_ROUNDS = {"cntk-v": 3, "cntk-gap": 1}

pytestmark = pytest.mark.benchmark
# CPU threads for torch (the test plugin pins one per process). Default: every core; on a
# machine shared with other jobs use 1, as OpenMP barriers stall when cores are oversubscribed.
THREADS_ENV = "DLCLAIMS_BENCH_THREADS"


@pytest.fixture(autouse=True, scope="module")
def cpu_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *IMAGE_SHAPE, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _run(benchmark, fn, *, rounds: int, warmup_rounds: int, n_entries: int, device: torch.device,
         kernel: str, depth: int, implementation: str, dtype: str) -> None:
    benchmark.group = f"{kernel} depth {depth}"
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        entries_per_s=n_entries / seconds, n_entries=n_entries, device=runtime.device_name(device.type),
        device_type=device.type, dtype=dtype, kernel=kernel, depth=depth,
        implementation=implementation)


def _synchronised(fn, device: torch.device):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_engine(benchmark, device, kernel, depth):
    if device.type not in ENGINE_SIZES:
        pytest.skip(f"no engine benchmark sizes for {device.type}")
    n1, n2 = ENGINE_SIZES[device.type][kernel]
    x1, x2 = _images(n1, 1), _images(n2, 2)
    fn = _synchronised(lambda: cntk(x1, x2, depth=depth, pooling=KERNELS[kernel], device=device),
                       device)
    _run(benchmark, fn, rounds=ROUNDS[kernel], warmup_rounds=1 if device.type == "cuda" else 0,
         n_entries=n1 * n2, device=device, kernel=kernel, depth=depth,
         implementation="engine", dtype="float64")


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_reference(benchmark, device, kernel, depth):
    if device.type not in ENGINE_SIZES:
        pytest.skip(f"the reference runs on cpu and cuda, not {device.type}")
    n1, n2 = REFERENCE_SIZE
    x1, x2 = _images(n1, 1), _images(n2, 2)
    fn = _synchronised(lambda: reference_cntk(x1, x2, depth=depth, pooling=KERNELS[kernel],
                                              device=device), device)
    _run(benchmark, fn, rounds=1, warmup_rounds=0, n_entries=n1 * n2, device=device,
         kernel=kernel, depth=depth, implementation="reference", dtype="float64")


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_neural_tangents(benchmark, kernel, depth):
    """neural-tangents on its default JAX backend, compiled ahead of the timed rounds."""
    jax = pytest.importorskip("jax")
    stax = pytest.importorskip("neural_tangents").stax
    from jax.experimental import enable_x64

    n1, n2 = NEURAL_TANGENTS_SIZES[kernel]
    layers = [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()] * (depth - 1)
    readout = stax.Flatten() if kernel == "cntk-v" else stax.GlobalAvgPool()
    _, _, kernel_fn = stax.serial(*layers, readout, stax.Dense(1, W_std=1.0))
    with enable_x64():
        x1 = jax.numpy.asarray(_images(n1, 1).permute(0, 2, 3, 1).numpy())
        x2 = jax.numpy.asarray(_images(n2, 2).permute(0, 2, 3, 1).numpy())
        compiled = jax.jit(kernel_fn, static_argnames="get").lower(x1, x2, get="ntk").compile()
        jax_device = x1.devices().pop()
        jax_platform = "cuda" if jax_device.platform in ("gpu", "cuda") else jax_device.platform
        benchmark.group = f"{kernel} depth {depth}"
        benchmark.pedantic(lambda: compiled(x1, x2).block_until_ready(),
                           rounds=NEURAL_TANGENTS_ROUNDS[kernel],
                           iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        entries_per_s=n1 * n2 / seconds, n_entries=n1 * n2,
        device=f"{jax_platform} ({jax_device.device_kind}, jax {jax.__version__})",
        device_type=jax_platform, dtype="float64", kernel=kernel, depth=depth,
        implementation="neural-tangents")
