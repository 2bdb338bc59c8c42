"""Sivaprasad et al., "The curious case of convex neural networks" (arXiv 2006.05103), as
summarised in seed 002: an input-output-convex MLP (IOC-MLP: every weight after the first
layer non-negative, ELU, BatchNorm) resists noise that its unconstrained twin memorises.

  claim    (a) the constraint holds after training: every constrained weight ≥ 0;
  control      the twin's same weights are not all ≥ 0;
  claim    (b) each logit is convex in the input: no midpoint violation on random segments
               between test images (eval mode, float64);
  control      the twin violates it;
  claim    (c) random labels: the twin memorises them (100 % train accuracy) while the IOC-MLP's
               train accuracy stays far below under the same budget;
  control      the twin's train accuracy under the IOC-MLP's assertion;
  claim    (d) noisy labels (p = 0.2 .. 0.5): the IOC-MLP's generalisation gap (train accuracy on
               the noisy labels − clean test accuracy) is smaller than the twin's, CI excluding 0;
  control      a second twin (another seed) in place of the IOC-MLP: its gap is not smaller.

Paper numbers: the seed gives none, and the paper's tables could not be retrieved here, so the
claims are recorded as qualitative (paper=None): seed 002 says "IOC-NNs prevent the fitting of
random labelling and the training curve flattens as compared to MLPs which approach 0 training
loss".
"""

import math

import pytest
import torch
from scipy.stats import norm

from dlclaims import data, stats, train
from dlclaims.baselines import binomial, exact, trajectory
from dlclaims.models import count_parameters
from dlclaims.models.ioc import IOCMLP, midpoint_convexity_violations, min_constrained_weight, project_nonnegative

SOURCE = "Sivaprasad et al. 2021 (arXiv 2006.05103) via seed 002; qualitative (no paper numbers retrieved)"

# Units: images; epochs (passes over n_train); lr per Adam step; noise p = fraction of labels resampled.
PROTOCOL = {
    "smoke": {  # both claim files of issue 4 (Theorem 1, IOC-NN) within ~90 s single-thread CPU
        "dataset": "mnist", "image_size": 14, "full_train_size": None,  # 14×14 = 196 inputs
        "n_train": 1000,
        "n_test": 2000,
        "depth": 3, "width": 128,  # the paper's MLP is 3×800; narrower to fit the CPU budget
        # The twin fits random labels in 72-115 epochs (seed offsets 0-4; 100 was too few at offset 2,
        # 99.1 %); 150 leaves it room, and the
        # IOC-MLP, which never fits, gets the same 150.
        "budget": train.TrainConfig(epochs=150, batch_size=64, optimizer="adam", lr=1e-3),  # paper: lr 1e-4
        "noise_levels": (0.2, 0.5),
        "segments": 1000,  # random pairs of test images for the midpoint test
        "random_train_max": 0.5,  # "far below 100 %": the IOC-MLP fits at most half the random labels
        # A finding, not a pass: at this size the IOC-MLP memorises random labels too, only slower.
        "random_labels_xfail": "smoke (n=1000, 3×128, 150 epochs): the IOC-MLP fits random labels too "
                               "(96.9-98.6 % train at seed offsets 0-4; the twin 100 % after 72-115 epochs); "
                               "the paper's effect is at CIFAR-10 scale (50k images, 3×800), not reproduced "
                               "at n=1000",
        "noisy_labels_xfail": "smoke (n=1000, 3×128, 150 epochs): at p=0.2 the IOC-MLP's gap is 1.9-5.5 "
                              "points *larger* than the twin's (offsets 0-4; offset 0: 29.0 vs 27.1 %), while "
                              "a second twin differs from the twin by -1.6 to +4.0 points",
    },
    "full": {  # the paper's CIFAR-10 MLP (3×800, BatchNorm, Adam); needs all 50,000 images
        "dataset": "cifar10", "image_size": 32, "full_train_size": 50000,
        "n_train": None,
        "n_test": None,
        "depth": 3, "width": 800,
        "budget": train.TrainConfig(epochs=200, batch_size=64, optimizer="adam", lr=1e-4),
        "noise_levels": (0.2, 0.3, 0.4, 0.5),
        "segments": 5000,
        "random_train_max": 0.5,
        "random_labels_xfail": None,  # unverified here (needs a GPU and all 50,000 CIFAR-10 images)
        "noisy_labels_xfail": None,
    },
}


def prepare(protocol, device, seed):
    """Standardised, downsampled float images (train, test) and labels."""
    return data.prepare(protocol["dataset"], device=device, seed=seed, n_train=protocol["n_train"],
                        n_test=protocol["n_test"], train_size_required=protocol["full_train_size"],
                        image_size=protocol["image_size"])


def train_pair_member(convex: bool, x, y, protocol, seed):
    """An IOC-MLP (convex) or its twin, trained on (x, y) under the protocol's budget."""
    model = IOCMLP(x[0].numel(), depth=protocol["depth"], width=protocol["width"], convex=convex).to(x.device)
    history = train.fit(model, x, y, protocol["budget"], seed=seed,
                        after_step=project_nonnegative if convex else None)
    _, _, train_hits = train.evaluate(model, x, y)
    return model, history, train_hits


def gap_difference(train_hits_a, test_hits_a, train_hits_b, test_hits_b, level=stats.DEFAULT_LEVEL):
    """(train − test accuracy of a) − (train − test accuracy of b), with a normal interval.

    a and b are scored on the same points, so each split contributes the variance of its
    paired per-point differences; train and test points are independent of each other.
    """
    d_train = stats.to_numpy(train_hits_a, float) - stats.to_numpy(train_hits_b, float)
    d_test = stats.to_numpy(test_hits_a, float) - stats.to_numpy(test_hits_b, float)
    value = float(d_train.mean() - d_test.mean())
    se = math.sqrt(d_train.var(ddof=1) / d_train.size + d_test.var(ddof=1) / d_test.size)
    half = float(norm.ppf(0.5 + level / 2)) * se
    return stats.Estimate(value, value - half, value + half, int(d_train.size + d_test.size), "paired normal", level)


def test_ioc_resists_random_labels_and_stays_convex(device, protocol, seed, claim, baseline, request):
    x_train, y_train, x_test, _ = prepare(protocol, device, seed)
    random_labels, _ = data.corrupt_labels(y_train, 1.0, seed=seed + 1)
    ioc, ioc_history, ioc_hits = train_pair_member(True, x_train, random_labels, protocol, seed)
    twin, twin_history, twin_hits = train_pair_member(False, x_train, random_labels, protocol, seed)
    assert count_parameters(ioc) == count_parameters(twin)
    tag = f"MLP {protocol['depth']}×{protocol['width']} ELU+BN, {protocol['dataset']}, n={len(x_train)}"

    # (a) the projection keeps the constraint through training.
    ioc_min, twin_min = min_constrained_weight(ioc), min_constrained_weight(twin)
    claim.check(f"{tag}: IOC-MLP's constrained weights are all ≥ 0 after training", ioc_min,
                holds=ioc_min >= 0, threshold="min ≥ 0")
    claim.control(f"{tag}: the twin's corresponding weights are all ≥ 0", twin_min,
                  holds=twin_min >= 0, threshold="min ≥ 0")

    # (b) convex in the input: midpoint test on random segments between test images.
    n = protocol["segments"]
    ends = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed))[: 2 * n].to(device)
    violations = {name: midpoint_convexity_violations(m, x_test[ends[:n]], x_test[ends[n:]]) for name, m in
                  (("ioc", ioc), ("twin", twin))}
    ioc_viol, twin_viol = (stats.accuracy(v.flatten()) for v in (violations["ioc"], violations["twin"]))
    claim.check(f"{tag}: IOC-MLP logits are midpoint-convex on {n} random segments (violation rate)", ioc_viol,
                holds=ioc_viol.value == 0, threshold="no violation", unit="%")
    claim.control(f"{tag}: the twin's logits are midpoint-convex (violation rate)", twin_viol,
                  holds=twin_viol.value == 0, threshold="no violation", unit="%")

    # (c) random labels: the twin memorises, the IOC-MLP does not.
    ioc_acc, twin_acc = stats.accuracy(ioc_hits), stats.accuracy(twin_hits)
    limit = protocol["random_train_max"]
    claim.check(f"{tag}: twin memorises random labels (train accuracy)", twin_acc,
                holds=twin_acc.value == 1.0, threshold="= 100 %", unit="%",
                epochs_to_fit=twin_history.epochs_to_fit())
    claim.control(f"{tag}: the twin's train accuracy on random labels stays far below 100 %", twin_acc,
                  holds=twin_acc.hi <= limit, threshold=f"CI upper ≤ {100 * limit:.0f} %", unit="%")
    # Registered here, compared after the test body (so neither the xfail below nor a mismatch hides a claim).
    baseline.check({
        "ioc_random_train": binomial(ioc_acc.value, ioc_acc.n, "train accuracy on random labels"),
        "twin_random_train": binomial(twin_acc.value, twin_acc.n, "train accuracy on random labels"),
        # The projection clamps at 0, so the IOC minimum is 0 or a last-step update: a trained weight.
        "ioc_min_weight": trajectory(ioc_min, "smallest constrained weight after training"),
        "twin_min_weight": trajectory(twin_min, "smallest corresponding weight of the twin"),
        "ioc_violations": exact(violations["ioc"].sum().item(), "convexity violations: 0 by construction"),
        "twin_violation_rate": binomial(violations["twin"].float().mean().item(), violations["twin"].numel(),
                                        "midpoint-convexity violation rate of a trained MLP"),
        "ioc_train_loss": trajectory(ioc_history.column("train_loss"), "train-loss curve"),
    })
    if protocol["random_labels_xfail"]:
        request.applymarker(pytest.mark.xfail(strict=True, reason=protocol["random_labels_xfail"]))
    claim.check(f"{tag}: IOC-MLP's train accuracy on random labels stays far below 100 %", ioc_acc,
                holds=ioc_acc.hi <= limit, threshold=f"CI upper ≤ {100 * limit:.0f} %", unit="%",
                epochs=len(ioc_history.epochs))


def test_ioc_has_smaller_generalization_gap_under_label_noise(device, protocol, seed, claim, baseline, request):
    x_train, y_train, x_test, y_test = prepare(protocol, device, seed)
    tag = f"MLP {protocol['depth']}×{protocol['width']} ELU+BN, {protocol['dataset']}, n={len(x_train)}"
    numbers, runs = {}, {}
    for p in protocol["noise_levels"]:
        noisy, _ = data.corrupt_labels(y_train, p, seed=seed + 1)
        for name, convex, run_seed in (("ioc", True, seed), ("twin", False, seed), ("twin2", False, seed + 7)):
            model, _, train_hits = train_pair_member(convex, x_train, noisy, protocol, run_seed)
            _, _, test_hits = train.evaluate(model, x_test, y_test)
            runs[p, name] = (train_hits, test_hits)
            numbers[f"p{p}_{name}_train"] = float(train_hits.float().mean())
            numbers[f"p{p}_{name}_test"] = float(test_hits.float().mean())
    # Registered here, compared after the test body (so neither the xfail below nor a mismatch hides a claim).
    # Test accuracy: a draw of n test images (binomial). Train accuracy on noisy labels: how far one
    # run memorised them within the budget, a training outcome (0.968 vs 0.991 for p = 0.5 when only
    # MKL_CBWR changed), so it is compared on the same code path only.
    baseline.check({k: trajectory(v, "train accuracy on noisy labels reached by one run within the budget")
                    if k.endswith("_train") else
                    binomial(v, len(y_test), "accuracy of a trained MLP on the test set")
                    for k, v in numbers.items()})
    gaps = {p: {name: numbers[f"p{p}_{name}_train"] - numbers[f"p{p}_{name}_test"] for name in ("ioc", "twin", "twin2")}
            for p in protocol["noise_levels"]}
    # Controls first, for every p, so that the strict xfail below cannot hide a control that holds.
    for p in protocol["noise_levels"]:
        control = gap_difference(*runs[p, "twin2"], *runs[p, "twin"])
        claim.control(f"{tag}, label noise p={p}: a second twin's generalisation gap − the twin's", control,
                      holds=control.hi < 0, threshold="CI upper < 0", unit="%", twin2_gap=gaps[p]["twin2"])
    if protocol["noisy_labels_xfail"]:
        request.applymarker(pytest.mark.xfail(strict=True, reason=protocol["noisy_labels_xfail"]))
    for p in protocol["noise_levels"]:
        delta = gap_difference(*runs[p, "ioc"], *runs[p, "twin"])
        claim.check(f"{tag}, label noise p={p}: IOC-MLP's generalisation gap − the twin's", delta,
                    holds=delta.hi < 0, threshold="CI upper < 0", unit="%",
                    ioc_gap=gaps[p]["ioc"], twin_gap=gaps[p]["twin"])
