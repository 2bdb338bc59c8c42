"""Implicit bias of gradient descent, as seed 002 interprets its experiments:

  "Early stopping is crucial for gradient descent to converge to a sparse model, a phenomenon that is called
  *implicit sparse regularization*." (the mechanism of Vaškevičius, Kanade & Rebeschini 2019, "Implicit
  regularization for optimal sparse recovery");
  "CNNs are also sparsity inducing regularizers, which induce sparsity more aggressively as the depth
  increases." (Gunasekar, Lee, Soudry & Srebro 2018, "Implicit bias of gradient descent on linear
  convolutional networks": GD on depth-L linear convnets with full-width circular filters converges in
  direction to a stationary point of min ‖β̂‖_{2/L} subject to unit margins, β̂ the predictor's Fourier transform).

The seed gives neither setting; each test takes the cited paper's construction at a CPU size:
  claim    noisy k-sparse regression with n < p, GD on w = u⊙u − v⊙v from a small init, stopped at the lowest
           loss on a held-out set: the stopped iterate is a sparse model in the cited paper's sense (optimal
           sparse recovery): its estimation error ‖w − w*‖₂ is within the k-sparse rate σ√(k log p / n);
  control  the same run continued until it interpolates the noise is not (early stopping is crucial); that it
           interpolates is a precondition (asserted);
  control  plain GD on w, stopped by the same rule, is not either (it stays in the row space of X: the sparse
           recovery comes from GD on this parametrisation, stopped early);
  recorded the σ = 1 arm (the same problems with twice the noise, stopped by the same rule; σ was 1 at first,
           see PROTOCOL) and the
           effective non-zeros (‖w‖₁/‖w‖₂)² of every iterate (the previous revision's metric);
  claim    linear convnets of depth 1-4 trained by GD on the logistic loss (separable data): the effective number
           of Fourier frequencies of the end-to-end predictor falls with each added layer;
  control  their predictors do not get sparser in the input (time) domain with depth: the sparsity is the
           Fourier-domain sparsity the paper predicts, not a shrinking predictor. That every net separates its
           data (the paper's setting) is a precondition (asserted).
Each draw is an independent problem (data, noise, truth and initialisation); CIs are t-intervals over draws.
"""

import math

import numpy as np
import torch

from dlclaims import linear, stats, theory
from dlclaims.baselines import conditioned, trajectory
from dlclaims.verdict import at_most

SOURCE = "seed 002 (Interpretation paragraphs); Vaškevičius et al. 2019; Gunasekar et al. 2018"

# "Converge to a sparse model", in the sense of the paper the seed's term comes from (Vaškevičius et al., "optimal
# sparse recovery"): the estimate is as close to the k-sparse truth as k-sparse estimation allows, i.e. ‖w − w*‖₂ at
# most the rate their stopped GD attains, σ√(k log p / n) (their bound ‖w − w*‖₂² ≲ σ²k log p / n; constant taken 1,
# fixed before measuring). No dense estimate gets there with n ≪ p (the min-ℓ2 interpolant misses w* by
# ~‖w*‖√(1 − n/p)). The previous revision asserted effective non-zeros (‖w‖₁/‖w‖₂)² ≤ 2k, which barely separated the
# interpolant (12-15) from the stopped iterate (5): now recorded only.
RATE_CONSTANT = 1.0
# "Run to convergence": the continued run interpolates the noise, train MSE at most 1 % of the noise variance.
INTERPOLATES = 0.01

# Units: n samples, p coefficients, k true non-zeros, d input dimension, steps = full-batch GD steps.
PROTOCOL = {
    "smoke": {  # ~10 s each on one CPU thread
        # Noise 0.5 puts the signal (|w*_i| = 1) 5.4× above the noise level σ√(2 log p / n), the regime of
        # Vaškevičius et al.'s theorem (w*_min ≳ σ√(log p / n)); it was 1 at first, where the stopped iterate kept
        # noise coordinates of ~0.2 in 2 of 3 draws (effective non-zeros 10-13 > 2k, signal 2.7× the noise level):
        # the claim is asserted in the theorem's regime only, and σ = 1 (`recorded_noise`) stays as a recorded arm
        # on the same problems (same X, w*, noise draw ×2), run `recorded_steps` only: its held-out minimum came at
        # steps 170-340 (offsets 0-4; 180-660 at σ = 0.5), so 1,000 steps hold it at a tenth of the cost. Measured
        # in this arm (5 draws, offsets 0-4): ‖w − w*‖₂ 0.25-0.33 (mean; its rate σ√(k log p / n) = 0.59),
        # effective non-zeros 5.0-7.8 per draw.
        # Step 0.05 = 1/(20 max|w*_i|) as the theorem asks.
        "sparse": {"n": 100, "n_val": 100, "p": 1000, "k": 5, "noise": 0.5, "recorded_noise": 1.0,
                   "recorded_steps": 1000, "init": 1e-6, "lr": 0.05, "steps": 10000, "check_every": 10, "draws": 5,
                   "plain_gd_steps": 200},
        # n = 4 Gaussian points in d = 16 with random ±1 labels (separable); filters N(0, (0.5²/d)); 3,000 steps
        # (the effective supports move by ~1 % between steps 1,500 and 3,000, measured at lr 0.1); lr 0.5 diverged at
        # depth 4 and lr 0.1 in one of 30 draws at seed offset 2 (NaN), so lr 0.05 (no divergence at offsets 0-4).
        # 30 draws (batched: the cost of 10): with 10, depth 4 − 3 was inconclusive ([−1.9, 0.5]) and the control's
        # CI [0.10, 2.6] close to 0, so the draws were raised for precision, not for a direction.
        "convnet": {"d": 16, "n": 4, "depths": [1, 2, 3, 4], "draws": 30, "init_scale": 0.5, "lr": 0.05,
                    "steps": 3000},
    },
    "full": {  # minutes on a CPU
        "sparse": {"n": 500, "n_val": 500, "p": 10000, "k": 25, "noise": 0.5, "recorded_noise": 1.0,
                   "recorded_steps": 4000, "init": 1e-6, "lr": 0.05, "steps": 20000, "check_every": 10, "draws": 10,
                   "plain_gd_steps": 200},
        "convnet": {"d": 32, "n": 8, "depths": [1, 2, 3, 4, 5], "draws": 20, "init_scale": 0.5, "lr": 0.05,
                    "steps": 20000},
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`). Estimates (no GPU
# run): both are thousands of tiny sequential steps, launch-bound on a GPU.
COST = {
    "test_early_stopping_sparse_recovery": {
        "smoke": {"gpu_s": 15, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 120, "peak_gib": 2, "measured_on": "estimate"},
    },
    "test_linear_convnet_fourier_sparsity_grows_with_depth": {
        "smoke": {"gpu_s": 15, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 150, "peak_gib": 1, "measured_on": "estimate"},
    },
}


def _sparse_problem(n: int, n_val: int, p: int, k: int, seed: int, device):
    """Gaussian X (n × p) and a held-out X_val, w* with k entries ±1 at random positions, and the standard normal
    noise draws ξ, ξ_val: the targets at noise level σ are y = Xw* + σξ (the same ξ for every σ)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=gen, dtype=linear.DTYPE)
    x_val = torch.randn(n_val, p, generator=gen, dtype=linear.DTYPE)
    truth = torch.zeros(p, dtype=linear.DTYPE)
    truth[torch.randperm(p, generator=gen)[:k]] = torch.where(torch.rand(k, generator=gen) < 0.5, -1.0, 1.0).double()
    xi = torch.randn(n, generator=gen, dtype=linear.DTYPE)
    xi_val = torch.randn(n_val, generator=gen, dtype=linear.DTYPE)
    return tuple(t.to(device) for t in (x, x_val, truth, xi, xi_val))


def _validation_stopper(x_val, y_val):
    """An `observe(step, w)` that keeps the iterate with the lowest held-out MSE (early stopping's choice)."""
    best = {"mse": math.inf, "w": None, "step": 0}

    def observe(step, w):
        mse = linear.mse(x_val, w, y_val)
        if mse < best["mse"]:
            best.update(mse=mse, w=w.clone(), step=step)
    return observe, best


def test_early_stopping_sparse_recovery(device, protocol, seed, claim, baseline):
    spec = protocol["sparse"]
    n, p, k, noise, draws = spec["n"], spec["p"], spec["k"], spec["noise"], spec["draws"]
    louder = spec["recorded_noise"]
    keys = ("stopped", "final", "plain", "stopped_error", "final_error", "plain_error", "final_train_mse", "stop_step",
            "louder_stopped", "louder_stopped_error", "louder_stop_step")
    v = {key: [] for key in keys}
    for d in range(draws):
        x, x_val, truth, xi, xi_val = _sparse_problem(n, spec["n_val"], p, k, seed + 1000 * d, device)
        y, y_val = x @ truth + noise * xi, x_val @ truth + noise * xi_val
        observe, stopped = _validation_stopper(x_val, y_val)
        final = linear.hadamard_descent(x, y, init=spec["init"], lr=spec["lr"], steps=spec["steps"],
                                        observe_every=spec["check_every"], observe=observe)
        plain_observe, plain = _validation_stopper(x_val, y_val)
        linear.least_squares_descent(x, y, lr=linear.sgd_step_size(x), epochs=spec["plain_gd_steps"],
                                     observe=plain_observe)
        louder_observe, louder_stopped = _validation_stopper(x_val, x_val @ truth + louder * xi_val)
        linear.hadamard_descent(x, x @ truth + louder * xi, init=spec["init"], lr=spec["lr"],
                                steps=spec["recorded_steps"], observe_every=spec["check_every"], observe=louder_observe)
        for prefix, iterate in (("stopped", stopped["w"]), ("final", final), ("plain", plain["w"]),
                                ("louder_stopped", louder_stopped["w"])):
            v[prefix].append(float(linear.effective_nonzeros(iterate)))
            v[f"{prefix}_error"].append(float((iterate - truth).norm()))
        v["final_train_mse"].append(linear.mse(x, final, y))
        v["stop_step"].append(stopped["step"])
        v["louder_stop_step"].append(louder_stopped["step"])
    v = {key: np.array(values, dtype=float) for key, values in v.items()}
    setting = (f"y = Xw* + ε, X {n} × {p} Gaussian, w* {k}-sparse (±1), σ = {noise:g}, {draws} draws; GD on "
               f"w = u⊙u − v⊙v from {spec['init']:g}, step {spec['lr']:g}")
    rate = RATE_CONSTANT * noise * math.sqrt(k * math.log(p) / n)

    # Precondition of the first control (not a seed claim): run long enough, GD interpolates the noise.
    assert v["final_train_mse"].max() <= INTERPOLATES * noise ** 2, (
        f"the continued run does not interpolate: train MSE {v['final_train_mse'].tolist()} > {INTERPOLATES:g}·σ²")
    claim.record(f"{setting}, run {spec['steps']} steps: train MSE (interpolates the noise: ≤ {INTERPOLATES:g}·σ², "
                 "asserted)", stats.mean_ci(v["final_train_mse"]), trials=draws)
    recovers = at_most(rate)
    error_words = f"‖w − w*‖₂ within the k-sparse rate σ√(k log p / n) = {rate:.3f}"
    claim.check(f"{setting}, stopped at the lowest held-out MSE ({spec['n_val']} points): a sparse model, "
                f"{error_words}", stats.mean_ci(v["stopped_error"]), recovers, trials=draws,
                stop_step=v["stop_step"].tolist(), effective_nonzeros=v["stopped"].tolist())
    claim.control(f"{setting}, run {spec['steps']} steps (to interpolation, no early stopping): a sparse model, "
                  f"{error_words}", stats.mean_ci(v["final_error"]), recovers, trials=draws,
                  effective_nonzeros=v["final"].tolist())
    claim.control(f"{setting} but plain GD on w from 0 (step 1/λ_max), stopped by the same rule: a sparse model, "
                  f"{error_words}", stats.mean_ci(v["plain_error"]), recovers, trials=draws,
                  effective_nonzeros=v["plain"].tolist())
    claim.record(f"{setting}: effective non-zeros (‖w‖₁/‖w‖₂)² stopped / at interpolation (k = {k})",
                 stats.mean_ci(v["stopped"]), trials=draws, at_interpolation=stats.mean_ci(v["final"]).as_dict())
    louder_rate = RATE_CONSTANT * louder * math.sqrt(k * math.log(p) / n)
    claim.record(f"{setting.replace(f'σ = {noise:g}', f'σ = {louder:g}')} (recorded arm, {spec['recorded_steps']} "
                 f"steps), stopped at the lowest held-out MSE: ‖w − w*‖₂ (its k-sparse rate {louder_rate:.3f})",
                 stats.mean_ci(v["louder_stopped_error"]), trials=draws, stop_step=v["louder_stop_step"].tolist(),
                 effective_nonzeros=v["louder_stopped"].tolist())
    # The multiplicative updates amplify rounding like a product over the steps: no conditioning bound applies, so
    # the numbers are trajectory-exact on this code path only; the stopping step is the validation argmin.
    plain_gd = "plain GD on a well-conditioned Gaussian design (κ(XXᵀ) ≈ 4)"
    baseline.check({key: trajectory(values, "GD iterate on the Hadamard parametrisation (multiplicative updates)")
                    for key, values in v.items() if not key.startswith("plain")}
                   | {key: conditioned(v[key], 10 * spec["plain_gd_steps"], plain_gd, scale=float(v[key].min()))
                      for key in ("plain", "plain_error")})


def test_linear_convnet_fourier_sparsity_grows_with_depth(device, protocol, seed, claim, baseline):
    spec = protocol["convnet"]
    d, n, draws, depths = spec["d"], spec["n"], spec["draws"], spec["depths"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(draws, n, d, generator=gen, dtype=torch.float64).to(device)
    y = torch.where(torch.rand(draws, n, generator=gen) < 0.5, -1.0, 1.0).double().to(device)
    fourier, time_domain, losses = {}, {}, {}
    for depth in depths:
        init = torch.randn(draws, depth, d, generator=gen, dtype=torch.float64) * spec["init_scale"] / math.sqrt(d)
        weights, loss = theory.logistic_gradient_descent(theory.circular_convnet_predictor, init.to(device), x, y,
                                                         lr=spec["lr"], steps=spec["steps"])
        beta = theory.circular_convnet_predictor(weights)
        fourier[depth] = theory.fourier_effective_support(beta).cpu().numpy()
        time_domain[depth] = linear.effective_nonzeros(beta).cpu().numpy()
        losses[depth] = loss.cpu().numpy()
    # A diverged run gives NaN, whose CI would read as inconclusive: refuse it outright.
    assert all(np.isfinite(fourier[L]).all() for L in depths), "a convnet diverged (NaN predictor)"
    setting = (f"depth-L linear convnets with full-width circular filters, GD on the logistic loss, {n} Gaussian "
               f"points in d = {d} with random ±1 labels, {spec['steps']} steps, {draws} draws")
    sparser = at_most(0.0)  # one more layer: fewer effective frequencies
    for shallow, deep in zip(depths[:-1], depths[1:]):
        claim.check(f"{setting}: effective Fourier support of the predictor (‖β̂‖₁/‖β̂‖₂)², depth {deep} − depth "
                    f"{shallow} (sparser with depth: ≤ 0)", stats.mean_ci(fourier[deep] - fourier[shallow]), sparser,
                    trials=draws, shallow=float(fourier[shallow].mean()), deep=float(fourier[deep].mean()))
    # Precondition (the paper's setting, not a seed claim): every net separates its data, i.e. its final logistic loss
    # is below log 2 / n (then every margin is positive).
    largest_loss = float(max(loss.max() for loss in losses.values()))
    assert largest_loss < math.log(2) / n, f"a net does not separate its data (final logistic loss {largest_loss:.3g})"
    claim.record(f"{setting}: largest final logistic loss over nets (separates its data: < log 2 / n, asserted)",
                 largest_loss)
    # Control: in the input (time) domain the deeper predictors are no sparser; Fourier sparsity spreads them.
    shallowest, deepest = depths[0], depths[-1]
    claim.control(f"{setting}: effective support of the predictor in the input domain (‖β‖₁/‖β‖₂)², depth {deepest} − "
                  f"depth {shallowest} (sparser with depth: ≤ 0)",
                  stats.mean_ci(time_domain[deepest] - time_domain[shallowest]), sparser, trials=draws,
                  shallow=float(time_domain[shallowest].mean()), deep=float(time_domain[deepest].mean()))
    claim.record(f"{setting}: mean effective Fourier support by depth",
                 details_by_depth={str(L): float(fourier[L].mean()) for L in depths})
    # Thousands of GD steps through products of filters: trajectory-exact on this code path only.
    baseline.check({f"fourier_support_depth_{L}": trajectory(fourier[L], "effective Fourier support after GD")
                    for L in depths}
                   | {f"time_support_depth_{L}": trajectory(time_domain[L], "effective input-domain support after GD")
                      for L in depths})
