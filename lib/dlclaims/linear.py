"""Over-parameterised linear (and kernel) least squares, in float64.

Designs (isotropic or equicorrelated Gaussian, random ReLU features of images, raw
pixels), ranks with a stated tolerance, the min-norm solution X⁺y, ridge, one
gradient-descent function for full-batch GD and minibatch SGD on the squared loss (with an
optional L2 penalty, as scikit-learn's SGDRegressor adds), kernel gradient descent, the
exact finite-sample risk of min-norm least squares for isotropic Gaussian features and the
Marchenko–Pastur law; seed 003's own SGD (scikit-learn's SGDRegressor), conditioning diagnostics,
column transforms of a design (standardised, decorrelated), and GD on the Hadamard parametrisation
w = u⊙u − v⊙v (implicit sparse regularisation, seed 002).

GD/SGD here is an optimiser on a closed-form problem, not a neural-network training loop
(those go through `dlclaims.train.fit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

DTYPE = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# ---------------------------------------------------------------- designs


def gaussian_design(n: int, p: int, *, seed: int, correlation: float = 0.0, device="cpu") -> torch.Tensor:
    """n rows x ~ N(0, Σ) in R^p, Σ = (1 − ρ) I + ρ 11ᵀ (ρ = `correlation`; 0: isotropic N(0, I)).

    Drawn on the CPU, so every device sees the same matrix for a seed.
    """
    gen = _generator(seed)
    x = torch.randn(n, p, generator=gen, dtype=DTYPE)
    if correlation:
        shared = torch.randn(n, 1, generator=gen, dtype=DTYPE)
        x = math.sqrt(1 - correlation) * x + math.sqrt(correlation) * shared
    return x.to(device)


def with_collinear_columns(x: torch.Tensor, k: int, *, seed: int) -> torch.Tensor:
    """`x` with its last k columns replaced by random combinations of the others (rank drops by k
    when the remaining columns are independent)."""
    gen = _generator(seed)
    mix = torch.randn(x.shape[1] - k, k, generator=gen, dtype=x.dtype).to(x.device)
    return torch.cat([x[:, :-k], x[:, :-k] @ mix], dim=1)


def flat_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) as float64 rows in [0, 1] (no centring), as in seed 003's HW0."""
    return images.reshape(len(images), -1).to(DTYPE).div(255)


def random_relu_features(x: torch.Tensor, p: int, *, seed: int) -> torch.Tensor:
    """φ(x) = relu(W x)/√p with W ~ N(0, I): φ(x)·φ(x') → arccos_kernel(x, x', 1) as p → ∞."""
    w = torch.randn(x.shape[1], p, generator=_generator(seed), dtype=DTYPE).to(x.device)
    return torch.relu(x.to(DTYPE) @ w) / math.sqrt(p)


# ---------------------------------------------------------------- linear algebra


def rank_tolerance(singular_values: torch.Tensor, shape: tuple[int, int]) -> float:
    """NumPy/LAPACK's default: σ_max · max(n, p) · ε(float64)."""
    return float(singular_values.max()) * max(shape) * torch.finfo(DTYPE).eps


def numerical_rank(x: torch.Tensor) -> tuple[int, float]:
    """(rank, tolerance): the number of singular values above `rank_tolerance`."""
    s = torch.linalg.svdvals(x.to(DTYPE))
    tol = rank_tolerance(s, tuple(x.shape))
    return int((s > tol).sum()), tol


def min_norm_solution(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """X⁺y, the least-squares solution of least Euclidean norm (SVD-based; same cutoff as the rank)."""
    if x.device.type == "cpu":  # gelsd (SVD) is CPU-only; CUDA's lstsq needs full column rank
        return torch.linalg.lstsq(x, y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    return torch.linalg.pinv(x) @ y


def ridge_solution(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """argmin (1/2n)‖Xw − y‖² + (penalty/2)‖w‖², solved in the smaller of the two dimensions."""
    n, p = x.shape
    if p > n:
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        return x.T @ torch.linalg.solve(x @ x.T + n * penalty * eye, y)
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(x.T @ x + n * penalty * eye, x.T @ y)


def row_space_basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (p × rank) of the row space of X: right singular vectors above the rank tolerance."""
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[s > rank_tolerance(s, tuple(x.shape))].T


def row_space_residual(basis: torch.Tensor, w: torch.Tensor) -> float:
    """‖(I − X⁺X) w‖ / ‖w‖ for `basis` = row_space_basis(X): how far w leaves the row space."""
    return float((w - basis @ (basis.T @ w)).norm() / w.norm())


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return float((a - b).norm() / b.norm())


def mse(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ w - y) ** 2).mean())


# ---------------------------------------------------------------- gradient descent


def sgd_step_size(x: torch.Tensor, batch_size: int | None = None) -> float:
    """Ma, Bassily & Belkin (2018)'s step for minibatch SGD on an interpolating least-squares
    problem, η*(b) = b / (β + (b − 1) λ₁) with β = max ‖x_i‖² and λ₁ = λ_max(XᵀX/n).

    b = n gives ≈ 1/λ₁ (full-batch GD, below the stability limit 2/λ₁); b = 1 gives 1/β.
    """
    n = len(x)
    b = n if batch_size is None else min(batch_size, n)
    beta = float((x ** 2).sum(dim=1).max())
    lam1 = float(torch.linalg.matrix_norm(x, ord=2)) ** 2 / n
    return b / (beta + (b - 1) * lam1)


def least_squares_descent(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    batch_size: int | None = None,
    w0: torch.Tensor | None = None,
    penalty: float = 0.0,
    seed: int = 0,
    observe: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """GD (batch_size None) or minibatch SGD on (1/2b)‖X_B w − y_B‖² + (penalty/2)‖w‖².

    Each epoch visits the rows in a fresh random order (drawn on the CPU from `seed`) in
    batches of `batch_size`; w starts at `w0` (default 0). `observe(epoch, w)` runs after
    every epoch (for GD: every step).
    """
    n, p = x.shape
    w = torch.zeros(p, dtype=x.dtype, device=x.device) if w0 is None else w0.clone()
    b = n if batch_size is None else min(batch_size, n)
    gen = _generator(seed)
    for epoch in range(epochs):
        order = torch.arange(n) if b == n else torch.randperm(n, generator=gen)
        for start in range(0, n, b):
            idx = order[start:start + b].to(x.device)
            xb = x[idx]
            grad = xb.T @ (xb @ w - y[idx]) / len(idx)
            if penalty:
                grad = grad + penalty * w
            w = w - lr * grad
        if observe is not None:
            observe(epoch, w)
    return w


# ---------------------------------------------------------------- kernels


def arccos_kernel(a: torch.Tensor, b: torch.Tensor, degree: int = 1) -> torch.Tensor:
    """E_w[σ(w·a) σ(w·b)] for w ~ N(0, I) with σ = step (degree 0) or ReLU (degree 1):
    ‖a‖ⁿ‖b‖ⁿ Jₙ(θ) / 2π, J₀ = π − θ, J₁ = sin θ + (π − θ) cos θ (Cho & Saul 2009)."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    cos = ((a @ b.T) / (na * nb.T)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    if degree == 0:
        return (math.pi - theta) / (2 * math.pi)
    if degree == 1:
        j1 = torch.sqrt(1 - cos ** 2) + (math.pi - theta) * cos
        return na * nb.T * j1 / (2 * math.pi)
    raise ValueError(f"degree must be 0 or 1, got {degree}")


def relu_ntk(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Neural tangent kernel of a one-hidden-layer ReLU network (both layers trained, standard
    Gaussian init): arccos₁(a, b) + (a·b) arccos₀(a, b)."""
    return arccos_kernel(a, b, 1) + (a @ b.T) * arccos_kernel(a, b, 0)


def fully_connected_relu_ntk(a: torch.Tensor, b: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """Θ⁽ᴸ⁾(a, b) of Arora et al. (2019), eqs. (7)–(9): the NTK of the L = `depth` hidden-layer ReLU
    network of their eq. (6) (weights N(0, 1), no biases, each hidden layer × √(c_σ / width), c_σ = 2).

    Recursion over layers: Σ⁽⁰⁾ = a·b, Σ⁽ʰ⁾ = 2·E[σ(u)σ(v)], Σ̇⁽ʰ⁾ = 2·E[σ'(u)σ'(v)] (closed forms of
    `arccos_kernel`), Θ⁽ʰ⁾ = Θ⁽ʰ⁻¹⁾·Σ̇⁽ʰ⁾ + Σ⁽ʰ⁾ with Θ⁽⁰⁾ = Σ⁽⁰⁾. For ReLU with c_σ = 2 the diagonal
    Σ⁽ʰ⁾(x, x) = ‖x‖² at every layer. At depth 1 this is 2 · `relu_ntk` (whose network has no √2).
    """
    if depth < 1:
        raise ValueError(f"depth counts hidden layers and must be ≥ 1, got {depth}")
    a, b = a.to(DTYPE), b.to(DTYPE)
    norms = a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True).T
    sigma = a @ b.T
    theta_ntk = sigma
    for _ in range(depth):
        cos = (sigma / norms).clamp(-1.0, 1.0)
        angle = torch.arccos(cos)
        derivative = (math.pi - angle) / math.pi
        sigma = norms * (torch.sqrt(1 - cos ** 2) + (math.pi - angle) * cos) / math.pi
        theta_ntk = theta_ntk * derivative + sigma
    return theta_ntk


def kernel_gradient_descent(
    k: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int, start_values: torch.Tensor | None = None
) -> torch.Tensor:
    """Functional GD on (1/2n)Σ(f(x_i) − y_i)² in the RKHS of `k` (the training Gram matrix) from
    f₀ with f₀(x_i) = `start_values` (default f₀ = 0).

    Every gradient lies in span{k(x_i, ·)}, so f_t = f₀ + Σ α_i k(x_i, ·); returns α. `y` (and
    `start_values`) may be (n, C): one independent run per column.
    """
    n = len(y)
    offset = torch.zeros_like(y) if start_values is None else start_values
    alpha = torch.zeros_like(y)
    for _ in range(steps):
        alpha = alpha - lr / n * (k @ alpha + offset - y)
    return alpha


def kernel_interpolant(k: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """α = K⁻¹y: the minimum-RKHS-norm interpolant Σ α_i k(x_i, ·) (K positive definite). `y` is (n,) or
    (n, C) (one column per output: one factorisation for all)."""
    columns = y if y.ndim == 2 else y.unsqueeze(-1)
    alpha = torch.cholesky_solve(columns, torch.linalg.cholesky(k))
    return alpha if y.ndim == 2 else alpha.squeeze(-1)


# ---------------------------------------------------------------- theory


def min_norm_risk(n: int, p: int, *, signal: float, noise: float) -> float:
    """Exact E‖β̂ − β‖² of min-norm least squares (the excess test risk), x ~ N(0, I_p), y = xᵀβ + ε,
    ‖β‖ = `signal`, Var ε = noise² (Hastie, Montanari, Rosset & Tibshirani 2019):
    σ²p/(n − p − 1) for p < n − 1, r²(1 − n/p) + σ²n/(p − n − 1) for p > n + 1, ∞ between."""
    if p < n - 1:
        return noise ** 2 * p / (n - p - 1)
    if p > n + 1:
        return signal ** 2 * (1 - n / p) + noise ** 2 * n / (p - n - 1)
    return math.inf


def optimal_ridge_penalty(n: int, p: int, *, signal: float, noise: float) -> float:
    """λ* = σ²p/(r²n) for isotropic features, in the (1/2n)‖Xw − y‖² + (λ/2)‖w‖² scaling of
    `ridge_solution` (Dobriban & Wager 2018; Hastie et al. 2019, Thm 5)."""
    return noise ** 2 * p / (signal ** 2 * n)


def marchenko_pastur_support(gamma: float, variance: float = 1.0) -> tuple[float, float]:
    """[(1 − √γ)², (1 + √γ)²]σ²: the support of the continuous part, γ = p/n."""
    return variance * (1 - math.sqrt(gamma)) ** 2, variance * (1 + math.sqrt(gamma)) ** 2


def marchenko_pastur_density(lam, gamma: float, variance: float = 1.0) -> np.ndarray:
    """Density of the continuous part of the MP law of the eigenvalues of XᵀX/n (X: n × p, i.i.d.
    entries of variance σ², γ = p/n); it integrates to min(1, 1/γ), the rest is an atom at 0."""
    lam = np.asarray(lam, dtype=float)
    lo, hi = marchenko_pastur_support(gamma, variance)
    inside = (lam > lo) & (lam < hi)
    safe = np.where(inside, lam, 1.0)
    dens = np.sqrt(np.clip((hi - safe) * (safe - lo), 0, None)) / (2 * math.pi * variance * gamma * safe)
    return np.where(inside, dens, 0.0)


def marchenko_pastur_cdf(lam, gamma: float, variance: float = 1.0, grid: int = 20001) -> np.ndarray:
    """CDF of the MP law including the atom of mass max(0, 1 − 1/γ) at 0.

    The continuous part is integrated in the angle φ of λ = m − h cos φ (m, h: the support's
    centre and half-width), where the integrand is smooth, by cumulative trapezoids.
    """
    lam = np.asarray(lam, dtype=float)
    lo, hi = marchenko_pastur_support(gamma, variance)
    m, h = (lo + hi) / 2, (hi - lo) / 2
    phi = np.linspace(0.0, math.pi, grid)
    integrand = h ** 2 * np.sin(phi) ** 2 / (2 * math.pi * variance * gamma * (m - h * np.cos(phi)))
    cumulative = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2 * np.diff(phi))])
    phi_of_lam = np.arccos(np.clip((m - lam) / h, -1.0, 1.0))
    continuous = np.interp(phi_of_lam, phi, cumulative)
    atom = max(0.0, 1 - 1 / gamma)
    return np.where(lam < 0, 0.0, atom + continuous)


def ks_distance(samples, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Kolmogorov–Smirnov distance sup |F_n − F| between the samples' empirical CDF and `cdf`.

    Compared at each distinct sample value and just left of it, so ties and atoms (the MP law's
    mass at 0) count once rather than as a jump.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    values = np.unique(x)
    at = np.searchsorted(x, values, side="right") / len(x)
    before = np.searchsorted(x, values, side="left") / len(x)
    return float(max(np.max(np.abs(at - cdf(values))),
                     np.max(np.abs(before - cdf(np.nextafter(values, -np.inf))))))


def largest_eigenvalue_scale(n: int, p: int) -> float:
    """Tracy–Widom scale of λ_max(XᵀX/n) for Gaussian X (Johnstone 2001):
    (√(n−1) + √p)(1/√(n−1) + 1/√p)^(1/3) / n."""
    a, b = math.sqrt(n - 1), math.sqrt(p)
    return (a + b) * (1 / a + 1 / b) ** (1 / 3) / n


def smallest_eigenvalue_scale(n: int, p: int) -> float:
    """Fluctuation scale of the smallest non-zero eigenvalue of XᵀX/n at the soft edge (n ≠ p)
    (Ma 2012): |√n − √p| · |1/√n − 1/√p|^(1/3) / n."""
    a, b = math.sqrt(n), math.sqrt(p)
    return abs(a - b) * abs(1 / a - 1 / b) ** (1 / 3) / n


# ---------------------------------------------------------------- seed 003's tools and diagnostics


def sgd_regressor(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    penalty: float,
    fit_intercept: bool = True,
    tol: float = 1e-3,
    n_iter_no_change: int = 5,
    max_iter: int = 1000,
    seed: int = 0,
) -> tuple[torch.Tensor, float, int]:
    """scikit-learn's SGDRegressor(learning_rate="constant", eta0=lr, alpha=penalty) with its other defaults
    (squared error, L2 penalty, shuffle, tol, n_iter_no_change, max_iter), as its `_plain_sgd` runs it.

    From w = 0, b = 0, each epoch visits the rows in a fresh random order (drawn from `seed`, not
    scikit-learn's generator); per row, with ŷ = w·x + b before the step: w ← (1 − η·penalty)·w − η(ŷ − y)x,
    b ← b − η(ŷ − y) when `fit_intercept`. The epoch's summed loss Σ ½(ŷ − y)² stops the run once it has
    failed to fall below (best so far − tol·n) for `n_iter_no_change` epochs in a row, or after `max_iter`
    epochs. Returns (w, b, epochs run). A per-row loop: numpy on the CPU, float64.
    """
    xs, ys = x.detach().cpu().numpy().astype(np.float64), y.detach().cpu().numpy().astype(np.float64)
    n, p = xs.shape
    w, b = np.zeros(p), 0.0
    shrink = max(0.0, 1.0 - lr * penalty)
    gen = _generator(seed)
    best, stale, epochs = math.inf, 0, 0
    while epochs < max_iter:
        epochs += 1
        total = 0.0
        for i in torch.randperm(n, generator=gen).tolist():
            error = float(xs[i] @ w) + b - ys[i]
            total += 0.5 * error * error
            w *= shrink
            w -= (lr * error) * xs[i]
            if fit_intercept:
                b -= lr * error
        stale = stale + 1 if total > best - tol * n else 0
        best = min(best, total)
        if stale >= n_iter_no_change:
            break
    return torch.from_numpy(w).to(device=x.device, dtype=x.dtype), b, epochs


def row_space_condition_number(x: torch.Tensor) -> float:
    """κ of XᵀX restricted to the row space of X: σ_max²/σ_min² over the singular values above `rank_tolerance`."""
    s = torch.linalg.svdvals(x.to(DTYPE))
    kept = s[s > rank_tolerance(s, tuple(x.shape))]
    return float(kept[0] / kept[-1]) ** 2


def reciprocal_condition_number(x: torch.Tensor) -> float:
    """λ_min/λ_max of XᵀX over all p directions (|λ_min|: rounding can leave a vanishing eigenvalue at ±ε·λ_max);
    0 up to rounding when XᵀX is singular (p > rank)."""
    eig = torch.linalg.eigvalsh(x.T.to(DTYPE) @ x.to(DTYPE))
    return float(eig.abs().min() / eig.abs().max())


def gd_steps_to_min_norm(x: torch.Tensor, y: torch.Tensor, tolerance: float) -> float:
    """Steps full-batch GD on (1/2n)‖Xw − y‖² from w = 0 with step 1/λ_max(XᵀX/n) needs until
    ‖w_t − X⁺y‖/‖X⁺y‖ ≤ `tolerance`, exactly, from the SVD X = U S Vᵀ: w_t − X⁺y = −Σ (1 − s_i²/s_1²)^t c_i v_i
    with c_i = u_iᵀy/s_i over the singular values above the rank tolerance (the row space GD moves in).
    """
    u, s, _ = torch.linalg.svd(x.to(DTYPE), full_matrices=False)
    keep = s > rank_tolerance(s, tuple(x.shape))
    s, coef = s[keep], (u[:, keep].T @ y.to(DTYPE)) / s[keep]
    log_rate = torch.log1p(-(s / s[0]) ** 2)[1:]  # the top mode is solved in one step (rate 0)
    weight = coef[1:] ** 2 / (coef ** 2).sum()

    def relative_error(t: float) -> float:
        return float(torch.sqrt((weight * torch.exp(2 * t * log_rate)).sum()))

    hi = 1.0
    while relative_error(hi) > tolerance:
        hi *= 2
    lo = hi / 2 if hi > 1 else 0.0
    while hi - lo > 1:  # smallest integer t with relative_error(t) ≤ tolerance
        mid = math.floor((lo + hi) / 2)
        lo, hi = (mid, hi) if relative_error(mid) > tolerance else (lo, mid)
    return float(hi)


def standardised_columns(x: torch.Tensor) -> torch.Tensor:
    """Each column centred and scaled to unit variance over the rows; constant columns (variance 0) dropped."""
    sd = x.std(dim=0)
    kept = sd > 0
    return (x[:, kept] - x[:, kept].mean(dim=0)) / sd[kept]


def decorrelated_columns(x: torch.Tensor, *, seed: int) -> torch.Tensor:
    """Each column permuted across the rows independently: every column keeps its values (marginals),
    the dependence between columns (pixels) is destroyed."""
    gen = _generator(seed)
    order = torch.stack([torch.randperm(len(x), generator=gen) for _ in range(x.shape[1])], dim=1)
    return torch.gather(x, 0, order.to(x.device))


# ---------------------------------------------------------------- implicit sparse regularisation (seed 002)


def effective_nonzeros(w: torch.Tensor) -> torch.Tensor:
    """(‖w‖₁/‖w‖₂)² along the last axis: the number of non-zero entries of a vector whose entries are ±c,
    and a smooth count otherwise (between 1 and the length); a vector spread over many small entries counts many."""
    return (w.abs().sum(dim=-1) / w.norm(dim=-1)) ** 2


def hadamard_descent(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    init: float,
    lr: float,
    steps: int,
    observe_every: int = 1,
    observe: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """GD on (1/2n)‖Xw − y‖² over w = u⊙u − v⊙v from u = v = `init`·1 (Vaškevičius, Kanade & Rebeschini 2019):
    with g = Xᵀ(Xw − y)/n the gradients are 2u⊙g and −2v⊙g, so u ← u⊙(1 − 2ηg), v ← v⊙(1 + 2ηg).

    A small `init` makes every coordinate start near 0 and grow multiplicatively at a rate set by its
    correlation with the residual. `observe(step, w)` runs every `observe_every` steps; returns the last w.
    """
    n, p = x.shape
    u = torch.full((p,), float(init), dtype=x.dtype, device=x.device)
    v = u.clone()
    for step in range(1, steps + 1):
        g = x.T @ (x @ (u * u - v * v) - y) / n
        u, v = u * (1 - 2 * lr * g), v * (1 + 2 * lr * g)
        if observe is not None and step % observe_every == 0:
            observe(step, u * u - v * v)
    return u * u - v * v


def log_log_slope(x, values) -> float:
    """Least-squares slope of log(values) on log(x): the exponent a of values ∝ x^a (e.g. a gap's rate in
    the width)."""
    return float(np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)[0])
