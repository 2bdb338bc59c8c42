"""The width-c CNN of seed 003: its parameter counts (6,666 and 1,558,026) and its shapes."""

import pytest
import torch

from dlclaims.models import count_parameters
from dlclaims.models.cnn import WidthCNN, width_cnn_parameter_count


@pytest.mark.parametrize("width, seed_count", [(4, 6666), (64, 1558026)])
def test_parameter_counts_match_seed_003(width, seed_count):
    assert count_parameters(WidthCNN(width)) == seed_count
    assert width_cnn_parameter_count(width) == seed_count


@pytest.mark.parametrize("width", [1, 2, 3, 8, 16])
def test_closed_form_count_matches_the_module(width):
    assert count_parameters(WidthCNN(width)) == width_cnn_parameter_count(width) == 378 * width**2 + 152 * width + 10


def test_batch_norm_statistics_are_not_counted():
    model = WidthCNN(4)
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    assert buffers == 2 * (4 + 8 + 16 + 32)  # running mean and variance: state, not trainable parameters
    assert count_parameters(model, trainable_only=False) == 6666


@pytest.mark.parametrize("size", [32, 16, 8])
def test_logits_for_full_and_downsampled_cifar(size):
    model = WidthCNN(4).eval()
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)


def test_layer_layout_is_the_double_descent_cnn():
    model = WidthCNN(2)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [2, 4, 8, 16]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == 3  # none after layer 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.features) == 4
    assert model.classifier.in_features == 16 and model.classifier.out_features == 10
