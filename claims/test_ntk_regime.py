"""The kernel regime of wide networks (seed 004: "Under small learning rate, (S)GD training ≡ Neural
Tangent Kernel (NTK) ... Finite width networks can deviate from the kernel regime"; Arora et al. 2019,
Theorem 3.2: "a fully-trained sufficiently wide net is indeed equivalent to the kernel regression
predictor using NTK"), and Arora et al.'s remark "the random feature methods for approximating CNTK in
earlier work do not compute good approximations, which is clear from their much worse performance on
CIFAR".

`test_gd_trained_net_matches_ntk_regression` (claims 1 and 2 share the trained networks): Arora et al.'s
fully-connected ReLU net, eq. (6) (`finite_ntk.FullyConnectedNTKNet`: one hidden layer of `width`
units, weights N(0, 1), no biases), as an antisymmetric pair (`finite_ntk.AntisymmetricPair`, see
ZERO_START), trained by full-batch gradient descent on the squared loss (`train.fit`: batch = n_train,
no momentum) on n_train unit-norm MNIST images with odd/even one-hot targets, `trials`
initialisations per width (seeds seed + 1000·t). f_ntk is kernel regression with the analytic NTK Θ
(`linear.fully_connected_relu_ntk`) on the same targets; every CI is a t-interval over the trials.
  claim 1  gap = ‖f_nn − f_ntk‖ / ‖f_ntk‖ on held-out images is small at the widest width (≤ MATCHES),
           and it falls with width (per trial: slope of log gap on log width, < 0).
           Control: the width-16 nets do not match (their gap lands above MATCHES).
  claim 2  the empirical NTK moves during training at width 16: ‖Θ̂_T − Θ̂_0‖ / ‖Θ̂_0‖ ≥ LEAVES_KERNEL,
           and the move shrinks with width (slope < 0, over the same widths as claim 1's slope). Control:
           the widest nets' kernels do not move that much.
  Precondition of both controls (asserted, not a claim): every net, width 16 included, fits its training
  targets (relative train residual ≤ MATCHES, the gap on the training images, where f_ntk = Y), so the
  width-16 held-out gap is not under-training.
`test_random_features_worse_than_exact_cntk` (claim 3): see its docstring.
"""

import numpy as np
import torch

from dlclaims import data, linear, stats, train
from dlclaims.baselines import binomial, conditioned, spread
from dlclaims.cntk import cntk_predictions
from dlclaims.finite_ntk import AntisymmetricPair, FullyConnectedNTKNet, empirical_ntk, ntk_regression
from dlclaims.models.vanilla_cnn import VanillaCNN
from dlclaims.verdict import Finding, at_least, at_most

SOURCE = "Arora et al. 2019, Theorem 3.2 and §1 (seed 004)"

# Claim 1. Theorem 3.2: |f_nn(x_te) − f_ntk(x_te)| ≤ ε for every ε once the width is large enough; the
# seed gives no ε. We read "equivalent" at a finite width as a relative L2 gap of at most 10 % over the
# held-out predictions (the net's predicted class then agrees with the kernel's on nearly every image:
# recorded). The gap must also fall with width: "→ 0 as width grows" (Theorem 3.2's m ≥ poly(1/ε)).
MATCHES = 0.10
# Both "falls with width" slopes (gap, kernel move) are fitted over the same widths: PROTOCOL's `widths`, without
# the control width, which is judged on its own (its nets are the controls' arm, not a point of the trend).
FALLS = at_most(0.0)  # slope of log(gap) (or log(kernel move)) on log(width): negative
# The control reads a large held-out gap at the control width as a different function, not as under-training:
# on the training images, where f_ntk(X) = Y (the kernel interpolant), the same nets must match it, i.e. their
# relative train residual ‖f_nn(X) − Y‖/‖Y‖ (the gap on the training images) is within MATCHES at every width.
PARITY_CLASSES = 2  # odd/even MNIST digits, one-hot targets
# Claim 3. "Much worse performance on CIFAR" (Arora et al. §1): the seed's only size for the gap between the
# exact kernels and earlier approximate ones is "10% higher than the methods reported in [Novak et al., 2019]"
# (CNTK-GAP 77.43 % vs Novak et al.'s Monte-Carlo estimated kernels, seed 004 §1 and §6). We read "much worse" as
# at least half that gap: exact − random-feature accuracy ≥ 5 points, fixed before measuring (the previous
# revision asserted the direction only, ≥ 0).
MUCH_WORSE = 0.05
# Claim 2. "Finite width networks can deviate from the kernel regime": the kernel regime is a fixed
# kernel (Θ̂_T = Θ̂_0). We read "deviate" as a move of the empirical NTK by at least 10 % of its norm
# during training: as large as the whole tolerance we allow for "equivalent" in claim 1.
LEAVES_KERNEL = 0.10
# ZERO_START. Theorem 3.2 multiplies the output by a small κ only to make the initial output small
# (Arora et al.: "we would like the initial output of the neural network to be small"). We make it
# exactly 0 with the antisymmetric pair f = (g_a − g_b)/√2, g_b = g_a at initialisation (Chizat et al.
# 2019), whose empirical NTK at initialisation is that of one width-`width` net; κ = 1. Measured with
# Arora's κ instead (i.i.d. initialisation, one net of `width` units, one trial, a data draw of the
# same sizes, same steps): κ = 1 leaves a gap of 0.59 / 0.57 / 0.56 at widths 256 / 1,024 / 4,096 (the
# initial output's regression residual, which no width removes); κ = 0.1 gives 0.17 / 0.12 / 0.089,
# still falling, but its kernels move by 127 / 64 / 22 % (laziness 1/(κ√m)): deciding the claim with κ
# needs widths far beyond the CPU budget. The pair departs from the theorem's letter, not its mechanism.
# "Small learning rate": lr = rate · n·C / (2·λ_max(Θ)), i.e. gradient descent moves the top kernel
# mode by `rate` of its residual per step: half of GD's stability limit (Lee et al. 2019); the final
# predictor of the linearised dynamics does not depend on the rate (stated, not tuned).

# Units: images; image_size = side after area downsampling (MNIST 7×7: 49 inputs); width = hidden units
# of each copy of the pair; steps = full-batch GD steps.
PROTOCOL = {
    "smoke": {
        "regime": {  # ≈ 20 CPU-seconds (one thread): 3 trials × widths 16, 128, 512, 2048 × 500 steps
            "image_size": 7,
            "n_train": 100,
            "n_test": 200,
            "widths": (128, 512, 2048),  # the widest is the one claim 1 judges
            "control_width": 16,
            "trials": 3,
            "steps": 500,  # the analytic kernel's own GD is then 1 % (relative) from its limit: recorded
            "rate": 1.0,
            "kernel_points": 50,  # training images the empirical NTK is measured on (Jacobians: memory, time)
        },
        "random_features": {  # ≈ 12 CPU-seconds; the size of test_cntk_gap_beats_cntk_v's smoke protocol
            "image_size": 8,
            "n_train": 200,
            "n_test": 500,
            "depth": 3,  # the shallowest of Arora's Table 1 rows (64.47 % CNTK-V at 32×32, all images)
            # Channels of the random-feature CNN: the approximation's own accuracy knob (→ the CNTK as it
            # grows). Chosen for the CPU budget, not from the result; scalar output, as the CNTK's.
            "widths": (32, 128),
            "draws": 3,
            "kernel_dtype": torch.float32,
            # width → Finding (offsets 0-4) where "much worse" is not reproduced. Width 32: +2.6…+6.3 points at
            # offsets 0-4, inconclusive at each (no finding). Width 128: +0.3…+2.5, CI below 5 points at offsets
            # 2-4 (range widened by ~1.3 points on either side).
            "findings": {128: Finding(-0.01, 0.04, "the Monte-Carlo CNTK of one width-128 CNN (depth 3, CIFAR-10 "
                                      "8×8, 200 train images) is only +0.3…+2.5 points below the exact CNTK-V at "
                                      "offsets 0-4 (CI upper ends 3.1-4.9 points at offsets 2-4), not 5 or more: at "
                                      "this size the approximation is close; the gap shrinks with width (width 32: "
                                      "+2.6…+6.3)")},
        },
    },
    "full": {
        "regime": {
            "image_size": 14,
            "n_train": 200,
            "n_test": 1000,
            "widths": (256, 1024, 4096, 16384),
            "control_width": 16,
            "trials": 5,
            "steps": 3000,
            "rate": 1.0,
            "kernel_points": 32,
        },
        "random_features": {
            "image_size": 32,
            "n_train": 2000,
            "n_test": 2000,
            "depth": 3,
            "widths": (32, 128, 512),
            "draws": 3,
            "kernel_dtype": torch.float64,
            "findings": {},  # not measured at full scale
        },
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet).
COST = {
    "test_gd_trained_net_matches_ntk_regression": {
        "smoke": {"gpu_s": 30, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 900, "peak_gib": 12, "measured_on": "estimate"},
    },
    "test_random_features_worse_than_exact_cntk": {
        "smoke": {"gpu_s": 20, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 1500, "peak_gib": 30, "measured_on": "estimate"},
    },
}


def test_gd_trained_net_matches_ntk_regression(device, protocol, seed, claim, baseline):
    spec = protocol["regime"]
    # Theorem 3.2 assumes ‖x‖ = 1; centring removes the common direction that would dominate the kernel and slow GD.
    x_train, digits_train, x_test, digits_test = data.prepare("mnist", device=device, seed=seed,
                                                              n_train=spec["n_train"], n_test=spec["n_test"],
                                                              image_size=spec["image_size"])
    x_train, x_test = data.centred_unit_norm(x_train, x_test)
    y_train, y_test = digits_train % PARITY_CLASSES, digits_test % PARITY_CLASSES
    n, d = x_train.shape
    targets = torch.nn.functional.one_hot(y_train, PARITY_CLASSES).double()
    k_train = linear.fully_connected_relu_ntk(x_train, x_train)
    k_test = linear.fully_connected_relu_ntk(x_test, x_train)
    f_ntk = k_test @ linear.kernel_interpolant(k_train, targets)
    eig = torch.linalg.eigvalsh(k_train)
    lr = spec["rate"] * n * PARITY_CLASSES / (2 * float(eig[-1]))
    steps, trials = spec["steps"], spec["trials"]
    # The analytic kernel's own gradient descent after `steps` (train.fit's loss is the mean over n·C
    # squared errors: kernel GD on (1/2n)Σ(f − y)² with step 2·lr/C): how far `steps` is from the limit.
    truncated = k_test @ linear.kernel_gradient_descent(k_train, targets, lr=2 * lr / PARITY_CLASSES, steps=steps)
    truncation = linear.relative_distance(truncated, f_ntk)
    config = train.TrainConfig(epochs=steps, batch_size=n, optimizer="sgd", lr=lr, momentum=0.0, loss="mse",
                               stop_at_train_accuracy=None, log_every=None)
    probe = x_train[: spec["kernel_points"]].float()

    widths = (spec["control_width"],) + tuple(spec["widths"])
    gap = np.zeros((len(widths), trials))
    kernel_move = np.zeros_like(gap)
    agreement = np.zeros_like(gap)
    init_error = np.zeros_like(gap)
    train_residual = np.zeros_like(gap)
    k_probe = k_train[: spec["kernel_points"], : spec["kernel_points"]]
    for i, width in enumerate(widths):
        for t in range(trials):
            torch.manual_seed(seed + 1000 * t)
            net = AntisymmetricPair(FullyConnectedNTKNet(d, width=width, num_outputs=PARITY_CLASSES)).to(device)
            kernel_before = empirical_ntk(net, probe)
            train.fit(net, x_train.float(), y_train, config, seed=seed + 1000 * t)
            kernel_after = empirical_ntk(net, probe)
            f_nn = train.predict(net, x_test.float()).double()
            gap[i, t] = linear.relative_distance(f_nn, f_ntk)
            kernel_move[i, t] = linear.relative_distance(kernel_after, kernel_before)
            agreement[i, t] = float((f_nn.argmax(dim=1) == f_ntk.argmax(dim=1)).double().mean())
            init_error[i, t] = linear.relative_distance(kernel_before, k_probe)
            train_residual[i, t] = linear.relative_distance(train.predict(net, x_train.float()).double(), targets)

    n_test = len(y_test)
    tag = (f"one-hidden-layer ReLU net (NTK parameterisation, antisymmetric pair), full-batch GD {steps} steps, "
           f"MNIST {spec['image_size']}×{spec['image_size']} unit-norm, odd/even, n_train={n}, {n_test} held-out")

    # Baselines before any claim: float32 training, so the seed-to-seed sd of each mean sets the tolerance.
    numbers = {"lr": conditioned(lr, float(eig[-1] / eig[0]), "step from the analytic kernel's top eigenvalue"),
               "truncation": conditioned(truncation, float(eig[-1] / eig[0]) * steps, "float64 kernel GD")}
    for i, width in enumerate(widths):
        for name, values in (("gap", gap[i]), ("kernel_move", kernel_move[i])):
            numbers[f"{name}_width{width}"] = spread(float(values.mean()), float(values.std(ddof=1) / np.sqrt(trials)),
                                                     f"mean over {trials} trained nets")
    numbers[f"agreement_width{widths[-1]}"] = binomial(float(agreement[-1].mean()), n_test,
                                                       "fraction of held-out images where net and kernel agree")
    baseline.check(numbers)

    claim.record(f"{tag}: analytic NTK's own GD after {steps} steps vs its limit (relative gap)", truncation,
                 condition_number=float(eig[-1] / eig[0]), lr=lr)
    for i, width in enumerate(widths):
        claim.record(f"{tag}: width {width}: relative prediction gap ‖f_nn − f_ntk‖/‖f_ntk‖", stats.mean_ci(gap[i]),
                     trials=trials, per_trial=gap[i].tolist(),
                     class_agreement=agreement[i].tolist(),
                     kernel_error_at_init=init_error[i].tolist())
        claim.record(f"{tag}: width {width}: relative move of the empirical NTK during training",
                     stats.mean_ci(kernel_move[i]), trials=trials, per_trial=kernel_move[i].tolist())

    main = slice(1, None)  # the trend's widths: PROTOCOL's `widths` (the control width apart)
    widest = widths[-1]
    # Precondition of the controls (not a seed claim): every net fits its training targets, so the control width's
    # held-out gap is not under-training (on the training images f_ntk = Y, so this is the gap there).
    assert train_residual.max() <= MATCHES, (
        f"a net does not fit its training targets (relative train residual {train_residual.max():.3g} > {MATCHES}): "
        f"per width {dict(zip(widths, train_residual.max(axis=1).round(4).tolist()))}")
    for i, width in enumerate(widths):
        claim.record(f"{tag}: width {width}: relative train residual ‖f_nn(X) − Y‖/‖Y‖ (the gap on the training "
                     f"images; all ≤ {MATCHES:g})", stats.mean_ci(train_residual[i]), trials=trials,
                     per_trial=train_residual[i].tolist())
    matches = at_most(MATCHES)
    claim.check(f"{tag}: width {widest}: the trained net matches NTK regression (relative prediction gap)",
                stats.mean_ci(gap[-1]), matches, trials=trials, theorem="Arora et al. Theorem 3.2",
                class_agreement=agreement[-1].tolist())
    claim.check(f"{tag}: the prediction gap falls with width (slope of log gap on log width, widths "
                f"{widths[main]})",
                stats.mean_ci([linear.log_log_slope(widths[main], gap[main, t]) for t in range(trials)]), FALLS,
                trials=trials)
    claim.control(f"{tag}: width {widths[0]}: the trained net matches NTK regression (relative prediction gap)",
                  stats.mean_ci(gap[0]), matches, trials=trials)

    leaves = at_least(LEAVES_KERNEL)
    claim.check(f"{tag}: width {widths[0]}: the empirical NTK moves during training (leaves the kernel regime)",
                stats.mean_ci(kernel_move[0]), leaves, trials=trials, source="seed 004 (practical's slides)")
    claim.check(f"{tag}: the kernel's move shrinks with width (slope of log move on log width, widths "
                f"{widths[main]})",
                stats.mean_ci([linear.log_log_slope(widths[main], kernel_move[main, t]) for t in range(trials)]),
                FALLS, trials=trials,
                source="seed 004 (practical's slides)")
    claim.control(f"{tag}: width {widest}: the empirical NTK moves during training (leaves the kernel regime)",
                  stats.mean_ci(kernel_move[-1]), leaves, trials=trials, source="seed 004 (practical's slides)")


def test_random_features_worse_than_exact_cntk(device, protocol, seed, claim, baseline):
    """Claim 3: the exact CNTK-V classifies CIFAR-10 better than its random-feature approximation.

    Reading of "the random feature methods for approximating CNTK in earlier work": the Monte-Carlo
    estimate of the CNTK by one finite, randomly initialised network of the same architecture — Arora et
    al.'s arXiv v1 abstract names it: "[Lee et al., 2019] gave heuristic Monte Carlo methods to estimate
    the NTK and its extension, CNTK ... earlier Monte Carlo approximation can degrade the performance
    significantly". That is the empirical NTK Θ̂(x, x') = ⟨∂f(x; θ₀)/∂θ, ∂f(x'; θ₀)/∂θ⟩ of a
    `VanillaCNN` (NTK parameterisation, scalar output), i.e. kernel regression on the random features
    φ(x) = ∂f(x; θ₀)/∂θ (`finite_ntk.ntk_regression`). Its expectation over θ₀ is the CNTK-V
    (`dlclaims.cntk`, same depth); the randomness is the draw θ₀ (`draws` draws per width, seeds
    seed + 1000·t). Both classifiers: Arora et al.'s kernel regression (one-hot − 0.1 targets).
      claim    exact − random-feature test accuracy ≥ MUCH_WORSE (5 points: half the seed's 10-point gap
               between exact and Monte-Carlo kernels) at each width (paired: the same test images; CI:
               hierarchical bootstrap over the draws and the test images).
      control  a CNTK-V fitted to shuffled training labels − the widest random features (far below 5 points).
    """
    spec = protocol["random_features"]
    size, depth = spec["image_size"], spec["depth"]
    x_train, y_train, x_test, y_test = data.prepare("cifar10", device=device, seed=seed, n_train=spec["n_train"],
                                                    n_test=spec["n_test"], image_size=size)
    n_test = len(y_test)
    shuffled = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed)).to(y_train.device)]
    exact, null = cntk_predictions(x_train, [y_train, shuffled], x_test, [depth], device=device,
                                   dtype=spec["kernel_dtype"])
    exact_hits = stats.to_numpy(exact[depth].to(y_test.device) == y_test, float)[None]
    null_hits = stats.to_numpy(null[depth].to(y_test.device) == y_test, float)[None]
    draws = spec["draws"]
    feature_hits = {}
    for width in spec["widths"]:
        rows = []
        for t in range(draws):
            torch.manual_seed(seed + 1000 * t)
            model = VanillaCNN(x_train.shape[1], depth=depth, width=width, image_size=size, num_classes=1,
                               parameterization="ntk").to(device)
            rows.append(stats.to_numpy(ntk_regression(model, x_train, y_train, x_test) == y_test, float))
        feature_hits[width] = np.stack(rows)

    tag = f"CIFAR-10 {size}×{size}, n_train={len(y_train)}, {n_test} test images, depth {depth}"
    baseline.check({"exact_cntk_v": binomial(float(exact_hits.mean()), n_test, "accuracy of CNTK-V regression"),
                    **{f"random_features_width{w}": binomial(
                        float(h.mean()), n_test, f"mean accuracy over {draws} random-feature draws",
                        seed_sd=float(h.mean(axis=1).std(ddof=1) / np.sqrt(draws)))
                       for w, h in feature_hits.items()}})
    claim.record(f"{tag}: exact CNTK-V", stats.accuracy(exact_hits[0]), unit="%")
    for width, hits in feature_hits.items():
        claim.record(f"{tag}: random features (empirical NTK of one width-{width} CNN)",
                     stats.trials_ci(hits, seed=seed), unit="%", trials=draws)
    much_worse = at_least(MUCH_WORSE)
    for width, hits in feature_hits.items():
        claim.check(f"{tag}: exact CNTK-V − random-feature approximation (width {width}) test accuracy: much "
                    f"worse (≥ {MUCH_WORSE:.0%})", stats.trials_ci(exact_hits, hits, seed=seed), much_worse,
                    unit="%", trials=draws, finding=spec["findings"].get(width))
    widest = spec["widths"][-1]
    claim.control(f"{tag}: CNTK-V fitted to shuffled training labels − random features (width {widest})",
                  stats.trials_ci(null_hits, feature_hits[widest], seed=seed), much_worse, unit="%", trials=draws)
