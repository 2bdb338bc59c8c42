"""The public `cntk` function: input checks, device placement, block loop, symmetry."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from . import _blocks
from ._recursion import LAYOUTS, block_kernels, self_variances

KINDS = ("ntk", "nngp")


def cntk(x1, x2=None, *, depth: int | Sequence[int], pooling: str = "flatten",
         fix_first_layer: bool = False, fix_readout: bool = False, kind: str = "ntk",
         device: str | torch.device | None = None, dtype: torch.dtype = torch.float64,
         block_size: int | None = None,
         progress: bool | _blocks.ProgressCallback = False,
         memory_budget: int | None = None) -> torch.Tensor | dict[int, torch.Tensor]:
    """Exact Convolutional NTK (or NNGP) between two sets of images.

    The network, in neural-tangents' NTK parameterisation::

        stax.serial(*[stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]
                    * (depth - 1),
                    stax.Flatten() if pooling == "flatten" else stax.GlobalAvgPool(),
                    stax.Dense(1, W_std=1.0))

    (no biases) and the result equals that network's ``kernel_fn(x1, x2, kind)`` to
    float64 rounding, for NCHW inputs here and NHWC there. ``depth`` counts layers as
    Arora et al. (2019) do: depth 21 is 20 convolutions plus the readout.

    Per layer (Σ: NNGP map over position pairs p, p'; Θ: NTK map; box: zero-padded 3×3
    sum over the same shift of p and p'; θ = arccos(Σ(x,z) / √(Σ(x,x) Σ(z,z)))):

    * conv 1:   Σ₁ = 2/(9C) · box(Σ_c x_c[p] z_c[p']),  Θ₁ = Σ₁;
    * ReLU:     Σ̂ = (√(Σ(x,x)Σ(z,z)) sin θ + (π − θ) Σ) / 2π,  Θ̂ = Θ (π − θ) / 2π;
    * conv l+1: Σ = 2/9 · box(Σ̂),  Θ = Σ + 2/9 · box(Θ̂);
    * readout:  NNGP = pool(Σ̂),  NTK = pool(Θ̂) + pool(Σ̂),

    with pool the mean of the diagonal p = p' ("flatten", CNTK-V) or of all (H·W)²
    position pairs ("gap", CNTK-GAP). ``fix_first_layer`` starts from Θ₁ = 0 (the
    first convolution is not trained); ``fix_readout`` drops the readout's own term
    pool(Σ̂), so it returns NTK − NNGP. Both together are the reference code's
    ``--fix yes`` (Arora et al., §4.2).

    Relation to Arora et al.'s code (github.com/ruosongwang/CNTK, ``CNTK.py``): it
    skips the first layer's 2/(9C) — ``S = conv3(xᵀz)`` is a bare window sum — and
    folds each ReLU's 2/9 into its ``trans`` kernel (the ``/28.27 = /9π``); since
    every layer is positively homogeneous in the input covariance, its values are
    this kernel times 9C/2 · 2/9 = C for GAP (``mean``) and times C·H·W for
    CNTK-V (``trace`` instead of the mean), e.g. 3 and 3072 on CIFAR-10. It also
    normalises by 1/√diag in float32; this engine works in ``dtype`` (float64 by
    default) throughout.

    Args:
        x1, x2: float arrays or tensors (N, C, H, W), already preprocessed; ``x2=None``
            computes the symmetric Gram matrix of ``x1`` (one block triangle, mirrored).
        depth: an int ≥ 2, or a sequence of them: all depths come out of one pass
            (they are prefixes of one recursion) as ``{depth: tensor}``.
        pooling: "flatten" (CNTK-V: only the zero-offset slice, H·W entries per pair,
            is ever formed) or "gap" (CNTK-GAP: all (H·W)² entries per pair, one
            row-offset band of H·W·W entries at a time).
        fix_first_layer, fix_readout: drop those layers' terms (NTK only).
        kind: "ntk" or "nngp".
        device: where to compute ("cpu", "cuda", ...); default CUDA when available.
        dtype: recursion dtype; float32 is faster on GPUs (pooled sums still accumulate
            in float64; results agree with float64 to ~1e-6 relative). No matmuls run,
            so TF32 never applies.
        block_size: images per block edge; default: the largest that fits in half the
            free memory (capped on CPU for cache efficiency). On out-of-memory a block
            is split in four and retried, so a result is never partial.
        progress: True logs pairs done and the ETA to the "dlclaims.cntk" logger; a
            callable receives a `Progress` after each block.
        memory_budget: bytes the block sizing may plan for, instead of the default.

    Returns:
        float64 CPU tensor (len(x1), len(x2 or x1)), or a dict depth → tensor when
        ``depth`` is a sequence.
    """
    depths = _depths(depth)
    if pooling not in LAYOUTS:
        raise ValueError(f"pooling must be one of {sorted(LAYOUTS)}, got {pooling!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "nngp" and (fix_first_layer or fix_readout):
        raise ValueError("fix_first_layer / fix_readout select NTK terms; the NNGP has none")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    layout = LAYOUTS[pooling]
    device = _device(device)
    symmetric = x2 is None
    rows = _images(x1, "x1", dtype, device)
    cols = rows if symmetric else _images(x2, "x2", dtype, device)
    if rows.shape[1:] != cols.shape[1:]:
        raise ValueError(f"x1 and x2 images differ in shape: {tuple(rows.shape[1:])} "
                         f"vs {tuple(cols.shape[1:])}")
    n_rows, n_cols = len(rows), len(cols)
    channels, height, width = rows.shape[1:]
    n_layers = max(depths) - 1

    if block_size is None:
        plan = _blocks.memory_plan(n_rows, n_cols, channels=channels, height=height, width=width,
                                   pooling=pooling, n_layers=n_layers, n_depths=len(depths),
                                   dtype=dtype, device=device)
        block_size = _blocks.choose_block_size(plan, max_size=max(n_rows, n_cols, 1),
                                               device=device, memory_budget=memory_budget)
    elif block_size < 1:
        raise ValueError(f"block_size must be ≥ 1, got {block_size}")

    results = {d: torch.zeros((n_rows, n_cols), dtype=torch.float64) for d in depths}

    # Variance maps of the current row strip are reused across its column blocks.
    @functools.lru_cache(maxsize=2)
    def variances(which: str, start: int, stop: int) -> torch.Tensor:
        images = rows if which == "rows" else cols
        return self_variances(images[start:stop], n_layers)

    def compute(block: _blocks.Block) -> None:
        col_side = "rows" if symmetric else "cols"
        kernels = block_kernels(
            rows[block.row_start:block.row_stop], cols[block.col_start:block.col_stop],
            variances("rows", block.row_start, block.row_stop),
            variances(col_side, block.col_start, block.col_stop),
            layout=layout, depths=depths, kind=kind,
            fix_first_layer=fix_first_layer, fix_readout=fix_readout)
        for d, values in kernels.items():
            results[d][block.row_start:block.row_stop,
                       block.col_start:block.col_stop] = values.cpu()

    on_progress = _blocks.log_progress() if progress is True else (progress or None)
    _blocks.run_blocks(_blocks.tile(n_rows, n_cols, block_size, symmetric), compute,
                       symmetric=symmetric, on_progress=on_progress,
                       empty_cache=_empty_cache_fn(device))
    variances.cache_clear()

    if symmetric:  # blocks on the diagonal computed both triangles: keep the upper one
        for d, k in results.items():
            results[d] = torch.triu(k) + torch.triu(k, diagonal=1).T
    return results[depths[0]] if isinstance(depth, (int, np.integer)) else results


def _depths(depth) -> tuple[int, ...]:
    values = [depth] if isinstance(depth, (int, np.integer)) else list(depth)
    if not values or any(not isinstance(d, (int, np.integer)) or d < 2 for d in values):
        raise ValueError(f"depth must be an int ≥ 2 or a non-empty sequence of them, got {depth!r}")
    return tuple(sorted({int(d) for d in values}))


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _images(x, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 4 or min(t.shape[1:]) < 1:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got {t.dtype}")
    return t.to(device=device, dtype=dtype).contiguous()


def _empty_cache_fn(device: torch.device):
    return torch.cuda.empty_cache if device.type == "cuda" else (lambda: None)
