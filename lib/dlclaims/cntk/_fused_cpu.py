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
import os

import numba
import numpy as np
import torch
from numba import types
from numba.extending import overload

# numba's own thread pool rather than OpenMP unless the user chose one: OpenMP workers
# spin at barriers, and on a shared machine (or beside torch's own OpenMP pool) a
# descheduled worker stalls every parallel call for a time slice (measured: 41 vs 13 ms
# for a small call on a loaded 2-core box).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

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
_ZERO32 = np.float32(0.0)

CONV_WEIGHT_VARIANCE = 2.0
FILTER_SIZE = 9
# Σ_{l+1} = W_std²/9 · box(Σ̂_l), Σ̂ = J / 2π.
NEXT_LAYER_SCALE = CONV_WEIGHT_VARIANCE / (FILTER_SIZE * 2.0 * math.pi)
# Pairs go to threads in contiguous chunks (scratch allocated once per chunk).
CHUNKS_PER_THREAD = 8


@numba.njit(fastmath={"contract"}, error_model="numpy", cache=True)
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
    return _PI32 - r if x < _ZERO32 else r


def _angle(y, x):
    """π − θ = atan2(y, x): dispatched on the precision when compiled."""
    return math.atan2(y, x)


@overload(_angle, inline="always")
def _angle_impl(y, x):
    if y == types.float32:
        return lambda y, x: _atan2_poly32(y, x)
    return lambda y, x: math.atan2(y, x)


@numba.njit(fastmath={"reassoc"}, error_model="numpy", cache=True)
def _pooled_sum(values):
    """Σ values in float64, in SIMD lanes (a fixed order: same data, same sum)."""
    total = 0.0
    for t in range(len(values)):
        total += np.float64(values[t])
    return total


@numba.njit(error_model="numpy", cache=True)
def offset_class(x, z, vx, vz, height, width, di, dj, n_layers, record_at, fix_first_layer,
                 with_ntk, record, constants, column_mask, work, sums):
    """One offset class of one pair through all layers; adds Σ J, Σ D to ``sums[k]``
    for each layer l with ``record_at[l] = k ≥ 0``.

    Every map is flat with the padded image's row stride ``s = W + 2`` (`pad_images`):
    class cell (i, j), 1 ≤ i ≤ H − |di|, 1 ≤ j ≤ W − |dj|, is ``k = i·s + j`` and reads
    x at ``k + ox``, z at ``k + oz``. Loops run over whole rows 1..R, so they are long
    and vectorise; the cells right of the class (columns past W − |dj| and the padding)
    hold finite garbage until ``column_mask[dj]`` zeroes them after each layer, which
    makes them the zero padding the next box sum needs. Loops index zero-based slices
    (numba then knows no index is negative and emits no wrap-around checks).

    ``x``, ``z``: (C, (H + 3)·s) padded images; ``vx``, ``vz``: (L, (H + 3)·s) padded
    variance maps (with ``record`` the same array, written here). ``constants``: 0,
    layer 1's and later layers' scales. ``work``: (7, (H + 3)·s + 2) scratch; all in
    the images' dtype.
    """
    channels = x.shape[0]
    stride = width + 2
    rows = height - abs(di)
    ox = max(di, 0) * stride + max(dj, 0)
    oz = max(-di, 0) * stride + max(-dj, 0)
    # Cell k lives at index k + 1 of a work buffer, so that k − 1 − s ≥ 0 at row 1.
    lo = stride  # first cell of row 1
    hi = (rows + 1) * stride  # past row R
    n = hi - lo
    mask = column_mask[dj + width - 1, lo:hi]
    j_prev = work[0]
    d_prev = work[1]
    j_next = work[2]
    d_next = work[3]
    vert_j = work[4, lo:hi + 2]  # cells lo − 1 .. hi
    vert_d = work[5, lo:hi + 2]
    sigma = work[6, lo + 1:hi + 1]
    # Row R + 1 is the bottom padding (row 0 is never written).
    work[:4, hi + 1:hi + 1 + stride] = 0.0
    # Layer 1's input: Σ_c x_c[p] z_c[p'], channel by channel (as the variance maps).
    first = j_prev[lo + 1:hi + 1]
    x_c = x[0, lo + ox:hi + ox]
    z_c = z[0, lo + oz:hi + oz]
    for t in range(n):
        first[t] = x_c[t] * z_c[t]
    for c in range(1, channels):
        x_c = x[c, lo + ox:hi + ox]
        z_c = z[c, lo + oz:hi + oz]
        for t in range(n):
            first[t] += x_c[t] * z_c[t]
    for t in range(n):
        first[t] *= mask[t]
    zero = constants[0]
    for layer in range(n_layers):
        scale = constants[1] if layer == 0 else constants[2]
        theta_mode = 0 if (not with_ntk or (layer == 0 and fix_first_layer)) else (
            1 if layer == 0 else 2)
        up = j_prev[lo - stride:hi + 2 - stride]
        mid = j_prev[lo:hi + 2]
        down = j_prev[lo + stride:hi + 2 + stride]
        for t in range(n + 2):
            vert_j[t] = up[t] + mid[t] + down[t]
        if theta_mode == 2:
            up = d_prev[lo - stride:hi + 2 - stride]
            mid = d_prev[lo:hi + 2]
            down = d_prev[lo + stride:hi + 2 + stride]
            for t in range(n + 2):
                vert_d[t] = up[t] + mid[t] + down[t]
        for t in range(n):
            sigma[t] = scale * (vert_j[t] + vert_j[t + 1] + vert_j[t + 2])
        variance_x = vx[layer, lo + ox:hi + ox]
        variance_z = vz[layer, lo + oz:hi + oz]
        if record:
            for t in range(n):
                variance_x[t] = sigma[t]
        j_out = j_next[lo + 1:hi + 1]
        d_out = d_next[lo + 1:hi + 1]
        for t in range(n):
            s = sigma[t]
            if theta_mode == 0:
                theta = zero
            elif theta_mode == 1:
                theta = s
            else:
                theta = s + scale * (vert_d[t] + vert_d[t + 1] + vert_d[t + 2])
            product = variance_x[t] * variance_z[t]
            square = s * s
            sine = math.sqrt(max(product - square, zero))  # √P · sin θ
            angle = _angle(sine, -s)  # π − θ
            j_out[t] = (sine + angle * s) * mask[t]
            d_out[t] = (theta * angle) * mask[t]
        slot = record_at[layer]
        if slot >= 0:
            sums[slot, 0] += _pooled_sum(j_out)
            sums[slot, 1] += _pooled_sum(d_out)
        j_prev, j_next = j_next, j_prev
        d_prev, d_next = d_next, d_prev


@numba.njit(parallel=True, error_model="numpy", cache=True)
def _self_variances(images, height, width, n_layers, constants, column_mask):
    """Σ_l(x, x)[p, p] for layers 1..n_layers, padded like the images: (n, L, (H + 3)·s),
    computed by `offset_class` itself so that self-pairs see these very numbers."""
    n, _, size = images.shape
    maps = np.zeros((n, n_layers, size), dtype=images.dtype)
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for m in numba.prange(n):
        work = np.zeros((7, size + 2), dtype=images.dtype)
        sums = np.zeros((1, 2), dtype=np.float64)
        offset_class(images[m], images[m], maps[m], maps[m], height, width, 0, 0, n_layers,
                     record_at, False, False, True, constants, column_mask, work, sums)
    return maps


@numba.njit(parallel=True, error_model="numpy", cache=True)
def _pair_sums(rows, cols, row_maps, col_maps, height, width, pair_rows, pair_cols, n_layers,
               record_at, n_records, full_spatial, fix_first_layer, with_ntk, constants,
               column_mask, n_chunks):
    """Pooled Σ J and Σ D at each recorded depth for each listed pair: (pairs, records, 2)."""
    n_pairs = len(pair_rows)
    size = rows.shape[2]
    out = np.zeros((n_pairs, n_records, 2), dtype=np.float64)
    span_i = height - 1 if full_spatial else 0
    span_j = width - 1 if full_spatial else 0
    # Pairs in contiguous chunks, a few per thread: scratch is allocated once per chunk.
    for chunk in numba.prange(n_chunks):
        work = np.zeros((7, size + 2), dtype=rows.dtype)
        sums = np.zeros((n_records, 2), dtype=np.float64)
        for q in range(chunk * n_pairs // n_chunks, (chunk + 1) * n_pairs // n_chunks):
            a = pair_rows[q]
            b = pair_cols[q]
            sums[:] = 0.0
            for di in range(-span_i, span_i + 1):
                for dj in range(-span_j, span_j + 1):
                    offset_class(rows[a], cols[b], row_maps[a], col_maps[b], height, width,
                                 di, dj, n_layers, record_at, fix_first_layer, with_ntk, False,
                                 constants, column_mask, work, sums)
            out[q] = sums
    return out


def pad_images(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) → (n, C, (H + 3)·(W + 2)): one zero row above, two below (slack for the
    garbage columns of a shifted class), one zero column each side; flat per channel."""
    n, channels, height, width = images.shape
    padded = np.zeros((n, channels, height + 3, width + 2), dtype=images.dtype)
    padded[:, :, 1:height + 1, 1:width + 1] = images
    return padded.reshape(n, channels, -1)


def column_masks(height: int, width: int, dtype: np.dtype) -> np.ndarray:
    """(2W − 1, (H + 3)·(W + 2)): for column offset dj (row dj + W − 1), 1 at the class's
    columns 1..W − |dj| and 0 elsewhere."""
    stride = width + 2
    columns = np.arange(stride)
    masks = np.zeros((2 * width - 1, height + 3, stride), dtype=dtype)
    for dj in range(-(width - 1), width):
        masks[dj + width - 1, :, (columns >= 1) & (columns <= width - abs(dj))] = 1
    return masks.reshape(2 * width - 1, -1)


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
    """Per-image variance maps Σ_l(x, x)[p, p], padded: (n, n_layers, (H + 3)·(W + 2))."""
    array = images.detach().cpu().contiguous().numpy()
    _check_dtype(array)
    _, channels, height, width = array.shape
    numba.set_num_threads(_numba_threads())
    return _self_variances(pad_images(array), height, width, n_layers,
                           _constants(array.dtype, channels),
                           column_masks(height, width, array.dtype))


def pair_sums(rows: torch.Tensor, cols: torch.Tensor, row_maps: np.ndarray, col_maps: np.ndarray,
              pair_rows: torch.Tensor, pair_cols: torch.Tensor, *, depths: tuple[int, ...],
              full_spatial: bool, fix_first_layer: bool, with_ntk: bool) -> torch.Tensor:
    """(n_pairs, len(depths), 2) float64: Σ J and Σ D over the pooled entries at each depth
    for the pairs (rows[pair_rows[q]], cols[pair_cols[q]]); maps from `self_variances`."""
    x = rows.detach().cpu().contiguous().numpy()
    z = cols.detach().cpu().contiguous().numpy()
    _check_dtype(x)
    _, channels, height, width = x.shape
    n_layers = max(depths) - 1
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for k, depth in enumerate(depths):
        record_at[depth - 2] = k  # depth d reads the ReLU output of conv layer d − 1
    threads = _numba_threads()
    numba.set_num_threads(threads)
    padded_rows = pad_images(x)
    padded_cols = padded_rows if z is x else pad_images(z)
    sums = _pair_sums(padded_rows, padded_cols, row_maps, col_maps, height, width,
                      np.ascontiguousarray(pair_rows, dtype=np.int64),
                      np.ascontiguousarray(pair_cols, dtype=np.int64),
                      n_layers, record_at, len(depths), full_spatial, fix_first_layer,
                      with_ntk, _constants(x.dtype, channels),
                      column_masks(height, width, x.dtype),
                      max(1, min(len(pair_rows), CHUNKS_PER_THREAD * threads)))
    return torch.from_numpy(sums)
