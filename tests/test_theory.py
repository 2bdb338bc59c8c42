"""Theorem 1's constructive network on small cases (float64, exact up to rounding); the linear-network
predictors and logistic GD of the implicit-bias claims."""

import math

import numpy as np
import pytest
import torch

from dlclaims.models import count_parameters
from dlclaims.theory import (
    circular_convnet_predictor,
    fourier_effective_support,
    fully_connected_predictor,
    generic_relu_net,
    interleaved_kinks,
    logistic_gradient_descent,
    max_relative_error,
    memorizing_relu_net,
    relu_design,
    triangular_condition_number,
)


@pytest.mark.parametrize("n,d", [(1, 1), (2, 3), (7, 2), (50, 10)])
def test_memorizing_net_has_2n_plus_d_weights_and_fits_exactly(n, d):
    gen = torch.Generator().manual_seed(n + d)
    x, y = torch.randn(n, d, generator=gen), torch.randn(n, generator=gen)
    net = memorizing_relu_net(x, y, seed=1)
    assert count_parameters(net) == 2 * n + d
    assert max_relative_error(net, x, y) < 1e-10
    assert net.condition_number >= 1


def test_interleaved_kinks_make_a_lower_triangular_system_with_positive_diagonal():
    z = np.array([-1.0, 0.5, 2.0, 2.25])
    b = interleaved_kinks(z)
    assert np.all(b < z) and np.all(b[1:] > z[:-1])  # b_1 < z_1 < b_2 < z_2 < ...
    a = relu_design(z, b)
    assert np.allclose(np.triu(a, 1), 0) and np.all(np.diag(a) > 0)
    assert triangular_condition_number(a) == pytest.approx(np.linalg.cond(a, 1), rel=0.5)


def test_duplicate_points_are_rejected():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="distinct"):
        memorizing_relu_net(x, torch.zeros(3))


def test_generic_weights_do_not_fit_exactly():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 5, generator=gen), torch.randn(200, generator=gen)
    control = generic_relu_net(x, y, seed=0)
    assert count_parameters(control) == 2 * 200 + 5
    assert max_relative_error(control, x, y) > 1e-2


def test_circular_convnet_predictor_is_the_circular_convolution_of_its_filters():
    gen = torch.Generator().manual_seed(1)
    filters = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64)  # 2 problems, depth 3, d = 8
    beta = circular_convnet_predictor(filters)
    for b in range(2):
        expected = filters[b, 0]
        for layer in range(1, 3):  # direct circular convolution: (f ⊛ g)[i] = Σ_j f[j] g[(i − j) mod d]
            g = filters[b, layer]
            expected = torch.stack([sum(expected[j] * g[(i - j) % 8] for j in range(8)) for i in range(8)])
        assert torch.allclose(beta[b], expected, atol=1e-12)
    # Depth 1 is the filter itself; its Fourier support counts the non-zero frequencies of a pure cosine: 2.
    assert torch.allclose(circular_convnet_predictor(filters[:, :1]), filters[:, 0])
    cosine = torch.cos(2 * torch.pi * 3 * torch.arange(16, dtype=torch.float64) / 16)
    assert float(fourier_effective_support(cosine)) == pytest.approx(2.0)


def test_fully_connected_predictor_is_the_first_row_of_the_matrix_product():
    w = torch.randn(3, 4, 4, dtype=torch.float64)
    assert torch.allclose(fully_connected_predictor(w), (w[2] @ w[1] @ w[0])[0])


def test_logistic_gradient_descent_separates_and_keeps_problems_apart():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    init = 0.1 * torch.randn(2, 2, 6, generator=gen, dtype=torch.float64)
    weights, losses = logistic_gradient_descent(circular_convnet_predictor, init, x, y, lr=0.1, steps=500)
    assert float(losses.max()) < math.log(2) / 3  # every point on its side
    # Problem 0 alone follows the same trajectory: summing the losses leaves each problem its own gradient.
    alone, _ = logistic_gradient_descent(circular_convnet_predictor, init[:1], x[:1], y[:1], lr=0.1, steps=500)
    assert torch.allclose(alone, weights[:1], atol=1e-12)
