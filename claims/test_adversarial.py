"""Adversarial fragility (seed 004, topic "Adversarial ML / Robustness": "Performance of NNs
significantly affected if data is slightly perturbed.").

The seed names no paper, model or attack for this bullet; we take the standard reading (Goodfellow,
Shlens & Szegedy 2015; Madry et al. 2018): a worst-case perturbation of every pixel by at most ε in
L∞ on the [0, 1] intensity scale. Model and training are random labels' smoke MLP 1×512 on MNIST
14×14 (claims/test_random_labels.py: same data, `MLP`, `train.fit` budget), trained `trials` times
on the true labels (seeds seed + 1000·t: initialisation and batch order):
  claim    accuracy drop under a PGD attack of size ε (clean − adversarial test accuracy, paired on the
           same images) is large: ≥ SIGNIFICANT_DROP (one-sided);
  control  random-sign noise of the same L∞ size ε (every pixel ± ε, the same clipping to [0, 1])
           does NOT drop accuracy that much: the same region, decisively missed.
FGSM (one step of size ε) is recorded beside PGD. Every CI is the hierarchical bootstrap over the
trials and the test images (`stats.trials_ci`, paired: clean vs perturbed hits of the same run).

The perturbation acts on what the model sees: the 14×14 area-downsampled image, in pixel units
(intensity / 255). The model's input is standardised with the training subset's mean and std, so ε
and the [0, 1] box are converted to those units (ε / std; [−mean/std, (1 − mean)/std]).
"""

import numpy as np
import torch
import torch.nn.functional as F

from dlclaims import data, runtime, stats, train
from dlclaims.baselines import binomial
from dlclaims.models import MLP
from dlclaims.verdict import at_least

SOURCE = "seed 004 (topic: Adversarial ML / Robustness); attack: Madry et al. 2018 (PGD), Goodfellow et al. 2015"

# "Slightly perturbed": ε = 0.1 of the intensity range per pixel (L∞), the size the coverage registry
# names and a tenth of Madry et al.'s MNIST budget 0.3: a faint change that leaves every digit
# recognisable. "Significantly affected": the test accuracy drops by at least 20 points, i.e. one in
# five test images that the model classified correctly is now misclassified. The seed gives no number;
# 20 points is 20× the trial-to-trial spread of this MLP's clean accuracy (≈ 1 point), so a drop that
# large cannot be run-to-run noise, and it is far beyond what a perturbation of the same size drawn at
# random does (the control).
EPSILON = 0.1
SIGNIFICANT_DROP = 0.20

# Units: images; epochs = passes over n_train; ε in [0, 1] intensity units; PGD step in units of ε.
PROTOCOL = {
    "smoke": {  # ≈ 6 CPU-seconds: 3 trainings (100 % train accuracy in 11-12 epochs) + attacks
        "image_size": 14,
        "n_train": 1000,
        "n_test": 2000,
        "width": 512,
        # random labels' smoke budget (claims/test_random_labels.py); training stops at 100 % train accuracy
        "budget": train.TrainConfig(epochs=100, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                                    log_every=None),
        "trials": 3,
        # Madry et al.'s PGD: a random start in the ε-ball, then signed-gradient steps of 2.5·ε/steps
        # (the rule of their `robustness` library: the walk can cross the ball and come back).
        "pgd_steps": 20,
        "pgd_step_over_epsilon": 2.5 / 20,
    },
    "full": {  # all of MNIST at 28×28, Madry et al.'s 40 PGD steps
        "image_size": 28,
        "n_train": None,
        "n_test": None,
        "width": 512,
        "budget": train.TrainConfig(epochs=100, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                                    log_every=None),
        "trials": 3,
        "pgd_steps": 40,
        "pgd_step_over_epsilon": 2.5 / 40,
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet).
COST = {
    "test_small_perturbation_fools_mlp": {
        "smoke": {"gpu_s": 10, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 300, "peak_gib": 2, "measured_on": "estimate"},
    },
}
MNIST_TRAIN_SIZE = 60000


def pixel_box(seed: int, n_train: int | None, n_test: int | None):
    """(mean, std) of the training images `data.prepare` standardised with (same subset, same seed)."""
    full = data.load("mnist")
    split = full if n_train is None else data.subset(full, n_train, n_test or len(full.x_test), seed)
    mean, std = data.channel_stats(split.x_train)
    return float(mean[0]), float(std[0])


def clip(x: torch.Tensor, around: torch.Tensor, radius: float, lo: float, hi: float) -> torch.Tensor:
    """Project x onto the L∞ ball of `radius` around `around`, then onto the valid-pixel box [lo, hi]."""
    return torch.minimum(torch.maximum(x, around - radius), around + radius).clamp(lo, hi)


def pgd(model, x, y, radius: float, steps: int, step: float, box: tuple[float, float],
        generator: torch.Generator | None) -> torch.Tensor:
    """L∞ projected gradient ascent on the cross-entropy (Madry et al. 2018); a random start in the
    ball when `generator` is given. One step of size `radius` from x without a start is FGSM."""
    adversarial = x.clone()
    if generator is not None:
        start = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        adversarial = clip(x + (2 * start - 1) * radius, x, radius, *box)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(model(adversarial), y), adversarial)
        adversarial = clip(adversarial.detach() + step * gradient.sign(), x, radius, *box)
    return adversarial.detach()


def random_sign_noise(x: torch.Tensor, radius: float, box: tuple[float, float],
                      generator: torch.Generator) -> torch.Tensor:
    """Every pixel moved by ± radius (independent fair signs), clipped to the valid-pixel box."""
    signs = torch.randint(0, 2, x.shape, generator=generator, device=generator.device).to(x.device) * 2 - 1
    return (x + radius * signs).clamp(*box)


def hits(model, x, y) -> np.ndarray:
    return stats.to_numpy(train.evaluate(model, x, y)[2], float)


def test_small_perturbation_fools_mlp(device, protocol, seed, claim, baseline):
    x_train, y_train, x_test, y_test = data.prepare(
        "mnist", device=device, seed=seed, n_train=protocol["n_train"], n_test=protocol["n_test"],
        train_size_required=MNIST_TRAIN_SIZE if protocol["n_train"] is None else None,
        image_size=protocol["image_size"])
    mean, std = pixel_box(seed, protocol["n_train"], protocol["n_test"])
    box = ((0.0 - mean) / std, (1.0 - mean) / std)
    radius = EPSILON / std  # ε in the model's (standardised) input units
    steps, trials = protocol["pgd_steps"], protocol["trials"]
    n_test = len(y_test)
    tag = (f"MLP 1×{protocol['width']}, MNIST {protocol['image_size']}×{protocol['image_size']}, "
           f"n_train={len(y_train)}, {n_test} test images, L∞ ε = {EPSILON:g}")

    arms = {"clean": [], "pgd": [], "fgsm": [], "noise": []}
    for t in range(trials):
        trial_seed = seed + 1000 * t
        torch.manual_seed(trial_seed)
        model = MLP(x_train[0].numel(), depth=1, width=protocol["width"]).to(device)
        train.fit(model, x_train, y_train, protocol["budget"], seed=trial_seed)
        model.eval()
        gen = runtime.generator(device, trial_seed)
        arms["clean"].append(hits(model, x_test, y_test))
        arms["pgd"].append(hits(model, pgd(model, x_test, y_test, radius, steps,
                                           protocol["pgd_step_over_epsilon"] * radius, box, gen), y_test))
        arms["fgsm"].append(hits(model, pgd(model, x_test, y_test, radius, 1, radius, box, None), y_test))
        arms["noise"].append(hits(model, random_sign_noise(x_test, radius, box, gen), y_test))
    arms = {name: np.stack(rows) for name, rows in arms.items()}
    accuracy = {name: stats.trials_ci(rows, seed=seed) for name, rows in arms.items()}

    per_trial_clean = arms["clean"].mean(axis=1)
    baseline.check({
        "clean_accuracy": binomial(accuracy["clean"].value, n_test, f"mean test accuracy of {trials} trained MLPs",
                                   seed_sd=float(per_trial_clean.std(ddof=1) / np.sqrt(trials))),
        "pgd_accuracy": binomial(accuracy["pgd"].value, n_test, "mean accuracy under PGD of the same MLPs",
                                 seed_sd=float(arms["pgd"].mean(axis=1).std(ddof=1) / np.sqrt(trials))),
        "noise_accuracy": binomial(accuracy["noise"].value, n_test, "mean accuracy under random-sign noise",
                                   seed_sd=float(arms["noise"].mean(axis=1).std(ddof=1) / np.sqrt(trials))),
    })
    for name, label in (("clean", "clean"), ("pgd", f"PGD ({steps} steps)"), ("fgsm", "FGSM"),
                        ("noise", "random-sign noise")):
        claim.record(f"{tag}: test accuracy, {label}", accuracy[name], unit="%", trials=trials)
    claim.record(f"{tag}: accuracy drop under FGSM (clean − FGSM)",
                 stats.trials_ci(arms["clean"], arms["fgsm"], seed=seed), unit="%", trials=trials)

    significant = at_least(SIGNIFICANT_DROP)
    claim.check(f"{tag}: accuracy drop under a worst-case perturbation (clean − PGD)",
                stats.trials_ci(arms["clean"], arms["pgd"], seed=seed), significant, unit="%", trials=trials,
                epsilon_pixels=EPSILON, epsilon_model_units=radius, pgd_steps=steps)
    claim.control(f"{tag}: accuracy drop under random-sign noise of the same size (clean − noise)",
                  stats.trials_ci(arms["clean"], arms["noise"], seed=seed), significant, unit="%", trials=trials)
