"""Monte-Carlo check: the empirical NTK of finite CNNs converges to the analytic CNTK.

The finite network is the engine's convention written out: [Conv 3×3 SAME (no bias),
output × √(2 / (C_in·9)), ReLU] × (depth − 1), Flatten or global average pooling, a
dense readout × 1/√fan_in; weights N(0, 1) (NTK parameterisation). Its empirical NTK
is the Gram matrix of per-sample parameter gradients (torch.func.vmap of grad), split
by parameter group, so fixed layers are dropped by leaving their group out and the
NNGP is the readout group alone (the readout gradient is the last layer's features).
"""

from __future__ import annotations

import math

import pytest
import torch
from cntk_reference import relative_frobenius_error
from torch.func import grad, vmap

from dlclaims.cntk import cntk

WIDTHS = (64, 256, 1024)
N_SEEDS = 3  # networks averaged per width
RTOL_WIDEST = 0.05  # mean relative Frobenius error allowed at the widest width
DEPTH = 3
N_IMAGES, CHANNELS, SIDE = 4, 3, 8

# Parameter groups each kernel variant differentiates.
VARIANTS = {
    "ntk": dict(kind="ntk"),
    "fix_first_layer": dict(kind="ntk", fix_first_layer=True),
    "fix_readout": dict(kind="ntk", fix_readout=True),
    "fix_both": dict(kind="ntk", fix_first_layer=True, fix_readout=True),
    "nngp": dict(kind="nngp"),
}


def _groups(variant: dict) -> set[str]:
    if variant["kind"] == "nngp":
        return {"readout"}
    groups = {f"conv{i}" for i in range(DEPTH - 1)} | {"readout"}
    if variant.get("fix_first_layer"):
        groups.discard("conv0")
    if variant.get("fix_readout"):
        groups.discard("readout")
    return groups


def _init(width: int, pooling: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    params, fan_in = {}, CHANNELS
    for i in range(DEPTH - 1):
        params[f"conv{i}"] = torch.randn(width, fan_in, 3, 3, generator=generator)
        fan_in = width
    readout_fan_in = width * SIDE * SIDE if pooling == "flatten" else width
    params["readout"] = torch.randn(readout_fan_in, generator=generator)
    return params


def _network(params: dict[str, torch.Tensor], image: torch.Tensor, pooling: str) -> torch.Tensor:
    h = image[None]
    for i in range(DEPTH - 1):
        weight = params[f"conv{i}"]
        scale = math.sqrt(2.0 / (weight.shape[1] * 9))
        h = torch.relu(scale * torch.nn.functional.conv2d(h, weight, padding=1))
    features = h.flatten() if pooling == "flatten" else h.mean(dim=(-2, -1)).flatten()
    return features @ params["readout"] / math.sqrt(features.numel())


def empirical_kernels(images: torch.Tensor, width: int, pooling: str, seed: int) -> dict[str, torch.Tensor]:
    """Each parameter group's share of the empirical NTK of one random network (float64)."""
    params = _init(width, pooling, torch.Generator().manual_seed(seed))
    per_sample = vmap(grad(_network), in_dims=(None, 0, None))(params, images.float(), pooling)
    shares = {}
    for name, g in per_sample.items():
        flat = g.reshape(len(images), -1).double()
        shares[name] = flat @ flat.T
    return shares


def mean_sampled_errors(images: torch.Tensor, pooling: str) -> dict[str, list[float]]:
    """variant → mean relative Frobenius error over N_SEEDS networks, per width."""
    analytic = {name: cntk(images, depth=DEPTH, pooling=pooling, device="cpu", **variant)
                for name, variant in VARIANTS.items()}
    errors = {name: [] for name in VARIANTS}
    for width in WIDTHS:
        totals = dict.fromkeys(VARIANTS, 0.0)
        for seed in range(N_SEEDS):
            shares = empirical_kernels(images, width, pooling, seed)
            for name, variant in VARIANTS.items():
                sampled = sum(shares[g] for g in _groups(variant))
                totals[name] += relative_frobenius_error(sampled, analytic[name])
        for name in VARIANTS:
            errors[name].append(totals[name] / N_SEEDS)
    return errors


@pytest.mark.parametrize("pooling", ["flatten", "gap"])
def test_empirical_ntk_converges_to_cntk(pooling):
    images = torch.randn(N_IMAGES, CHANNELS, SIDE, SIDE,
                         generator=torch.Generator().manual_seed(2024), dtype=torch.float64)
    errors = mean_sampled_errors(images, pooling)
    for name, per_width in errors.items():
        assert all(a > b for a, b in zip(per_width, per_width[1:])), (
            f"{pooling}/{name}: error does not shrink with width {WIDTHS}: {per_width}")
        assert per_width[-1] <= RTOL_WIDEST, (
            f"{pooling}/{name}: error {per_width[-1]:.3f} at width {WIDTHS[-1]} > {RTOL_WIDEST}")
