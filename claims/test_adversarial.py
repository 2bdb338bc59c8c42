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
FGSM (one step of size ε) is recorded beside PGD. Every drop's CI is the hierarchical bootstrap
(`stats.trials_ci`) of one arm: the per-trial, per-image differences clean − perturbed hits of the same
trained model, so trials are resampled as pairs and test images jointly. Attacks: `dlclaims.attacks`.

The perturbation acts on what the model sees: the 14×14 area-downsampled image, in pixel units
(intensity / 255). The model's input is standardised with the training subset's mean and std, so ε
and the [0, 1] box are converted to those units (ε / std; [−mean/std, (1 − mean)/std]), with the
statistics `data.prepare` used (`data.prepare_stats`).
"""

import numpy as np

from dlclaims import attacks, data, runs, runtime, stats, train
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


def test_small_perturbation_fools_mlp(device, protocol, seed, claim, baseline):
    x_train, y_train, x_test, y_test = data.prepare(
        "mnist", device=device, seed=seed, n_train=protocol["n_train"], n_test=protocol["n_test"],
        train_size_required=MNIST_TRAIN_SIZE if protocol["n_train"] is None else None,
        image_size=protocol["image_size"])
    mean, std = (float(v[0]) for v in data.prepare_stats(
        "mnist", seed=seed, n_train=protocol["n_train"], n_test=protocol["n_test"],
        train_size_required=MNIST_TRAIN_SIZE if protocol["n_train"] is None else None))
    box = ((0.0 - mean) / std, (1.0 - mean) / std)
    radius = EPSILON / std  # ε in the model's (standardised) input units
    steps, trials = protocol["pgd_steps"], protocol["trials"]
    n_test = len(y_test)
    tag = (f"MLP 1×{protocol['width']}, MNIST {protocol['image_size']}×{protocol['image_size']}, "
           f"n_train={len(y_train)}, {n_test} test images, L∞ ε = {EPSILON:g}")

    def perturbed_hits(model, x):
        return stats.to_numpy(train.evaluate(model, x, y_test)[2], float)

    arms = {"clean": [], "pgd": [], "fgsm": [], "noise": []}
    for t in range(trials):
        run = runs.train_run(lambda: MLP(x_train[0].numel(), depth=1, width=protocol["width"]), x_train, y_train,
                             protocol["budget"], runs.trial_seed(seed, t), (x_test, y_test))
        model = run.model.eval()
        gen = runtime.generator(device, runs.trial_seed(seed, t))
        arms["clean"].append(stats.to_numpy(run.test_hits, float))
        arms["pgd"].append(perturbed_hits(model, attacks.pgd(model, x_test, y_test, radius, steps,
                                                             protocol["pgd_step_over_epsilon"] * radius, box, gen)))
        arms["fgsm"].append(perturbed_hits(model, attacks.pgd(model, x_test, y_test, radius, 1, radius, box)))
        arms["noise"].append(perturbed_hits(model, attacks.random_sign_noise(x_test, radius, box, gen)))
    arms = {name: np.stack(rows) for name, rows in arms.items()}
    accuracy = {name: stats.trials_ci(rows, seed=seed) for name, rows in arms.items()}

    def drop(name):
        """clean − perturbed accuracy, paired per trial (the same trained model) and per test image: one arm of
        per-trial, per-image differences, so the bootstrap resamples trials as pairs."""
        return stats.trials_ci(arms["clean"] - arms[name], seed=seed)

    baseline.check({
        "clean_accuracy": binomial(accuracy["clean"].value, n_test, f"mean test accuracy of {trials} trained MLPs",
                                   seed_sd=runs.seed_sd(arms["clean"])),
        "pgd_accuracy": binomial(accuracy["pgd"].value, n_test, "mean accuracy under PGD of the same MLPs",
                                 seed_sd=runs.seed_sd(arms["pgd"])),
        "noise_accuracy": binomial(accuracy["noise"].value, n_test, "mean accuracy under random-sign noise",
                                   seed_sd=runs.seed_sd(arms["noise"])),
    })
    for name, label in (("clean", "clean"), ("pgd", f"PGD ({steps} steps)"), ("fgsm", "FGSM"),
                        ("noise", "random-sign noise")):
        claim.record(f"{tag}: test accuracy, {label}", accuracy[name], unit="%", trials=trials)
    claim.record(f"{tag}: accuracy drop under FGSM (clean − FGSM)", drop("fgsm"), unit="%", trials=trials)

    significant = at_least(SIGNIFICANT_DROP)
    claim.check(f"{tag}: accuracy drop under a worst-case perturbation (clean − PGD)", drop("pgd"), significant,
                unit="%", trials=trials, epsilon_pixels=EPSILON, epsilon_model_units=radius, pgd_steps=steps)
    claim.control(f"{tag}: accuracy drop under random-sign noise of the same size (clean − noise)", drop("noise"),
                  significant, unit="%", trials=trials)
