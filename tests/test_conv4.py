import pytest
import torch
from torch import nn

from dlclaims.models.cnn import GLOBAL_POOLS, ConvStack, WidthCNN
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


def test_conv4_is_the_width_cnn_stack_with_other_pools():
    # One conv stack (dlclaims.models.cnn.ConvStack): Conv-4 pools after every layer and averages, WidthCNN
    # pools after layers 1-3 and takes the max; the parameters are created in the same order, so one seed
    # initialises both identically.
    torch.manual_seed(0)
    conv4 = Conv4(4)
    torch.manual_seed(0)
    width_cnn = WidthCNN(4)
    assert isinstance(conv4, ConvStack) and isinstance(width_cnn, ConvStack)
    assert [p.shape for p in conv4.parameters()] == [p.shape for p in width_cnn.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(conv4.parameters(), width_cnn.parameters()))
    features = torch.randn(2, 32, 3, 3)
    assert torch.equal(conv4.classifier(features.mean(dim=(2, 3))),
                       conv4.classifier(GLOBAL_POOLS[conv4.global_pool](features)))
    assert width_cnn.global_pool == "max" and conv4.global_pool == "mean"


def test_unknown_global_pool_is_refused():
    with pytest.raises(ValueError, match="global_pool"):
        ConvStack(4, pooled_layers=(), global_pool="sum")
