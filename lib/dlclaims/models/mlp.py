"""Multi-layer perceptrons (Zhang et al.'s 1×512 and 3×512) and the linear control."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class MLP(nn.Module):
    """Flatten → [Linear(width) → activation (→ dropout)] × depth → Linear(num_classes).

    `depth` counts hidden layers, so MLP(784, depth=1, width=512) is Zhang et al.'s "MLP 1×512".
    """

    def __init__(
        self,
        in_features: int,
        *,
        depth: int,
        width: int,
        num_classes: int = 10,
        activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def linear_classifier(in_features: int, num_classes: int = 10) -> nn.Module:
    """Multinomial logistic regression on raw pixels: the 'no hidden layer' control."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
