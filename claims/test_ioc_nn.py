"""Sivaprasad et al., "The curious case of convex neural networks" (arXiv 2006.05103), as
summarised in seed 002: an input-output-convex MLP (IOC-MLP: every weight after the first
layer non-negative, ELU; no BatchNorm, which the seed does not describe) resists noise that its
unconstrained twin memorises.

Seed 002 (slides "Towards a model which handles noise: IOC-NNs" and "Experimentation with IOC"):
  "The convexity constraints include restricting the weights (for all but the first layer) to be
   non-negative and using a non-decreasing convex activation function. The final output y is
   convex with respect to the input x";
  "IOC-NNs prevent the fitting of random labelling and the training curve flattens as compared
   to MLPs which approach 0 training loss";
  "IOC-NNs do not fit noisy images as compared to MLPs which approach 0 training loss";
  "IOC-NNs act as self-regularisers and restrict the training process in presence of noise";
  "We then describe a model (IOC-NN) and empirically show that it is able to make the model
   robust to training noise."

Every cell trains `trials` independent runs (seed + 1000·t: initialisation, batch order and the
corrupted labelling itself); the IOC-MLP and its twin of trial t share the labelling.

  claim    (a) the constraint holds after training: every constrained weight ≥ 0 in every run;
  control      the twin's same weights are not all ≥ 0;
  claim    (b) each logit is convex in the input: no midpoint violation on random segments
               between test images (eval mode, float64), in any run;
  control      the twin violates it;
  claim    (c) random labels, comparatively ("the training curve flattens as compared to MLPs"):
               at the epoch the twin fits the random labels, twin train accuracy − IOC train
               accuracy ≥ FLATTENS_BY;
  control      a second twin (another initialisation and batch order) in place of the IOC-MLP
               lands decisively below FLATTENS_BY;
  claim    (d) noisy labels ("robust to training noise", "restrict the training process in
               presence of noise"): IOC generalisation gap − twin gap ≤ −ROBUST_BY · p at each p;
  control      a second twin in place of the IOC-MLP, at the lowest p (where −ROBUST_BY · p is
               nearest to 0): decisively above −ROBUST_BY · p;
  claim    (e) noisy images (`slow`: out of CI's budget), as (c) on Gaussian images under the true
               labels: twin − IOC train accuracy at the twin's fit epoch ≥ FLATTENS_BY;
  control      as (c).
The generalisation gap's CI is the hierarchical bootstrap over trials and over the train and test
images together (`stats.generalization_gap_scores`); the random-label and noisy-image numbers are
per-run train accuracies read from the training history, with a t-interval over the trials
(`stats.mean_ci`).

Paper numbers: the seed gives none and the paper's tables could not be retrieved here, so every
claim has paper=None; the thresholds below say which words of the seed they come from.
"""

import numpy as np
import pytest
import torch

from dlclaims import data, stats, train
from dlclaims.baselines import binomial, exact, trajectory
from dlclaims.models import count_parameters
from dlclaims.models.ioc import IOCMLP, midpoint_convexity_violations, min_constrained_weight, project_nonnegative
from dlclaims.verdict import Finding, at_least, at_most, exactly

SOURCE = "Sivaprasad et al. 2021 (arXiv 2006.05103) via seed 002; qualitative (no paper numbers retrieved)"

# "Does not fit" the noise, read from seed 002's contrast between the IOC-NN, which "prevent[s] the
# fitting of random labelling" and whose "training curve flattens", and the MLPs, "which approach 0
# training loss" (100 % train accuracy): when the twin has fitted the labels, the IOC-MLP is still
# closer to not fitting them than to fitting them, i.e. it leaves at least half of the labels that
# can only be memorised unfitted. A resampled label is right by chance 1 time in 10, so with a
# fraction p of labels resampled a model that memorises nothing of the noise is 0.9·p below one
# that memorises all of it: the claims' margins are half of that.
UNFITTED_SHARE = 0.5
# (c) random labels (p = 1): twin − IOC train accuracy at the epoch the twin fits ≥ 0.45.
FLATTENS_BY = UNFITTED_SHARE * 0.9
# (d) noisy labels: IOC gap − twin gap ≤ −ROBUST_BY · p ("robust to training noise": the gap of a
# model that leaves the noise unfitted is smaller by its unfitted share, at equal test accuracy).
ROBUST_BY = UNFITTED_SHARE * 0.9

# Units: images; epochs (passes over n_train); lr per Adam step; noise p = fraction of labels resampled.
PROTOCOL = {
    "smoke": {
        "dataset": "mnist", "image_size": 14, "full_train_size": None,  # 14×14 = 196 inputs
        "n_train": 1000,
        "n_test": 2000,
        "depth": 3, "width": 128,  # the paper's MLP is 3×800; narrower to fit the CPU budget
        # No BatchNorm: seed 002's IOC-NN is non-negative weights after the first layer (negative ones
        # mapped to e^{w−5}) and ELU, nothing more. Until issue 18 this protocol put BatchNorm after every
        # hidden Linear, which makes each constrained unit invariant to the scale of its incoming weights
        # and undoes much of the e^{w−5} shrink (twin − IOC on random labels 4.4-8.3 points at offsets 0-4).
        # Issue-18 ablations (twin − IOC at the twin's fit epoch, 3 trials; one-off scripts):
        #   MNIST n=1,000 (this protocol): no BN 6.2-14.2 (offsets 0-4, below); lr 1e-4 with BN 22-23;
        #   no BN and lr 1e-4 27-32, but the twin itself does not fit (86-89 % after 400 epochs);
        #   CIFAR-10, 5,000 of the 20,000 offline images (what 15 CPU-min allow; 20,000 would be ×4), 32 px,
        #   3×256, no BN, Adam 1e-3, seed offset 0: 34.8, 50.9, 11.3 points, mean 32.3 [-17.1, 81.8] (t, 3
        #   trials; the twins fit in 37-58 epochs, the IOC-MLPs hold 49-89 % then): slower than on MNIST in
        #   two trials of three, and undecided at 45 (inconclusive, nowhere near a reproduction).
        # Removing BatchNorm moved the result toward the claim (twin − IOC on random labels 4.4-8.3 → 6.2-14.2
        # points at offsets 0-4), as did lr 1e-4 (with BN 22-23; without, 27-32 but an unfitted twin).
        # So the smoke protocol (MNIST, n=1,000, d=196) may narrow the effect the seed reports on CIFAR-10,
        # but CIFAR-10 at CPU sizes does not decide it either; smoke stays MNIST for its cost (a CIFAR-10
        # version costs ≈ 2-6 CPU-min and, at this spread, would need more than 3 trials), with its findings
        # below; the full protocol (CIFAR-10, 3×800, lr 1e-4) decides it on the seed's data.
        "batch_norm": False,
        # lr 1e-3 (the seed states none; the paper: 1e-4, the full protocol): at 1e-4 the twin does not
        # fit within any CPU budget (above). A deviation that narrows the gap, kept for cost, not tuned.
        # Without BatchNorm the twin needs 129-150 epochs for the random labels (offset 0: 134, 129, 150);
        # a twin that has not fitted by epoch 150 is compared there, and the statement says so ("at the cap";
        # the cap is not raised: CI cost).
        "budget": train.TrainConfig(epochs=150, batch_size=64, optimizer="adam", lr=1e-3),
        # p = 0.5 (full scale only): with BatchNorm the IOC-MLP, the twin and a second twin all
        # memorised 99-100 % of the labels (gaps 50.8-51.1 % at offset 0), so it added ~35 s and no contrast.
        "noise_levels": (0.2,),
        "segments": 1000,  # random pairs of test images for the midpoint test (per run)
        "trials": 3,  # independent runs per model and cell
        "record_batch_norm_arm": False,  # full scale only (the arm smoke asserted until issue 18; above)
        # Measured with 3 trials at seed offsets 0-4 (value [95 % CI], points). Each finding's range: the
        # measured min/max ± 2 × the between-offset sd of the point values (the finding is compared with the
        # point value, not the CI), without crossing 0 where the measured values do not.
        "random_labels_finding": Finding(
            0.03, 0.20,
            "smoke (n=1000 MNIST 14 px, 3×128 ELU, Adam 1e-3 — the paper's 1e-4 leaves the twin unfitted on a "
            "CPU budget; at 1e-4 without BatchNorm twin − IOC is 27-32 points but the twin holds 86-89 % after "
            "400 epochs — and no BatchNorm, as the seed describes; with the BatchNorm this protocol had until "
            "issue 18: 4.4-8.3): twin − IOC at the twin's fit epoch = 11.1 [-4.0, 26.2], 6.2 [-10.4, 22.9], "
            "8.3 [-1.9, 18.6], 14.2 [0.0, 28.4], 9.6 [6.2, 12.9] points at offsets 0-4, not ≥ 45: slower, not "
            "flat. Range 6.2-14.2 ± 6 (2 × the between-offset sd, 3.0), the lower end kept at 3 so that no "
            "difference or a reversal leaves the finding. CIFAR-10 (5,000 images, 3 trials): 32.3 [-17.1, 81.8]"),
        "noisy_labels_finding": {
            0.2: Finding(-0.08, 0.07,
                         "smoke (n=1000 MNIST 14 px, 3×128 ELU, p=0.2, Adam 1e-3 rather than the paper's 1e-4 "
                         "(cost: at 1e-4 the twin does not fit on a CPU budget), no BatchNorm as the seed "
                         "describes; with BatchNorm: +2.4 to +4.3): IOC gap − twin gap = 2.5 [-0.7, 5.8], "
                         "-1.4 [-4.1, 1.1], -1.5 [-4.5, 1.3], -3.4 [-6.9, 0.0], 0.7 [-1.3, 2.8] points at offsets "
                         "0-4, not ≤ -9: no difference. Range -3.4 to 2.5 ± 4.5 (2 × the between-offset sd, 2.3)"),
        },
        # Gaussian images (`slow`): measured with 3 trials at seed offsets 0-4.
        "noisy_images_finding": Finding(
            0.12, 0.33,
            "smoke (n=1000 MNIST-shaped Gaussian images, 196 px, 3×128 ELU, Adam 1e-3 rather than the paper's "
            "1e-4 (cost: at 1e-4 the twin does not fit on a CPU budget), no BatchNorm as the seed describes): "
            "twin − IOC at the twin's fit epoch = 18.0 [12.7, 23.3], 26.4 [13.6, 39.3], 23.9 [19.8, 28.0], "
            "21.0 [14.4, 27.6], 23.0 [12.2, 33.8] points at offsets 0-4, not ≥ 45: slower, not flat. Range "
            "18.0-26.4 ± 6.3 (2 × the between-offset sd, 3.2)"),
    },
    "full": {  # the paper's CIFAR-10 MLP width (3×800) and Adam 1e-4, the seed's model; all 50,000 images
        "dataset": "cifar10", "image_size": 32, "full_train_size": 50000,
        "n_train": None,
        "n_test": None,
        "depth": 3, "width": 800,
        # Fixed in advance: the asserted arm is the seed's description, no BatchNorm; the BatchNorm arm
        # (IOC-MLP and twin, random labels) is recorded beside it.
        "batch_norm": False,
        "record_batch_norm_arm": True,
        "budget": train.TrainConfig(epochs=200, batch_size=64, optimizer="adam", lr=1e-4),
        "noise_levels": (0.2, 0.3, 0.4, 0.5),
        "segments": 5000,
        "trials": 3,
        "random_labels_finding": None,  # unverified here (needs a GPU and all 50,000 CIFAR-10 images)
        "noisy_images_finding": None,
        "noisy_labels_finding": {},
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet): replace with measured
# figures and the card's name after a GPU run. "paper" tier: too big for the nightly's 2 h on 4 GPUs.
COST = {
    "test_ioc_resists_random_labels_and_stays_convex": {
        "smoke": {"gpu_s": 40, "peak_gib": 1, "measured_on": "estimate"},
        # full: 3 models per trial + the recorded BatchNorm arm's 2 (×5/3)
        "full": {"gpu_s": 4500, "peak_gib": 3, "measured_on": "estimate", "tier": "paper"},
    },
    "test_ioc_does_not_fit_noisy_images": {
        "smoke": {"gpu_s": 40, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 2700, "peak_gib": 3, "measured_on": "estimate", "tier": "paper"},
    },
    "test_ioc_has_smaller_generalization_gap_under_label_noise": {
        "smoke": {"gpu_s": 60, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 12900, "peak_gib": 3, "measured_on": "estimate", "tier": "paper"},
    },
}
TWIN2_OFFSET = 7  # the second twin's seed: seed_t + 7 (another init and batch order, same labels)


def prepare(protocol, device, seed):
    """Standardised, downsampled float images (train, test) and labels."""
    return data.prepare(protocol["dataset"], device=device, seed=seed, n_train=protocol["n_train"],
                        n_test=protocol["n_test"], train_size_required=protocol["full_train_size"],
                        image_size=protocol["image_size"])


def train_member(convex: bool, x, y, protocol, seed):
    """An IOC-MLP (convex) or its twin, trained on (x, y) under the protocol's budget (stops once
    it fits the labels)."""
    torch.manual_seed(seed)
    model = IOCMLP(x[0].numel(), depth=protocol["depth"], width=protocol["width"], convex=convex,
                   batch_norm=protocol["batch_norm"]).to(x.device)
    history = train.fit(model, x, y, protocol["budget"], seed=seed,
                        after_step=project_nonnegative if convex else None)
    return model, history


def train_accuracy_at(history: train.History, epoch: int) -> float:
    """Train accuracy after `epoch` epochs; a run that stopped earlier because it fitted the labels
    keeps its last (fitted) accuracy."""
    return history.epochs[min(epoch, len(history.epochs)) - 1].train_accuracy


def seeds_for(seed: int, trials: int) -> list[int]:
    return [seed + 1000 * t for t in range(trials)]


def describe(protocol, n_train: int) -> str:
    norm = "+BN" if protocol["batch_norm"] else ""
    return f"MLP {protocol['depth']}×{protocol['width']} ELU{norm}, {protocol['dataset']}, n={n_train}"


def train_trio(x, labels, protocol, seed_t):
    """The IOC-MLP, its twin (same seed: initialisation and batch order) and a second twin (another
    seed), each trained on (x, labels)."""
    return {name: train_member(convex, x, labels, protocol, run_seed) for name, convex, run_seed in
            (("ioc", True, seed_t), ("twin", False, seed_t), ("twin2", False, seed_t + TWIN2_OFFSET))}


def at_twin_fit_epoch(runs) -> dict[str, list]:
    """Per trial: the epoch each twin fits its labels (its last epoch if it never does) and the
    three members' train accuracies after that epoch."""
    fit_epochs = [r["twin"][1].epochs_to_fit() or len(r["twin"][1].epochs) for r in runs]
    return {"fit_epochs": fit_epochs,
            **{name: [train_accuracy_at(r[name][1], e) for r, e in zip(runs, fit_epochs)]
               for name in ("twin", "ioc", "twin2")}}


def check_does_not_fit(claim, runs, protocol, what: str, tag: str, statement: str, finding):
    """The comparative claim on noise the twin memorises ("flattens as compared to MLPs"), stated as
    `statement`: twin − IOC train accuracy at the twin's fit epoch ≥ FLATTENS_BY; control: a second
    twin in its place. Returns the per-trial numbers."""
    trials = len(runs)
    at = at_twin_fit_epoch(runs)
    flattens = at_least(FLATTENS_BY)
    ioc_final = [r["ioc"][1].final.train_accuracy for r in runs]
    cap = protocol["budget"].epochs
    unfitted = sum(r["twin"][1].epochs_to_fit() is None for r in runs)
    at_cap = f" ({unfitted} of {trials} twins unfitted: compared at the cap, epoch {cap})" if unfitted else ""
    claim.record(f"{tag}: epochs the twin needs to fit {what}", float(np.mean(at["fit_epochs"])), trials=trials,
                 per_trial=at["fit_epochs"])
    claim.record(f"{tag}: twins that fitted {what} within the {cap}-epoch cap", trials - unfitted, trials=trials,
                 fitted=[r["twin"][1].epochs_to_fit() is not None for r in runs])
    claim.record(f"{tag}: IOC-MLP train accuracy on {what} at the twin's fit epoch",
                 stats.mean_ci(at["ioc"], bounds=(0, 1)), unit="%", trials=trials, per_trial=at["ioc"])
    claim.record(f"{tag}: IOC-MLP train accuracy on {what} after the whole budget "
                 f"({protocol['budget'].epochs} epochs)", stats.mean_ci(ioc_final, bounds=(0, 1)), unit="%",
                 trials=trials, per_trial=ioc_final, epochs_to_fit=[r["ioc"][1].epochs_to_fit() for r in runs])
    claim.record(f"{tag}: second twin's train accuracy on {what} at the twin's fit epoch",
                 stats.mean_ci(at["twin2"], bounds=(0, 1)), unit="%", trials=trials, per_trial=at["twin2"],
                 twin2_epochs_to_fit=[r["twin2"][1].epochs_to_fit() for r in runs])
    claim.control(f"{tag}: {what}: a second twin in place of the IOC-MLP: twin − second twin train accuracy at "
                  f"the twin's fit epoch{at_cap}", stats.mean_ci(np.subtract(at["twin"], at["twin2"])), flattens,
                  unit="%", trials=trials)
    claim.check(statement + at_cap, stats.mean_ci(np.subtract(at["twin"], at["ioc"])), flattens, unit="%",
                trials=trials, finding=finding, twin=at["twin"], ioc=at["ioc"], fit_epochs=at["fit_epochs"])
    return at


def test_ioc_resists_random_labels_and_stays_convex(device, protocol, seed, claim, baseline):
    x_train, y_train, x_test, _ = prepare(protocol, device, seed)
    trials = protocol["trials"]
    tag = describe(protocol, len(x_train))
    runs = [train_trio(x_train, data.corrupt_labels(y_train, 1.0, seed=seed_t + 1)[0], protocol, seed_t)
            for seed_t in seeds_for(seed, trials)]
    assert count_parameters(runs[0]["ioc"][0]) == count_parameters(runs[0]["twin"][0])

    # (a) the projection keeps the constraint through training (in every run).
    ioc_min = min(min_constrained_weight(r["ioc"][0]) for r in runs)
    twin_min = min(min_constrained_weight(r["twin"][0]) for r in runs)
    nonnegative = at_least(0.0)
    claim.check(f"{tag}: IOC-MLP's constrained weights are all ≥ 0 after training (min over {trials} runs)",
                ioc_min, nonnegative, trials=trials)
    claim.control(f"{tag}: the twin's corresponding weights are all ≥ 0 (min over {trials} runs)", twin_min,
                  nonnegative, trials=trials)

    # (b) convex in the input: midpoint test on random segments between test images.
    n = protocol["segments"]
    violations = {"ioc": 0, "twin": 0}
    for t, run in enumerate(runs):
        ends = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed + t))[: 2 * n].to(device)
        for name in violations:
            violations[name] += int(midpoint_convexity_violations(run[name][0], x_test[ends[:n]],
                                                                  x_test[ends[n:]]).sum())
    no_violation = exactly(0)
    checked = trials * n * 10  # runs × segments × logits
    claim.check(f"{tag}: IOC-MLP logits are midpoint-convex ({trials} runs × {n} random segments × 10 logits: "
                "violations)", violations["ioc"], no_violation, trials=trials, checked=checked)
    claim.control(f"{tag}: the twin's logits are midpoint-convex (violations)", violations["twin"], no_violation,
                  trials=trials, checked=checked)

    # (c) random labels, at the epoch each twin fits them (the baseline first: the claim may fail).
    at = at_twin_fit_epoch(runs)
    baseline.check({
        "twin_fit_epochs": trajectory(at["fit_epochs"], "epochs until each twin fits the random labels"),
        "ioc_train_at_fit": trajectory(at["ioc"], "IOC train accuracy at the twin's fit epoch (a training outcome)"),
        "ioc_min_weight": trajectory(ioc_min, "smallest constrained weight after training"),
        "twin_min_weight": trajectory(twin_min, "smallest corresponding weight of the twin"),
        "ioc_violations": exact(violations["ioc"], "convexity violations: 0 by construction"),
        "twin_violation_rate": binomial(violations["twin"] / checked, checked,
                                        "midpoint-convexity violation rate of trained MLPs"),
        "ioc_train_loss": trajectory(runs[0]["ioc"][1].column("train_loss"), "train-loss curve of trial 0"),
    })
    check_does_not_fit(claim, runs, protocol, "random labels", tag,
                       f"{tag}: random labels: twin − IOC-MLP train accuracy at the epoch the twin fits them",
                       protocol["random_labels_finding"])
    if protocol["record_batch_norm_arm"]:  # the other arm, recorded (the asserted one is fixed in the protocol)
        with_bn = {**protocol, "batch_norm": not protocol["batch_norm"]}
        bn_runs = [{name: train_member(convex, x_train, data.corrupt_labels(y_train, 1.0, seed=seed_t + 1)[0],
                                       with_bn, seed_t) for name, convex in (("ioc", True), ("twin", False))}
                   for seed_t in seeds_for(seed, trials)]
        bn_fit = [r["twin"][1].epochs_to_fit() or len(r["twin"][1].epochs) for r in bn_runs]
        bn_gap = [train_accuracy_at(r["twin"][1], e) - train_accuracy_at(r["ioc"][1], e)
                  for r, e in zip(bn_runs, bn_fit)]
        claim.record(f"{describe(with_bn, len(x_train))}: random labels: twin − IOC-MLP train accuracy at the epoch "
                     "the twin fits them (the other BatchNorm arm, recorded)", stats.mean_ci(bn_gap), unit="%",
                     trials=trials, fit_epochs=bn_fit,
                     twins_fitted=[r["twin"][1].epochs_to_fit() is not None for r in bn_runs])


@pytest.mark.slow
def test_ioc_does_not_fit_noisy_images(device, protocol, seed, claim, baseline):
    """Seed 002: "IOC-NNs do not fit noisy images as compared to MLPs which approach 0 training
    loss". Noisy images: i.i.d. Gaussian pixels with the data's per-channel mean and std, one fresh
    draw per trial, under the true labels (Zhang et al.'s Gaussian images; the seed's "Gaussian Noise
    (Image independent noise)"), which then carry no information about the image. The claim and its
    control are those of random labels: twin − IOC train accuracy at the twin's fit epoch."""
    x_train, y_train, _, _ = prepare(protocol, device, seed)
    tag = describe(protocol, len(x_train))
    runs = [train_trio(data.gaussian_images(x_train, seed=seed_t + 1), y_train, protocol, seed_t)
            for seed_t in seeds_for(seed, protocol["trials"])]
    at = at_twin_fit_epoch(runs)
    baseline.check({
        "twin_fit_epochs": trajectory(at["fit_epochs"], "epochs until each twin fits the Gaussian images"),
        "ioc_train_at_fit": trajectory(at["ioc"], "IOC train accuracy at the twin's fit epoch (a training outcome)"),
        "twin2_train_at_fit": trajectory(at["twin2"], "second twin's train accuracy at the twin's fit epoch"),
    })
    check_does_not_fit(claim, runs, protocol, "Gaussian images", tag,
                       f"{tag}: noisy (Gaussian) images: "
                       "twin − IOC-MLP train accuracy at the epoch the twin fits the images",
                       protocol["noisy_images_finding"])


def test_ioc_has_smaller_generalization_gap_under_label_noise(device, protocol, seed, claim, baseline):
    x_train, y_train, x_test, y_test = prepare(protocol, device, seed)
    trials = protocol["trials"]
    tag = describe(protocol, len(x_train))
    # The control (a second twin) runs at the lowest noise level only: there the region's edge
    # (−ROBUST_BY · p) is nearest to 0, so that is where a same-model comparison could reach it.
    control_p = min(protocol["noise_levels"])
    numbers, scores = {}, {}
    for p in protocol["noise_levels"]:
        members = (("ioc", True, 0), ("twin", False, 0)) + ((("twin2", False, TWIN2_OFFSET),) if p == control_p else ())
        hits = {name: ([], []) for name, _, _ in members}
        for seed_t in seeds_for(seed, trials):
            noisy, _ = data.corrupt_labels(y_train, p, seed=seed_t + 1)
            for name, convex, offset in members:
                model, _ = train_member(convex, x_train, noisy, protocol, seed_t + offset)
                hits[name][0].append(stats.to_numpy(train.evaluate(model, x_train, noisy)[2], float))
                hits[name][1].append(stats.to_numpy(train.evaluate(model, x_test, y_test)[2], float))
        for name, (train_hits, test_hits) in hits.items():
            train_hits, test_hits = np.stack(train_hits), np.stack(test_hits)
            scores[p, name] = stats.generalization_gap_scores(train_hits, test_hits)
            numbers[f"p{p}_{name}_train"] = float(train_hits.mean())
            numbers[f"p{p}_{name}_test"] = float(test_hits.mean())
    # Test accuracy: a draw of n test images (binomial). Train accuracy on noisy labels: how far the
    # runs memorised them within the budget, a training outcome (0.968 vs 0.991 for p = 0.5 when only
    # MKL_CBWR changed), so it is compared on the same code path only.
    baseline.check({k: trajectory(v, "train accuracy on noisy labels reached within the budget (mean of trials)")
                    if k.endswith("_train") else
                    binomial(v, len(y_test), "accuracy of trained MLPs on the test set (mean of trials)")
                    for k, v in numbers.items()})
    for p in protocol["noise_levels"]:
        robust = at_most(-ROBUST_BY * p)
        for name in ("ioc", "twin", "twin2"):
            if (p, name) in scores:
                claim.record(f"{tag}, label noise p={p}: {name} generalisation gap (train on noisy − clean test)",
                             stats.trials_ci(scores[p, name], seed=seed), unit="%", trials=trials,
                             train=numbers[f"p{p}_{name}_train"], test=numbers[f"p{p}_{name}_test"])
        if p == control_p:
            claim.control(f"{tag}, label noise p={p}: a second twin's generalisation gap − the twin's",
                          stats.trials_ci(scores[p, "twin2"], scores[p, "twin"], seed=seed), robust, unit="%",
                          trials=trials)
        claim.check(f"{tag}, label noise p={p}: IOC-MLP's generalisation gap − the twin's",
                    stats.trials_ci(scores[p, "ioc"], scores[p, "twin"], seed=seed), robust, unit="%",
                    trials=trials, finding=protocol["noisy_labels_finding"].get(p))


