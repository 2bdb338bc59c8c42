"""Independent training runs of one model, grouped into the cells ("arms") a claim compares.

Shared by the memorisation claim families (claims/test_label_corruption.py, test_randomized_images.py,
test_regularizers.py, test_cnn_width.py): a class-balanced split with an optional held-out part, one
seeded run (`train_run`), `trials` runs of a cell (`train_arm`, trial t trains with seed + 1000·t and
draws its labels with seed + 1000·t + 1), the hits arrays `stats.trials_ci` takes, and the seed-to-seed
spreads their baselines declare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import data, stats, train
from .verdict import at_most

# The MLP families' shared data and budget per scale (random labels aside): the label-corruption,
# randomised-image and regulariser tests train on the same images with the same budget, so one table.
# Units: images; epochs = passes over n_train; lr per step.
MLP_PROTOCOL = {
    "smoke": {
        "mlp_data": {"dataset": "mnist", "image_size": 14, "crop": None, "n_train": 1000, "n_holdout": 1000,
                     "n_test": 2000},
        "budget": train.TrainConfig(epochs=300, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9),
    },
    "full": {  # the paper's data (CIFAR-10, 28 px crops)
        "mlp_data": {"dataset": "cifar10", "image_size": 28, "crop": 28, "n_train": 45000, "n_holdout": 5000,
                     "n_test": 10000},
        "budget": train.TrainConfig(epochs=1000, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9),
    },
}


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
    downsampled; the held-out images (if any) are drawn from the training split.

    (`data.prepare` has no held-out split; the statistics here are the training images' alone.)"""
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


def randomized(split: Split, kind: str, seed: int) -> Split:
    """Zhang et al.'s image randomisations (`data.shuffled_pixels`, `random_pixels`, `gaussian_images`)
    on both splits, labels untouched. Shuffled pixels use one permutation for train and test; the
    others draw the test images independently."""
    randomize = getattr(data, kind)
    test_seed = seed if kind == "shuffled_pixels" else seed + 1
    return Split(randomize(split.x_train, seed), split.y_train, None, None, randomize(split.x_test, test_seed),
                 split.y_test)


@dataclass
class Run:
    """A trained model, its history, its final hits on its training labels and its test predictions."""

    model: torch.nn.Module
    history: train.History
    train_hits: torch.Tensor
    test_hits: torch.Tensor
    test_predictions: torch.Tensor
    parameter_norms: list[float] | None = None  # ‖θ‖ at initialisation and after every epoch (norms=True)

    @property
    def train_accuracy(self) -> float:
        return float(self.train_hits.float().mean())


def train_run(make_model, x, y, budget: train.TrainConfig, seed: int, test: tuple, holdout=None, *,
              curves: bool = False, norms: bool = False) -> Run:
    """Build the model under `seed` (so a run is fixed by its seed alone) and train it. The test set
    is scored per epoch only for `curves` (figures), and ‖θ‖ is recorded after every step only for
    `norms`: neither changes anything in the trajectory."""
    torch.manual_seed(seed)
    model = make_model().to(x.device)
    step_norms = [parameter_norm(model)] if norms else None
    history = train.fit(model, x, y, budget, seed=seed, test=test if curves else None, holdout=holdout,
                        after_step=(lambda m: step_norms.append(parameter_norm(m))) if norms else None)
    if norms:  # keep the norm at initialisation and at the end of every (complete) epoch
        steps_per_epoch = -(-len(x) // budget.batch_size)
        step_norms = step_norms[::steps_per_epoch][: len(history.epochs) + 1]
    predictions = train.predict(model, test[0]).argmax(dim=1)
    return Run(model, history, train.evaluate(model, x, y)[2], train.evaluate(model, *test)[2], predictions,
               step_norms)


def parameter_norm(model: torch.nn.Module) -> float:
    """‖θ‖: the Euclidean norm of all trainable parameters together."""
    with torch.no_grad():
        return float(torch.sqrt(sum(p.detach().pow(2).sum() for p in model.parameters() if p.requires_grad)))


def trial_seed(seed: int, t: int) -> int:
    return seed + 1000 * t


class Arm:
    """The independent runs of one cell: hits as (trials, n) arrays for `stats.trials_ci`."""

    def __init__(self, runs: list[Run]):
        self.runs = runs

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def train_hits(self) -> np.ndarray:
        return np.stack([stats.to_numpy(r.train_hits, float) for r in self.runs])

    @property
    def test_hits(self) -> np.ndarray:
        return np.stack([stats.to_numpy(r.test_hits, float) for r in self.runs])

    @property
    def gap_scores(self) -> np.ndarray:
        """Per test image: the run's train accuracy − its hit (mean over images = train − test accuracy)."""
        return self.train_hits.mean(axis=1, keepdims=True) - self.test_hits

    @property
    def epochs(self) -> list[int]:
        return [len(r.history.epochs) for r in self.runs]

    @property
    def predictions(self) -> np.ndarray:
        return np.stack([stats.to_numpy(r.test_predictions) for r in self.runs], axis=1)  # (n_test, trials)

    def train_ci(self) -> stats.Estimate:
        return stats.trials_ci(self.train_hits)

    def test_ci(self) -> stats.Estimate:
        return stats.trials_ci(self.test_hits)


def train_arm(make_model, x, labels_of, budget, seed: int, test, trials: int, *, first: int = 0,
              curves: bool = False, norms: bool = False) -> Arm:
    """`trials` runs; run t trains with seed + 1000·t on `labels_of(seed + 1000·t + 1)`."""
    return Arm([train_run(make_model, x, labels_of(trial_seed(seed, t) + 1), budget, trial_seed(seed, t), test,
                          curves=curves and t == first, norms=norms) for t in range(first, first + trials)])


def randomized_arm(make_model, split: Split, kind: str, budget, seed: int, trials: int) -> Arm:
    """`trials` runs on randomised images (`randomized`): run t trains with seed + 1000·t on images
    randomised with seed + 1000·t + 1, scored on test images randomised the same way."""
    runs = []
    for t in range(trials):
        noisy = randomized(split, kind, trial_seed(seed, t) + 1)
        runs.append(train_run(make_model, noisy.x_train, noisy.y_train, budget, trial_seed(seed, t),
                              (noisy.x_test, noisy.y_test)))
    return Arm(runs)


def corrupted(y: torch.Tensor, p: float):
    """Labels with a fraction p resampled, as a function of the trial's label seed."""
    return lambda label_seed: data.corrupt_labels(y, p, label_seed)[0]


def seed_sd(hits: np.ndarray) -> float:
    """Seed-to-seed sd of the trials' mean accuracy (adds to a baseline's binomial tolerance)."""
    return float(hits.mean(axis=1).std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0


def epochs_sd(*cells: list[int]) -> float:
    """Run-to-run sd of epochs to fit, pooled over the trials of every cell a test trains (the
    within-cell variance, Σ (n − 1) s² / Σ (n − 1)): at least one epoch, the count's resolution.
    On another code path each trial is a fresh draw, so a baseline tolerance needs σ itself; the
    sd of one cell's 2–3 trials is too noisy for that (a 3-trial cell measured s = 4.6 where the
    pooled s is 5.3; under MKL_CBWR=COMPATIBLE one trial moved 12 epochs against a per-cell
    tolerance of 8.6)."""
    squares = sum(float(np.var(cell, ddof=1)) * (len(cell) - 1) for cell in cells if len(cell) > 1)
    dof = sum(len(cell) - 1 for cell in cells if len(cell) > 1)
    return max((squares / dof) ** 0.5 if dof else 0.0, 1.0)


def chance_region(arm: Arm, labels: torch.Tensor, seed: int, level: float):
    """"No better than random chance": at most the upper end of the central `level` class-permutation
    range of the arm's predictions (the range a label-blind predictor with the same grouping of images
    reaches). Returns the region and the range."""
    lo, hi = stats.class_permutation_interval(arm.predictions, labels, level, seed=seed)
    return at_most(hi), (lo, hi)
