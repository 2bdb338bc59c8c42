"""A deliberately simple, slow CNTK: Arora et al. (2019), Appendix B formulas, transcribed.

One image pair at a time, full (H, W, H, W) position-pair tensors, float64, in the
paper's own scale (c_σ = 2, 3×3 filters q = 3, Σ⁽⁰⁾ a bare window sum of xᵀz):

    Σ⁽⁰⁾_{ij,i'j'} = Σ_α tr([x_α ⊗ z_α]_{D_{ij,i'j'}}),           Θ⁽⁰⁾ = Σ⁽⁰⁾
    K⁽ʰ⁾ = c_σ/q² · E[relu(u) relu(v)],  K̇⁽ʰ⁾ = c_σ/q² · E[relu'(u) relu'(v)],
        (u, v) ~ N(0, [[Σ⁽ʰ⁻¹⁾(x,x), Σ⁽ʰ⁻¹⁾(x,z)], [Σ⁽ʰ⁻¹⁾(z,x), Σ⁽ʰ⁻¹⁾(z,z)]])
    Σ⁽ʰ⁾ = tr([K⁽ʰ⁾]_D),  Θ⁽ʰ⁾ = tr([K̇⁽ʰ⁾ ⊙ Θ⁽ʰ⁻¹⁾ + K⁽ʰ⁾]_D)          for h < L
    CNTK-V = tr(K̇⁽ᴸ⁾ ⊙ Θ⁽ᴸ⁻¹⁾ + K⁽ᴸ⁾),  CNTK-GAP = mean of the same (H·W)² entries

where ``tr([·]_{D_{ij,i'j'}})`` sums the 3×3 same-shift window ``(i+a, j+b), (i'+a, j'+b)``
with zero padding, and depth = L + 1. This is the scale of ruosongwang/CNTK; the
engine's (neural-tangents') scale is this divided by C·H·W (V) or C (GAP).

Also home of the comparison helper every CNTK test uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

C_SIGMA = 2.0
FILTER_SIDE = 3


def relative_frobenius_error(actual, expected) -> float:
    """‖actual − expected‖_F / ‖expected‖_F, in float64."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    return float(torch.linalg.norm(actual - expected) / torch.linalg.norm(expected))


def _window_trace(t: torch.Tensor) -> torch.Tensor:
    """tr([t]_{D_{ij,i'j'}}): the 9 same shifts (a, b) of both positions, zero padded."""
    height, width = t.shape[:2]
    padded = F.pad(t, (1, 1, 1, 1, 1, 1, 1, 1))
    out = torch.zeros_like(t)
    for a in range(FILTER_SIDE):
        for b in range(FILTER_SIDE):
            out += padded[a:a + height, b:b + width, a:a + height, b:b + width]
    return out


def _diagonal(t: torch.Tensor) -> torch.Tensor:
    """Σ[ij, ij] as an (H, W) map."""
    height, width = t.shape[:2]
    return t.reshape(height * width, height * width).diagonal().reshape(height, width)


def _relu_expectations(cov: torch.Tensor, var_x: torch.Tensor, var_z: torch.Tensor):
    """(K, K̇) = c_σ/q² · (E[relu(u)relu(v)], E[relu'(u)relu'(v)]), arc-cosine formulas."""
    norm = torch.sqrt(var_x[:, :, None, None] * var_z[None, None, :, :])
    cos = torch.clamp(cov / norm, -1.0, 1.0)
    angle = torch.arccos(cos)
    scale = C_SIGMA / FILTER_SIDE**2
    k = scale * norm * (torch.sin(angle) + (math.pi - angle) * cos) / (2 * math.pi)
    k_dot = scale * (math.pi - angle) / (2 * math.pi)
    return k, k_dot


def _first_layer(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Σ⁽⁰⁾(x, z): the window trace of the channel-summed position-pair products."""
    return _window_trace(torch.einsum("cij,ckl->ijkl", x, z))


def self_variances(x: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """diag Σ⁽ʰ⁾(x, x) for h = 0 … depth − 2: the normalisers of the pair recursion."""
    sigma = _first_layer(x, x)
    variances = []
    for _ in range(1, depth):
        variances.append(_diagonal(sigma))
        k, _ = _relu_expectations(sigma, variances[-1], variances[-1])
        sigma = _window_trace(k)
    return variances


def reference_pair(x: torch.Tensor, z: torch.Tensor, *, depth: int, pooling: str,
                   fix_first_layer: bool = False, fix_readout: bool = False,
                   kind: str = "ntk", variances_x=None, variances_z=None) -> float:
    """The kernel value of images x, z (C, H, W) in Arora et al.'s scale.

    ``variances_*`` are `self_variances` of x and z, computed here when not given;
    everything runs on the device of x and z.
    """
    variances_x = self_variances(x, depth) if variances_x is None else variances_x
    variances_z = self_variances(z, depth) if variances_z is None else variances_z
    sigma = _first_layer(x, z)
    theta = torch.zeros_like(sigma) if fix_first_layer else sigma
    for h in range(1, depth):
        k, k_dot = _relu_expectations(sigma, variances_x[h - 1], variances_z[h - 1])
        if h < depth - 1:
            sigma = _window_trace(k)
            theta = _window_trace(k_dot * theta + k)
    final = k if kind == "nngp" else k_dot * theta + (0.0 if fix_readout else k)
    return float(final.mean() if pooling == "gap" else _diagonal(final).sum())


def neural_tangents_scale(channels: int, height: int, width: int, pooling: str) -> float:
    """Arora et al.'s kernel ÷ this = the engine's (neural-tangents') kernel."""
    return channels * (1 if pooling == "gap" else height * width)


def reference_cntk(x1, x2=None, *, depth: int, pooling: str, fix_first_layer: bool = False,
                   fix_readout: bool = False, kind: str = "ntk", device=None) -> torch.Tensor:
    """Kernel matrix in the engine's scale, one `reference_pair` call per entry (CPU float64 out)."""
    x1 = torch.as_tensor(x1, dtype=torch.float64, device=device)
    symmetric = x2 is None
    x2 = x1 if symmetric else torch.as_tensor(x2, dtype=torch.float64, device=device)
    variances1 = [self_variances(x, depth) for x in x1]
    variances2 = variances1 if symmetric else [self_variances(z, depth) for z in x2]
    out = torch.empty(len(x1), len(x2), dtype=torch.float64)
    for i in range(len(x1)):
        for j in range(i if symmetric else 0, len(x2)):
            out[i, j] = reference_pair(x1[i], x2[j], depth=depth, pooling=pooling,
                                       fix_first_layer=fix_first_layer,
                                       fix_readout=fix_readout, kind=kind,
                                       variances_x=variances1[i], variances_z=variances2[j])
            if symmetric:
                out[j, i] = out[i, j]
    return out / neural_tangents_scale(*x1.shape[1:], pooling)
