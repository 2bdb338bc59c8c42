import pytest
import torch
from torch import nn

from dlclaims.models.conv4 import Conv4
from dlclaims.models.mlp import count_parameters


@pytest.mark.parametrize("width, seed_count", [(4, 6666), (64, 1558026)])
def test_parameter_counts_match_the_seed(width, seed_count):
    # Seed 003 §3.2-3.3: "CNN with width c = 4 ... p = 6666", "c = 64 ... p = 1558026".
    assert count_parameters(Conv4(width)) == seed_count


def test_four_conv_bn_pool_blocks_doubling_width():
    model = Conv4(8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4


def test_logits_for_cifar_and_mnist_shapes():
    assert Conv4(4)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert Conv4(4, in_channels=1, num_classes=7, kernel_size=5)(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
