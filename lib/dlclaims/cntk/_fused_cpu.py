"""Fused CPU CNTK kernel (numba): every layer of one offset class of one image pair in L1 cache.

The torch engine (`_recursion`) runs each layer over a whole block of pairs, ~19 passes over
memory per entry and layer, so it is bandwidth-bound. Here one loop nest takes one image pair
and one offset class ``δ = p − p'`` (the 3×3 box sum moves p and p' by the same shift, so a
class never mixes with another) through *all* layers: the class is a zero-padded
``(H − |δᵢ|) × (W − |δⱼ|)`` rectangle, four such maps (J, D of this layer and the next) are
< 20 KiB at 32×32, and every layer reads and writes only them. CNTK-V is the class δ = 0;
CNTK-GAP sums all ``(2H − 1)(2W − 1)`` classes. Pairs are spread over threads (`prange`);
each pair runs in one thread, so its value does not depend on the thread count.

Arithmetic is the engine's (see `_recursion`): ``J = 2π·Σ̂``, ``D = 2π·Θ̂``, per layer
``Σ = s·box(J)``, ``Θ = Σ + s·box(D)``, then ``√P sin θ = √max(P − Σ², 0)``,
``π − θ = atan2(√P sin θ, −Σ)``, ``J' = √P sin θ + (π − θ)Σ``, ``D' = Θ(π − θ)``, with the
pooled sums of J and D kept in float64 per depth. In float32 the angle comes from a
degree-17 odd minimax polynomial for atan on [0, 1] (absolute error ≤ 1.2e-7, float32
rounding), plain arithmetic that LLVM vectorises; float64 calls libm's ``atan2``.

Self-pairs are exact: the per-image variance maps Σ_l(x, x)[p, p] are computed by this same
loop nest (``record=True``, writing each layer's Σ before its ReLU reads it back), so for an
image paired with itself ``P − Σ²`` is exactly 0, θ exactly 0, and the arc-cosine
derivative adds no √ε rounding noise to a Gram diagonal. No fast-math: LLVM neither
reassociates nor contracts (FMA) these operations, so every compilation rounds alike.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import types
from numba.extending import overload

# atan(t) ≈ t · Σ_k ATAN_COEFFICIENTS[k] t^(2k) on 0 ≤ t ≤ 1: a near-minimax fit (iteratively
# reweighted least squares on Chebyshev nodes), max error 6e-9 in exact arithmetic and
# 1.0e-7 evaluated in float32 by Horner's rule.
ATAN_COEFFICIENTS = (0.9999998863957749, -0.3333259705646883, 0.19985906925050245,
                     -0.14161229225790053, 0.10498943847867823, -0.0723484971236265,
                     0.03978111083944423, -0.0144012788526993, 0.002456702985625146)
_C = tuple(np.float32(c) for c in ATAN_COEFFICIENTS)
_HALF_PI32 = np.float32(math.pi / 2)
_PI32 = np.float32(math.pi)
_TINY32 = np.float32(1e-30)

CONV_WEIGHT_VARIANCE = 2.0
FILTER_SIZE = 9
# Σ_{l+1} = W_std²/9 · box(Σ̂_l), Σ̂ = J / 2π.
NEXT_LAYER_SCALE = CONV_WEIGHT_VARIANCE / (FILTER_SIZE * 2.0 * math.pi)


def _atan2_poly32(y, x):
    """atan2(y, x) for y ≥ 0 in float32 (both zero → 0 or π, either is fine: Θ = Σ = 0 there)."""
    ax = abs(x)
    big = max(ax, y)
    small = min(ax, y)
    t = small / max(big, _TINY32)
    u = t * t
    p = _C[8]
    p = p * u + _C[7]
    p = p * u + _C[6]
    p = p * u + _C[5]
    p = p * u + _C[4]
    p = p * u + _C[3]
    p = p * u + _C[2]
    p = p * u + _C[1]
    p = p * u + _C[0]
    r = t * p
    r = _HALF_PI32 - r if y > ax else r
    return _PI32 - r if x < 0 else r


def _angle(y, x):
    """π − θ = atan2(y, x): dispatched on the precision when compiled."""
    return math.atan2(y, x)


@overload(_angle, inline="always")
def _angle_impl(y, x):
    if y == types.float32:
        return _atan2_poly32
    return lambda y, x: math.atan2(y, x)


@numba.njit(inline="always", cache=True)
def box_rows(src, row, width, out):
    """out[j] = src[row][j] + src[row + 1][j] + src[row + 2][j] over the padded width."""
    a = src[row]
    b = src[row + 1]
    c = src[row + 2]
    for j in range(width + 2):
        out[j] = a[j] + b[j] + c[j]


@numba.njit(cache=True)
def offset_class(x, z, vx, vz, di, dj, n_layers, record_at, fix_first_layer, with_ntk,
                 record, constants, work, acc, sums):
    """One offset class of one pair through all layers; adds Σ J, Σ D to ``sums[k]``
    for each layer l with ``record_at[l] = k ≥ 0``.

    ``x``, ``z``: (C, H, W) images; ``vx``, ``vz``: (L, H, W) variance maps (with
    ``record`` the same array, written here). ``di, dj``: the class, x row i pairs
    with z row i − di. ``constants``: 0, layer 1's and later layers' scales in the
    images' dtype. ``work``: (6, H + 2, W + 2) scratch in the images' dtype;
    ``acc``: (2, W) float64 column sums of J and D.
    """
    channels, height, width = x.shape
    rows = height - abs(di)
    cols = width - abs(dj)
    xi0 = max(di, 0)
    zi0 = max(-di, 0)
    xj0 = max(dj, 0)
    zj0 = max(-dj, 0)
    j_prev = work[0]
    d_prev = work[1]
    j_next = work[2]
    d_next = work[3]
    vert_j = work[4, 0]
    vert_d = work[4, 1]
    sigma_row = work[5, 0]
    theta_row = work[5, 1]
    acc_j = acc[0]
    acc_d = acc[1]
    # Zero borders: row 0 / column 0 are never written; clear the far edge of this class.
    for buf in (j_prev, d_prev, j_next, d_next):
        for j in range(cols + 2):
            buf[0, j] = 0.0
            buf[rows + 1, j] = 0.0
        for i in range(rows + 2):
            buf[i, 0] = 0.0
            buf[i, cols + 1] = 0.0
    # Layer 1's input: Σ_c x_c[p] z_c[p'], channel by channel (as the variance maps).
    for i in range(rows):
        for j in range(cols):
            j_prev[i + 1, j + 1] = x[0, xi0 + i, xj0 + j] * z[0, zi0 + i, zj0 + j]
        for c in range(1, channels):
            for j in range(cols):
                j_prev[i + 1, j + 1] += x[c, xi0 + i, xj0 + j] * z[c, zi0 + i, zj0 + j]
    zero = constants[0]
    first_scale = constants[1]
    next_scale = constants[2]
    for layer in range(n_layers):
        scale = first_scale if layer == 0 else next_scale
        k = record_at[layer]
        if k >= 0:
            for j in range(cols):
                acc_j[j] = 0.0
                acc_d[j] = 0.0
        for i in range(rows):
            box_rows(j_prev, i, cols, vert_j)
            for j in range(cols):
                sigma_row[j] = scale * (vert_j[j] + vert_j[j + 1] + vert_j[j + 2])
            if not with_ntk or (layer == 0 and fix_first_layer):
                for j in range(cols):
                    theta_row[j] = 0.0
            elif layer == 0:
                for j in range(cols):
                    theta_row[j] = sigma_row[j]
            else:
                box_rows(d_prev, i, cols, vert_d)
                for j in range(cols):
                    theta_row[j] = sigma_row[j] + scale * (vert_d[j] + vert_d[j + 1]
                                                           + vert_d[j + 2])
            if record:
                for j in range(cols):
                    vx[layer, xi0 + i, xj0 + j] = sigma_row[j]
            vx_row = vx[layer, xi0 + i]
            vz_row = vz[layer, zi0 + i]
            jn = j_next[i + 1]
            dn = d_next[i + 1]
            for j in range(cols):
                sigma = sigma_row[j]
                product = vx_row[xj0 + j] * vz_row[zj0 + j]
                square = sigma * sigma
                sine = math.sqrt(max(product - square, zero))  # √P · sin θ
                angle = _angle(sine, -sigma)  # π − θ
                jn[j + 1] = sine + angle * sigma
                dn[j + 1] = theta_row[j] * angle
            if k >= 0:
                for j in range(cols):
                    acc_j[j] += jn[j + 1]
                    acc_d[j] += dn[j + 1]
        if k >= 0:
            total_j = 0.0
            total_d = 0.0
            for j in range(cols):
                total_j += acc_j[j]
                total_d += acc_d[j]
            sums[k, 0] += total_j
            sums[k, 1] += total_d
        j_prev, j_next = j_next, j_prev
        d_prev, d_next = d_next, d_prev

@numba.njit(parallel=True, cache=True)
def _self_variances(images, n_layers, constants):
    """Σ_l(x, x)[p, p] for layers 1..n_layers: (n, L, H, W), by `offset_class` itself."""
    n, _, height, width = images.shape
    maps = np.zeros((n, n_layers, height, width), dtype=images.dtype)
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for m in numba.prange(n):
        work = np.zeros((6, height + 2, width + 2), dtype=images.dtype)
        acc = np.zeros((2, width), dtype=np.float64)
        sums = np.zeros((1, 2), dtype=np.float64)
        offset_class(images[m], images[m], maps[m], maps[m], 0, 0, n_layers, record_at,
                     False, False, True, constants, work, acc, sums)
    return maps

@numba.njit(parallel=True, cache=True)
def _pair_sums(rows, cols, row_maps, col_maps, pair_rows, pair_cols, n_layers, record_at,
               n_records, full_spatial, fix_first_layer, with_ntk, constants):
    """Pooled Σ J and Σ D at each recorded depth for each listed pair: (pairs, records, 2)."""
    n_pairs = len(pair_rows)
    _, _, height, width = rows.shape
    out = np.zeros((n_pairs, n_records, 2), dtype=np.float64)
    span_i = height - 1 if full_spatial else 0
    span_j = width - 1 if full_spatial else 0
    for q in numba.prange(n_pairs):
        a = pair_rows[q]
        b = pair_cols[q]
        work = np.zeros((6, height + 2, width + 2), dtype=rows.dtype)
        acc = np.zeros((2, width), dtype=np.float64)
        sums = np.zeros((n_records, 2), dtype=np.float64)
        for di in range(-span_i, span_i + 1):
            for dj in range(-span_j, span_j + 1):
                offset_class(rows[a], cols[b], row_maps[a], col_maps[b], di, dj, n_layers,
                             record_at, fix_first_layer, with_ntk, False, constants, work, acc,
                             sums)
        out[q] = sums
    return out

def _constants(dtype: np.dtype, channels: int) -> np.ndarray:
    return np.array([0.0, CONV_WEIGHT_VARIANCE / (FILTER_SIZE * channels), NEXT_LAYER_SCALE],
                    dtype=dtype)


def _check_dtype(array: np.ndarray) -> None:
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"the fused CPU kernel runs in float32 or float64, not {array.dtype}")


def _numba_threads() -> int:
    """torch's intra-op thread count (the test plugin pins 1 per process; benchmarks choose)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def self_variances(images: torch.Tensor, n_layers: int) -> np.ndarray:
    """Per-image variance maps Σ_l(x, x)[p, p]: (n, n_layers, H, W) in the images' dtype."""
    array = images.detach().cpu().contiguous().numpy()
    _check_dtype(array)
    numba.set_num_threads(_numba_threads())
    return _self_variances(array, n_layers, _constants(array.dtype, array.shape[1]))


def pair_sums(rows: torch.Tensor, cols: torch.Tensor, row_maps: np.ndarray, col_maps: np.ndarray,
              pair_rows: torch.Tensor, pair_cols: torch.Tensor, *, depths: tuple[int, ...],
              full_spatial: bool, fix_first_layer: bool, with_ntk: bool) -> torch.Tensor:
    """(n_pairs, len(depths), 2) float64: Σ J and Σ D over the pooled entries at each depth
    for the pairs (rows[pair_rows[q]], cols[pair_cols[q]]); maps from `self_variances`."""
    x = rows.detach().cpu().contiguous().numpy()
    z = cols.detach().cpu().contiguous().numpy()
    _check_dtype(x)
    n_layers = max(depths) - 1
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for k, depth in enumerate(depths):
        record_at[depth - 2] = k  # depth d reads the ReLU output of conv layer d − 1
    numba.set_num_threads(_numba_threads())
    sums = _pair_sums(x, z, row_maps, col_maps,
                      np.ascontiguousarray(pair_rows, dtype=np.int64),
                      np.ascontiguousarray(pair_cols, dtype=np.int64),
                      n_layers, record_at, len(depths), full_spatial, fix_first_layer, with_ntk,
                      _constants(x.dtype, x.shape[1]))
    return torch.from_numpy(sums)
