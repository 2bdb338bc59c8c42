"""Unit tests of dlclaims.linear (seconds, CPU, float64)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from dlclaims import linear


def test_min_norm_solution_interpolates_and_matches_pinv():
    x = linear.gaussian_design(20, 60, seed=0)
    y = torch.randn(20, dtype=linear.DTYPE)
    w = linear.min_norm_solution(x, y)
    assert torch.allclose(x @ w, y, atol=1e-10)
    assert torch.allclose(w, torch.linalg.pinv(x) @ y, atol=1e-10)
    assert linear.row_space_residual(linear.row_space_basis(x), w) < 1e-12


def test_rank_and_collinear_columns():
    x = linear.gaussian_design(40, 10, seed=1)
    assert linear.numerical_rank(x)[0] == 10
    assert linear.numerical_rank(linear.with_collinear_columns(x, 3, seed=0))[0] == 7


def test_ridge_solution_solves_its_normal_equations_in_both_shapes():
    for n, p in ((30, 10), (10, 30)):
        x, y = linear.gaussian_design(n, p, seed=2), torch.randn(n, dtype=linear.DTYPE)
        w = linear.ridge_solution(x, y, 0.1)
        grad = x.T @ (x @ w - y) / n + 0.1 * w
        assert grad.norm() < 1e-10


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_descent_from_zero_reaches_min_norm(batch_size):
    x, y = linear.gaussian_design(20, 80, seed=3), torch.randn(20, dtype=linear.DTYPE)
    w = linear.least_squares_descent(x, y, lr=linear.sgd_step_size(x, batch_size), epochs=200,
                                     batch_size=batch_size, seed=0)
    assert linear.relative_distance(w, linear.min_norm_solution(x, y)) < 1e-8


def test_penalised_descent_reaches_ridge():
    x, y = linear.gaussian_design(20, 80, seed=4), torch.randn(20, dtype=linear.DTYPE)
    w = linear.least_squares_descent(x, y, lr=linear.sgd_step_size(x), epochs=2000, penalty=0.5)
    assert linear.relative_distance(w, linear.ridge_solution(x, y, 0.5)) < 1e-8


def test_random_relu_features_approximate_arccos_kernel():
    a = torch.randn(3, 5, dtype=linear.DTYPE)
    phi = linear.random_relu_features(a, 200000, seed=0)
    assert torch.allclose(phi @ phi.T, linear.arccos_kernel(a, a, 1), rtol=0.03, atol=0.03)


def test_arccos_kernel_closed_forms():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=linear.DTYPE)
    k0, k1 = linear.arccos_kernel(a, a, 0), linear.arccos_kernel(a, a, 1)
    assert k0[0, 0] == pytest.approx(0.5) and k0[0, 1] == pytest.approx(0.25)  # θ = π/2
    assert k1[1, 1] == pytest.approx(4 / 2)  # E relu(w·a)² = ‖a‖²/2
    assert k1[0, 1] == pytest.approx(2 / (2 * math.pi))
    k = linear.relu_ntk(a, a)
    assert torch.allclose(k, k1 + (a @ a.T) * k0)


def test_kernel_gradient_descent_reaches_interpolant_and_keeps_the_offset():
    x = torch.randn(15, 4, dtype=linear.DTYPE)
    k, y = linear.relu_ntk(x, x) + torch.eye(15, dtype=linear.DTYPE), torch.randn(15, dtype=linear.DTYPE)
    lr = 15 / float(torch.linalg.eigvalsh(k)[-1])
    alpha = linear.kernel_gradient_descent(k, y, lr=lr, steps=3000)
    assert torch.allclose(alpha, linear.kernel_interpolant(k, y), atol=1e-8)
    offset = torch.randn(15, dtype=linear.DTYPE)
    alpha0 = linear.kernel_gradient_descent(k, y, lr=lr, steps=3000, start_values=offset)
    assert torch.allclose(alpha0, linear.kernel_interpolant(k, y - offset), atol=1e-8)


def test_min_norm_risk_formula():
    assert linear.min_norm_risk(100, 20, signal=1, noise=1) == pytest.approx(20 / 79)
    assert linear.min_norm_risk(100, 200, signal=2, noise=1) == pytest.approx(4 * 0.5 + 100 / 99)
    assert linear.min_norm_risk(100, 100, signal=1, noise=1) == math.inf


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
def test_marchenko_pastur_density_and_cdf(gamma):
    lo, hi = linear.marchenko_pastur_support(gamma)
    mass, _ = integrate.quad(lambda t: float(linear.marchenko_pastur_density(t, gamma)), lo, hi, limit=200)
    assert mass == pytest.approx(min(1.0, 1 / gamma), abs=1e-6)
    mid = (lo + hi) / 2
    part, _ = integrate.quad(lambda t: float(linear.marchenko_pastur_density(t, gamma)), lo, mid, limit=200)
    atom = max(0.0, 1 - 1 / gamma)
    assert float(linear.marchenko_pastur_cdf(mid, gamma)) == pytest.approx(atom + part, abs=1e-6)
    assert float(linear.marchenko_pastur_cdf(hi * 1.01, gamma)) == pytest.approx(1.0, abs=1e-8)
    assert float(linear.marchenko_pastur_cdf(-1e-12, gamma)) == 0.0


def test_ks_distance_handles_atoms():
    def step(x):
        return np.where(x < 0, 0.0, 0.5 + 0.5 * np.clip(x, 0, 1))

    assert linear.ks_distance(np.r_[np.zeros(500), (np.arange(500) + 0.5) / 500], step) == pytest.approx(0.0005)
    assert linear.ks_distance(np.zeros(10), step) == pytest.approx(0.5)


def test_sgd_regressor_without_intercept_or_stopping_is_penalised_per_sample_sgd():
    x, y = linear.gaussian_design(20, 50, seed=5), torch.randn(20, dtype=linear.DTYPE)
    w, b, epochs = linear.sgd_regressor(x, y, lr=0.01, penalty=1e-3, fit_intercept=False, tol=-math.inf,
                                        max_iter=30, seed=3)
    same = linear.least_squares_descent(x, y, lr=0.01, epochs=30, batch_size=1, penalty=1e-3, seed=3)
    assert (b, epochs) == (0.0, 30)
    assert torch.allclose(w, same, rtol=1e-10, atol=1e-12)


def test_sgd_regressor_stops_like_scikit_learn_and_fits_an_intercept():
    x, y = linear.gaussian_design(20, 5, seed=6), torch.randn(20, dtype=linear.DTYPE)
    # A tolerance no epoch can meet: the first epoch sets the best loss, the next n_iter_no_change fail to beat it.
    assert linear.sgd_regressor(x, y, lr=0.01, penalty=0.0, tol=1e9, n_iter_no_change=5)[2] == 6
    # Constant targets on inputs that carry nothing: the intercept takes the constant, w stays 0.
    w, b, _ = linear.sgd_regressor(torch.zeros(20, 5, dtype=linear.DTYPE), torch.full((20,), 3.0, dtype=linear.DTYPE),
                                   lr=0.05, penalty=1e-4, tol=-math.inf, max_iter=100)
    assert b == pytest.approx(3.0, abs=1e-6) and float(w.abs().max()) == 0.0


def test_condition_numbers_of_a_wide_design():
    x = linear.gaussian_design(10, 30, seed=7)
    s = torch.linalg.svdvals(x)
    assert linear.row_space_condition_number(x) == pytest.approx(float(s[0] / s[-1]) ** 2, rel=1e-12)
    assert linear.reciprocal_condition_number(x) <= 30 * np.finfo(float).eps  # XᵀX is 30 × 30 of rank 10
    tall = linear.gaussian_design(30, 10, seed=7)
    assert linear.reciprocal_condition_number(tall) == pytest.approx(1 / linear.row_space_condition_number(tall),
                                                                     rel=1e-8)


def test_gd_steps_to_min_norm_is_the_first_step_within_the_tolerance():
    x = linear.gaussian_design(10, 30, seed=8, correlation=0.3)
    y = torch.randn(10, dtype=linear.DTYPE)
    steps = int(linear.gd_steps_to_min_norm(x, y, 1e-6))
    lr = len(x) / float(torch.linalg.matrix_norm(x, ord=2)) ** 2  # 1/λ_max(XᵀX/n)
    w_min = linear.min_norm_solution(x, y)
    distances = []
    linear.least_squares_descent(x, y, lr=lr, epochs=steps,
                                 observe=lambda _, w: distances.append(linear.relative_distance(w, w_min)))
    assert distances[-1] <= 1e-6 < distances[-2]


def test_column_transforms():
    x = torch.cat([linear.gaussian_design(50, 4, seed=9), torch.ones(50, 1, dtype=linear.DTYPE)], dim=1)
    z = linear.standardised_columns(x)
    assert z.shape == (50, 4)  # the constant column is dropped
    assert torch.allclose(z.mean(dim=0), torch.zeros(4, dtype=linear.DTYPE), atol=1e-12)
    assert torch.allclose(z.std(dim=0), torch.ones(4, dtype=linear.DTYPE))
    shuffled = linear.decorrelated_columns(x, seed=0)
    assert torch.equal(shuffled.sort(dim=0).values, x.sort(dim=0).values)  # each column keeps its values
    assert not torch.equal(shuffled, x)


def test_effective_nonzeros_and_hadamard_descent_recover_a_sparse_vector():
    truth = torch.zeros(100, dtype=linear.DTYPE)
    truth[[3, 40, 77]] = torch.tensor([1.0, -1.0, 1.0], dtype=linear.DTYPE)
    assert float(linear.effective_nonzeros(truth)) == pytest.approx(3.0)
    x = linear.gaussian_design(40, 100, seed=10)
    w = linear.hadamard_descent(x, x @ truth, init=1e-4, lr=0.05, steps=3000)
    assert linear.relative_distance(w, truth) < 1e-3


def test_kernel_interpolant_and_gradient_descent_take_several_columns():
    x = linear.gaussian_design(12, 5, seed=13)
    k = linear.fully_connected_relu_ntk(x, x)
    targets = torch.randn(12, 3, generator=torch.Generator().manual_seed(14), dtype=linear.DTYPE)
    alpha = linear.kernel_interpolant(k, targets)
    torch.testing.assert_close(k @ alpha, targets)
    steps = linear.kernel_gradient_descent(k, targets, lr=0.5, steps=50)
    for c in range(3):
        torch.testing.assert_close(alpha[:, c], linear.kernel_interpolant(k, targets[:, c]))
        torch.testing.assert_close(steps[:, c], linear.kernel_gradient_descent(k, targets[:, c], lr=0.5, steps=50))


def test_log_log_slope_is_the_power_law_exponent():
    widths = [16, 128, 1024]
    assert linear.log_log_slope(widths, [3.0 * w ** -0.5 for w in widths]) == pytest.approx(-0.5)
