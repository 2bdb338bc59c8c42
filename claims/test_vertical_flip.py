"""Assaraf (2021), HW0 §2 (seed 003): a CNN trained on CIFAR-10 is not robust to upside-down images.

One plain and one flip-augmented Conv-4 per run give every claim:
  claim 1  the vertically flipped test set loses ≥ 20 points of accuracy (seed: 85.8 → 39.2 %)
           yet stays well above chance;                        control: the augmented model
  claim 2  the flipped accuracy rises with the plain one early, then stalls: its late-training
           gain is at most half the plain one's (seed Fig. 2); control: the augmented model
           (asserted at full scale; recorded at smoke)
  claim 3  airplane and frog are among the least degraded classes (seed Fig. 3), bootstrapped
           over test images;                                   control: the same ranking under
           the horizontal flip, which degrades no class systematically
           (not reproduced at smoke scale: frog ranks 5th-6th; an xfail naming the numbers)
  claim 4  training on original + flipped images closes the gap to ≤ 5 points (seed §2.2);
                                                               control: the plain model
  claim 5  the horizontal flip (a symmetry of CIFAR-10) loses ≤ 3 points (checks the method);
                                                               control: the vertical flip
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from dlclaims import data, stats, train
from dlclaims.baselines import binomial, trajectory
from dlclaims.models.conv4 import Conv4

SOURCE = "Assaraf 2021, HW0 §2, Figures 2-4 (seed 003)"

PAPER = {"test": 0.858, "flipped_test": 0.392, "least_degraded": ("airplane", "frog")}

# Units: images, epochs (passes over the training set), lr per step, accuracies as fractions.
PROTOCOL = {
    "smoke": {  # ≈ 3.5 single-thread CPU minutes for both models
        "training_sets": {"subset": 3000},  # class-balanced CIFAR-10 subset (seed: all 50,000)
        "width": 8,  # Conv-4 channels 8-16-32-64, 25 k parameters (seed: width 64, 1.56 M)
        "budget": train.TrainConfig(epochs=30, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.0,
                                    stop_at_train_accuracy=None),  # seed: 80 epochs
        # flip a random half of every minibatch: the seed's 2× concatenated set would double the cost
        "augmentation": "flip_random_half",
        "curve_test_images": 1000,  # per-epoch curves on a balanced test subset; claims use all 10,000
        "early_epochs": (4, 8),  # window where the plain curve has made most of its rise
        "late_epochs": 6,  # the last epochs
        "top_k_least_degraded": 5,  # smoke: the top half (full: top 4)
        "worse_rank_level": 0.95,  # bootstrap upper bound of the worse of the two ranks ≤ top_k
        # Claim 2 is asserted at full scale only (the smoke acceptance is claims 1, 3, 4, 5):
        # 30 epochs of a width-8 net leave the plain curve's late gain at 1.5-2 points, too small
        # for a stable ratio; the ratio and both gains are still recorded.
        "assert_dynamics": False,
        # Measured at seed offsets 0-4: airplane ranks 1-2 but frog 5-6 (worse rank 6/5/6/6/5,
        # bootstrap bound 6).
        # Not a budget artefact we could trade away: 6,000 images × 15 epochs (same compute, 53.8 %
        # test accuracy) ranked frog 6th too (drop 18.0 points vs deer 17.1, dog 16.8; offset 0).
        "per_class_not_reproduced": "smoke (width 8, 3,000 images, 30 epochs): frog ranks 5th-6th by "
                                    "per-class drop at seed offsets 0-4 (airplane 1st-2nd); "
                                    "seed Fig. 3: both least degraded",
    },
    "full": {  # the seed's protocol: Conv-4 width 64, batch 64, SGD lr 0.1 constant, 80 epochs
        # "50k": the seed's training set; "20k-available": the 20,000 images of the offline
        # copy (deviation: 2.5× fewer images), so that a GPU run here reports something.
        "training_sets": {"50k": 50000, "20k-available": 20000},
        "width": 64,
        "budget": train.TrainConfig(epochs=80, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.0,
                                    stop_at_train_accuracy=None),
        "augmentation": "concatenate",  # the seed: original + flipped set (2× images, same epochs)
        "curve_test_images": 10000,
        "early_epochs": (6, 15),
        "late_epochs": 15,
        "top_k_least_degraded": 4,
        "worse_rank_level": 0.95,
        "assert_dynamics": True,
        "per_class_not_reproduced": None,
    },
}
TRAINING_SETS = {"smoke": ["subset"], "full": ["50k", "20k-available"]}
COLLAPSE_MIN = 0.20  # claim 1: at least 20 points lost to the vertical flip
GAP_MAX_AUGMENTED = 0.05  # claim 4
HFLIP_LOSS_MAX = 0.03  # claim 5
STALL_RATIO_MAX = 0.5  # claim 2: flipped late gain ≤ half the plain late gain
CHANCE_LEVEL = 0.99


def pytest_generate_tests(metafunc):
    """Instantiate the test once per training set of the chosen scale."""
    if "training_set" in metafunc.fixturenames:
        metafunc.parametrize("training_set", TRAINING_SETS[metafunc.config.getoption("scale")])


def flip_random_half(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`fit`'s augment hook: each image of the minibatch upside down with probability 1/2."""
    upside_down = torch.rand(len(xb), generator=gen, device=xb.device) < 0.5
    return torch.where(upside_down.view(-1, 1, 1, 1), data.flip_vertical(xb), xb)


def per_class_accuracy(hits, labels, num_classes: int = data.NUM_CLASSES) -> np.ndarray:
    hits, labels = stats.to_numpy(hits, float), stats.to_numpy(labels)
    return np.array([hits[labels == c].mean() for c in range(num_classes)])


def worse_rank(plain_hits, flipped_hits, labels, classes) -> float:
    """The larger rank (1 = least degraded) of `classes` by per-class accuracy drop."""
    drop = per_class_accuracy(plain_hits, labels) - per_class_accuracy(flipped_hits, labels)
    rank = np.empty(len(drop), dtype=int)
    rank[np.argsort(drop, kind="stable")] = np.arange(1, len(drop) + 1)
    return float(rank[list(classes)].max())


def prepare(training_set: str, protocol: dict, device, seed: int):
    """Standardised float images on `device`: (x_train, y_train, x_test, y_test, curve indices)."""
    full = data.load("cifar10", device=device)
    n_train = protocol["training_sets"][training_set]
    data.require_train_size(full, n_train)
    train_idx = data.balanced_indices(full.y_train, n_train, seed) if n_train < len(full.y_train) else slice(None)
    x_train, y_train = full.x_train[train_idx], full.y_train[train_idx]
    mean, std = data.channel_stats(x_train)
    curve = data.balanced_indices(full.y_test, protocol["curve_test_images"], seed + 1)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    images = lambda x: data.to_float(x, mean, std).contiguous(memory_format=layout)  # noqa: E731
    return images(x_train), y_train, images(full.x_test), full.y_test, curve, full.class_names


def train_and_score(x_train, y_train, x_test, y_test, curve, protocol, device, seed, augmented: bool):
    """Train one Conv-4; return its history (curves: plain and flipped test subset) and test hits."""
    augment = None
    if augmented and protocol["augmentation"] == "concatenate":
        x_train, y_train = torch.cat([x_train, data.flip_vertical(x_train)]), torch.cat([y_train, y_train])
    elif augmented:
        augment = flip_random_half
    model = Conv4(protocol["width"]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x_curve, y_curve = x_test[curve], y_test[curve]
    # The flipped curve goes in as `holdout`: recorded per epoch, never used to select (no
    # patience, no restore_best).
    history = train.fit(model, x_train, y_train, protocol["budget"], seed=seed, test=(x_curve, y_curve),
                        holdout=(data.flip_vertical(x_curve), y_curve), augment=augment)
    hits = {name: train.evaluate(model, transform(x_test), y_test)[2]
            for name, transform in (("plain", lambda x: x), ("vertical", data.flip_vertical),
                                    ("horizontal", data.flip_horizontal))}
    return history, hits


def late_gain_ratio(history, protocol) -> tuple[float, float, float]:
    """(flipped late gain / plain late gain, plain gain, flipped gain): mean of the last epochs
    minus mean of the early window, per curve."""
    first, last = protocol["early_epochs"]
    k = protocol["late_epochs"]
    gains = []
    for column in ("test_accuracy", "holdout_accuracy"):
        curve = np.array(history.column(column))
        gains.append(curve[-k:].mean() - curve[first - 1 : last].mean())
    plain_gain, flipped_gain = gains
    return flipped_gain / plain_gain if plain_gain > 0 else float("inf"), plain_gain, flipped_gain


def plot_curves(runs: dict, protocol):
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), sharey=True)
    first, last = protocol["early_epochs"]
    for ax, (name, (history, _)) in zip(axes, runs.items()):
        epochs = history.column("epoch")
        ax.plot(epochs, history.column("test_accuracy"), color="tab:blue", label="test set")
        ax.plot(epochs, history.column("holdout_accuracy"), color="tab:red", label="vertically flipped test set")
        ax.axvspan(first - 0.5, last + 0.5, color="0.9")
        ax.axvspan(epochs[-1] - protocol["late_epochs"] + 0.5, epochs[-1] + 0.5, color="0.9")
        ax.set(title=f"{name} training", xlabel="epoch")
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    return fig


def plot_per_class(plain: np.ndarray, flipped: np.ndarray, class_names):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    pos = np.arange(len(class_names))
    ax.bar(pos - 0.2, plain, 0.4, label="test set")
    ax.bar(pos + 0.2, flipped, 0.4, label="vertically flipped")
    ax.set_xticks(pos, class_names, rotation=30)
    ax.set(ylabel="accuracy", title="per-class accuracy, plain training")
    ax.legend()
    return fig


def test_vertical_flip_collapse(training_set, device, protocol, seed, claim, baseline):
    x_train, y_train, x_test, y_test, curve, class_names = prepare(training_set, protocol, device, seed)
    runs = {name: train_and_score(x_train, y_train, x_test, y_test, curve, protocol, device, seed, augmented)
            for name, augmented in (("plain", False), ("original + flipped", True))}
    (plain_history, plain), (aug_history, aug) = runs["plain"], runs["original + flipped"]
    tag = f"Conv-4 width {protocol['width']}, CIFAR-10 n={len(x_train)}, {protocol['budget'].epochs} epochs"
    claim.figure(plot_curves(runs, protocol), "accuracy_curves")
    plain_per_class = per_class_accuracy(plain["plain"], y_test)
    flipped_per_class = per_class_accuracy(plain["vertical"], y_test)
    claim.figure(plot_per_class(plain_per_class, flipped_per_class, class_names), "per_class_accuracy")
    for c, name in enumerate(class_names):
        claim.record(f"{tag}: {name} accuracy, test → vertically flipped", flipped_per_class[c] - plain_per_class[c],
                     unit="%", test=plain_per_class[c], flipped=flipped_per_class[c])

    # Claim 1: collapse, well above chance.
    plain_acc, flipped_acc = stats.accuracy(plain["plain"]), stats.accuracy(plain["vertical"])
    claim.record(f"{tag}: test accuracy", plain_acc, paper=PAPER["test"], unit="%")
    claim.record(f"{tag}: vertically flipped test accuracy", flipped_acc, paper=PAPER["flipped_test"], unit="%")
    _, chance_hi = stats.chance_interval(flipped_acc.n, 10, CHANCE_LEVEL)
    drop = stats.difference_ci(plain["plain"], plain["vertical"], seed=seed)
    aug_drop = stats.difference_ci(aug["plain"], aug["vertical"], seed=seed)
    claim.check(f"{tag}: vertically flipped test set is well above chance", flipped_acc,
                holds=flipped_acc.lo > chance_hi, threshold=f"lower CI > {100 * chance_hi:.1f} % (chance)",
                paper=PAPER["flipped_test"], unit="%")
    claim.check(f"{tag}: the vertical flip costs ≥ 20 points of test accuracy", drop,
                holds=drop.value >= COLLAPSE_MIN, threshold="≥ 20 points",
                paper=PAPER["test"] - PAPER["flipped_test"], unit="%")
    claim.control(f"{tag}, trained on original + flipped: the vertical flip costs ≥ 20 points", aug_drop,
                  holds=aug_drop.value >= COLLAPSE_MIN, threshold="≥ 20 points", unit="%")

    # Claim 2: the flipped curve stalls after the early phase.
    ratio, plain_gain, flipped_gain = late_gain_ratio(plain_history, protocol)
    aug_ratio, aug_plain_gain, aug_flipped_gain = late_gain_ratio(aug_history, protocol)
    window = f"epochs {protocol['early_epochs']} → last {protocol['late_epochs']}"
    statement = f"{tag}: flipped accuracy's late gain is at most half the plain one's ({window})"
    if protocol["assert_dynamics"]:
        claim.check(statement, ratio, holds=ratio <= STALL_RATIO_MAX, threshold=f"≤ {STALL_RATIO_MAX}",
                    paper="≈ 0 (Fig. 2)", plain_gain=plain_gain, flipped_gain=flipped_gain)
        claim.control(f"{tag}, trained on original + flipped: flipped late gain ≤ half the plain one's",
                      aug_ratio, holds=aug_ratio <= STALL_RATIO_MAX, threshold=f"≤ {STALL_RATIO_MAX}",
                      plain_gain=aug_plain_gain, flipped_gain=aug_flipped_gain)
    else:
        claim.record(statement + " (asserted at full scale)", ratio, paper="≈ 0 (Fig. 2)",
                     plain_gain=plain_gain, flipped_gain=flipped_gain, augmented_ratio=aug_ratio)

    # Claim 4: training on original + flipped images closes the gap.
    claim.check(f"{tag}, trained on original + flipped ({protocol['augmentation']}): flipped gap ≤ 5 points",
                aug_drop, holds=aug_drop.value <= GAP_MAX_AUGMENTED, threshold="≤ 5 points",
                paper="gap closed (Fig. 4)", unit="%", test=stats.accuracy(aug["plain"]).value)
    claim.control(f"{tag}, plain training: flipped gap ≤ 5 points", drop, holds=drop.value <= GAP_MAX_AUGMENTED,
                  threshold="≤ 5 points", unit="%")

    # Claim 5: the horizontal flip, a symmetry of the data, is harmless.
    hflip_loss = stats.difference_ci(plain["plain"], plain["horizontal"], seed=seed)
    claim.check(f"{tag}: the horizontal flip costs ≤ 3 points", hflip_loss, holds=hflip_loss.value <= HFLIP_LOSS_MAX,
                threshold="≤ 3 points", unit="%")
    claim.control(f"{tag}: the vertical flip costs ≤ 3 points", drop, holds=drop.value <= HFLIP_LOSS_MAX,
                  threshold="≤ 3 points", unit="%")

    # Registered here, compared after the test body (a mismatch hides none of the claims below).
    # Seed spread of this 30-epoch Conv-4 beyond test sampling: the baselines of two machines (the
    # issue's and CI's) differ by up to 3.6 points on 10,000 images (binomial SE 0.5): ≈ 1 point.
    seed_sd = 0.01
    baseline.check({
        # Per-epoch curves follow the trajectory: a single epoch swings by tens of points (epoch 25 of the
        # plain run: 47.7 % with 1 thread vs 29.6 % with 2), so they are compared on the same code path only.
        **{f"{name}_{curve_name}": trajectory(history.column(column), "per-epoch accuracy curve of a Conv-4")
           for name, (history, _) in (("plain", runs["plain"]), ("augmented", runs["original + flipped"]))
           for curve_name, column in (("test_curve", "test_accuracy"), ("flipped_curve", "holdout_accuracy"))},
        **{f"{name}_{transform}_accuracy": binomial(hits[transform].float().mean().item(), len(y_test),
                                                    "test accuracy of a trained Conv-4", seed_sd=seed_sd)
           for name, hits in (("plain", plain), ("augmented", aug)) for transform in hits},
    })

    # Claim 3 (last: the most seed-sensitive): airplane and frog degrade least.
    named = [class_names.index(c) for c in PAPER["least_degraded"]]
    top_k, level = protocol["top_k_least_degraded"], protocol["worse_rank_level"]

    def ranked(transform):
        return stats.bootstrap_ci((plain["plain"], plain[transform], y_test),
                                  lambda a, b, y: worse_rank(a, b, y, named), seed=seed, level=2 * level - 1)

    rank, control_rank = ranked("vertical"), ranked("horizontal")
    statement = f"airplane and frog both rank in the top {top_k} least-degraded classes (worse of their ranks)"
    threshold = f"{100 * level:.0f} % bootstrap upper bound ≤ {top_k}"
    claim.control(f"{tag}, horizontal flip: {statement}", control_rank, holds=control_rank.hi <= top_k,
                  threshold=threshold)
    claim.check(f"{tag}, vertical flip: {statement}", rank, holds=rank.hi <= top_k, threshold=threshold,
                paper="airplane, frog (Fig. 3)", finding=protocol["per_class_not_reproduced"])
