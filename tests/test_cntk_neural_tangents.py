"""The engine against neural-tangents' `stax` kernel of the same network (if installed).

Off-diagonal entries agree to float64 rounding. On the diagonal neural-tangents carries
the variances Σ(x, x) through a separate code path, so cos θ of an image with itself is
1 only to rounding and the ReLU derivative (π − θ)/2π, whose slope is infinite at θ = 0,
turns that into ~1e-9 relative noise there; the engine gets θ = 0 exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from dlclaims.cntk import cntk

RTOL_OFF_DIAGONAL = 1e-12
RTOL_DIAGONAL = 1e-8


@pytest.fixture(scope="module")
def stax():
    # neural-tangents imports tensorflow (through tf2jax), and importing triton after tensorflow
    # 2.21 segfaults (triton 3.8, measured); torch imports triton lazily, e.g. the per-test
    # seeding's torch.use_deterministic_algorithms does, so load it first where it is installed.
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    pytest.importorskip("jax")
    neural_tangents = pytest.importorskip("neural_tangents")
    return neural_tangents.stax


def _neural_tangents_kernel(stax, x_nchw: np.ndarray, depth: int, pooling: str, kind: str) -> np.ndarray:
    from jax.experimental import enable_x64

    layers = [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()] * (depth - 1)
    readout = stax.Flatten() if pooling == "flatten" else stax.GlobalAvgPool()
    _, _, kernel_fn = stax.serial(*layers, readout, stax.Dense(1, W_std=1.0))
    with enable_x64():
        return np.asarray(kernel_fn(np.transpose(x_nchw, (0, 2, 3, 1)), None, kind), dtype=np.float64)


@pytest.mark.parametrize("pooling", ["flatten", "gap"])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("depth", [2, 4])
def test_matches_neural_tangents(stax, pooling, kind, depth):
    x = np.random.default_rng(depth).standard_normal((4, 3, 7, 9))
    expected = _neural_tangents_kernel(stax, x, depth, pooling, kind)
    actual = cntk(x, depth=depth, pooling=pooling, kind=kind, device="cpu").numpy()
    off_diagonal = ~np.eye(len(x), dtype=bool)
    np.testing.assert_allclose(actual[off_diagonal], expected[off_diagonal], rtol=RTOL_OFF_DIAGONAL)
    np.testing.assert_allclose(np.diag(actual), np.diag(expected), rtol=RTOL_DIAGONAL)
