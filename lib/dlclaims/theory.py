"""Constructive finite-sample expressivity (Zhang et al. 2017, Theorem 1, seed 002).

Theorem 1: a two-layer ReLU network with 2n + d weights represents any labelling of n
distinct points in R^d. The construction projects the points on one direction a,
z_i = <a, x_i>, and places one ReLU kink b_j just left of each sorted z_j
(b_1 < z_1 < b_2 < z_2 < ...), so c(x) = sum_j w_j max(<a, x> - b_j, 0). The matrix
A_ij = max(z_i - b_j, 0) is lower triangular with a positive diagonal, and A w = y is solved
by forward substitution. Everything runs in float64: A is badly conditioned (its 1-norm
condition number grows roughly like n^2 times the spread over the smallest gap of the z's),
but a triangular solve is backward stable, so the residual stays at rounding level.
Kinks midway between consecutive z's make the diagonal z_j - b_j as large as the gaps allow;
a kink hugging z_j would shrink the diagonal and inflate the condition number.

Also: the implicit bias of gradient descent on linear networks (seed 002, Gunasekar et al. 2018):
end-to-end predictors of linear convolutional and fully connected networks, full-batch GD on the
logistic loss over batches of independent problems, and the Fourier-domain sparsity of a predictor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from torch import nn


class TwoLayerReLU(nn.Module):
    """c(x) = sum_j w_j max(<a, x> - b_j, 0): the 2n + d weights of Theorem 1 (float64).

    `condition_number` is the 1-norm condition number of the interpolation matrix A the
    weights were solved from (None for a network not built by a solve).
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, condition_number: float | None = None):
        super().__init__()
        self.a = nn.Parameter(a.double())
        self.b = nn.Parameter(b.double())
        self.w = nn.Parameter(w.double())
        self.condition_number = condition_number

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The n ReLU units on flattened inputs: max(<a, x> - b_j, 0)."""
        return torch.relu(project(x, self.a)[:, None] - self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x) @ self.w


def project(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """z = <a, x> for each flattened row of x, in float64 (the construction and the forward pass share it)."""
    return x.reshape(len(x), -1).double() @ a


def random_direction(d: int, seed: int, device=None) -> torch.Tensor:
    """A Gaussian direction: projections of distinct points are distinct with probability 1."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(d, generator=gen, dtype=torch.float64).to(device)


def interleaved_kinks(z_sorted: np.ndarray) -> np.ndarray:
    """b_1 < z_1 < b_2 < z_2 < ...: b_j midway between z_{j-1} and z_j (b_1 one first gap below z_1)."""
    gaps = np.diff(z_sorted)
    if gaps.size and gaps.min() <= 0:
        raise ValueError("the projections <a, x_i> are not distinct: the points are not distinct "
                         "or the direction is degenerate")
    first_gap = gaps[0] if gaps.size else 1.0
    return np.concatenate([[z_sorted[0] - first_gap / 2], z_sorted[:-1] + gaps / 2])


def _tensor(values: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


def relu_design(z: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A_ij = max(z_i - b_j, 0)."""
    return np.maximum(z[:, None] - b[None, :], 0.0)


def triangular_condition_number(lower: np.ndarray) -> float:
    """1-norm condition number of a lower-triangular matrix (LAPACK trcon estimate, O(n^2))."""
    rcond, info = scipy.linalg.lapack.dtrcon(np.asfortranarray(lower), norm="1", uplo="L")
    if info != 0:
        raise np.linalg.LinAlgError(f"dtrcon failed with info={info}")
    return float(np.inf) if rcond == 0 else float(1.0 / rcond)


def memorizing_relu_net(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> TwoLayerReLU:
    """The Theorem 1 network that reproduces real labels `y` (n,) at the n distinct points `x` (n, ...).

    Parameters on x's device, float64; `net.condition_number` reports the conditioning of the
    triangular solve. Raises ValueError when two points project to the same z (not distinct).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"{n} points but {len(y)} labels")
    a = random_direction(x[0].numel(), seed, x.device)
    z = project(x, a).cpu().numpy()
    order = np.argsort(z, kind="stable")
    z_sorted = z[order]
    b = interleaved_kinks(z_sorted)
    lower = relu_design(z_sorted, b)
    targets = y.detach().double().cpu().numpy()[order]
    w = scipy.linalg.solve_triangular(lower, targets, lower=True, check_finite=True)
    return TwoLayerReLU(a, _tensor(b, x.device), _tensor(w, x.device), triangular_condition_number(lower))


def generic_relu_net(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> TwoLayerReLU:
    """The control: the same 2n + d weights with a non-constructive choice of kinks.

    Same random direction a, but the n kinks b_j are drawn uniformly over the range of the
    projections instead of interleaving them, and w is the least-squares fit. Knots then
    cluster in some gaps and miss others, so A is rank-deficient on the sample and the fit
    is not exact.
    """
    a = random_direction(x[0].numel(), seed, x.device)
    z = project(x, a).cpu().numpy()
    rng = np.random.default_rng(seed)
    b = rng.uniform(z.min(), z.max(), size=len(x))
    w, *_ = scipy.linalg.lstsq(relu_design(z, b), y.detach().double().cpu().numpy())
    return TwoLayerReLU(a, _tensor(b, x.device), _tensor(w, x.device))


def max_relative_error(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """max_i |c(x_i) - y_i| / max_i |y_i|: how exactly a network reproduces the labels."""
    with torch.no_grad():
        error = (net(x) - y.double().to(x.device)).abs().max()
    return float(error / y.double().abs().max())


# ---------------------------------------------------------------- implicit bias of linear networks (seed 002)


def circular_convnet_predictor(weights: torch.Tensor) -> torch.Tensor:
    """The end-to-end linear predictor β of a depth-L linear convolutional network with full-width circular
    filters (Gunasekar, Lee, Soudry & Srebro 2018, §4): `weights` (..., L, d) → β (..., d), the circular
    convolution of the L filters, so that its Fourier transform is their product, β̂ = ∏_l ŵ_l."""
    d = weights.shape[-1]
    return torch.fft.irfft(torch.prod(torch.fft.rfft(weights, dim=-1), dim=-2), n=d, dim=-1)


def fully_connected_predictor(weights: torch.Tensor) -> torch.Tensor:
    """The end-to-end linear predictor of a depth-L fully connected linear network x ↦ e₁ᵀ W_L ⋯ W_1 x:
    `weights` (..., L, d, d) → β (..., d), the first row of W_L ⋯ W_1 (the last layer's first unit is the output)."""
    product = weights[..., 0, :, :]
    for layer in range(1, weights.shape[-3]):
        product = weights[..., layer, :, :] @ product
    return product[..., 0, :]


def logistic_gradient_descent(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    weights: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch GD on the mean logistic loss (1/n) Σ log(1 + exp(−y_i⟨x_i, β⟩)), β = predictor(weights),
    for a batch of independent problems: `x` (B, n, d), `y` (B, n) = ±1, `weights` (B, ...). The problems'
    losses are summed, so each problem's weights get exactly its own gradient. Returns (weights, final
    losses (B,))."""
    weights = weights.detach().clone().requires_grad_(True)
    for _ in range(steps):
        margins = y * torch.einsum("bnd,bd->bn", x, predictor(weights))
        losses = torch.nn.functional.softplus(-margins).mean(dim=-1)
        (grad,) = torch.autograd.grad(losses.sum(), weights)
        with torch.no_grad():
            weights -= lr * grad
    with torch.no_grad():
        margins = y * torch.einsum("bnd,bd->bn", x, predictor(weights))
        losses = torch.nn.functional.softplus(-margins).mean(dim=-1)
    return weights.detach(), losses


def fourier_effective_support(beta: torch.Tensor) -> torch.Tensor:
    """(‖β̂‖₁/‖β̂‖₂)² over the d discrete Fourier coefficients of β (last axis): how many frequencies carry the
    predictor (d for a predictor spread evenly over all of them, 1 for a single one... 2 for a real cosine)."""
    magnitudes = torch.fft.fft(beta, dim=-1).abs()
    return (magnitudes.sum(dim=-1) / magnitudes.norm(dim=-1)) ** 2
