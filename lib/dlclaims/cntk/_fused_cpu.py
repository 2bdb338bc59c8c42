"""Fused CPU CNTK kernel (numba): every layer of a few offset classes of one image pair in cache.

The torch engine (`_recursion`) runs each layer over a whole block of pairs, ~19 passes over
memory per entry and layer, so it is bandwidth-bound. Here one loop nest takes one image pair
and some offset classes ``δ = p − p'`` (the 3×3 box sum moves p and p' by the same shift, so a
class never mixes with another) through *all* layers, in a few flat maps of one padded image
(< 40 KiB at 32×32, L1) or of a few classes side by side (≤ 288 KiB, L2), read and written
only by long, vectorised loops. CNTK-V is the class δ = 0; CNTK-GAP sums all classes, two at
a time per flat shift (see `offset_classes`), so its rows are fully used. Pairs are spread
over threads (`prange`) in L2-sized tiles (`cache_tiled_order`); each pair runs in one
thread, so its value does not depend on the thread count or the order of the pairs.

Arithmetic is the engine's (see `_recursion`): ``J = 2π·Σ̂``, ``D = 2π·Θ̂``, per layer
``Σ = s·box(J)``, ``Θ = Σ + s·box(D)``, then ``√P sin θ = √max(P − Σ², 0)``,
``π − θ = atan2(√P sin θ, −Σ)``, ``J' = √P sin θ + (π − θ)Σ``, ``D' = Θ(π − θ)``, with the
pooled sums of J and D kept in float64 per depth. In float32 the angle comes from a
degree-17 odd minimax polynomial for atan on [0, 1] (absolute error ≤ 1.0e-7, float32
rounding), plain arithmetic that LLVM vectorises; float64 calls libm's ``atan2``.

Self-pairs are exact: the per-image variance maps Σ_l(x, x)[p, p] are computed by this same
loop nest (``record=True``, writing each layer's Σ before its ReLU reads it back), so for an
image paired with itself ``P − Σ²`` is exactly 0, θ exactly 0, and the arc-cosine
derivative adds no √ε rounding noise to a Gram diagonal. No fast-math on that path: LLVM
neither reassociates nor contracts (FMA) it, so every compilation rounds alike (only the
atan polynomial may use FMAs, and the pooled sums reassociate into SIMD lanes).
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch
from numba import types
from numba.extending import overload

from ._recursion import CONV_WEIGHT_VARIANCE, FILTER_SIZE, NEXT_LAYER_SCALE

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

# Pairs go to threads in contiguous chunks (scratch allocated once per chunk).
CHUNKS_PER_THREAD = 8
# Share of a core's L2 cache that the column images' variance maps of one pair tile may fill
# (see `cache_tiled_order`); the rest holds the row image's maps, the work buffers, the code.
L2_SHARE_FOR_COLUMN_MAPS = 0.75
# Cells of one `offset_classes` call (GAP: the column shifts of a row shift, batched up to this
# many cells; 9 work buffers of 8,192 float32 cells = 288 KiB stay in L2).
CELLS_PER_CALL = 8192
# Per-core L2 where the OS does not say (the size on current x86 server cores is 1–2 MiB).
DEFAULT_L2_BYTES = 1 << 20


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
def _z_rows(height, di):
    """The z rows [first, last) whose x partner row (i + di, or i + di + 1 past the wrap) can
    be a pixel under the row shift di: the rows every shift of a `offset_classes` call shares."""
    return max(0, -di - 1), min(height, height - di)


@numba.njit(error_model="numpy", cache=True)
def offset_classes(x, z, vx, vz, height, width, di, dj_start, dj_stop, n_layers, record_at,
                   fix_first_layer, with_ntk, record, constants, real, work, sums):
    """The offset classes of one pair under the flat shifts ``di·S + dj``, ``dj_start ≤ dj <
    dj_stop``, through all layers; adds Σ J, Σ D to ``sums[k]`` for each layer l with
    ``record_at[l] = k ≥ 0``.

    Images and maps are flat with row stride ``S = W + 1`` (`pad_images`: one zero column
    per row, two zero rows above and below). A shift pairs the z cell k with the x cell
    ``k + Δ``, ``Δ = di·S + dj`` with ``0 ≤ dj ≤ W``: where z's column plus dj stays in the
    row that is offset class (di, dj); where it wraps past the zero column into the next row
    it is class (di + 1, dj − S). The zero column keeps the two apart in the box sum, and
    every class of the pair belongs to exactly one shift, so a GAP pair is 2H·(W + 1)
    shifts of fully used rows instead of (2H − 1)(2W − 1) ragged rectangles; CNTK-V is the
    shift 0. The shifts of one call share their z rows (they depend on di only); each is a
    segment of ``n`` cells in flat work buffers, the segments separated by ``S + 1`` zero
    cells (the box sum's padding: a row above and below), so that every loop of a layer
    runs once over all the segments: short rows of small images no longer pay a loop's
    set-up and scalar remainder per class (GAP at 16×16, depth 3: 1.5–1.8× per pair).
    ``real`` (1 at image pixels, 0 at padding) gives the cells where both sides are pixels;
    the rest, gaps included, hold finite garbage until the mask zeroes them after each layer,
    which makes them the zero padding the next box sum needs. Loops index zero-based slices
    (numba then knows no index is negative and emits no wrap-around checks).

    ``x``, ``z``: (C, (H + 4)·S) padded images; ``vx``, ``vz``: (L, (H + 4)·S) padded
    variance maps (with ``record``, one shift 0 and the same array, written here).
    ``constants``: 0, layer 1's and later layers' scales. ``work``: (9, ≥ cells) scratch,
    cells = (S + 1)·2 + (dj_stop − dj_start)·(n + S + 1); all in the images' dtype.
    """
    channels = x.shape[0]
    stride = width + 1
    pad = stride + 1
    first_row, last_row = _z_rows(height, di)
    if first_row >= last_row or dj_start >= dj_stop:
        return
    lo = (first_row + 2) * stride
    n = (last_row - first_row) * stride
    segment = n + pad
    n_segments = dj_stop - dj_start
    end = n_segments * segment  # = pad + n_segments·segment − pad: one past the last cell
    size = end + pad
    j_prev = work[0]
    d_prev = work[1]
    j_next = work[2]
    d_next = work[3]
    vert_j = work[4, pad - 1:end + 1]  # cells pad − 1 .. end
    vert_d = work[5, pad - 1:end + 1]
    mask = work[6]
    # Zeros the box sum reads: the rows above and below all segments (J and D maps), and the
    # gaps between segments (layer 1's J and the mask: later layers write their gaps as
    # mask · garbage = 0). Gathered variances need no zeros: gaps there hold earlier, finite
    # values, and the mask zeroes what they give.
    for b in range(4):
        for t in range(pad):
            work[b, t] = 0.0
        for t in range(end, size):
            work[b, t] = 0.0
    for g in range(n_segments - 1):
        for t in range(pad + g * segment + n, pad + (g + 1) * segment):
            j_prev[t] = 0.0
            mask[t] = 0.0
    # Per segment: the mask and layer 1's input Σ_c x_c[p + Δ] z_c[p] (as the variance maps).
    real_z = real[lo:lo + n]
    for g in range(n_segments):
        shift = di * stride + dj_start + g
        base = pad + g * segment
        cell_mask = mask[base:base + n]
        real_x = real[lo + shift:lo + shift + n]
        for t in range(n):
            cell_mask[t] = real_z[t] * real_x[t]
        first = j_prev[base:base + n]
        x_c = x[0, lo + shift:lo + shift + n]
        z_c = z[0, lo:lo + n]
        for t in range(n):
            first[t] = x_c[t] * z_c[t]
        for c in range(1, channels):
            x_c = x[c, lo + shift:lo + shift + n]
            z_c = z[c, lo:lo + n]
            for t in range(n):
                first[t] += x_c[t] * z_c[t]
        for t in range(n):
            first[t] *= cell_mask[t]
    cells = end - pad
    mask_cells = mask[pad:end]
    zero = constants[0]
    for layer in range(n_layers):
        scale = constants[1] if layer == 0 else constants[2]
        theta_mode = 0 if (not with_ntk or (layer == 0 and fix_first_layer)) else (
            1 if layer == 0 else 2)
        # The variances Σ_l(x, x)[p + Δ] and Σ_l(z, z)[p] of each cell (P is their product):
        # one shift reads the maps in place; several are gathered into segments.
        if n_segments == 1:
            variance_x = vx[layer, lo + di * stride + dj_start:lo + di * stride + dj_start + n]
            variance_z = vz[layer, lo:lo + n]
        else:
            variance_x = work[7, pad:end]
            variance_z = work[8, pad:end]
            for g in range(n_segments):
                shift = di * stride + dj_start + g
                base = g * segment
                x_out = variance_x[base:base + n]
                z_out = variance_z[base:base + n]
                x_in = vx[layer, lo + shift:lo + shift + n]
                z_in = vz[layer, lo:lo + n]
                for t in range(n):
                    x_out[t] = x_in[t]
                for t in range(n):
                    z_out[t] = z_in[t]
        up = j_prev[pad - 1 - stride:end + 1 - stride]
        mid = j_prev[pad - 1:end + 1]
        down = j_prev[pad - 1 + stride:end + 1 + stride]
        for t in range(cells + 2):
            vert_j[t] = up[t] + mid[t] + down[t]
        if theta_mode == 2:
            up = d_prev[pad - 1 - stride:end + 1 - stride]
            mid = d_prev[pad - 1:end + 1]
            down = d_prev[pad - 1 + stride:end + 1 + stride]
            for t in range(cells + 2):
                vert_d[t] = up[t] + mid[t] + down[t]
        j_out = j_next[pad:end]
        d_out = d_next[pad:end]
        # One loop per mode (the mode is fixed for the whole layer), the horizontal box sum
        # inline: no per-element branch, no Σ map written and read back (−7 % per pair).
        if record:  # self-pair (one segment, shift 0): P = Σ², θ = 0 exactly
            for t in range(cells):
                s = scale * (vert_j[t] + vert_j[t + 1] + vert_j[t + 2])
                variance_x[t] = s
                sine = math.sqrt(max(s * s - s * s, zero))
                angle = _angle(sine, -s)
                j_out[t] = (sine + angle * s) * mask_cells[t]
                d_out[t] = zero
        elif theta_mode == 2:
            for t in range(cells):
                s = scale * (vert_j[t] + vert_j[t + 1] + vert_j[t + 2])
                theta = s + scale * (vert_d[t] + vert_d[t + 1] + vert_d[t + 2])
                sine = math.sqrt(max(variance_x[t] * variance_z[t] - s * s, zero))
                angle = _angle(sine, -s)
                j_out[t] = (sine + angle * s) * mask_cells[t]
                d_out[t] = (theta * angle) * mask_cells[t]
        else:
            for t in range(cells):
                s = scale * (vert_j[t] + vert_j[t + 1] + vert_j[t + 2])
                theta = zero if theta_mode == 0 else s
                sine = math.sqrt(max(variance_x[t] * variance_z[t] - s * s, zero))
                angle = _angle(sine, -s)
                j_out[t] = (sine + angle * s) * mask_cells[t]
                d_out[t] = (theta * angle) * mask_cells[t]
        slot = record_at[layer]
        if slot >= 0:
            sums[slot, 0] += _pooled_sum(j_out)
            sums[slot, 1] += _pooled_sum(d_out)
        j_prev, j_next = j_next, j_prev
        d_prev, d_next = d_next, d_prev


def work_cells(height: int, width: int) -> int:
    """Cells of `offset_classes`' flat work buffers for the largest call `_pair_sums` makes."""
    stride = width + 1
    return 2 * (stride + 1) + max(CELLS_PER_CALL, height * stride + stride + 1)


@numba.njit(parallel=True, error_model="numpy", cache=True)
def _self_variances(images, height, width, n_layers, constants, real, cells):
    """Σ_l(x, x)[p, p] for layers 1..n_layers, padded like the images: (n, L, (H + 4)·S),
    computed by `offset_classes` itself so that self-pairs see these very numbers."""
    n, _, size = images.shape
    maps = np.zeros((n, n_layers, size), dtype=images.dtype)
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for m in numba.prange(n):
        work = np.zeros((9, cells), dtype=images.dtype)
        sums = np.zeros((1, 2), dtype=np.float64)
        offset_classes(images[m], images[m], maps[m], maps[m], height, width, 0, 0, 1, n_layers,
                       record_at, False, False, True, constants, real, work, sums)
    return maps


@numba.njit(parallel=True, error_model="numpy", cache=True)
def _pair_sums(rows, cols, row_maps, col_maps, height, width, pair_rows, pair_cols, n_layers,
               record_at, n_records, full_spatial, fix_first_layer, with_ntk, constants,
               real, n_chunks, cells):
    """Pooled Σ J and Σ D at each recorded depth for each listed pair: (pairs, records, 2)."""
    n_pairs = len(pair_rows)
    out = np.zeros((n_pairs, n_records, 2), dtype=np.float64)
    stride = width + 1
    # CNTK-V: the shift 0 only; GAP: every row shift −H..H − 1 and column shift 0..W, the
    # column shifts of one row shift in calls of up to CELLS_PER_CALL cells.
    first_di = -height if full_spatial else 0
    last_di = height - 1 if full_spatial else 0
    n_dj = width + 1 if full_spatial else 1
    for chunk in numba.prange(n_chunks):
        work = np.zeros((9, cells), dtype=rows.dtype)
        sums = np.zeros((n_records, 2), dtype=np.float64)
        for q in range(chunk * n_pairs // n_chunks, (chunk + 1) * n_pairs // n_chunks):
            a = pair_rows[q]
            b = pair_cols[q]
            sums[:] = 0.0
            for di in range(first_di, last_di + 1):
                first_row, last_row = _z_rows(height, di)
                segment = (last_row - first_row) * stride + stride + 1  # as in offset_classes
                per_call = max(1, min(n_dj, CELLS_PER_CALL // segment))
                for dj in range(0, n_dj, per_call):
                    offset_classes(rows[a], cols[b], row_maps[a], col_maps[b], height, width,
                                   di, dj, min(dj + per_call, n_dj), n_layers, record_at,
                                   fix_first_layer, with_ntk, False, constants, real, work,
                                   sums)
            out[q] = sums
    return out


def pad_images(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) → (n, C, (H + 4)·(W + 1)): two zero rows above and below, one zero
    column after each row; flat per channel."""
    n, channels, height, width = images.shape
    padded = np.zeros((n, channels, height + 4, width + 1), dtype=images.dtype)
    padded[:, :, 2:height + 2, :width] = images
    return padded.reshape(n, channels, -1)


def pixel_indicator(height: int, width: int, dtype: np.dtype) -> np.ndarray:
    """1 at the pixels of the padded flat layout, 0 at its padding."""
    return pad_images(np.ones((1, 1, height, width), dtype=dtype))[0, 0]


def _constants(dtype: np.dtype, channels: int) -> np.ndarray:
    return np.array([0.0, CONV_WEIGHT_VARIANCE / (FILTER_SIZE * channels), NEXT_LAYER_SCALE],
                    dtype=dtype)


def l2_cache_bytes() -> int:
    """One core's L2 cache, from Linux sysfs; `DEFAULT_L2_BYTES` elsewhere."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as size:
            text = size.read().strip()
    except OSError:
        return DEFAULT_L2_BYTES
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        return DEFAULT_L2_BYTES


def cache_tiled_order(pair_rows: np.ndarray, pair_cols: np.ndarray,
                      map_bytes: int) -> np.ndarray:
    """A permutation of the pairs that runs them by tiles of column images whose variance maps
    fit in L2 together: every pair reads both images' maps at every layer (≈ 95 KiB per image
    for CNTK-V at depth 21 in float32), and a row-major sweep over a block streams all the
    column images' maps from L3 or memory at every row (measured on a 2-core EPYC, 256²
    pairs: 10.4 µs/pair row-major, 6.9 µs in tiles of 8 columns)."""
    tile = max(1, int(L2_SHARE_FOR_COLUMN_MAPS * l2_cache_bytes()) // max(map_bytes, 1))
    return np.lexsort((pair_cols, pair_rows, pair_cols // tile))


def _check_dtype(array: np.ndarray) -> None:
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"the fused CPU kernel runs in float32 or float64, not {array.dtype}")


def _numba_threads() -> int:
    """torch's intra-op thread count (the test plugin pins 1 per process; benchmarks choose)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def self_variances(images: torch.Tensor, n_layers: int) -> np.ndarray:
    """Per-image variance maps Σ_l(x, x)[p, p], padded: (n, n_layers, (H + 4)·(W + 1))."""
    array = images.detach().cpu().contiguous().numpy()
    _check_dtype(array)
    _, channels, height, width = array.shape
    numba.set_num_threads(_numba_threads())
    return _self_variances(pad_images(array), height, width, n_layers,
                           _constants(array.dtype, channels),
                           pixel_indicator(height, width, array.dtype), work_cells(height, width))


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
    pair_rows = np.asarray(pair_rows, dtype=np.int64)
    pair_cols = np.asarray(pair_cols, dtype=np.int64)
    order = cache_tiled_order(pair_rows, pair_cols, col_maps[0].nbytes)
    sums = _pair_sums(padded_rows, padded_cols, row_maps, col_maps, height, width,
                      np.ascontiguousarray(pair_rows[order]),
                      np.ascontiguousarray(pair_cols[order]),
                      n_layers, record_at, len(depths), full_spatial, fix_first_layer,
                      with_ntk, _constants(x.dtype, channels),
                      pixel_indicator(height, width, x.dtype),
                      max(1, min(len(pair_rows), CHUNKS_PER_THREAD * threads)),
                      work_cells(height, width))
    in_order = np.empty_like(sums)
    in_order[order] = sums
    return torch.from_numpy(in_order)
