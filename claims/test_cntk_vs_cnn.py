"""Vanilla CNNs against their infinite-width kernels (CNTK) on small data (seed 001, Tables 1–2;
Arora et al. 2019, Table 1, seed 004).

Per dataset (`test_cnn_vs_cntk`):
  claim 1  the CNTK-V is "largely within a −5 % range" of the CNN (seed 001): on ≥ 1,000 held-out
           test images, the mean over depths of (CNN − CNTK) ≤ 5 points and at most one depth
           has CNN − CNTK > 5 points. Control: the same kernel regression fitted to shuffled
           training labels (a kernel that learned nothing) fails the same assertion.
  claim 2  learning rates 1 and 10 break the CNN (seed 001 Table 1: 6–18 %): its test accuracy lies
           in the chance interval. A diverged net (non-finite outputs) counts as a constant
           predictor, i.e. exactly 10 % on the class-balanced test set — chance, never an error.
           Control: the lr 0.1 net of claim 1 is far above chance (same assertion fails).
  claim 3  accuracy vs depth (seed 001: a drop beyond 10–15 layers): recorded with CIs and a
           figure, nothing asserted (the drop is a few points on 50 images; we report its CI).
CIFAR-10 only (`test_cntk_gap_beats_cntk_v`):
  claim 4  CNTK-GAP − CNTK-V ≥ 3 points with the paired-bootstrap CI above 0 at depths 3 and 6
           (Arora Table 1: +5 to +10 points). Control: CNTK-V depth 6 vs depth 3 (paper: +0.9 at 2K)
           fails the same assertion.

Architecture and kernel: `dlclaims.models.vanilla_cnn.VanillaCNN` — [3×3 SAME conv, no bias →
ReLU] × (depth − 1) → Flatten → Dense — and `dlclaims.cntk.cntk` for the same network; depth counts
layers as Arora et al. (the seed's "number of layers n" is read as this depth). Kernel regression
is Arora's (one-hot − 0.1 targets, no ridge). Data: 500 class-balanced training images, the
seed's 50 validation images (from the rest of the training split, balanced) and 1,000 balanced
test images; images standardised per channel with the 500 training images' statistics.
"""

import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dlclaims import data, stats, train  # noqa: E402
from dlclaims.models.vanilla_cnn import VanillaCNN  # noqa: E402

SOURCE = "seed 001 (Ray 2022, Tables 1–2: CNN vs CNTK, 500 train / 50 val images)"

# Seed 001, validation accuracy on 50 images, averaged over 3 trials: depth → fraction.
SEED_CNN = {  # Table 1, by learning rate
    0.1: {"mnist": {5: .98, 10: 1.0, 15: .96, 20: .96}, "fashion_mnist": {5: .74, 10: .72, 15: .72, 20: .70},
          "cifar10": {5: .34, 10: .40, 15: .40, 20: .30}},
    1.0: {"mnist": {5: .10, 10: .10, 15: .10, 20: .18}, "fashion_mnist": {5: .06, 10: .06, 15: .10, 20: .06},
          "cifar10": {5: .10, 10: .10, 15: .06, 20: .10}},
    10.0: {"mnist": {5: .10, 10: .10, 15: .10, 20: .12}, "fashion_mnist": {5: .06, 10: .06, 15: .08, 20: .06},
           "cifar10": {5: .10, 10: .10, 15: .16, 20: .10}},
}
SEED_CNTK = {  # Table 2
    "mnist": {5: .96, 10: .9799, 15: .94, 20: .9199}, "fashion_mnist": {5: .74, 10: .74, 15: .70, 20: .70},
    "cifar10": {5: .26, 10: .34, 15: .3599, 20: .3599},
}
ARORA_GAP_GAIN = {3: 0.4971 - 0.4094, 6: 0.5173 - 0.4343}  # Table 1, CNTK-GAP-2K − CNTK-V-2K

# Units: images; image_size = side after area downsampling; epochs = passes over n_train.
# The CNN uses the standard parameterisation (Keras' default Glorot-uniform initialisation): the
# seed's learning rates 0.1 / 1 / 10 are plain-SGD rates of an ordinary CNN (in the NTK
# parameterisation lr 0.1 does not fit 500 MNIST images in 60 epochs; with He-normal weights lr
# 0.1 is unstable on CIFAR-10; with PyTorch's default depth 10 does not train and lr 1 fits MNIST).
# Its training stops at 100 % train accuracy; the best validation epoch is kept (restored), as the
# seed did.
PROTOCOL = {
    "smoke": {  # ≈ 5 CPU minutes: two datasets, two depths, narrow nets, one trial, small images
        "datasets": {"mnist": 14, "cifar10": 16},
        "depths": (5, 10),
        "n_train": 500, "n_val": 50, "n_test": 1000,
        "width": 16,
        "trials": 1,
        "cnn": train.TrainConfig(epochs=40, batch_size=50, lr=0.1, momentum=0.0, restore_best=True),
        # lr 1 / 10: a run whose validation accuracy stalls for `patience` epochs is over.
        "large_lrs": (1.0, 10.0), "large_lr_depths": (5,), "large_lr_patience": 3,
        "chance_level": 0.99,
        "max_gap": 0.05, "max_depths_beyond_gap": 1,
        # claim 4: CNTK-GAP costs (H·W)² per pair (torch engine: ≈ 0.65 ms per pair at 8×8, 3.3 ms
        # at 12×12, 8.5 ms at 16×16, one CPU thread), so 8×8 CIFAR-10 and ≈ 120k pairs (≈ 1.3 CPU
        # minutes). Larger sizes were tried with the fused float32 kernel (issue 17): 12×12 with
        # 500 train / 1,000 test images (625k pairs, 821 s on the loaded box, offset 0) still
        # straddles 0, so the smoke size stays and the decision is the 32×32 `full` protocol.
        "gap": {"image_size": 8, "n_train": 200, "n_test": 500, "depths": (3, 6)},
        "min_gap_gain": 0.03,
        # Known findings of this small protocol (measured at seed offsets 0-4):
        "findings": {
            "mnist lr 1": "smoke (MNIST 14 px, width 16, Glorot init): lr 1 does not always break the CNN "
                          "(test accuracy 13.9 / 11.1 / 10.0 / 31.1 / 11.6 % at offsets 0-4; 99 % chance "
                          "interval [7.6, 12.4] %); seed: 10-18 %",
            "gap": "smoke (CIFAR-10 8×8, 200 train / 500 test): GAP − V is +3.0 / +2.4 / +0.8 / −0.8 / "
                   "+4.0 points at depth 3 and +3.6 / +1.2 / +2.0 / +0.8 / +2.4 at depth 6 (offsets 0-4; "
                   "+1.6 at 300/700; 12×12, 500/1,000, float32: +1.7 [−1.4, +4.8] / +0.8 [−2.2, +3.7] at "
                   "offset 0); Arora 2K (32×32): +8.8 / +8.3; 32×32 exceeds the CPU budget",
        },
    },
    "full": {  # the seed's protocol at native resolution (GPU)
        "datasets": {"mnist": 28, "fashion_mnist": 28, "cifar10": 32},
        "depths": (5, 10, 15, 20),
        "n_train": 500, "n_val": 50, "n_test": 1000,
        "width": 128,
        "trials": 3,
        "cnn": train.TrainConfig(epochs=200, batch_size=50, lr=0.1, momentum=0.0, restore_best=True),
        "large_lrs": (1.0, 10.0), "large_lr_depths": (5, 10, 15, 20), "large_lr_patience": 5,
        "chance_level": 0.99,
        "max_gap": 0.05, "max_depths_beyond_gap": 1,
        "gap": {"image_size": 32, "n_train": 500, "n_test": 2000, "depths": (3, 6)},
        "min_gap_gain": 0.03,
    },
}
DATASETS = ("mnist", "fashion_mnist", "cifar10")


def split(name: str, device, seed: int, image_size: int, n_train: int, n_test: int,
          n_val: int = 0):
    """Class-balanced train / validation (disjoint, from the train split) / test images, standardised."""
    full = data.load(name, device=device)
    train_idx = data.balanced_indices(full.y_train, n_train, seed)
    rest = torch.ones(len(full.y_train), dtype=torch.bool, device=full.y_train.device)
    rest[train_idx] = False
    rest = torch.nonzero(rest).flatten()
    val_idx = rest[data.balanced_indices(full.y_train[rest], n_val, seed + 1)] if n_val else rest[:0]
    test_idx = data.balanced_indices(full.y_test, n_test, seed + 2)
    mean, std = data.channel_stats(full.x_train[train_idx])

    def images(x):
        x = data.to_float(x, mean, std)
        return data.downsample(x, image_size) if x.shape[-1] != image_size else x

    return ((images(full.x_train[train_idx]), full.y_train[train_idx]),
            (images(full.x_train[val_idx]), full.y_train[val_idx]),
            (images(full.x_test[test_idx]), full.y_test[test_idx]))


def kernel_hits(x_train, label_sets, evaluation, depths, device, **kernel_options) -> list[dict]:
    """CNTK regression, all depths from one kernel pass: for each training label set,
    depth → [hits on each (x, y) of `evaluation`]."""
    from dlclaims.cntk import cntk_predictions

    sizes = [len(y) for _, y in evaluation]
    y_eval = torch.cat([y for _, y in evaluation]).cpu()
    predictions = cntk_predictions(x_train, label_sets, torch.cat([x for x, _ in evaluation]), depths,
                                   device=device, **kernel_options)
    return [{d: list((p == y_eval).split(sizes)) for d, p in by_depth.items()} for by_depth in predictions]


def cnn_hits(model, x, y) -> torch.Tensor:
    """Hits of a trained net; a diverged net (any non-finite output) is a constant predictor of
    class 0 — exactly 1/10 on a balanced set: it predicts nothing useful, which is chance."""
    outputs = train.predict(model, x)
    if not bool(torch.isfinite(outputs).all()):
        return (y == 0).cpu()
    return (outputs.argmax(dim=1) == y).cpu()


def train_cnn(x_train, y_train, val, test, depth, config, protocol, seed):
    """One trial: fit to 100 % train accuracy, keep the best validation epoch; (val hits, test hits, history)."""
    model = VanillaCNN(x_train.shape[1], depth=depth, width=protocol["width"], image_size=x_train.shape[-1],
                       parameterization="standard").to(x_train.device)
    history = train.fit(model, x_train, y_train, config, seed=seed, holdout=val)
    return cnn_hits(model, *val), cnn_hits(model, *test), history


def point_accuracy(trial_hits: list[torch.Tensor]):
    """Accuracy over trials: Wilson for one trial, else a bootstrap over test points of the trial mean."""
    if len(trial_hits) == 1:
        return stats.accuracy(trial_hits[0])
    return stats.bootstrap_ci(torch.stack(trial_hits).float().mean(0).numpy())


def mean_over(hits: dict) -> np.ndarray:
    """Per test point: the hit rate averaged over depths and trials."""
    return np.mean([torch.stack(trials).float().mean(0).numpy() for trials in hits.values()], axis=0)


@pytest.mark.parametrize("dataset", DATASETS)
def test_cnn_vs_cntk(dataset, device, protocol, seed, claim, baseline):
    if dataset not in protocol["datasets"]:
        pytest.skip(f"{dataset} is not in this scale's protocol (smoke: MNIST and CIFAR-10 only)")
    size, depths = protocol["datasets"][dataset], protocol["depths"]
    (x_train, y_train), val, test = split(dataset, device, seed, size, protocol["n_train"],
                                          protocol["n_test"], protocol["n_val"])
    tag = f"{dataset} {size}×{size}, n_train={len(y_train)}"
    shuffled_labels = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
                              .to(y_train.device)]
    kernel, null_kernel = kernel_hits(x_train, [y_train, shuffled_labels], [val, test], depths, device)

    cnn_val, cnn_test, fitted = {}, {}, {}
    for d in depths:
        runs = [train_cnn(x_train, y_train, val, test, d, protocol["cnn"], protocol, seed + t)
                for t in range(protocol["trials"])]
        cnn_val[d], cnn_test[d] = [r[0] for r in runs], [r[1] for r in runs]
        fitted[d] = [r[2].epochs_to_fit() for r in runs]
    large_lr = {}
    for lr in protocol["large_lrs"]:
        config = dataclasses.replace(protocol["cnn"], lr=lr, patience=protocol["large_lr_patience"])
        for d in protocol["large_lr_depths"]:
            runs = [train_cnn(x_train, y_train, val, test, d, config, protocol, seed + t)
                    for t in range(protocol["trials"])]
            large_lr[lr, d] = ([r[1] for r in runs], [r[2].stop_reason for r in runs],
                               [r[0] for r in runs])

    # Every cell beside the seed's number (the seed's are 50-image validation accuracies).
    numbers = {}
    for d in depths:
        for model, val_hits, test_hits, paper in (
                ("CNN lr 0.1", cnn_val[d], cnn_test[d], SEED_CNN[0.1][dataset][d]),
                ("CNTK-V", [kernel[d][0]], [kernel[d][1]], SEED_CNTK[dataset][d])):
            claim.record(f"{tag}: {model}, depth {d}, 50 validation images", point_accuracy(val_hits),
                         paper=paper, unit="%")
            claim.record(f"{tag}: {model}, depth {d}, {len(test[1])} test images", point_accuracy(test_hits),
                         unit="%", epochs_to_fit=fitted[d] if model.startswith("CNN") else None)
            numbers[f"{model.split()[0]}_depth{d}_test"] = point_accuracy(test_hits).value
            numbers[f"{model.split()[0]}_depth{d}_val"] = point_accuracy(val_hits).value

    # Claim 3: accuracy vs depth (figure; the drop from the best to the deepest depth, recorded).
    figure_accuracy_vs_depth(claim, tag, dataset, depths, cnn_test, cnn_val, kernel)
    deepest = depths[-1]
    for model, hits in (("CNN", {d: torch.stack(cnn_test[d]).float().mean(0) for d in depths}),
                        ("CNTK-V", {d: kernel[d][1].float() for d in depths})):
        best = max(depths[:-1], key=lambda d: float(hits[d].mean()))
        change = stats.difference_ci(hits[deepest], hits[best], seed=seed)
        claim.record(f"{tag}: {model} accuracy change from depth {best} (best shallower) to depth {deepest}",
                     change, paper="seed 001: a drop beyond 10–15 layers", unit="%",
                     significant_drop=change.hi < 0, significant_gain=change.lo > 0)

    # Claim 2: lr 1 and 10 → chance; a diverged net is a constant predictor.
    lo, hi = stats.chance_interval(len(test[1]), 10, protocol["chance_level"])
    chance = f"in the {protocol['chance_level']:.0%} chance interval [{100 * lo:.1f}, {100 * hi:.1f}] %"
    for (lr, d), (test_hits, stop_reasons, val_hits) in large_lr.items():
        acc = point_accuracy(test_hits)
        numbers[f"CNN_lr{lr:g}_depth{d}_test"] = acc.value
        claim.record(f"{tag}: CNN lr {lr:g}, depth {d}, 50 validation images", point_accuracy(val_hits),
                     paper=SEED_CNN[lr][dataset][d], unit="%")
        claim.check(f"{tag}: CNN with lr {lr:g}, depth {d} is at chance on the test images", acc,
                    holds=lo <= acc.value <= hi, threshold=chance, paper=SEED_CNN[lr][dataset][d], unit="%",
                    stop_reasons=stop_reasons, finding=protocol.get("findings", {}).get(f"{dataset} lr {lr:g}"))
    control = point_accuracy(cnn_test[protocol["large_lr_depths"][0]])
    claim.control(f"{tag}: CNN with lr 0.1, depth {protocol['large_lr_depths'][0]} is at chance", control,
                  holds=lo <= control.value <= hi, threshold=chance, unit="%")

    # Claim 1: CNN − CNTK-V over depths, on the test images.
    max_gap, allowed = protocol["max_gap"], protocol["max_depths_beyond_gap"]
    cnn_mean = mean_over(cnn_test)

    def within_gap(kernel_test: dict) -> tuple:
        gap = stats.difference_ci(cnn_mean, mean_over(kernel_test), seed=seed)
        per_depth = {d: float(torch.stack(cnn_test[d]).float().mean() - kernel_test[d][0].float().mean())
                     for d in depths}
        beyond = sum(g > max_gap for g in per_depth.values())
        return gap, per_depth, gap.value <= max_gap and beyond <= allowed

    threshold = f"mean ≤ {100 * max_gap:.0f} points and ≤ {allowed} depth beyond {100 * max_gap:.0f} points"
    gap, per_depth, holds = within_gap({d: [kernel[d][1]] for d in depths})
    claim.check(f"{tag}: CNTK-V within 5 points of the CNN (mean over depths of CNN − CNTK, test images)",
                gap, holds=holds, threshold=threshold, unit="%",
                paper=float(np.mean([SEED_CNN[0.1][dataset][d] - SEED_CNTK[dataset][d] for d in depths])),
                per_depth_gap=per_depth)
    null_gap, null_per_depth, null_holds = within_gap({d: [null_kernel[d][1]] for d in depths})
    claim.control(f"{tag}: a CNTK-V fitted to shuffled labels is within 5 points of the CNN", null_gap,
                  holds=null_holds, threshold=threshold, unit="%", per_depth_gap=null_per_depth)
    from dlclaims.baselines import binomial, trajectory

    # CNTK-V: an argmax that flips only at near-ties under rounding; the binomial tolerance bounds it.
    # Trained CNNs (one trial at smoke scale, so no seed spread is measured): whether a deep CNN
    # leaves chance depends on its trajectory (depth 10 measured 14.5 % vs 24.4 % on two machines).
    baseline.check({k: binomial(v, len(val[1]) if k.endswith("_val") else len(test[1]), "accuracy of CNTK regression")
                    if k.startswith("CNTK") else trajectory(v, "accuracy of one trained CNN")
                    for k, v in numbers.items()})


def figure_accuracy_vs_depth(claim, tag, dataset, depths, cnn_test, cnn_val, kernel):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, per_depth, style in (
            ("CNN, test", {d: point_accuracy(cnn_test[d]) for d in depths}, "o-"),
            ("CNTK-V, test", {d: stats.accuracy(kernel[d][1]) for d in depths}, "s-"),
            ("CNN, 50 val", {d: point_accuracy(cnn_val[d]) for d in depths}, "o:"),
            ("CNTK-V, 50 val", {d: stats.accuracy(kernel[d][0]) for d in depths}, "s:")):
        values = np.array([[e.value, e.value - e.lo, e.hi - e.value] for e in per_depth.values()]) * 100
        ax.errorbar(list(depths), values[:, 0], yerr=values[:, 1:].T, fmt=style, capsize=3, label=label)
    seed_depths = sorted(SEED_CNTK[dataset])
    ax.plot(seed_depths, [100 * SEED_CNN[0.1][dataset][d] for d in seed_depths], "k^--", alpha=.5,
            label="seed 001 CNN (val)")
    ax.plot(seed_depths, [100 * SEED_CNTK[dataset][d] for d in seed_depths], "kv--", alpha=.5,
            label="seed 001 CNTK (val)")
    ax.set(xlabel="depth (layers)", ylabel="accuracy (%)", title=tag)
    ax.legend(fontsize=7)
    claim.figure(fig, f"accuracy_vs_depth_{dataset}")


def test_cntk_gap_beats_cntk_v(device, protocol, seed, claim, baseline):
    spec = protocol["gap"]
    size = spec["image_size"]
    (x_train, y_train), _, test = split("cifar10", device, seed, size, spec["n_train"], spec["n_test"])
    tag = f"CIFAR-10 {size}×{size}, n_train={len(y_train)}, n_test={len(test[1])}"
    # Arora et al.'s flags (README of github.com/ruosongwang/CNTK): CNTK-V `--fix no`, CNTK-GAP `--fix yes`.
    (vanilla,) = kernel_hits(x_train, [y_train], [test], spec["depths"], device, pooling="flatten")
    (gap,) = kernel_hits(x_train, [y_train], [test], spec["depths"], device, pooling="gap",
                         fix_first_layer=True, fix_readout=True)
    gain_min = protocol["min_gap_gain"]
    threshold = f"≥ {100 * gain_min:.0f} points and CI lower bound > 0"
    numbers = {}
    for d in spec["depths"]:
        claim.record(f"{tag}: CNTK-V depth {d}", stats.accuracy(vanilla[d][0]), unit="%")
        claim.record(f"{tag}: CNTK-GAP depth {d}", stats.accuracy(gap[d][0]), unit="%")
        numbers[f"v_depth{d}"] = float(vanilla[d][0].float().mean())
        numbers[f"gap_depth{d}"] = float(gap[d][0].float().mean())
    for d in spec["depths"]:
        gain = stats.difference_ci(gap[d][0], vanilla[d][0], seed=seed)
        claim.check(f"{tag}: CNTK-GAP − CNTK-V at depth {d}", gain, holds=gain.value >= gain_min and gain.lo > 0,
                    threshold=threshold, paper=ARORA_GAP_GAIN[d], unit="%",
                    source="Arora et al. 2019, Table 1 (seed 004), 2K columns",
                    finding=protocol.get("findings", {}).get("gap"))
    shallow, deep = spec["depths"][0], spec["depths"][-1]
    control = stats.difference_ci(vanilla[deep][0], vanilla[shallow][0], seed=seed)
    claim.control(f"{tag}: CNTK-V depth {deep} − CNTK-V depth {shallow}", control,
                  holds=control.value >= gain_min and control.lo > 0, threshold=threshold,
                  paper=0.4343 - 0.4094, unit="%")
    from dlclaims.baselines import binomial

    # float32/64 CNTK regression: an argmax that flips only at near-ties under rounding; binomial bounds it.
    baseline.check({k: binomial(v, len(test[1]), "accuracy of CNTK regression") for k, v in numbers.items()})
