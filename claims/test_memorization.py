"""Memorisation: over-parameterised networks fit noise, and regularisers do not stop them.

Zhang et al. 2017, "Understanding deep learning requires rethinking generalization" (seed 002),
§2 Fig. 1 and §3, and Assaraf 2021 (seed 003) §3:

1. corruption sweep (Fig. 1b/c): with a fraction p of labels replaced by random classes, an
   MLP 1×512 fits every p to 100 % train accuracy; its test accuracy falls with p (no
   significant rise between neighbours, a significant fall overall) to chance at p = 1; the
   epochs to fit grow with p, random labels taking several times as long as true ones.
   Controls: a 1×4 MLP does not fit p = 1; the p = 0 model's test accuracy is not chance;
   the same "falls with p" assertion on train accuracy fails; a second set of true-label runs
   does not take "several times longer" than the first.
2. image randomisations (Fig. 1a): shuffled pixels, random pixels and Gaussian images are
   fitted to 100 %; Gaussian images score chance on the test set. Control: a linear model
   does not fit the Gaussian images; true images do not score chance. That shuffled and
   random pixels also score chance is a separate, strict-xfail test: an MLP is blind to a
   fixed pixel permutation, and a per-image permutation keeps the image's ink histogram.
3. explicit regularisation (§3): with dropout and with weight decay the MLP still fits random
   labels (≥ 99 %: see PROTOCOL), and on true labels each changes test accuracy by a few
   points at most. Controls: a 20× stronger weight decay does stop the fit; label
   randomisation changes test accuracy by far more. Early stopping at the best held-out
   epoch beats the memorising final epoch on 40 %-noisy labels; control: on true labels it
   does not.
4. width (seed 003): the 5-layer CNN of width c (`dlclaims.models.cnn`, 6,666 parameters at
   c = 4, 1,558,026 at c = 64) fits p ∈ {0, 0.5, 1} to 100 % at c = 64, while c = 4 stays far
   below 100 % on random labels within the same budget; each width is the other's control.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dlclaims import data, stats, train  # noqa: E402
from dlclaims.baselines import binomial, spread, trajectory  # noqa: E402
from dlclaims.models import MLP, count_parameters, linear_classifier  # noqa: E402
from dlclaims.models.cnn import WidthCNN  # noqa: E402

SOURCE = "Zhang et al. 2017 (seed 002), Fig. 1 and §3; paper values are its CIFAR-10 numbers"
SEED_003 = "Assaraf 2021, HW0 §3 (seed 003): CNN of width c on CIFAR-10"

PAPER = {
    # Zhang et al. Fig. 1a: Inception on CIFAR-10 fits true labels in ~5k steps, random labels in
    # ~15k ("slows down by a small constant factor"): a ratio of about 3 read off the plot.
    "random_over_true_steps": 3.0,
    "random_test": 0.1061,  # Table 1, MLP 1×512, random labels: test accuracy (chance is 0.10)
    "regularized_random_train": "≈ 100 % (§3; seed 002: 'still approaches 100 % training accuracy')",
    # Table 1, MLP 1×512 true labels: test 50.39 % with weight decay, 50.51 % without.
    "weight_decay_test_change": 0.5039 - 0.5051,
    "cnn_parameters": {4: 6666, 64: 1558026},  # seed 003 §3.2–3.3
}

# One table per scale. Units: images; epochs = passes over n_train; lr per step; p = fraction
# of labels resampled uniformly (data.corrupt_labels). Budgets stop as soon as train accuracy
# is 100 % (TrainConfig.stop_at_train_accuracy), so "epochs to fit" is the last epoch.
PROTOCOL = {
    "smoke": {  # ≈ 3 single-thread CPU minutes for the whole file
        # Zhang et al. also used MLPs; MNIST 14×14 (196 inputs) keeps n_train ≫ input dimension.
        "mlp_data": {"dataset": "mnist", "image_size": 14, "crop": None, "n_train": 1000, "n_holdout": 1000,
                     "n_test": 2000},
        "mlp": {"depth": 1, "width": 512},  # 107k parameters ≫ n_train
        "budget": train.TrainConfig(epochs=300, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9),
        "corruptions": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "repeats": 3,  # independent runs (init, minibatches, label draw) per p: CIs over runs
        "narrow_width": 4,  # MLP 1×4: 838 parameters < n_train
        "several_times": 2.0,  # "random labels take several times longer": ≥ 2× the epochs
        "dropout": 0.5,
        "weight_decay": 5e-4,
        "strong_weight_decay": 1e-2,  # control: 20× stronger
        # Regularised fits count as memorised at ≥ 99 %, not = 100 %: an L2 penalty's minimiser
        # need not interpolate, and Zhang et al.'s own regularised/noisy MLP fits stop at
        # 99.34–99.80 % (Table 1). Unregularised fits must reach exactly 100 %.
        "regularized_train_min": 0.99,
        "few_points": 0.05,  # "a few points at most": |Δ test accuracy| ≤ 5 points, whole CI
        "early_stopping_p": 0.4,  # held-out labels carry the same noise as the training labels
        "chance_level": 0.99,
        "cnn": {
            # CIFAR-10 area-downsampled to 8×8 so that c = 64 (1.56 M parameters) runs on a CPU.
            # n_train = 500 < 6,666: here c = 4 is not under-parameterised in the seed's sense
            # (p ≪ n); the smoke claim is "within the same budget" only (c = 4 given 170 epochs
            # does fit 500 random labels). The capacity claim needs the full protocol.
            "variants": {"cifar10-500-8px": {"n_train": 500, "n_test": 1000, "image_size": 8, "full_train": None}},
            "corruptions": (0.0, 0.5, 1.0),
            # One optimizer for both widths (a fair "same budget"): the seed's c = 64 setting,
            # Adam at 3e-4, ≤ 15 epochs × 8 steps; c = 64 fits in 7–8 epochs.
            "budgets": {w: train.TrainConfig(epochs=15, batch_size=64, optimizer="adam", lr=3e-4) for w in (4, 64)},
            "underfit_max": 0.5,  # "far below 100 %": c = 4 fits at most half the random labels
        },
    },
    "full": {  # GPU hours; the paper's data; not run on this machine
        "mlp_data": {"dataset": "cifar10", "image_size": 28, "crop": 28, "n_train": 45000, "n_holdout": 5000,
                     "n_test": 10000},
        "mlp": {"depth": 1, "width": 512},
        "budget": train.TrainConfig(epochs=1000, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9),
        "corruptions": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "repeats": 3,
        "narrow_width": 4,
        "several_times": 2.0,
        "dropout": 0.5,
        "weight_decay": 5e-4,
        "strong_weight_decay": 1e-2,
        "regularized_train_min": 0.99,
        "few_points": 0.05,
        "early_stopping_p": 0.4,
        "chance_level": 0.99,
        "cnn": {
            "variants": {
                # The seed's data: all 50,000 CIFAR-10 images (skips on the 20k offline file) ...
                "cifar10-50k": {"n_train": 50000, "n_test": 10000, "image_size": 32, "full_train": 50000},
                # ... and the honest variant the offline file allows.
                "cifar10-20k": {"n_train": 20000, "n_test": 10000, "image_size": 32, "full_train": None},
            },
            "corruptions": (0.0, 0.5, 1.0),
            # The seed's optimizers: c = 4 plain SGD at 0.003 for 800 epochs; c = 64 Adam at 3e-4
            # (trained 500/1000/1000 epochs there; here up to 1000, stopping once fitted).
            "budgets": {4: train.TrainConfig(epochs=800, batch_size=128, optimizer="sgd", lr=0.003, momentum=0.0),
                        64: train.TrainConfig(epochs=1000, batch_size=128, optimizer="adam", lr=3e-4)},
            "underfit_max": 0.5,
        },
    },
}


# ---------------------------------------------------------------- data and runs


@dataclass
class Split:
    """Float images ready for a model, with their labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_holdout: torch.Tensor | None
    y_holdout: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_split(spec: dict, device, seed: int, *, full_train: int | None = None) -> Split:
    """A class-balanced subset, standardised with the training images' statistics, cropped and
    downsampled; the held-out images (if any) are drawn from the training split."""
    full = data.load(spec["dataset"], device=device)
    if full_train:
        data.require_train_size(full, full_train)
    n_holdout = spec.get("n_holdout", 0)
    chosen = data.subset(full, spec["n_train"] + n_holdout, spec["n_test"], seed)
    n = spec["n_train"]
    mean, std = data.channel_stats(chosen.x_train[:n])

    def images(x):
        x = data.to_float(x, mean, std)
        if spec.get("crop"):
            x = data.center_crop(x, spec["crop"])
        return data.downsample(x, spec["image_size"]) if x.shape[-1] != spec["image_size"] else x

    holdout = (images(chosen.x_train[n:]), chosen.y_train[n:]) if n_holdout else (None, None)
    return Split(images(chosen.x_train[:n]), chosen.y_train[:n], *holdout, images(chosen.x_test), chosen.y_test)


@dataclass
class Run:
    """A trained model, its history, its final hits on its training labels and its test predictions."""

    model: torch.nn.Module
    history: train.History
    train_hits: torch.Tensor
    test_hits: torch.Tensor
    test_predictions: torch.Tensor

    @property
    def train_accuracy(self) -> float:
        return float(self.train_hits.float().mean())

    @property
    def test(self) -> stats.Estimate:
        return stats.accuracy(self.test_hits)


def train_run(make_model, x, y, budget: train.TrainConfig, seed: int, test: tuple, holdout=None) -> Run:
    """Build the model under `seed` (so a run is fixed by its seed alone) and train it."""
    torch.manual_seed(seed)
    model = make_model().to(x.device)
    history = train.fit(model, x, y, budget, seed=seed, test=test, holdout=holdout)
    return Run(model, history, train.evaluate(model, x, y)[2], train.evaluate(model, *test)[2],
               train.predict(model, test[0]).argmax(dim=1))


def mlp_factory(split: Split, protocol: dict, **overrides):
    kwargs = dict(protocol["mlp"], **overrides)
    return lambda: MLP(split.x_train[0].numel(), **kwargs)


def corrupted(y: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    return data.corrupt_labels(y, p, seed)[0]


def check_chance(verdict, statement: str, runs: list[Run], labels: torch.Tensor, protocol: dict, seed: int,
                 **kw) -> None:
    """claim.check / claim.control of "the runs' mean test accuracy is chance" (class-permutation range)."""
    predictions = np.stack([stats.to_numpy(run.test_predictions) for run in runs], axis=1)
    hits = np.stack([stats.to_numpy(run.test_hits) for run in runs], axis=1)
    measured = runs[0].test if len(runs) == 1 else pooled_accuracy(hits, seed)
    lo, hi = stats.class_permutation_interval(predictions, labels, protocol["chance_level"], seed=seed)
    binomial = stats.chance_interval(len(labels), 10, protocol["chance_level"])
    verdict(statement, measured, holds=lo <= measured.value <= hi, unit="%",
            threshold=f"in the class-permutation chance range [{100 * lo:.1f}, {100 * hi:.1f}] %",
            binomial_chance_interval=binomial, **kw)


def pooled_accuracy(hits: np.ndarray, seed: int) -> stats.Estimate:
    """Mean accuracy of several runs on one test set, bootstrapped over the test points."""
    return stats.bootstrap_ci(hits.astype(float), lambda h: float(h.mean()), seed=seed)


def falls_with_p(hits_by_p: list[np.ndarray], seed: int) -> tuple[bool, list[stats.Estimate], stats.Estimate]:
    """Monotone decrease with ties: no neighbour pair rises significantly (paired bootstrap over
    the same points), and the last point is significantly below the first."""
    steps = [stats.difference_ci(b, a, seed=seed) for a, b in zip(hits_by_p, hits_by_p[1:])]
    overall = stats.difference_ci(hits_by_p[-1], hits_by_p[0], seed=seed)
    return all(s.lo <= 0 for s in steps) and overall.hi < 0, steps, overall


# ---------------------------------------------------------------- claim 1: corruption sweep


def test_label_corruption_sweep(device, protocol, seed, claim, baseline):
    split = load_split(protocol["mlp_data"], device, seed)
    test = (split.x_test, split.y_test)
    corruptions, repeats = protocol["corruptions"], protocol["repeats"]
    runs = {p: [train_run(mlp_factory(split, protocol), split.x_train, corrupted(split.y_train, p, seed + 100 * r + 1),
                          protocol["budget"], seed + 100 * r, test) for r in range(repeats)]
            for p in corruptions}
    tag = f"MLP 1×{protocol['mlp']['width']}, {len(split.x_train)} images, {repeats} runs per p"

    train_accuracy = {p: min(run.train_accuracy for run in runs[p]) for p in corruptions}
    claim.check(f"{tag}: every corruption level p ∈ {list(corruptions)} is fitted (lowest train accuracy)",
                min(train_accuracy.values()), holds=min(train_accuracy.values()) == 1.0, threshold="= 100 % at every p",
                paper=1.0, unit="%", by_p=train_accuracy)
    narrow = train_run(mlp_factory(split, protocol, width=protocol["narrow_width"]), split.x_train,
                       corrupted(split.y_train, 1.0, seed + 1), protocol["budget"], seed, test)
    claim.control(f"{tag}: MLP 1×{protocol['narrow_width']} ({count_parameters(narrow.model)} parameters) fits p = 1",
                  narrow.train_accuracy, holds=narrow.train_accuracy == 1.0, threshold="= 100 % at every p", unit="%")

    test_hits = [np.stack([run.test_hits.cpu().numpy() for run in runs[p]], axis=1) for p in corruptions]
    test_accuracy = [pooled_accuracy(h, seed) for h in test_hits]
    falls, steps, overall = falls_with_p(test_hits, seed)
    claim.check(f"{tag}: test accuracy falls with p (no neighbour rises significantly; p = 1 below p = 0)",
                overall, holds=falls, threshold="every step's CI lo ≤ 0 and overall CI hi < 0",
                paper="monotone (Fig. 1c)", unit="%",
                test_accuracy_by_p={p: e.value for p, e in zip(corruptions, test_accuracy)},
                steps=[(s.value, s.lo, s.hi) for s in steps])
    train_hits = [np.stack([run.train_hits.cpu().numpy() for run in runs[p]], axis=1) for p in corruptions]
    train_falls, _, train_overall = falls_with_p(train_hits, seed)
    claim.control(f"{tag}: train accuracy falls with p", train_overall, holds=train_falls,
                  threshold="every step's CI lo ≤ 0 and overall CI hi < 0", unit="%")

    check_chance(claim.check, f"{tag}: random labels (p = 1) → chance test accuracy (mean of runs)", runs[1.0],
                 split.y_test, protocol, seed, paper=PAPER["random_test"])
    check_chance(claim.control, f"{tag}: true labels (p = 0) → chance test accuracy (mean of runs)", runs[0.0],
                 split.y_test, protocol, seed)

    epochs = {p: [len(run.history.epochs) for run in runs[p]] for p in corruptions}
    steps_per_epoch = math.ceil(len(split.x_train) / protocol["budget"].batch_size)
    slower, increments, ratio, growth = _fit_time_grows(epochs, corruptions, protocol["several_times"])
    claim.check(f"{tag}: epochs to fit grow with p, random labels taking ≥ {protocol['several_times']:g}× the "
                f"epochs of true labels", ratio, holds=slower,
                threshold=f"no neighbour CI hi < 0; p=1 − p=0 CI lo > 0; ratio ≥ {protocol['several_times']:g}",
                paper=PAPER["random_over_true_steps"], epochs_by_p=epochs, steps_per_epoch=steps_per_epoch,
                difference=growth.as_dict(), increments=[(e.value, e.lo, e.hi) for e in increments])
    # Control: the same comparison between two sets of true-label runs (other seeds) must fail.
    null_runs = [train_run(mlp_factory(split, protocol), split.x_train, split.y_train, protocol["budget"],
                           seed + 100 * (repeats + r), test) for r in range(repeats)]
    null_epochs = {"first": epochs[0.0], "second": [len(run.history.epochs) for run in null_runs]}
    null_slower, _, null_ratio, _ = _fit_time_grows(null_epochs, ("first", "second"), protocol["several_times"])
    claim.control(f"{tag}: a second set of true-label runs takes ≥ {protocol['several_times']:g}× the epochs "
                  f"of the first", null_ratio, holds=null_slower, threshold=f"CI lo > 0 and ratio ≥ "
                  f"{protocol['several_times']:g}", epochs=null_epochs)

    _sweep_figures(claim, runs, corruptions, test_accuracy)
    n_train, n_test = len(split.x_train), len(split.y_test)
    # Epochs to fit: the spread measured over this test's own runs (seeds + 100 r), per p; at least
    # one epoch, the count's resolution (three equal counts do not make the spread 0).
    epochs_sd = np.maximum([[np.std(epochs[p], ddof=1)] for p in corruptions], 1.0)
    baseline.check({
        "test_accuracy": binomial([e.value for e in test_accuracy], n_test, "pooled test accuracy of trained MLPs"),
        "epochs": spread([epochs[p] for p in corruptions], epochs_sd, "epochs until each run fits"),
        "narrow_train": binomial(narrow.train_accuracy, n_train, "train accuracy of the narrow MLP"),
        "null_epochs": spread(null_epochs["second"], max(np.std(null_epochs["second"], ddof=1), 1.0),
                              "epochs until each true-label run fits"),
    })


def _fit_time_grows(epochs: dict, keys, several: float):
    """Epochs to fit, paired by run index: neighbour increments and overall growth (t-CIs over
    runs), and the ratio of the last key's mean to the first's. Holds when no increment is
    significantly negative, the overall growth is significantly positive, and the ratio ≥ several."""
    increments = [stats.mean_ci(np.subtract(epochs[b], epochs[a])) for a, b in zip(keys, keys[1:])]
    growth = stats.mean_ci(np.subtract(epochs[keys[-1]], epochs[keys[0]]))
    ratio = float(np.mean(epochs[keys[-1]]) / np.mean(epochs[keys[0]]))
    return all(e.hi >= 0 for e in increments) and growth.lo > 0 and ratio >= several, increments, ratio, growth


def _sweep_figures(claim, runs: dict, corruptions, test_accuracy: list[stats.Estimate]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(corruptions)))
    for p, color in zip(corruptions, colors):
        history = runs[p][0].history
        left.semilogy(range(1, len(history.epochs) + 1), history.column("train_loss"), color=color, label=f"p = {p:g}")
    left.set(xlabel="epoch", ylabel="train loss (cross-entropy)", title="Training loss per corruption level (run 1)")
    left.legend(fontsize=8)
    errors = [1 - e.value for e in test_accuracy]
    bars = np.array([[e.hi - e.value for e in test_accuracy], [e.value - e.lo for e in test_accuracy]])
    right.errorbar(corruptions, errors, yerr=bars, marker="o", capsize=3, label="test error (mean of runs, 95 % CI)")
    right.axhline(0.9, color="gray", ls="--", label="chance (90 % error)")
    right.plot(corruptions, [0.0] * len(corruptions), "k:", label="train error")
    right.set(xlabel="label corruption p", ylabel="error", ylim=(-0.02, 1.0),
              title="Error vs corruption (Zhang Fig. 1c)")
    right.legend(fontsize=8)
    claim.figure(fig, "label_corruption_sweep")


# ---------------------------------------------------------------- claim 2: image randomisations


def randomized(split: Split, kind: str, seed: int) -> Split:
    """Zhang et al.'s image randomisations on both splits (labels untouched). Shuffled pixels use
    one permutation for train and test; the others draw the test images independently."""
    randomize = getattr(data, kind)
    test_seed = seed if kind == "shuffled_pixels" else seed + 1
    return Split(randomize(split.x_train, seed), split.y_train, None, None, randomize(split.x_test, test_seed),
                 split.y_test)


RANDOMIZATIONS = ("shuffled_pixels", "random_pixels", "gaussian_images")


def test_randomized_images_are_memorized(device, protocol, seed, claim, baseline):
    split = load_split(protocol["mlp_data"], device, seed)
    tag = f"MLP 1×{protocol['mlp']['width']}, {len(split.x_train)} images"
    numbers = {}
    for kind in RANDOMIZATIONS:
        noisy = randomized(split, kind, seed + 1)
        run = train_run(mlp_factory(split, protocol), noisy.x_train, noisy.y_train, protocol["budget"], seed,
                        (noisy.x_test, noisy.y_test))
        claim.check(f"{tag}: {kind.replace('_', ' ')} are fitted", run.train_accuracy, holds=run.train_accuracy == 1.0,
                    threshold="= 100 %", paper=1.0, unit="%", epochs_to_fit=run.history.epochs_to_fit())
        numbers.update({
            f"{kind}_epochs": trajectory(len(run.history.epochs), "epochs until the fit of one run"),
            f"{kind}_test": binomial(run.test.value, len(noisy.y_test), "test accuracy of a trained MLP"),
        })
        if kind == "gaussian_images":  # images independent of labels: chance by construction of the data
            check_chance(claim.check, f"{tag}: Gaussian images → chance test accuracy", [run], noisy.y_test,
                         protocol, seed)
            linear_model = functools.partial(linear_classifier, noisy.x_train[0].numel())
            control = train_run(linear_model, noisy.x_train, noisy.y_train,
                                protocol["budget"], seed, (noisy.x_test, noisy.y_test))
            claim.control(f"{tag}: a linear model ({count_parameters(control.model)} parameters) fits the Gaussian "
                          "images", control.train_accuracy, holds=control.train_accuracy == 1.0, threshold="= 100 %",
                          unit="%")
            numbers["linear_gaussian_train"] = binomial(control.train_accuracy, len(noisy.y_train),
                                                        "train accuracy of a trained linear model")
        else:
            claim.record(f"{tag}: {kind.replace('_', ' ')}: test accuracy (see the xfail test)", run.test, unit="%")
    true = train_run(mlp_factory(split, protocol), split.x_train, split.y_train, protocol["budget"], seed,
                     (split.x_test, split.y_test))
    check_chance(claim.control, f"{tag}: true images → chance test accuracy", [true], split.y_test, protocol, seed)
    numbers["true_test"] = binomial(true.test.value, len(split.y_test), "test accuracy of a trained MLP")
    baseline.check(numbers)


@pytest.mark.parametrize("kind", [
    pytest.param("shuffled_pixels", marks=pytest.mark.xfail(strict=True, reason=(
        "measured 89.9 % mean test accuracy of 3 runs (seed-offset 0; true images 89.7 %) vs the chance range "
        "[0.8, 25.2] %: an MLP is "
        "blind to one fixed permutation of its inputs (permuting the first layer's columns undoes it), so the "
        "images keep all their information; Zhang et al. report no test accuracy for this randomisation"))),
    pytest.param("random_pixels", marks=pytest.mark.xfail(strict=True, reason=(
        "measured 16.0 % mean test accuracy of 3 runs (seed-offset 0) vs the chance range [8.2, 13.5] %: a "
        "per-image permutation keeps "
        "each image's intensity histogram (the amount of ink of an MNIST digit), which carries class information"))),
])
def test_pixel_permutations_give_chance_test_accuracy(kind, device, protocol, seed, claim):
    split = load_split(protocol["mlp_data"], device, seed)
    noisy = randomized(split, kind, seed + 1)
    runs = [train_run(mlp_factory(split, protocol), noisy.x_train, noisy.y_train, protocol["budget"], seed + 100 * r,
                      (noisy.x_test, noisy.y_test)) for r in range(protocol["repeats"])]
    check_chance(claim.check, f"MLP 1×{protocol['mlp']['width']}: {kind.replace('_', ' ')} → chance test accuracy "
                 f"(mean of {len(runs)} runs)", runs, noisy.y_test, protocol, seed)


# ---------------------------------------------------------------- claim 3: explicit and implicit regularisation


def test_explicit_regularizers_do_not_prevent_memorization(device, protocol, seed, claim, baseline):
    split = load_split(protocol["mlp_data"], device, seed)
    test = (split.x_test, split.y_test)
    budget = protocol["budget"]
    random_labels = corrupted(split.y_train, 1.0, seed + 1)
    tag = f"MLP 1×{protocol['mlp']['width']}, {len(split.x_train)} images"
    fitted, few = protocol["regularized_train_min"], protocol["few_points"]
    plain = train_run(mlp_factory(split, protocol), split.x_train, split.y_train, budget, seed, test)
    regularizers = {
        f"dropout {protocol['dropout']:g}": (mlp_factory(split, protocol, dropout=protocol["dropout"]), budget),
        f"weight decay {protocol['weight_decay']:g}": (mlp_factory(split, protocol),
                                                       _with(budget, weight_decay=protocol["weight_decay"])),
    }
    n_train, n_test = len(split.x_train), len(split.y_test)
    numbers = {"plain_true_test": binomial(plain.test.value, n_test, "test accuracy of a trained MLP")}
    runs = {}
    for name, (make_model, regularized_budget) in regularizers.items():
        memorized = train_run(make_model, split.x_train, random_labels, regularized_budget, seed, test)
        claim.check(f"{tag} with {name}: random labels are fitted", memorized.train_accuracy,
                    holds=memorized.train_accuracy >= fitted, threshold=f"≥ {100 * fitted:g} %",
                    paper=PAPER["regularized_random_train"], unit="%", epochs_to_fit=memorized.history.epochs_to_fit())
        true = train_run(make_model, split.x_train, split.y_train, regularized_budget, seed, test)
        change = stats.difference_ci(true.test_hits, plain.test_hits, seed=seed)
        claim.check(f"{tag}: {name} changes true-label test accuracy by a few points at most", change,
                    holds=-few <= change.lo and change.hi <= few, threshold=f"CI within ±{100 * few:g} points",
                    paper=PAPER["weight_decay_test_change"] if name.startswith("weight") else None, unit="%",
                    regularized=true.test.value, plain=plain.test.value)
        numbers.update({
            f"{name}_random_train": binomial(memorized.train_accuracy, n_train, "train accuracy on random labels"),
            f"{name}_true_test": binomial(true.test.value, n_test, "test accuracy of a trained MLP"),
            f"{name}_random_epochs": trajectory(len(memorized.history.epochs), "epochs until the fit of one run"),
        })
        runs[name] = memorized, true
    # Controls: a regulariser strong enough to stop the fit; a change (label randomisation) that is not "a few points".
    strong = _with(budget, weight_decay=protocol["strong_weight_decay"])
    control = train_run(mlp_factory(split, protocol), split.x_train, random_labels, strong, seed, test)
    claim.control(f"{tag} with weight decay {protocol['strong_weight_decay']:g}: random labels are fitted",
                  control.train_accuracy, holds=control.train_accuracy >= fitted, threshold=f"≥ {100 * fitted:g} %",
                  unit="%")
    name = f"weight decay {protocol['weight_decay']:g}"
    memorized, true = runs[name]
    randomization = stats.difference_ci(memorized.test_hits, true.test_hits, seed=seed)
    claim.control(f"{tag} with {name}: training on random instead of true labels changes test accuracy by a few "
                  "points at most", randomization, holds=-few <= randomization.lo and randomization.hi <= few,
                  threshold=f"CI within ±{100 * few:g} points", unit="%")
    numbers["strong_weight_decay_random_train"] = binomial(control.train_accuracy, n_train,
                                                           "train accuracy on random labels")
    baseline.check(numbers)


def _with(budget: train.TrainConfig, **changes) -> train.TrainConfig:
    return train.TrainConfig(**{**vars(budget), **changes})


def test_early_stopping_beats_memorization_on_noisy_labels(device, protocol, seed, claim, baseline):
    split = load_split(protocol["mlp_data"], device, seed)
    test = (split.x_test, split.y_test)
    tag = f"MLP 1×{protocol['mlp']['width']}, {len(split.x_train)} images"
    numbers = {}
    for p in (protocol["early_stopping_p"], 0.0):
        labels = corrupted(split.y_train, p, seed + 1)
        holdout = (split.x_holdout, corrupted(split.y_holdout, p, seed + 2))  # noisy like the training labels
        final = train_run(mlp_factory(split, protocol), split.x_train, labels, protocol["budget"], seed, test, holdout)
        best_epoch = final.history.best_epoch
        # The early-stopped model: the same run (same init, same minibatches) replayed up to the best
        # held-out epoch, so that both models are scored on the same test points (paired CI).
        stopped = train_run(mlp_factory(split, protocol), split.x_train, labels,
                            _with(protocol["budget"], epochs=best_epoch), seed, test)
        if device.type == "cpu":  # bit-exact replay
            assert stopped.history.final.test_accuracy == final.history.best.test_accuracy
        gap = stats.difference_ci(stopped.test_hits, final.test_hits, seed=seed)
        statement = (f"{tag}, p = {p:g}: stopping at the best held-out epoch ({best_epoch} of "
                     f"{len(final.history.epochs)}) beats the memorising final epoch (test accuracy gap)")
        verdict = claim.check if p > 0 else claim.control
        verdict(statement, gap, holds=gap.lo > 0, threshold="paired CI lo > 0", unit="%",
                early_stopped=stopped.test.value, final=final.test.value, final_train=final.train_accuracy)
        numbers.update({
            # The best held-out epoch of one noisy run: the argmax of a noisy curve, fixed by its trajectory.
            f"p{p:g}_best_epoch": trajectory(best_epoch, "best held-out epoch of one run"),
            f"p{p:g}_stopped_test": binomial(stopped.test.value, len(split.y_test), "test accuracy of a trained MLP"),
            f"p{p:g}_final_test": binomial(final.test.value, len(split.y_test), "test accuracy of a trained MLP"),
        })
    baseline.check(numbers)


# ---------------------------------------------------------------- claim 4: CNN width (seed 003)

CNN_VARIANTS = sorted({name for scale in PROTOCOL.values() for name in scale["cnn"]["variants"]})


@pytest.mark.parametrize("variant", CNN_VARIANTS)
def test_wide_cnn_memorizes_narrow_cnn_does_not(variant, device, scale, protocol, seed, claim, baseline):
    cnn = protocol["cnn"]
    if variant not in cnn["variants"]:
        pytest.skip(f"{variant} is not part of the {scale} protocol")
    spec = cnn["variants"][variant]
    split = load_split({"dataset": "cifar10", "crop": None, **spec}, device, seed, full_train=spec["full_train"])
    test = (split.x_test, split.y_test)
    corruptions = cnn["corruptions"]
    runs = {(width, p): train_run(functools.partial(WidthCNN, width), split.x_train,
                                  corrupted(split.y_train, p, seed + 1), cnn["budgets"][width], seed, test)
            for width in (64, 4) for p in corruptions}
    tag = f"CNN, CIFAR-10 {variant}"
    for width in (64, 4):
        claim.record(f"CNN width c = {width}: trainable parameters", count_parameters(runs[width, 1.0].model),
                     paper=PAPER["cnn_parameters"][width], source=SEED_003)

    wide = {p: runs[64, p].train_accuracy for p in corruptions}
    claim.check(f"{tag}: c = 64 fits p ∈ {list(corruptions)} (lowest train accuracy)", min(wide.values()),
                holds=min(wide.values()) == 1.0, threshold="= 100 % at every p", paper="≈ 100 % (Fig. 11)",
                source=SEED_003, unit="%", by_p=wide, epochs={p: len(runs[64, p].history.epochs) for p in corruptions})
    narrow = runs[4, 1.0].train_accuracy
    claim.control(f"{tag}: c = 4 fits p = 1", narrow, holds=narrow == 1.0, threshold="= 100 % at every p",
                  source=SEED_003, unit="%")
    underfit = cnn["underfit_max"]
    claim.check(f"{tag}: c = 4 does not fit random labels within the same budget", narrow, holds=narrow <= underfit,
                threshold=f"≤ {100 * underfit:g} %", paper="far below 100 % (Fig. 7)", source=SEED_003, unit="%",
                epochs=len(runs[4, 1.0].history.epochs))
    claim.control(f"{tag}: c = 64 does not fit random labels within the same budget", wide[1.0],
                  holds=wide[1.0] <= underfit, threshold=f"≤ {100 * underfit:g} %", source=SEED_003, unit="%")
    for (width, p), run in runs.items():
        claim.record(f"{tag}: c = {width}, p = {p:g}: test accuracy", run.test, source=SEED_003, unit="%",
                     train=run.train_accuracy)

    _width_figure(claim, runs, corruptions)
    n_train, n_test = len(split.x_train), len(split.y_test)
    baseline.check({f"c{width}_p{p:g}_{name}": value for (width, p), run in runs.items()
                    for name, value in (
                        ("train", binomial(run.train_accuracy, n_train, "train accuracy of a trained CNN")),
                        ("test", binomial(run.test.value, n_test, "test accuracy of a trained CNN")),
                        ("epochs", trajectory(len(run.history.epochs), "epochs until the fit of one run")))})


def _width_figure(claim, runs: dict, corruptions) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, column, title in zip(axes, ("train_accuracy", "test_accuracy"), ("train", "test")):
        for (width, p), run in runs.items():
            ax.plot(range(1, len(run.history.epochs) + 1), run.history.column(column),
                    ls="-" if width == 64 else "--", color=plt.cm.viridis(0.85 * p), label=f"c = {width}, p = {p:g}")
        ax.set(xlabel="epoch", ylabel=f"{title} accuracy",
               title=f"{title.capitalize()} accuracy (seed 003 Figs. 7/8, 11/12)")
    axes[0].legend(fontsize=8)
    claim.figure(fig, "cnn_width_memorization")
