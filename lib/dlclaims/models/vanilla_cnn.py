"""The vanilla CNN whose infinite-width limit is `dlclaims.cntk.cntk` (Arora et al. 2019, CNN-V / CNN-GAP).

    [Conv 3×3 SAME, no bias → ReLU] × (depth − 1) → Flatten or global average pooling → Dense

`depth` counts layers as Arora et al. do (depth 21 = 20 convolutions + the readout).
Parameterisations (neural-tangents' names):

* ``"ntk"``: weights ~ N(0, 1) and each layer multiplies by ``W_std / √fan_in``
  (convolutions: W_std = √2, fan_in = 9·C_in; readout: W_std = 1). As the width grows, the
  empirical NTK of this network converges to the CNTK at initialisation and stays there
  during training.
* ``"standard"``: what a framework user gets — Keras' default Conv2D / Dense initialisation,
  Glorot-uniform ``U(±√(6 / (fan_in + fan_out)))`` (variance 1/fan_in for equal widths), and no
  multiplier. The seed's learning rates 0.1 / 1 / 10 are plain-SGD rates of such an ordinary
  CNN. Measured alternatives: He variances (W_std = √2) make lr 0.1 unstable on CIFAR-10;
  PyTorch's default (variance 1/(3·fan_in)) leaves depth 10 untrained and lr 1 stable on MNIST.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PARAMETERIZATIONS = ("ntk", "standard")
POOLINGS = ("flatten", "gap")
CONV_W_STD = math.sqrt(2.0)
READOUT_W_STD = 1.0


class _ScaledLayer(nn.Module):
    """A bias-free conv or dense layer with neural-tangents' two parameterisations."""

    def __init__(self, weight_shape: tuple[int, ...], fan_in: int, w_std: float, parameterization: str):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        ntk = parameterization == "ntk"
        self.weight = nn.Parameter(
            torch.randn(weight_shape) if ntk  # Keras' default (glorot_uniform) otherwise
            else nn.init.xavier_uniform_(torch.empty(weight_shape)))
        self.multiplier = w_std / math.sqrt(fan_in) if ntk else 1.0


class ScaledConv3x3(_ScaledLayer):
    def __init__(self, in_channels: int, out_channels: int, w_std: float, parameterization: str):
        super().__init__((out_channels, in_channels, 3, 3), 9 * in_channels, w_std, parameterization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1) * self.multiplier


class ScaledLinear(_ScaledLayer):
    def __init__(self, in_features: int, out_features: int, w_std: float, parameterization: str):
        super().__init__((out_features, in_features), in_features, w_std, parameterization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) * self.multiplier


class VanillaCNN(nn.Module):
    """CNN-V (``pooling="flatten"``) or CNN-GAP (``pooling="gap"``) of `depth` layers.

    `image_size` (H = W) is needed by the Flatten readout only. `width` is the number of
    channels of every convolution.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        depth: int,
        width: int,
        pooling: str = "flatten",
        image_size: int | None = None,
        num_classes: int = 10,
        parameterization: str = "ntk",
    ):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth counts the readout too, so it must be ≥ 2 (got {depth})")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "flatten" and image_size is None:
            raise ValueError("the Flatten readout needs image_size")
        self.depth, self.width, self.pooling, self.parameterization = depth, width, pooling, parameterization
        channels = [in_channels] + [width] * (depth - 1)
        self.convs = nn.ModuleList(
            ScaledConv3x3(c_in, c_out, CONV_W_STD, parameterization) for c_in, c_out in zip(channels, channels[1:])
        )
        readout_in = width * image_size * image_size if pooling == "flatten" else width
        self.readout = ScaledLinear(readout_in, num_classes, READOUT_W_STD, parameterization)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x.flatten(1) if self.pooling == "flatten" else x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))

    def trainable_parameters(self, *, fix_first_layer: bool = False, fix_readout: bool = False) -> list[nn.Parameter]:
        """The parameters that Arora et al.'s `fix` flags leave trained (their CNTK-GAP fixes both)."""
        params = []
        for i, conv in enumerate(self.convs):
            if not (fix_first_layer and i == 0):
                params.append(conv.weight)
        if not fix_readout:
            params.append(self.readout.weight)
        return params
