"""WideResNet (WRN-(6N+4)-K): shapes, widths, depth naming, freezing and its BatchNorm modes."""

import pytest
import torch

from dlclaims import train
from dlclaims.models import count_parameters
from dlclaims.models.wrn import WideResNet, wrn_depth


@pytest.mark.parametrize("blocks, width", [(1, 1), (2, 2)])
def test_shapes_widths_and_name(blocks, width):
    model = WideResNet(blocks, width, in_channels=1)
    assert model(torch.randn(3, 1, 14, 14)).shape == (3, 10)
    assert model.widths == (16 * width, 32 * width, 64 * width)
    assert all(len(g) == blocks for g in model.groups)
    assert model.name == f"WRN-{6 * blocks + 4}-{width}" and wrn_depth(blocks) == model.depth


def test_wrn_16_8_has_zagoruykos_parameter_count():
    # Zagoruyko & Komodakis, Table 1 of their code release: WRN-16-8 on CIFAR has 11.0 M parameters.
    assert round(count_parameters(WideResNet(2, 8)) / 1e6, 1) == 11.0


def test_bfc4_freezes_stem_and_group_one_only():
    model = WideResNet(1, 1, in_channels=1).freeze(groups=(1,))
    assert model.frozen_groups() == (1,)
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.unfreeze()
    assert model.frozen_groups() == ()


def test_frozen_groups_keep_their_initial_weights_through_fit():
    torch.manual_seed(0)
    model = WideResNet(1, 1, in_channels=1).freeze(groups=(1, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    train.fit(model, x, y, train.TrainConfig(epochs=2, batch_size=8, lr=0.1), seed=0)
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        is_weight = "running" not in key and "num_batches" not in key
        if key.startswith(("stem.", "groups.0.", "groups.1.")) and is_weight:
            assert not changed, key
    assert not torch.equal(before["head.4.weight"], after["head.4.weight"])
    assert not torch.equal(before["groups.2.0.conv1.weight"], after["groups.2.0.conv1.weight"])


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_frozen_batchnorm_statistics(batch_statistics):
    torch.manual_seed(0)
    model = WideResNet(1, 1, in_channels=1).freeze(groups=(1,), batch_statistics=batch_statistics)
    model.train()
    model(torch.randn(8, 1, 8, 8) * 3 + 1)
    frozen_bn = model.groups[0][0].bn1
    assert frozen_bn.training is batch_statistics
    at_init = torch.equal(frozen_bn.running_mean, torch.zeros_like(frozen_bn.running_mean))
    assert at_init is not batch_statistics
    assert model.groups[1][0].bn1.training  # trainable groups always use batch statistics


def test_unknown_group_is_an_error():
    with pytest.raises(ValueError):
        WideResNet(1, 1).freeze(groups=(4,))
