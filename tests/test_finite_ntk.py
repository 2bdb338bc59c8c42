"""Empirical NTK and linearized network (torch.func) against plain autograd on tiny models."""

import torch
from torch import nn

from dlclaims.finite_ntk import empirical_ntk, jacobian, linearized, ntk_regression
from dlclaims.models.wrn import WideResNet


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 3))


def autograd_jacobian(model, x):
    rows = []
    for image in x:
        per_output = []
        for c in range(model(image[None]).shape[1]):
            model.zero_grad()
            model(image[None])[0, c].backward()
            per_output.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def test_jacobian_matches_autograd_and_kernel_is_its_trace_gram():
    model, x = tiny_net(), torch.randn(5, 3, 2, 2)
    expected = autograd_jacobian(model, x)
    torch.testing.assert_close(jacobian(model, x, chunk=2), expected)
    flat = expected.flatten(1).double()
    gram = empirical_ntk(model, x, chunk=2)
    torch.testing.assert_close(gram, flat @ flat.T / 3, rtol=1e-5, atol=1e-6)  # float32 products
    x2 = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(empirical_ntk(model, x, x2, chunk=3),
                               flat @ autograd_jacobian(model, x2).flatten(1).double().T / 3, rtol=1e-5, atol=1e-6)


def test_frozen_parameters_are_left_out():
    model = tiny_net()
    model[1].requires_grad_(False)
    assert jacobian(model, torch.randn(2, 3, 2, 2)).shape == (2, 3, 7 * 3 + 3)


def test_linearized_network_is_first_order_exact():
    model, x = tiny_net(), torch.randn(4, 3, 2, 2)
    f_lin = linearized(model)
    torch.testing.assert_close(f_lin(x, {}), model(x))
    delta = {name: 1e-3 * torch.randn_like(p) for name, p in model.named_parameters()}
    expected_change = jacobian(model, x).flatten(2) @ torch.cat([d.flatten() for d in delta.values()])
    torch.testing.assert_close(f_lin(x, delta) - model(x), expected_change, atol=1e-6, rtol=1e-4)


def test_wrn_kernel_uses_eval_mode_batchnorm_and_restores_mode():
    torch.manual_seed(0)
    model = WideResNet(1, 1, in_channels=1).train()
    x = torch.randn(3, 1, 8, 8)
    gram = empirical_ntk(model, x)
    assert model.training
    assert torch.allclose(gram, gram.T) and torch.linalg.eigvalsh(gram).min() > 0
    single = empirical_ntk(model, x[:1])  # eval-mode BN: an image's kernel ignores the batch
    torch.testing.assert_close(single[0, 0], gram[0, 0], rtol=1e-5, atol=0)


def test_ntk_regression_fits_its_training_set():
    torch.manual_seed(0)
    model = WideResNet(1, 1, in_channels=1)
    x, y = torch.randn(20, 1, 8, 8), torch.arange(20) % 10
    assert torch.equal(ntk_regression(model, x, y, x), y)
