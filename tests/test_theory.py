"""Theorem 1's constructive network on small cases (float64, exact up to rounding)."""

import numpy as np
import pytest
import torch

from dlclaims.models import count_parameters
from dlclaims.theory import (
    generic_relu_net,
    interleaved_kinks,
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
