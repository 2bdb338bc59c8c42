"""WRN-L-10 of seed 001 (§II, Table 3): Zagoruyko & Komodakis' wide residual network, and the
group freezing that Allen-Zhu & Li's "backward feature correction" experiment (arXiv 2001.04413)
compares against full training.

Architecture (pre-activation "basic" blocks, no dropout, convolutions without bias):

    stem:     Conv3×3(in_channels → 16)
    group 1:  N blocks, 16·K channels, stride 1
    group 2:  N blocks, 32·K channels, the first with stride 2
    group 3:  N blocks, 64·K channels, the first with stride 2
    head:     BN → ReLU → global average pool → Linear(64·K → num_classes)
    block:    BN → ReLU → Conv3×3(stride) → BN → ReLU → Conv3×3, plus the input
              (through a 1×1 stride-s convolution where the shape changes)

Names. Zagoruyko's "WRN-L-k" has depth L = 6N + 4 (two convolutions per block, the stem and
the 1×1 shortcut/head counted as in his paper) and widening factor k. Allen-Zhu & Li train
WRN-L-10, i.e. widening factor 10 at several depths L. Seed 001 keeps that name but varies a
"feature scaling factor" K ∈ {1, 2} and "number of blocks" N ∈ {1, 2, 3}; we read K as
Zagoruyko's widening factor and N as the blocks per group, so the seed's nets are WRN-10-K,
WRN-16-K and WRN-22-K (the "10" of its name is then not a width; the seed's own grid never
uses width 10). The base widths 16, 32, 64 are Zagoruyko's: neither the seed nor the
abstract of Allen-Zhu & Li states others.

Freezing. `freeze(groups=(1,))` keeps the stem and group 1 at their initial weights — the
seed's BFC-4 ("parameters of the first group fixed, only the latter two groups trained");
`freeze(groups=(1, 2, 3))` leaves only the head trainable. Frozen parameters get
`requires_grad_(False)` (so `train.fit` does not hand them to the optimizer), including their
BatchNorm affine weights. BatchNorm *statistics* of frozen groups, by default
(`batch_statistics=True`), behave as in the fully trained network: batch statistics in train
mode, running averages in eval mode — so a frozen group computes exactly the function the
Full network computes at initialisation. With `batch_statistics=False` frozen groups' BN
layers stay in eval mode with their running statistics at init (mean 0, variance 1: the
identity map), i.e. the group is frozen as a fixed random feature map.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BASE_WIDTHS = (16, 32, 64)  # channels of groups 1..3 at widening factor 1 (Zagoruyko)
STEM_WIDTH = 16
GROUPS = (1, 2, 3)


def wrn_depth(blocks_per_group: int) -> int:
    """Zagoruyko's L of WRN-L-k: 6N + 4."""
    return 6 * blocks_per_group + 4


class WideBasicBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-Conv3×3(stride)-BN-ReLU-Conv3×3 plus the shortcut."""

    def __init__(self, fan_in: int, channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(fan_in)
        self.conv1 = nn.Conv2d(fan_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(fan_in, channels, 1, stride=stride, bias=False)
                         if stride != 1 or fan_in != channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        # Zagoruyko: where the shape changes, the shortcut sees the pre-activated input too.
        skip = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-(6N+4)-K with `blocks_per_group` = N and `width_factor` = K (see the module docstring)."""

    def __init__(self, blocks_per_group: int = 1, width_factor: int = 1, *, in_channels: int = 3,
                 num_classes: int = 10):
        super().__init__()
        if blocks_per_group < 1 or width_factor < 1:
            raise ValueError(f"need N ≥ 1 and K ≥ 1, got N={blocks_per_group}, K={width_factor}")
        self.blocks_per_group = blocks_per_group
        self.width_factor = width_factor
        self.widths = tuple(w * width_factor for w in BASE_WIDTHS)
        self.stem = nn.Conv2d(in_channels, STEM_WIDTH, 3, padding=1, bias=False)
        groups, fan_in = [], STEM_WIDTH
        for index, channels in enumerate(self.widths):
            blocks = []
            for b in range(blocks_per_group):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(WideBasicBlock(fan_in, channels, stride))
                fan_in = channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        self.head = nn.Sequential(nn.BatchNorm2d(fan_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(fan_in, num_classes))
        self._frozen_statistics: tuple[nn.Module, ...] = ()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def depth(self) -> int:
        return wrn_depth(self.blocks_per_group)

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.width_factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for group in self.groups:
            x = group(x)
        return self.head(x)

    def group_modules(self, groups: Iterable[int]) -> list[nn.Module]:
        """Modules of groups (1-based); group 1 includes the stem convolution."""
        groups = sorted(set(groups))
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise ValueError(f"groups are numbered {GROUPS}, got {unknown}")
        return ([self.stem] if 1 in groups else []) + [self.groups[g - 1] for g in groups]

    def freeze(self, groups: Iterable[int] = (1,), *, batch_statistics: bool = True) -> WideResNet:
        """Keep `groups` at their current (initial) weights; every other part trainable.

        `batch_statistics=False` also holds their BatchNorm layers in eval mode (running
        statistics as they are now) whatever `train()` is called with.
        """
        frozen = self.group_modules(groups)
        for p in self.parameters():
            p.requires_grad_(True)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self._frozen_statistics = () if batch_statistics else tuple(
            m for module in frozen for m in module.modules() if isinstance(m, nn.BatchNorm2d))
        return self.train(self.training)

    def unfreeze(self) -> WideResNet:
        return self.freeze(groups=())

    def frozen_groups(self) -> tuple[int, ...]:
        return tuple(g for g in GROUPS
                     if not any(p.requires_grad for m in self.group_modules([g]) for p in m.parameters()))

    def train(self, mode: bool = True) -> WideResNet:
        super().train(mode)
        for bn in self._frozen_statistics:
            bn.eval()
        return self
