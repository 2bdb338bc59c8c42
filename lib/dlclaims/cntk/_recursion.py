"""The CNTK layer recursion for a block of image pairs, batched over the block.

Every quantity is a position-pair map of one image pair, entries ``[p, p']`` with
``p = (i, j)`` in x and ``p' = (i', j')`` in z. A 3×3 SAME convolution sums the previous
layer's map over the 9 *same* shifts, ``Σ'[p, p'] ∝ Σ_δ Σ[p + δ, p' + δ]``, so entries
with different offsets ``p − p'`` never mix: every offset class is a closed sub-problem
that runs through all layers on its own. Two layouts follow:

* ``ZERO_OFFSET`` ("flatten") keeps only ``p = p'`` — ``H·W`` entries per pair, axes
  ``(i, j)`` — all that the Flatten readout (CNTK-V) and the per-image variances read.
* ``ROW_OFFSET_BANDS`` ("gap") keeps every ``(p, p')``, one row offset ``d = i − i'`` at a
  time: band ``d`` has axes ``(i, j, j')`` over the ``H − |d|`` rows where both i and
  i − d lie in the image. Global average pooling (CNTK-GAP) sums all bands, ``(H·W)²``
  entries per pair in total; a band is ~1/H of that, small enough to stay in cache.

Scale (neural-tangents' NTK parameterisation, W_std² = 2 for the convolutions):

* layer 1:   ``Σ₁ = 2/(9C) · box(Σ_c x_c ⊗ z_c)``,  ``Θ₁ = Σ₁`` (0 with the first layer fixed);
* ReLU:      ``θ = arccos(Σ/√(Σ_xx Σ_zz))``,
  ``Σ̂ = (√(Σ_xx Σ_zz − Σ²) + (π − θ) Σ) / 2π``,  ``Θ̂ = Θ (π − θ) / 2π``;
* layer l+1: ``Σ = 2/9 · box(Σ̂)``,  ``Θ = Σ + 2/9 · box(Θ̂)``;
* readout:   ``nngp = pool(Σ̂)``,  ``ntk = pool(Θ̂) + pool(Σ̂)`` (no ``pool(Σ̂)`` with the
  readout fixed), pool = mean over positions (Flatten) or over position pairs (GAP);

where ``box`` is the zero-padded 3×3 same-shift sum. The code carries ``J = 2π·Σ̂``
and ``D = 2π·Θ̂`` and folds the constants into one multiplication per layer.

Variances of one image with itself run through the very same operations as the
cross terms, so for an image paired with itself ``Σ_xx Σ_zz − Σ²`` is exactly 0 and
``θ`` exactly 0: the arc-cosine derivative, singular at ``θ = 0``, then adds no
``√ε`` rounding noise to the diagonal of a Gram matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

CONV_WEIGHT_VARIANCE = 2.0  # W_std² of each 3×3 convolution
READOUT_WEIGHT_VARIANCE = 1.0  # W_std² of the dense readout
FILTER_SIZE = 9  # 3×3 window; zero padding (SAME) still divides by 9

# Σ_{l+1} = W_std²/9 · box(Σ̂_l) and Σ̂_l = J_l / 2π.
NEXT_LAYER_SCALE = CONV_WEIGHT_VARIANCE / (FILTER_SIZE * 2.0 * math.pi)
_READOUT_SCALE = READOUT_WEIGHT_VARIANCE / (2.0 * math.pi)
_ALL = slice(None)


@dataclass(frozen=True)
class Layout:
    """How one offset class of a block is stored: tensors ``(rows, cols, *positions)``."""

    name: str
    # Axes that one window step moves together, for rows and for columns.
    row_axes: tuple[int, ...]
    col_axes: tuple[int, ...]
    # How a per-image map (n, H', W) broadcasts against the block, as the row / column image.
    row_index: tuple
    col_index: tuple
    full_spatial: bool  # all (p, p') by row-offset bands, or only p = p'

    def bands(self, height: int) -> Iterator[tuple[slice, slice]]:
        """Image rows (i for x, i' = i − d for z) of each offset class."""
        if not self.full_spatial:
            yield slice(0, height), slice(0, height)
            return
        for d in range(-(height - 1), height):
            yield slice(max(d, 0), height + min(d, 0)), slice(max(-d, 0), height - max(d, 0))

    def band_positions(self, height: int, width: int) -> int:
        """Entries per pair of the largest offset class (the workspace per pair)."""
        return height * width * (width if self.full_spatial else 1)

    def pooled_positions(self, height: int, width: int) -> int:
        """Entries per pair the readout averages over."""
        return (height * width) ** (2 if self.full_spatial else 1)

    def band_shape(self, n_rows: int, n_cols: int, rows: int, width: int) -> tuple[int, ...]:
        return (n_rows, n_cols, rows, width) + ((width,) if self.full_spatial else ())


ZERO_OFFSET = Layout("flatten", row_axes=(-2,), col_axes=(-1,),
                     row_index=(_ALL, None, _ALL, _ALL), col_index=(None, _ALL, _ALL, _ALL),
                     full_spatial=False)
ROW_OFFSET_BANDS = Layout("gap", row_axes=(-3,), col_axes=(-2, -1),
                          row_index=(_ALL, None, _ALL, _ALL, None),
                          col_index=(None, _ALL, _ALL, None, _ALL), full_spatial=True)
LAYOUTS = {layout.name: layout for layout in (ZERO_OFFSET, ROW_OFFSET_BANDS)}
# One image's own maps (n, H, W): the zero-offset layout without the pair axes.
_PER_IMAGE = Layout("self", row_axes=(-2,), col_axes=(-1,), row_index=(), col_index=(),
                    full_spatial=False)


def _three_tap_sum(src: torch.Tensor, axes: tuple[int, ...], out: torch.Tensor) -> torch.Tensor:
    """``out[k] = src[k] + src[k−1] + src[k+1]``, shifting all ``axes`` together; zero outside."""
    lower = [_ALL] * src.ndim  # k ≥ 1 along every axis: a k − 1 neighbour exists
    upper = [_ALL] * src.ndim
    for axis in axes:
        lower[axis] = slice(1, None)
        upper[axis] = slice(None, -1)
    torch.add(src[tuple(lower)], src[tuple(upper)], out=out[tuple(lower)])
    for axis in axes:  # k = 0 along some axis: no k − 1 neighbour
        edge = [_ALL] * src.ndim
        edge[axis] = slice(0, 1)
        out[tuple(edge)] = src[tuple(edge)]
    out[tuple(upper)] += src[tuple(lower)]
    return out


def box_sum(src: torch.Tensor, layout: Layout, *, scratch: torch.Tensor,
            out: torch.Tensor) -> torch.Tensor:
    """Zero-padded 3×3 same-shift window sum of ``src`` into ``out`` (rows, then columns).

    Rows before columns in every layout, so a zero-offset entry sums in the same order
    as the per-image variance maps do.
    """
    return _three_tap_sum(_three_tap_sum(src, layout.row_axes, scratch), layout.col_axes, out)


# The recursion runs in preallocated buffers: fresh multi-megabyte tensors would cost a
# page fault per 4 KiB on every allocation, which measured as much as the arithmetic.


def _first_layer(rows: torch.Tensor, cols: torch.Tensor, layout: Layout, *,
                 out: torch.Tensor, scratch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Σ₁ for every pair into ``out``: channel sums of products, window-summed, × W_std²/(9C).

    Channels are accumulated one by one (not with a matmul) so that an image paired
    with itself gives bit for bit the variance map `self_variances` gives it.
    """
    products, term = scratch
    n_channels = rows.shape[1]
    torch.mul(rows[:, 0][layout.row_index], cols[:, 0][layout.col_index], out=products)
    for c in range(1, n_channels):
        products.add_(torch.mul(rows[:, c][layout.row_index], cols[:, c][layout.col_index],
                                out=term))
    box_sum(products, layout, scratch=term, out=out)
    out.mul_(CONV_WEIGHT_VARIANCE / (FILTER_SIZE * n_channels))


def _relu(sigma: torch.Tensor, ntk: torch.Tensor | None, variance_rows: torch.Tensor,
          variance_cols: torch.Tensor, *, scratch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """ReLU arc-cosine step: returns ``J = 2π·Σ̂`` (in ``scratch[1]``); ``ntk`` becomes ``2π·Θ̂``.

    ``variance_*`` broadcast to Σ(x, x)[p, p] and Σ(z, z)[p', p']. The angle comes from
    ``atan2(√max(P − Σ², 0), Σ)``, P = Σ(x,x)Σ(z,z): that is ``arccos(clamp(Σ/√P, −1, 1))``
    without the division, better conditioned near ``|cos θ| = 1`` and 0 rather than NaN
    for a zero-variance position (whose Θ is 0 anyway).
    """
    scaled_sine, complement = scratch
    torch.mul(variance_rows, variance_cols, out=scaled_sine)
    scaled_sine.sub_(torch.mul(sigma, sigma, out=complement)).clamp_min_(0.0).sqrt_()  # √P·sin θ
    # π − θ = atan2(y, −Σ) for y ≥ 0 (also at y = 0: atan2(0, −Σ) is π for Σ ≥ 0, 0 for Σ < 0).
    torch.atan2(scaled_sine, torch.neg(sigma, out=complement), out=complement)
    if ntk is not None:
        ntk.mul_(complement)
    return torch.addcmul(scaled_sine, complement, sigma, out=complement)


def self_variances(images: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Pre-activation variance maps ``Σ_l(x, x)[p, p]`` for layers 1..n_layers: (n, L, H, W)."""
    n, _, height, width = images.shape
    maps = images.new_empty((n, n_layers, height, width))
    variance, a, b = (images.new_empty((n, height, width)) for _ in range(3))
    _first_layer(images, images, _PER_IMAGE, out=variance, scratch=(a, b))
    maps[:, 0] = variance
    for layer in range(1, n_layers):
        j = _relu(variance, None, variance, variance, scratch=(a, b))
        box_sum(j, _PER_IMAGE, scratch=a, out=variance).mul_(NEXT_LAYER_SCALE)
        maps[:, layer] = variance
    return maps


def _band_sums(rows: torch.Tensor, cols: torch.Tensor, row_variances: torch.Tensor,
               col_variances: torch.Tensor, buffers: list[torch.Tensor], *, layout: Layout,
               depths: tuple[int, ...], fix_first_layer: bool,
               ) -> dict[int, tuple[torch.Tensor, torch.Tensor | float]]:
    """Run one offset class through all layers: {depth: (Σ J, Σ D) over its entries}, float64
    (Σ D is 0 for the NNGP).

    ``buffers``: Σ, two scratch, and Θ unless only the NNGP is wanted.
    """
    n_layers = max(depths) - 1
    sigma, a, b, *rest = buffers
    ntk = rest[0] if rest else None
    with_ntk = ntk is not None
    _first_layer(rows, cols, layout, out=sigma, scratch=(a, b))
    if with_ntk:
        ntk.zero_() if fix_first_layer else ntk.copy_(sigma)
    dims = tuple(range(2, sigma.ndim))
    sums = {}
    for layer in range(1, n_layers + 1):
        j = _relu(sigma, ntk, row_variances[:, layer - 1][layout.row_index],
                  col_variances[:, layer - 1][layout.col_index], scratch=(a, b))
        if layer + 1 in depths:
            sums[layer + 1] = (j.sum(dim=dims, dtype=torch.float64),
                               ntk.sum(dim=dims, dtype=torch.float64) if with_ntk else 0.0)
        if layer == n_layers:
            break
        # j lives in b, so a is the free scratch buffer.
        box_sum(j, layout, scratch=a, out=sigma).mul_(NEXT_LAYER_SCALE)
        if with_ntk:
            box_of_ntk = box_sum(ntk, layout, scratch=a, out=j)
            torch.add(sigma, box_of_ntk, alpha=NEXT_LAYER_SCALE, out=ntk)
    return sums


def block_kernels(rows: torch.Tensor, cols: torch.Tensor,
                  row_variances: torch.Tensor, col_variances: torch.Tensor, *,
                  layout: Layout, depths: tuple[int, ...], kind: str,
                  fix_first_layer: bool, fix_readout: bool) -> dict[int, torch.Tensor]:
    """Kernel values of every (row, col) image pair at each depth: {depth: (n_rows, n_cols) float64}.

    ``*_variances`` are `self_variances` of ``rows`` / ``cols`` with at least
    ``max(depths) − 1`` layers. One pass serves all depths (they are prefixes).
    Workspace: 4 buffers of the largest offset class (3 for the NNGP).
    """
    _, _, height, width = rows.shape
    with_ntk = kind == "ntk"
    capacity = math.prod(layout.band_shape(len(rows), len(cols), height, width))
    storage = [rows.new_empty(capacity) for _ in range(4 if with_ntk else 3)]
    totals = {d: [0.0, 0.0] for d in depths}
    for x_rows, z_rows in layout.bands(height):
        shape = layout.band_shape(len(rows), len(cols), x_rows.stop - x_rows.start, width)
        buffers = [s[:math.prod(shape)].view(shape) for s in storage]
        sums = _band_sums(rows[:, :, x_rows], cols[:, :, z_rows],
                          row_variances[:, :, x_rows], col_variances[:, :, z_rows], buffers,
                          layout=layout, depths=depths, fix_first_layer=fix_first_layer)
        for d, (j_sum, d_sum) in sums.items():
            totals[d][0] = totals[d][0] + j_sum
            totals[d][1] = totals[d][1] + d_sum
    scale = _READOUT_SCALE / layout.pooled_positions(height, width)
    # NNGP = pool(Σ̂); NTK = pool(Θ̂) + pool(Σ̂), without pool(Σ̂) when the readout is fixed.
    readout_term = not (with_ntk and fix_readout)
    return {d: ((j_total if readout_term else 0.0) + d_total) * scale
            for d, (j_total, d_total) in totals.items()}
