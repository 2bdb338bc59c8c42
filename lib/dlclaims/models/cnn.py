"""The "standard CNN of width c" of seed 003 §3 (under- vs over-parameterised: c = 4 vs c = 64).

The seed gives no layer table, only two trainable-parameter counts on CIFAR-10 (32×32×3,
10 classes): 6,666 at c = 4 and 1,558,026 at c = 64. Its wording ("CNN with width c",
p ≪ n at c = 4, p ≫ n at c = 64) is that of the deep double descent literature, whose
5-layer CNN (Nakkiran et al. 2019, after Page's Myrtle5; the `make_cnn(c)` of the Harvard
double-descent code) reproduces both counts exactly:

    layer 0   Conv2d(3 → c,   3×3, pad 1, bias) → BatchNorm2d → ReLU
    layer 1   Conv2d(c → 2c,  3×3, pad 1, bias) → BatchNorm2d → ReLU → MaxPool2d(2)
    layer 2   Conv2d(2c → 4c, 3×3, pad 1, bias) → BatchNorm2d → ReLU → MaxPool2d(2)
    layer 3   Conv2d(4c → 8c, 3×3, pad 1, bias) → BatchNorm2d → ReLU → MaxPool2d(2)
    layer 4   max over the remaining 4×4 map → Linear(8c → 10, bias)

Trainable parameters (conv weights + conv biases + BN γ, β + linear), with 3×3 kernels:

    9·(3c + 2c² + 8c² + 32c²) + 15c (conv biases) + 30c (BN) + 80c + 10 (linear)
      = 378c² + 152c + 10            (c = 4: 6,666;  c = 64: 1,558,026)

The count does not depend on where the pools sit or on the input size, so `conv4.Conv4`
(one pool per conv layer, global average) has the same count: both are configurations of
`ConvStack` (pool placement, global pooling); `WidthCNN` is the double-descent placement with
its global max. BN running statistics are buffers, not
trainable parameters. The global max is adaptive, so smaller (downsampled) inputs work too.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_SIZE = 3
NUM_CONV_LAYERS = 4
# The parameter-free reduction of the last feature map to the 8c features the linear layer takes.
GLOBAL_POOLS = {"max": lambda h: torch.amax(h, dim=(2, 3)), "mean": lambda h: h.mean(dim=(2, 3))}


def width_cnn_parameter_count(width: int, in_channels: int = 3, num_classes: int = 10) -> int:
    """Trainable parameters of `WidthCNN(width)` in closed form (the derivation in the module docstring)."""
    channels = [in_channels] + [width * 2**k for k in range(NUM_CONV_LAYERS)]
    conv = sum(KERNEL_SIZE**2 * c_in * c_out + c_out for c_in, c_out in zip(channels, channels[1:]))
    batch_norm = sum(2 * c for c in channels[1:])
    return conv + batch_norm + channels[-1] * num_classes + num_classes


class ConvStack(nn.Module):
    """Four 3×3 conv layers of widths c, 2c, 4c, 8c (each Conv2d with bias → BatchNorm2d → ReLU, then a
    MaxPool2d(2) after the layers in `pooled_layers`), a global pool over the remaining map ("max" or
    "mean") and a Linear(8c → classes). `WidthCNN` and `conv4.Conv4` are its two named configurations;
    the parameters are created in the same order for every configuration (conv, BN per layer, then
    the linear layer), so a seed initialises all of them identically."""

    def __init__(self, width: int, *, pooled_layers: tuple[int, ...], global_pool: str, in_channels: int = 3,
                 num_classes: int = 10, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {sorted(GLOBAL_POOLS)}, not {global_pool!r}")
        self.global_pool = global_pool
        layers: list[nn.Module] = []
        fan_in = in_channels
        for k in range(NUM_CONV_LAYERS):
            channels = width * 2**k
            layers += [
                nn.Conv2d(fan_in, channels, kernel_size, padding=kernel_size // 2, bias=True),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            if k in pooled_layers:
                layers.append(nn.MaxPool2d(2))
            fan_in = channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(fan_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(GLOBAL_POOLS[self.global_pool](self.features(x)))


class WidthCNN(ConvStack):
    """Nakkiran et al.'s 5-layer CNN of width `width`: no pool after layer 0 (layers 0 and 1 both see
    the full resolution), max pools after layers 1–3, global max."""

    def __init__(self, width: int, *, in_channels: int = 3, num_classes: int = 10):
        super().__init__(width, pooled_layers=(1, 2, 3), global_pool="max", in_channels=in_channels,
                         num_classes=num_classes)
