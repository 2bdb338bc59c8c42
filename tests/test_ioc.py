"""IOC-MLP: projection, parameter counts, and the midpoint convexity checker."""

import pytest
import torch
from torch import nn

from dlclaims import train
from dlclaims.models import MLP, count_parameters
from dlclaims.models.ioc import (
    IOCMLP,
    midpoint_convexity_violations,
    min_constrained_weight,
    project_nonnegative,
    sign_constrained_parameters,
)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_twin_has_the_same_architecture_and_parameter_count(batch_norm):
    ioc = IOCMLP(20, depth=3, width=16, batch_norm=batch_norm)
    twin = IOCMLP(20, depth=3, width=16, convex=False, batch_norm=batch_norm)
    reference = MLP(20, depth=3, width=16, activation=nn.ELU, batch_norm=batch_norm)
    assert count_parameters(ioc) == count_parameters(twin) == count_parameters(reference)
    assert [type(m) for m in ioc.modules()][1:] == [type(m) for m in reference.modules()][1:]


def test_the_default_is_the_seeds_model_linear_and_elu_without_batchnorm():
    assert {type(m) for m in IOCMLP(20, depth=2, width=8).modules()} == {IOCMLP, nn.Sequential, nn.Flatten,
                                                                         nn.Linear, nn.ELU}


def test_constrained_parameters_are_later_linear_weights():
    model = IOCMLP(20, depth=2, width=8)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert {id(p) for p in model.constrained_parameters()} == {id(linears[1].weight), id(linears[2].weight)}
    assert IOCMLP(20, depth=2, width=8, convex=False).constrained_parameters() == []


def test_with_batchnorm_the_scales_after_later_linears_are_constrained_too():
    model = IOCMLP(20, depth=2, width=8, batch_norm=True)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    expected = {id(linears[1].weight), id(norms[1].weight), id(linears[2].weight)}
    assert {id(p) for p in model.constrained_parameters()} == expected
    assert IOCMLP(20, depth=2, width=8, convex=False, batch_norm=True).constrained_parameters() == []


def test_projection_maps_negative_weights_to_exp_w_minus_5_and_keeps_the_rest():
    model = IOCMLP(4, depth=2, width=3)
    weight = model.constrained_parameters()[0]
    with torch.no_grad():
        weight.copy_(torch.tensor([[-1.0, 0.0, 2.0], [-5.0, 0.5, -0.1], [3.0, -2.0, 1.0]]))
    before = weight.detach().clone()
    project_nonnegative(model)
    expected = torch.where(before < 0, torch.exp(before - 5), before)
    assert torch.equal(weight.detach(), expected)
    assert min_constrained_weight(model) >= 0


def test_projection_as_after_step_keeps_the_constraint_through_training():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    ioc, twin = IOCMLP(6, depth=2, width=16), IOCMLP(6, depth=2, width=16, convex=False)
    config = train.TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=0.05)
    train.fit(ioc, x, y, config, seed=0, after_step=project_nonnegative)
    train.fit(twin, x, y, config, seed=0, after_step=project_nonnegative)  # a no-op for the twin
    assert min_constrained_weight(ioc) >= 0
    assert min_constrained_weight(twin) < 0
    assert len(sign_constrained_parameters(twin)) == len(ioc.constrained_parameters())


class Scalar(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn,convex", [
    (lambda x: (x ** 2).sum(1, keepdim=True), True),
    (lambda x: x.abs().max(1, keepdim=True).values, True),
    (lambda x: 3 * x.sum(1, keepdim=True) + 1, True),  # linear: exactly on the chord, not a violation
    (lambda x: -(x ** 2).sum(1, keepdim=True), False),
    (lambda x: torch.sin(x).sum(1, keepdim=True), False),
])
def test_midpoint_checker_on_known_functions(fn, convex):
    gen = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(200, 3, generator=gen), torch.randn(200, 3, generator=gen)
    violations = midpoint_convexity_violations(Scalar(fn), x, x2)
    assert violations.shape == (200, 1)
    assert (violations.sum() == 0) == convex


@pytest.mark.parametrize("batch_norm", [False, True])
def test_ioc_mlp_is_convex_in_eval_mode_and_twin_is_not(batch_norm):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 5, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    config = train.TrainConfig(epochs=5, batch_size=32, optimizer="adam", lr=0.01)
    ioc = IOCMLP(5, depth=2, width=32, batch_norm=batch_norm)
    twin = IOCMLP(5, depth=2, width=32, convex=False, batch_norm=batch_norm)
    train.fit(ioc, x, y, config, seed=0, after_step=project_nonnegative)
    train.fit(twin, x, y, config, seed=0)
    a, b = torch.randn(300, 5, generator=gen), torch.randn(300, 5, generator=gen)
    assert midpoint_convexity_violations(ioc, a, b).sum() == 0
    assert midpoint_convexity_violations(twin, a, b).sum() > 0
