"""Fused CUDA CNTK kernel (Triton): one offset class of one image pair through all layers on chip.

The GPU counterpart of `_fused_cpu`, with the same arithmetic (see `_recursion` for the
formulas) in float32. A work item is one (pair, offset class ``δ = p − p'``): CNTK-V has one
class per pair (δ = 0), CNTK-GAP ``(2H − 1)(2W − 1)``. The class map — a
``(H − |δᵢ|) × (W − |δⱼ|)`` rectangle, held in a ``BLOCK_H × BLOCK_W`` register tile with
zeros outside it — goes through every layer in registers; the 3×3 box sum reads the tile's
shifts back from a small per-program scratch tile (L1/L2-resident), between two barriers.
Programs are persistent (a grid of a few per SM, each looping over items), so the scratch is
bounded by the grid, not by the number of items. Each item writes its own float64 pooled
sums per depth, which torch adds up per pair: no atomics, so results are deterministic.

The angle ``π − θ = atan2(√P sin θ, −Σ)`` comes from the same odd minimax polynomial as the
CPU kernel (`ATAN_COEFFICIENTS`), so both run in plain arithmetic everywhere, including
Triton's interpreter (``TRITON_INTERPRET=1``), where CI tests this kernel on CPU.

Self-pairs: the per-image variance maps come out of this kernel itself (``RECORD``), as on
CPU, but the GPU compiler may contract ``P − Σ²`` into one FMA, which leaves the rounding
error of Σ² instead of 0 for an image paired with itself. So ``√P sin θ`` is taken as 0
whenever ``P − Σ² ≤ SELF_PAIR_RTOL · P``: below that the difference is float32 rounding
noise for any pair (cos θ within a few ulps of 1), and the self-pair diagonal stays exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from ._fused_cpu import ATAN_COEFFICIENTS
from ._recursion import CONV_WEIGHT_VARIANCE, FILTER_SIZE, NEXT_LAYER_SCALE

SELF_PAIR_RTOL = 8 * 2.0**-24  # a few float32 ulps of P
# Persistent programs per streaming multiprocessor (CUDA); the interpreter runs programs in
# turn, so a handful is enough there.
PROGRAMS_PER_SM = 8
INTERPRETER_PROGRAMS = 4

_C0 = tl.constexpr(ATAN_COEFFICIENTS[0])
_C1 = tl.constexpr(ATAN_COEFFICIENTS[1])
_C2 = tl.constexpr(ATAN_COEFFICIENTS[2])
_C3 = tl.constexpr(ATAN_COEFFICIENTS[3])
_C4 = tl.constexpr(ATAN_COEFFICIENTS[4])
_C5 = tl.constexpr(ATAN_COEFFICIENTS[5])
_C6 = tl.constexpr(ATAN_COEFFICIENTS[6])
_C7 = tl.constexpr(ATAN_COEFFICIENTS[7])
_C8 = tl.constexpr(ATAN_COEFFICIENTS[8])
_HALF_PI = tl.constexpr(math.pi / 2)
_PI = tl.constexpr(math.pi)
_SELF_PAIR_RTOL = tl.constexpr(SELF_PAIR_RTOL)


@triton.jit
def _atan2_poly(y, x):
    """atan2(y, x) for y ≥ 0, float32 accuracy (the CPU kernel's polynomial)."""
    ax = tl.abs(x)
    big = tl.maximum(ax, y)
    small = tl.minimum(ax, y)
    t = small / tl.maximum(big, 1e-30)
    u = t * t
    # Tensor on the left of every operator: Triton's interpreter cannot take constexpr ∘ tensor.
    p = u * _C8 + _C7
    p = p * u + _C6
    p = p * u + _C5
    p = p * u + _C4
    p = p * u + _C3
    p = p * u + _C2
    p = p * u + _C1
    p = p * u + _C0
    r = t * p
    r = tl.where(y > ax, -r + _HALF_PI, r)
    return tl.where(x < 0, -r + _PI, r)


@triton.jit
def _cntk_classes(x_ptr, z_ptr, vx_ptr, vz_ptr, rows_ptr, cols_ptr, record_ptr, out_ptr,
                  scratch_ptr, n_items, n_classes, class_cols, span_i, span_j, channels,
                  height, width, n_layers, n_records, first_scale, next_scale,
                  FIX_FIRST: tl.constexpr, WITH_NTK: tl.constexpr, RECORD: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Items ``pid, pid + programs, …``; item = pair · n_classes + class. Writes
    ``out[item, record_ptr[l], :] = (Σ J, Σ D)`` after each recorded layer l."""
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    ii = tl.arange(0, BLOCK_H)[:, None]
    jj = tl.arange(0, BLOCK_W)[None, :]
    tile = ii * BLOCK_W + jj
    scratch_j = scratch_ptr + pid * (2 * BLOCK_H * BLOCK_W)
    scratch_d = scratch_j + BLOCK_H * BLOCK_W
    plane = height * width
    for item in range(pid, n_items, n_programs):
        q = item // n_classes
        cls = item % n_classes
        di = cls // class_cols - span_i
        dj = cls % class_cols - span_j
        a = tl.load(rows_ptr + q)
        b = tl.load(cols_ptr + q)
        valid = (ii < height - tl.abs(di)) & (jj < width - tl.abs(dj))
        # Lanes outside the class point at element 0: masked off, but never out of bounds.
        x_at = tl.where(valid, (ii + tl.maximum(di, 0)) * width + (jj + tl.maximum(dj, 0)), 0)
        z_at = tl.where(valid, (ii + tl.maximum(-di, 0)) * width + (jj + tl.maximum(-dj, 0)), 0)
        j_map = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
        d_map = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
        for c in range(channels):  # Σ_c x_c[p] z_c[p'], channel by channel
            xv = tl.load(x_ptr + (a * channels + c) * plane + x_at, mask=valid, other=0.0)
            zv = tl.load(z_ptr + (b * channels + c) * plane + z_at, mask=valid, other=0.0)
            j_map += xv * zv
        for layer in range(n_layers):
            tl.debug_barrier()  # every thread has read the previous layer's scratch
            tl.store(scratch_j + tile, j_map)
            if WITH_NTK:
                tl.store(scratch_d + tile, d_map)
            tl.debug_barrier()
            box_j = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
            box_d = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
            for si in tl.static_range(3):
                for sj in tl.static_range(3):
                    ni = ii + (si - 1)
                    nj = jj + (sj - 1)
                    inside = (ni >= 0) & (ni < BLOCK_H) & (nj >= 0) & (nj < BLOCK_W)
                    shifted = ni * BLOCK_W + nj
                    box_j += tl.load(scratch_j + shifted, mask=inside, other=0.0)
                    if WITH_NTK:
                        box_d += tl.load(scratch_d + shifted, mask=inside, other=0.0)
            scale = tl.where(layer == 0, first_scale, next_scale)
            sigma = scale * box_j
            if WITH_NTK:
                theta = sigma + scale * box_d  # d_map is 0 before layer 1: Θ₁ = Σ₁
                if FIX_FIRST:
                    theta = tl.where(layer == 0, 0.0, theta)
            else:
                theta = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
            x_map = vx_ptr + (a * n_layers + layer) * plane + x_at
            z_map = vz_ptr + (b * n_layers + layer) * plane + z_at
            if RECORD:
                tl.store(x_map, sigma, mask=valid)
                tl.debug_barrier()
            product = tl.load(x_map, mask=valid, other=0.0) * tl.load(z_map, mask=valid, other=0.0)
            difference = product - sigma * sigma
            sine = tl.where(difference > product * _SELF_PAIR_RTOL,
                            tl.sqrt(tl.maximum(difference, 0.0)), 0.0)  # √P · sin θ
            angle = _atan2_poly(sine, -sigma)  # π − θ
            j_map = tl.where(valid, sine + angle * sigma, 0.0)
            d_map = tl.where(valid, theta * angle, 0.0)
            slot = tl.load(record_ptr + layer)
            if slot >= 0:
                out = out_ptr + (item * n_records + slot) * 2
                tl.store(out, tl.sum(tl.sum(j_map.to(tl.float64), axis=1), axis=0))
                tl.store(out + 1, tl.sum(tl.sum(d_map.to(tl.float64), axis=1), axis=0))


def _programs(n_items: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_items, PROGRAMS_PER_SM * sms))
    return max(1, min(n_items, INTERPRETER_PROGRAMS))


def _launch(x, z, vx, vz, pair_rows, pair_cols, record_at, *, n_records, full_spatial,
            fix_first_layer, with_ntk, record) -> torch.Tensor:
    _, channels, height, width = x.shape
    n_layers = len(record_at)
    span_i = height - 1 if full_spatial else 0
    span_j = width - 1 if full_spatial else 0
    class_cols = 2 * span_j + 1
    n_classes = (2 * span_i + 1) * class_cols
    n_items = len(pair_rows) * n_classes
    out = torch.zeros((n_items, max(n_records, 1), 2), dtype=torch.float64, device=x.device)
    if n_items == 0:
        return out
    block_h, block_w = triton.next_power_of_2(height), triton.next_power_of_2(width)
    programs = _programs(n_items, x.device)
    scratch = torch.empty((programs, 2, block_h, block_w), dtype=torch.float32, device=x.device)
    _cntk_classes[(programs,)](
        x, z, vx, vz, pair_rows, pair_cols, record_at, out, scratch, n_items, n_classes,
        class_cols, span_i, span_j, channels, height, width, n_layers, max(n_records, 1),
        CONV_WEIGHT_VARIANCE / (FILTER_SIZE * channels), NEXT_LAYER_SCALE,
        FIX_FIRST=fix_first_layer, WITH_NTK=with_ntk, RECORD=record,
        BLOCK_H=block_h, BLOCK_W=block_w)
    return out.view(len(pair_rows), n_classes, max(n_records, 1), 2).sum(dim=1)


def _check(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.float32:
        raise ValueError(f"the Triton CNTK kernel runs in float32, not {images.dtype}")
    return images.contiguous()


def self_variances(images: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Σ_l(x, x)[p, p] for layers 1..n_layers: (n, L, H, W) float32, by the kernel itself."""
    images = _check(images)
    n, _, height, width = images.shape
    maps = torch.zeros((n, n_layers, height, width), dtype=torch.float32, device=images.device)
    index = torch.arange(n, device=images.device)
    never = torch.full((n_layers,), -1, dtype=torch.int64, device=images.device)
    _launch(images, images, maps, maps, index, index, never, n_records=0, full_spatial=False,
            fix_first_layer=False, with_ntk=False, record=True)
    return maps


def pair_sums(rows: torch.Tensor, cols: torch.Tensor, row_maps: torch.Tensor,
              col_maps: torch.Tensor, pair_rows: torch.Tensor, pair_cols: torch.Tensor, *,
              depths: tuple[int, ...], full_spatial: bool, fix_first_layer: bool,
              with_ntk: bool) -> torch.Tensor:
    """(n_pairs, len(depths), 2) float64 on the CPU: Σ J and Σ D over the pooled entries
    at each depth for the pairs (rows[pair_rows[q]], cols[pair_cols[q]])."""
    rows, cols = _check(rows), _check(cols)
    n_layers = max(depths) - 1
    record_at = np.full(n_layers, -1, dtype=np.int64)
    for k, depth in enumerate(depths):
        record_at[depth - 2] = k  # depth d reads the ReLU output of conv layer d − 1
    device = rows.device
    # .contiguous(): pair indices may be stride-0 views (meshgrid); a kernel reads raw memory.
    sums = _launch(rows, cols, row_maps, col_maps, pair_rows.to(device).contiguous(),
                   pair_cols.to(device).contiguous(),
                   torch.from_numpy(record_at).to(device), n_records=len(depths),
                   full_spatial=full_spatial, fix_first_layer=fix_first_layer,
                   with_ntk=with_ntk, record=False)
    return sums.cpu()
