"""The CNTK engine against the slow reference transcription, and its kernel properties."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cntk_reference import reference_cntk

from dlclaims.cntk import Progress, _engine, choose_block_size, cntk, memory_plan

RTOL_REFERENCE = 1e-10  # engine vs reference, float64, elementwise
RTOL_ROUNDING = 1e-12  # same kernel computed through differently shaped batches
RTOL_FLOAT32 = 2e-5  # float32 recursion vs float64, depth ≤ 11 (measured ≤ 3e-6)
PSD_RTOL = 1e-8  # smallest eigenvalue ≥ −PSD_RTOL × largest
N_REFERENCE_IMAGES = 3

FIX_FLAGS = list(itertools.product([False, True], repeat=2))  # (fix_first_layer, fix_readout)
POOLINGS = ("flatten", "gap")
BACKENDS = ("torch", "fused")


def _reference_cases():
    """Every depth 2–6 × pooling × fix flags × channels on a small non-square image, and
    the 28×28 / 32×32 sizes at depths 2–3 (the reference costs (H·W)² per layer there)."""
    cases = [(depth, pooling, fix, channels, (9, 14))
             for depth in range(2, 7) for pooling in POOLINGS
             for fix in FIX_FLAGS for channels in (1, 3)]
    large = itertools.product([(28, 28), (32, 32)], (2, 3), POOLINGS)
    cases += [(depth, pooling, FIX_FLAGS[i % 4], (1, 3)[i % 2], size)
              for i, (size, depth, pooling) in enumerate(large)]
    return [pytest.param(*case, id=f"d{case[0]}-{case[1]}-fix{int(case[2][0])}{int(case[2][1])}"
                                   f"-c{case[3]}-{case[4][0]}x{case[4][1]}")
            for case in cases]


def _images(n, channels, height, width, seed=0):
    return torch.randn(n, channels, height, width, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _supported(device):
    if device.type not in ("cpu", "cuda"):
        pytest.skip(f"the CNTK engine runs on cpu and cuda, not {device.type}")
    return device


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every value test runs on the torch engine and on the fused kernel of the device."""
    return request.param


@functools.cache
def _reference(depth, pooling, fix, channels, size, kind="ntk"):
    x = _images(N_REFERENCE_IMAGES, channels, *size, seed=depth)
    fix_first_layer, fix_readout = fix
    return x, reference_cntk(x, depth=depth, pooling=pooling, kind=kind,
                             fix_first_layer=fix_first_layer, fix_readout=fix_readout)


@pytest.mark.parametrize("depth,pooling,fix,channels,size", _reference_cases())
def test_engine_equals_reference(device, backend, depth, pooling, fix, channels, size):
    x, expected = _reference(depth, pooling, fix, channels, size)
    fix_first_layer, fix_readout = fix
    actual = cntk(x, depth=depth, pooling=pooling, fix_first_layer=fix_first_layer,
                  fix_readout=fix_readout, device=_supported(device), backend=backend)
    assert actual.dtype == torch.float64 and actual.device.type == "cpu"
    torch.testing.assert_close(actual, expected, rtol=RTOL_REFERENCE, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_nngp_equals_reference(device, backend, pooling):
    x, expected = _reference(4, pooling, (False, False), 2, (7, 9), kind="nngp")
    actual = cntk(x, depth=4, pooling=pooling, kind="nngp", device=_supported(device),
                  backend=backend)
    torch.testing.assert_close(actual, expected, rtol=RTOL_REFERENCE, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_gram_is_symmetric_and_psd(device, backend, pooling):
    k = cntk(_images(12, 3, 8, 8), depth=5, pooling=pooling, device=_supported(device),
             backend=backend)
    assert torch.equal(k, k.T)
    eigenvalues = torch.linalg.eigvalsh(k)
    assert eigenvalues.min() >= -PSD_RTOL * eigenvalues.max()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_cross_kernel_matches_gram_of_concatenation(device, backend, pooling):
    a, b = _images(4, 2, 6, 7, seed=1), _images(3, 2, 6, 7, seed=2)
    cross = cntk(a, b, depth=4, pooling=pooling, device=_supported(device), backend=backend)
    gram = cntk(torch.cat([a, b]), depth=4, pooling=pooling, device=device, backend=backend)
    torch.testing.assert_close(cross, gram[:4, 4:], rtol=RTOL_ROUNDING, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("symmetric", [True, False], ids=["gram", "cross"])
def test_block_size_does_not_change_result(device, backend, pooling, symmetric):
    x, z = _images(9, 3, 6, 6, seed=3), _images(7, 3, 6, 6, seed=4)
    other = None if symmetric else z
    results = [cntk(x, other, depth=4, pooling=pooling, block_size=size, device=_supported(device),
                    backend=backend)
               for size in (1, 4, 9)]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=RTOL_ROUNDING, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_depth_sweep_equals_single_depths(device, backend, pooling):
    x = _images(5, 3, 7, 7, seed=5)
    sweep = cntk(x, depth=[5, 2, 3], pooling=pooling, device=_supported(device), backend=backend)
    assert sorted(sweep) == [2, 3, 5]
    for depth, k in sweep.items():
        torch.testing.assert_close(k, cntk(x, depth=depth, pooling=pooling, device=device,
                                           backend=backend),
                                   rtol=RTOL_ROUNDING, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_fixed_readout_is_ntk_minus_nngp(backend, pooling):
    x = _images(4, 3, 6, 6, seed=6)
    ntk, nngp, fixed = (cntk(x, depth=4, pooling=pooling, backend=backend, **kw)
                        for kw in ({}, {"kind": "nngp"}, {"fix_readout": True}))
    torch.testing.assert_close(fixed, ntk - nngp, rtol=RTOL_ROUNDING, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_float32_recursion_is_close_to_float64(device, backend, pooling):
    """float32 recursion (the fused kernel's polynomial atan2 included) vs float64, at the
    Arora sizes' depth range."""
    x = _images(6, 3, 8, 8, seed=7)
    exact = cntk(x, depth=[3, 11], pooling=pooling, device=_supported(device), backend="torch")
    single = cntk(x, depth=[3, 11], pooling=pooling, device=device, dtype=torch.float32,
                  backend=backend)
    for depth in exact:
        assert single[depth].dtype == torch.float64
        torch.testing.assert_close(single[depth], exact[depth], rtol=RTOL_FLOAT32, atol=0.0)


def test_fused_float32_self_pairs_are_exact():
    """θ is exactly 0 for an image paired with itself: with J = π·Σ at every layer, the NNGP
    diagonal is the pooled variance map; a √ε angle error would move it by ~1e-4."""
    from dlclaims.cntk import _fused_cpu

    x = _images(5, 3, 9, 9, seed=12).float()
    nngp = cntk(x, depth=4, kind="nngp", dtype=torch.float32, backend="fused", device="cpu")
    padded = torch.from_numpy(_fused_cpu.self_variances(x, 3))  # layers 1..3, padded maps
    maps = padded.reshape(5, 3, 9 + 4, 9 + 1)[:, :, 2:11, :9]
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    j_last = (pi32 * maps[:, 2]).double()  # J = √P·sin θ + (π − θ)Σ with θ = 0, in float32
    expected = j_last.sum(dim=(1, 2)) / (2 * math.pi * 81)
    torch.testing.assert_close(nngp.diagonal(), expected, rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_fused_cpu_pair_order_does_not_change_values(pooling, monkeypatch):
    """`pair_sums` runs the pairs in cache tiles (`cache_tiled_order`), not in the order given:
    each pair still runs alone in one thread, so a shuffled list gives the same numbers, bit
    for bit, in the order it was given."""
    from dlclaims.cntk import _fused_cpu

    x, z = _images(9, 3, 6, 6, seed=13).float(), _images(7, 3, 6, 6, seed=14).float()
    x_maps, z_maps = _fused_cpu.self_variances(x, 3), _fused_cpu.self_variances(z, 3)
    rows, cols = (g.reshape(-1) for g in torch.meshgrid(torch.arange(9), torch.arange(7),
                                                         indexing="ij"))
    shuffle = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    options = dict(depths=(2, 4), full_spatial=pooling == "gap", fix_first_layer=False,
                   with_ntk=True)
    in_order = _fused_cpu.pair_sums(x, z, x_maps, z_maps, rows, cols, **options)
    shuffled = _fused_cpu.pair_sums(x, z, x_maps, z_maps, rows[shuffle], cols[shuffle], **options)
    assert torch.equal(shuffled, in_order[shuffle])
    monkeypatch.setattr(_fused_cpu, "l2_cache_bytes", lambda: 1 << 20)
    order = _fused_cpu.cache_tiled_order(rows.numpy(), cols.numpy(), map_bytes=1 << 18)
    assert sorted(order.tolist()) == list(range(len(rows)))  # a permutation
    assert (np.diff(cols.numpy()[order] // 3) >= 0).all()  # tiles of 3 columns: 0.75 MiB / 256 KiB


def test_numpy_input_and_zero_windows(backend):
    """Numpy input; an all-zero image (zero variance everywhere) gives 0, not NaN."""
    x = _images(3, 1, 6, 6, seed=8).numpy()
    x[1] = 0.0
    for dtype in (torch.float64, torch.float32):
        k = cntk(x, depth=3, pooling="gap", backend=backend, dtype=dtype)
        assert torch.isfinite(k).all()
        assert torch.equal(k[1], torch.zeros(3, dtype=torch.float64))


def test_backend_choice():
    x = _images(2, 1, 4, 4)
    with pytest.raises(ValueError, match="backend"):
        cntk(x, depth=3, backend="cuda-graphs")
    with pytest.raises(ValueError, match="no fused CNTK kernel for meta"):
        cntk(x, depth=3, backend="fused", device="meta")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _engine._backend("auto", cpu, torch.float64) == "fused-cpu"
    assert _engine._backend("torch", cpu, torch.float32) == "torch"
    assert _engine._backend("auto", cuda, torch.float32) == "fused-triton"
    assert _engine._backend("auto", cuda, torch.float64) == "torch"  # Triton: float32 only
    with pytest.raises(ValueError, match="float32"):
        _engine._backend("fused", cuda, torch.float64)


@pytest.mark.parametrize("kwargs,message", [
    (dict(depth=1), "depth"),
    (dict(depth=[]), "depth"),
    (dict(depth=3, pooling="max"), "pooling"),
    (dict(depth=3, kind="cov"), "kind"),
    (dict(depth=3, kind="nngp", fix_readout=True), "NNGP"),
    (dict(depth=3, block_size=0), "block_size"),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cntk(_images(2, 1, 4, 4), **kwargs)


def test_rejects_mismatched_images():
    with pytest.raises(ValueError, match="shape"):
        cntk(_images(2, 1, 4, 4), _images(2, 1, 4, 5), depth=3)
    with pytest.raises(ValueError, match="N, C, H, W"):
        cntk(torch.zeros(2, 4, 4), depth=3)


def test_progress_callback_and_log(caplog):
    updates: list[Progress] = []
    cntk(_images(6, 1, 5, 5), depth=3, block_size=2, progress=updates.append)
    assert [u.pairs_done for u in updates] == [4, 4 + 4, 12, 16, 20, 24]
    assert updates[-1].pairs_done == updates[-1].pairs_total and updates[-1].eta_s == 0.0
    with caplog.at_level(logging.INFO, logger="dlclaims.cntk"):
        cntk(_images(6, 1, 5, 5), depth=3, block_size=2, progress=True)
    assert "24/24 pairs" in caplog.text


@pytest.mark.parametrize("symmetric", [True, False], ids=["gram", "cross"])
def test_out_of_memory_splits_blocks_and_keeps_result(monkeypatch, caplog, symmetric):
    """A block that runs out of memory is retried in quarters; the result is unchanged."""
    x, z = _images(7, 2, 5, 5, seed=9), _images(6, 2, 5, 5, seed=10)
    other = None if symmetric else z
    expected = cntk(x, other, depth=4, pooling="gap", block_size=1, backend="torch")
    real = _engine.block_kernels
    attempts = []

    def fails_above_four_pairs(rows, cols, *args, **kwargs):
        attempts.append(len(rows) * len(cols))
        if len(rows) * len(cols) > 4:
            raise torch.OutOfMemoryError("simulated")
        return real(rows, cols, *args, **kwargs)

    monkeypatch.setattr(_engine, "block_kernels", fails_above_four_pairs)
    with caplog.at_level(logging.WARNING, logger="dlclaims.cntk"):
        actual = cntk(x, other, depth=4, pooling="gap", block_size=6, backend="torch")
    torch.testing.assert_close(actual, expected, rtol=RTOL_ROUNDING, atol=0.0)
    assert "out of memory" in caplog.text
    assert attempts.count(36) == 1  # after the first failure, big blocks are split up front


def test_out_of_memory_on_a_single_pair_is_raised(monkeypatch):
    def always_fails(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(_engine, "block_kernels", always_fails)
    with pytest.raises(torch.OutOfMemoryError):
        cntk(_images(3, 1, 4, 4), depth=3, block_size=2, backend="torch")


GIB = 1 << 30


def _plan(n, *, pooling, side, n_layers, device="cpu"):
    return memory_plan(n, n, channels=3, height=side, width=side, pooling=pooling,
                       n_layers=n_layers, n_depths=1, dtype=torch.float64,
                       device=torch.device(device))


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_block_chooser_keeps_2000_gap_depth21_cifar_within_24_gib(device_type):
    """Sizing only (no CUDA needed): the largest block that fits, and it fits."""
    plan = _plan(2000, pooling="gap", side=32, n_layers=20, device=device_type)
    size = choose_block_size(plan, max_size=2000, device=torch.device(device_type),
                             memory_budget=24 * GIB)
    assert 1 <= size <= 2000
    assert plan.peak(size) <= 24 * GIB
    if device_type == "cuda":  # no cache cap there: the budget binds
        assert plan.peak(size + 1) > 24 * GIB


def test_block_chooser_refuses_when_one_pair_does_not_fit():
    plan = _plan(10, pooling="gap", side=32, n_layers=20)
    with pytest.raises(MemoryError, match="one image pair"):
        choose_block_size(plan, max_size=10, device=torch.device("cpu"), memory_budget=1 << 20)


def test_block_chooser_default_budget_uses_free_memory():
    plan = _plan(100, pooling="flatten", side=8, n_layers=4)
    size = choose_block_size(plan, max_size=100, device=torch.device("cpu"))
    assert 1 <= size <= 100


def test_integer_depth_returns_tensor_and_sequence_returns_dict():
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    assert isinstance(cntk(x, depth=np.int64(3)), torch.Tensor)
    assert isinstance(cntk(x, depth=(3,)), dict)


_PEAK_RSS_SCRIPT = """
import sys, torch
from dlclaims.cntk import cntk

def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

torch.set_num_threads(1)
n, side, block_size = (int(a) for a in sys.argv[1:])
x = torch.randn(n, 3, side, side, dtype=torch.float64)
cntk(x[:1], depth=2, pooling="flatten", backend="torch")  # warm-up: lazy init, small buffers
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # resets the peak resident set size (VmHWM) to the current one
before = status_kib("VmRSS:")
cntk(x, depth=3, pooling="flatten", block_size=block_size, backend="torch")
print((status_kib("VmHWM:") - before) * 1024)
"""


def test_memory_plan_bounds_measured_peak():
    """The per-pair workspace the block sizing plans with covers what a block really uses."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    n, side = 64, 32  # one 64 × 64 block of CNTK-V: 32 MiB per block-sized float64 buffer
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, str(n), str(side), str(n)],
                         capture_output=True, text=True, check=True, env=os.environ)
    grown = int(out.stdout.split()[-1])
    plan = _plan(n, pooling="flatten", side=side, n_layers=2)
    four_buffers = 4 * n * n * side * side * 8
    assert four_buffers * 0.9 <= grown <= plan.peak(n), (grown, plan.peak(n))


@pytest.mark.gpu
def test_cuda_out_of_memory_is_recovered(caplog):
    """A real CUDA OOM: ballast leaves ~512 MiB free, a 1 GiB block splits and succeeds."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    x = _images(32, 3, 32, 32, seed=11)  # GAP block of 32 × 32 pairs: 4 × 256 KiB per pair
    expected = cntk(x, depth=3, pooling="gap", device="cuda", block_size=8, backend="torch")
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(free - (512 << 20), dtype=torch.uint8, device="cuda")
    try:
        with caplog.at_level(logging.WARNING, logger="dlclaims.cntk"):
            actual = cntk(x, depth=3, pooling="gap", device="cuda", block_size=32,
                          backend="torch")
    finally:
        del ballast
        torch.cuda.empty_cache()
    assert "out of memory" in caplog.text
    torch.testing.assert_close(actual, expected, rtol=RTOL_ROUNDING, atol=0.0)
