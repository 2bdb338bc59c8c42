"""The CNTK layer recursion for a block of image pairs, batched over the block.

Every quantity is a position-pair map of one image pair. A 3×3 SAME convolution
sums the previous layer's map over the 9 *same* shifts,
``Σ'[p, p'] ∝ Σ_δ Σ[p + δ, p' + δ]``, so each spatial offset ``p − p'`` is a closed
sub-problem. Two layouts follow:

* ``ZERO_OFFSET`` keeps only ``p == p'`` (``H·W`` entries per pair): all that the
  Flatten readout (CNTK-V) and the per-image variances ever read.
* ``ALL_OFFSETS`` keeps every ``(p, p')`` (``(H·W)²`` entries per pair), which
  global average pooling (CNTK-GAP) reads.

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
from dataclasses import dataclass

import torch

CONV_WEIGHT_VARIANCE = 2.0  # W_std² of each 3×3 convolution
READOUT_WEIGHT_VARIANCE = 1.0  # W_std² of the dense readout
FILTER_SIZE = 9  # 3×3 window; zero padding (SAME) still divides by 9

# Σ_{l+1} = W_std²/9 · box(Σ̂_l) and Σ̂_l = J_l / 2π.
_NEXT_LAYER_SCALE = CONV_WEIGHT_VARIANCE / (FILTER_SIZE * 2.0 * math.pi)
_READOUT_SCALE = READOUT_WEIGHT_VARIANCE / (2.0 * math.pi)


@dataclass(frozen=True)
class Layout:
    """Where the position axes of a block tensor ``(rows, cols, *positions)`` lie."""

    name: str
    # Axes that one window step moves together: (i,) or (i, i') for rows, same for columns.
    row_axes: tuple[int, ...]
    col_axes: tuple[int, ...]
    # How a per-image map (n, H, W) broadcasts against the block, as the row / column image.
    row_index: tuple
    col_index: tuple

    def positions_per_pair(self, height: int, width: int) -> int:
        return (height * width) ** len(self.row_axes)

    @property
    def position_dims(self) -> tuple[int, ...]:
        return tuple(range(-2 * len(self.row_axes), 0))


_ALL = slice(None)
ZERO_OFFSET = Layout("flatten", row_axes=(-2,), col_axes=(-1,),
                     row_index=(_ALL, None, _ALL, _ALL), col_index=(None, _ALL, _ALL, _ALL))
ALL_OFFSETS = Layout("gap", row_axes=(-4, -2), col_axes=(-3, -1),
                     row_index=(_ALL, None, _ALL, _ALL, None, None),
                     col_index=(None, _ALL, None, None, _ALL, _ALL))
LAYOUTS = {layout.name: layout for layout in (ZERO_OFFSET, ALL_OFFSETS)}
# One image's own maps (n, H, W): the zero-offset layout without the pair axes.
_PER_IMAGE = Layout("self", row_axes=(-2,), col_axes=(-1,), row_index=(), col_index=())


def _three_tap_sum(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``out[k] = t[k] + t[k−1] + t[k+1]``, shifting all ``axes`` together; zero outside."""
    out = t.clone()
    lower = [_ALL] * t.ndim
    upper = [_ALL] * t.ndim
    for axis in axes:
        lower[axis] = slice(1, None)
        upper[axis] = slice(None, -1)
    out[tuple(lower)] += t[tuple(upper)]
    out[tuple(upper)] += t[tuple(lower)]
    return out


def box_sum(t: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Zero-padded 3×3 same-shift window sum (separable: rows, then columns)."""
    return _three_tap_sum(_three_tap_sum(t, layout.row_axes), layout.col_axes)


def _first_layer(rows: torch.Tensor, cols: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Σ₁ for every pair: channel sums of products, window-summed, times W_std²/(9C).

    Channels are accumulated one by one (not with a matmul) so that an image paired
    with itself gives bit for bit the variance map `self_variances` gives it.
    """
    n_channels = rows.shape[1]
    products = None
    for c in range(n_channels):
        term = rows[:, c][layout.row_index] * cols[:, c][layout.col_index]
        products = term if products is None else products.add_(term)
    return box_sum(products, layout).mul_(CONV_WEIGHT_VARIANCE / (FILTER_SIZE * n_channels))


def _relu(sigma: torch.Tensor, variance_product: torch.Tensor,
          ntk: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ReLU arc-cosine step; returns ``(J, D) = (2π·Σ̂, 2π·Θ̂)``.

    Consumes ``variance_product`` and ``ntk`` (overwritten in place). The angle comes
    from ``atan2(√max(P − Σ², 0), Σ)``, which is ``arccos(clamp(Σ/√P, −1, 1))`` without
    the division: better conditioned near ``|cos θ| = 1`` and 0 rather than NaN for a
    zero-variance position (whose Θ is 0 anyway).
    """
    scaled_sine = variance_product.sub_(sigma * sigma).clamp_min_(0.0).sqrt_()  # √P·sin θ
    complement = torch.atan2(scaled_sine, sigma).neg_().add_(math.pi)  # π − θ
    d = ntk.mul_(complement) if ntk is not None else None
    j = complement.mul_(sigma).add_(scaled_sine)
    return j, d


def self_variances(images: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Pre-activation variance maps ``Σ_l(x, x)[p, p]`` for layers 1..n_layers: (n, L, H, W)."""
    variance = _first_layer(images, images, _PER_IMAGE)
    maps = [variance]
    for _ in range(n_layers - 1):
        j, _ = _relu(variance, variance * variance, None)
        variance = box_sum(j, _PER_IMAGE).mul_(_NEXT_LAYER_SCALE)
        maps.append(variance)
    return torch.stack(maps, dim=1)


def _pooled(t: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Mean over the position axes, accumulated in float64."""
    dims = layout.position_dims
    count = math.prod(t.shape[d] for d in dims)
    return t.sum(dim=dims, dtype=torch.float64) / count


def block_kernels(rows: torch.Tensor, cols: torch.Tensor,
                  row_variances: torch.Tensor, col_variances: torch.Tensor, *,
                  layout: Layout, depths: tuple[int, ...], kind: str,
                  fix_first_layer: bool, fix_readout: bool) -> dict[int, torch.Tensor]:
    """Kernel values of every (row, col) image pair at each depth: {depth: (n_rows, n_cols) float64}.

    ``*_variances`` are `self_variances` of ``rows`` / ``cols`` with at least
    ``max(depths) − 1`` layers. One pass serves all depths (they are prefixes).
    """
    n_layers = max(depths) - 1
    with_ntk = kind == "ntk"
    sigma = _first_layer(rows, cols, layout)
    ntk = None
    if with_ntk:
        ntk = torch.zeros_like(sigma) if fix_first_layer else sigma.clone()
    kernels = {}
    for layer in range(1, n_layers + 1):
        variance_product = (row_variances[:, layer - 1][layout.row_index]
                            * col_variances[:, layer - 1][layout.col_index])
        j, d = _relu(sigma, variance_product, ntk)
        del sigma, variance_product, ntk
        if layer + 1 in depths:
            readout = _pooled(j, layout) if kind == "nngp" or not fix_readout else 0.0
            if with_ntk:
                readout = readout + _pooled(d, layout)
            kernels[layer + 1] = readout * _READOUT_SCALE
        if layer == n_layers:
            break
        sigma = box_sum(j, layout).mul_(_NEXT_LAYER_SCALE)
        del j
        ntk = box_sum(d, layout).mul_(_NEXT_LAYER_SCALE).add_(sigma) if with_ntk else None
    return kernels
