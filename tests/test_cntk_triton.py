"""The Triton CNTK kernel against the torch engine: on CPU through Triton's interpreter
(``TRITON_INTERPRET=1``, in a subprocess, since Triton reads it when kernels are defined), and
compiled on a CUDA device when one is present."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dlclaims.cntk import cntk

RTOL_FLOAT32 = 1e-5  # float32 recursion vs the float64 torch engine (measured ≤ 1e-7 here)

# Small inputs: the interpreter runs each program's tile ops through numpy, ~0.1 s per
# (pair, offset class) at depth 5, so GAP cases stay at 3×4 images and a few pairs.
_INTERPRETER_SCRIPT = textwrap.dedent("""
    import math
    import torch
    from dlclaims.cntk import _engine, _fused_triton
    from dlclaims.cntk._recursion import LAYOUTS

    RTOL = float(__import__("sys").argv[1])
    generator = torch.Generator().manual_seed(0)

    def images(n, c, h, w):
        return torch.randn(n, c, h, w, generator=generator)

    def fused(x, z, **kwargs):
        symmetric = z is None
        return _engine._fused_kernels("fused-triton", x, x if symmetric else z,
                                      symmetric=symmetric, block_size=4, progress=False,
                                      **kwargs)

    def check(name, x, z, pooling, depths, kind="ntk", fix=(False, False)):
        got = fused(x, z, layout=LAYOUTS[pooling], depths=depths, kind=kind,
                    fix_first_layer=fix[0], fix_readout=fix[1])
        ref = _engine.cntk(x.double(), None if z is None else z.double(), depth=list(depths),
                           pooling=pooling, kind=kind, fix_first_layer=fix[0],
                           fix_readout=fix[1], backend="torch")
        for d in depths:
            scale = ref[d].abs().max().clamp_min(1e-300)
            error = ((got[d] - ref[d]).abs().max() / scale).item()
            assert error <= RTOL, (name, d, error)
            print(f"{name} depth {d}: max relative error {error:.1e}")

    x, z = images(3, 2, 5, 6), images(2, 2, 5, 6)
    for fix in [(False, False), (True, True), (True, False), (False, True)]:
        check(f"flatten fix{fix}", x, z, "flatten", (2, 3, 5), fix=fix)
    check("flatten nngp", x, z, "flatten", (2, 4), kind="nngp")
    check("flatten gram", x, None, "flatten", (3, 6))
    small_x, small_z = images(2, 1, 3, 4), images(1, 1, 3, 4)
    check("gap fix(True, True)", small_x, small_z, "gap", (2, 3), fix=(True, True))
    check("gap nngp", small_x, small_z, "gap", (3,), kind="nngp")
    check("gap gram", small_x, None, "gap", (3,))

    # Self-pairs exact: with θ = 0, J = π·Σ, so the NNGP diagonal is the pooled variance map.
    gram = fused(x, None, layout=LAYOUTS["flatten"], depths=(4,), kind="nngp",
                 fix_first_layer=False, fix_readout=False)[4]
    maps = _fused_triton.self_variances(x, 3)
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    expected = (pi32 * maps[:, 2]).double().sum(dim=(1, 2)) / (2 * math.pi * 30)
    torch.testing.assert_close(gram.diagonal(), expected, rtol=1e-13, atol=0.0)
    assert torch.equal(gram, gram.T)
    print("self-pairs exact, Gram symmetric")
""")


def test_triton_kernel_in_interpreter_matches_torch_engine():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT, str(RTOL_FLOAT32)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "self-pairs exact" in run.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("pooling", ["flatten", "gap"])
def test_triton_kernel_on_cuda_matches_torch_engine(pooling):
    """Compiled for the GPU (the interpreter does not check barriers, layouts or FMA
    contraction): CIFAR-sized images, every Arora depth from one pass."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6 if pooling == "flatten" else 3, 3, 32, 32, generator=generator)
    depths = [3, 4, 6, 11, 21]
    kwargs = {"pooling": pooling, "fix_first_layer": pooling == "gap",
              "fix_readout": pooling == "gap"}
    fused = cntk(x, depth=depths, device="cuda", dtype=torch.float32, backend="fused", **kwargs)
    exact = cntk(x.double(), depth=depths, device="cuda", backend="torch", **kwargs)
    for d in depths:
        torch.testing.assert_close(fused[d], exact[d], rtol=RTOL_FLOAT32, atol=0.0)
        assert torch.equal(fused[d], fused[d].T)
