"""Vanilla CNNs against their infinite-width kernels (CNTK) on small data (seed 001, Tables 1–2;
Arora et al. 2019, Table 1, seed 004).

Per dataset (`test_cnn_vs_cntk`), every CNN trained `trials` times (seeds seed + 1000·t):
  claim 0  the lr 0.1 CNNs reach 100 % training accuracy (seed 001: "The CNNs were trained till
           full training accuracy was reached"): the fraction of runs that fit, exactly 1.
           Control: the same runs after their first epoch.
  claim 1  the CNTK-V is "largely within a −5 % range of the CNNs accuracy" and "does not
           necessarily result in higher accuracy" (seed 001): CNN − CNTK in [0, 5] points, the mean
           over depths on ≥ 1,000 held-out test images; CI = hierarchical bootstrap over the CNN's
           trials and the test images (the kernel is deterministic given the data: one row).
           Controls, one per side of the region: a CNTK fitted to shuffled training labels (CNN −
           it ≫ 5 points) and the CNNs before training (untrained CNN − CNTK ≪ 0).
  claim 2  learning rates 1 and 10 give "bogus accuracy results" (seed 001): test accuracy within
           the seed's own range for those learning rates, 6–18 % (Table 1, all 24 α = 1 / 10
           cells). Predictions are the argmax of the outputs as they come: a net whose outputs are
           NaN predicts what torch's argmax gives (NaN counts as the maximum, so an all-NaN row is
           class 0 — what numpy's argmax gives for a Keras model's NaN outputs); nothing is hard-coded.
           Control: the lr 0.1 net of the same depth (above the range).
  claim 3  "There is also a drop in accuracy for both the CNNs and CNTKs as depth of the network
           (number of layers) is increased beyond a point (around 10-15 layers)" (seed 001): accuracy at
           depth 20 − accuracy at depth 10 ≤ −1 test image (−1/n_test: a non-zero drop) on the test
           images, per dataset and per model (`depth_drop`). CNTK-V: every scale (one kernel pass gives
           depths 5–20), paired bootstrap over the test images (deterministic kernels, no trials). CNN:
           where the CNNs reach depth 20 — `--scale=full` here, and the `slow` `test_cnn_depth_drop` at
           smoke sizes; CI = hierarchical bootstrap over 3 trials × test images; asserted only when
           every depth-10 and depth-20 CNN reached 100 % train accuracy (the seed's protocol: a depth-20
           net that never trains would "drop" for another reason), else recorded; `test_cnn_depth_drop`
           asserts that fit (claim 0 at depth 20). Sanity controls: depth 20 − the depth-10 model
           without its signal (CNTK-V fitted to shuffled labels / the untrained CNN), which the region
           must reject; depth 5 → 10 (where the seed's tables rise) is recorded. Accuracy at every depth
           is recorded and plotted.
CIFAR-10 only (`test_cntk_gap_beats_cntk_v`), Arora et al.'s kernels at their depths 3 and 6:
  claim 5  "for both CNN and CNTK, depth can affect the classification accuracy" (seed 004, Arora §5):
           accuracy at depth 6 − accuracy at depth 3 ≥ +1 test image (1/n_test: a non-zero effect) for
           CNTK-V and CNTK-GAP, paired bootstrap over the test images (`depth_matters`). Reading: "can
           affect" = two depths whose accuracies differ; the pair and the sign are fixed in advance from
           the paper's own 2K rows (depth 6 is their highest of 3 / 6 in both, +2.5 / +2.0 points), not
           picked from our data — the max − min over our measured depths is ≥ 0 by construction and its
           bootstrap CI excludes 0 even when every depth is equally accurate, so it could not fail.
           Sanity control: the depth-6 kernel fitted to shuffled training labels − the depth-3 kernel
           (decisively below the edge).
  claim 4  CNTK-GAP beats CNTK-V (Arora Table 1: "global average pooling ... can significantly
           increase the classification accuracy by 8% - 10%"): CNTK-GAP − CNTK-V ≥ +1 test image
           (`gap_gain`: an increase is a non-zero effect) at depths 3 and 6, paired bootstrap over
           test images (kernels: no training, no trials). The 8–10 point size is the paper's at
           2,000 / 50,000 32×32 training images and is shown as the paper's number, not asserted at
           our sizes. Smoke (8×8, 200 images) cannot resolve it; the `slow`
           `test_cntk_gap_beats_cntk_v_more_data` runs 16×16 with 1,000 / 2,000 images at depth 3.
           Control: a CNTK-GAP fitted to shuffled training labels − CNTK-V (decisively below).

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
from dlclaims.baselines import binomial, trajectory  # noqa: E402
from dlclaims.models.vanilla_cnn import VanillaCNN  # noqa: E402
from dlclaims.verdict import Finding, Region, at_least, at_most, between, exactly, one_test_image  # noqa: E402

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
ARORA_2K = {"V": {3: 0.4094, 6: 0.4343}, "GAP": {3: 0.4971, 6: 0.5173}}  # Table 1, CNTK-{V,GAP}-2K
ARORA_GAP_GAIN = {d: ARORA_2K["GAP"][d] - ARORA_2K["V"][d] for d in (3, 6)}

# The claims' regions, from the seeds' own words and numbers.
# Seed 001 §II.a: "The CNNs were trained till full training accuracy was reached": every lr 0.1 run fits.
ALL_FITTED = exactly(1.0)
# Seed 001 §III.b: "increasing the number of parameters (network width) infinitely as in the infinite
# CNTKs does not necessarily result in higher accuracy than its finite width CNNs, even though it is
# largely within a -5% range of the CNNs accuracy": CNTK ∈ [CNN − 5, CNN], i.e. CNN − CNTK ∈ [0, 5]
# points. "Largely" is read as the mean over depths (the seed's own cells: MNIST +2.5, Fashion-MNIST
# 0.0, CIFAR-10 +3.0 on average, individual depths −6 … +8); per-depth gaps are recorded.
CNN_MINUS_CNTK = between(0.0, 0.05)
# Seed 001 §III.b: "increasing learning rate from 0.1 to 1 or even 10 affects network performance
# drastically giving bogus accuracy results"; its Table 1 at α = 1 and α = 10 spans 6 … 18 %.
_BOGUS = [acc for lr in (1.0, 10.0) for cells in SEED_CNN[lr].values() for acc in cells.values()]
BOGUS_ACCURACY = between(min(_BOGUS), max(_BOGUS))
# Seed 004 (Arora et al. 2019, §5): "the global average pooling operation can significantly increase
# the classification accuracy by 8% - 10% for both CNN and CNTK": GAP − V ≥ one test image here (an
# increase is a non-zero effect, as for `depth_matters`: a CI ending at 0 is "no increase"; the previous
# edge was 0; `one_test_image` puts it at half an image, off the 1/n_test grid). Direction only: the
# 8–10 points are for 2,000 / 50,000 training images at 32×32 (ARORA_GAP_GAIN is shown as the paper's
# number, not asserted); our sizes are smaller, and in the exploration below the gain rose with n_train.
def gap_gain(n_test: int) -> Region:
    """Claim 4's region: acc(CNTK-GAP) − acc(CNTK-V) ≥ +1 test image."""
    return at_least(one_test_image(n_test))

# Seed 001 §III.b: "There is also a drop in accuracy for both the CNNs and CNTKs as depth of the network
# (number of layers) is increased beyond a point (around 10-15 layers)". Read as: accuracy at the
# deepest depth the seed ran (20) is below accuracy at depth 10, the start of the "around 10–15"
# turning range: acc(20) − acc(10) ≤ 0 (one-sided; the seed gives no size). The pair is fixed, not the
# best shallower depth picked from the data (that maximum is biased upwards, towards a drop). The
# seed's own tables: CNN −4 / −2 / −10 points (MNIST / Fashion-MNIST / CIFAR-10), CNTK −6 / −4 / +2
# (its CIFAR-10 CNTK does not drop: 34 → 36 %). From 15 to 20 the seed's cells drop in only 3 of 6,
# so 15 is not read as the point.
# A drop is a non-zero change: the edge is the measurement's resolution, one test image (−1 / n_test;
# an accuracy on n_test images moves in steps of 1 / n_test), so a CI that ends at 0 ("no change")
# is not inside. Fixed before the offsets 0-4 were re-measured (the previous edge, 0, counted "no
# change" as a drop). `one_test_image` places it at half an image, off the 1/n_test grid.
DROP_FROM, DROP_TO = 10, 20
RISE_FROM = 5  # recorded: depth 5 → 10, where the seed's CNTK and CNN tables rise (except Fashion-MNIST)


def depth_drop(n_test: int) -> Region:
    """Claim 3's region: acc(DROP_TO) − acc(DROP_FROM) ≤ −1 test image."""
    return at_most(-one_test_image(n_test))


# Seed 004 (Arora et al. 2019, §5): "for both CNN and CNTK, depth can affect the classification
# accuracy": accuracy at depth 6 − at depth 3 ≥ one test image (1 / n_test, the resolution, as for
# `depth_drop`: "affect" is a non-zero effect, so a CI ending at 0 is not inside), the pair and sign of
# the paper's 2K rows (claim 5).
def depth_matters(n_test: int) -> Region:
    """Claim 5's region: acc(6) − acc(3) ≥ +1 test image."""
    return at_least(one_test_image(n_test))

# Units: images; image_size = side after area downsampling; epochs = passes over n_train.
# The CNN uses the standard parameterisation (Keras' default Glorot-uniform initialisation): the
# seed's learning rates 0.1 / 1 / 10 are plain-SGD rates of an ordinary CNN (in the NTK
# parameterisation lr 0.1 does not fit 500 MNIST images in 60 epochs; with He-normal weights lr
# 0.1 is unstable on CIFAR-10; with PyTorch's default depth 10 does not train and lr 1 fits MNIST).
# Plain SGD (momentum 0) at lr 0.1, as the seed ("SGD was used"; no momentum mentioned for paper 1).
# Training stops at 100 % train accuracy (the seed's protocol, `stop_at_train_accuracy`); `epochs` is
# only a cap, 1.5× the slowest fit measured (CIFAR-10 depth 10: 46–134 epochs, offsets 0–4);
# then the best validation epoch is kept (restored), as the seed did ("till full training accuracy
# was reached and the validation accuracy plateaued before decreasing"). The same trial seed gives
# the lr 0.1, 1 and 10 nets of a depth the same initial weights and batch order.
PROTOCOL = {
    "smoke": {  # ≈ 2.5–3.5 CPU minutes: two datasets, two depths, narrow nets, small images, 3 trials
        "datasets": {"mnist": 14, "cifar10": 16},
        "depths": (5, 10),  # CNNs
        # CNTK-V: depths are prefixes of one recursion, so one pass gives all four (claim 3). Depths 15
        # and 20 cost +1.6 (MNIST) / +2.8 (CIFAR-10) CPU-s over 5 and 10 (process time of the kernel
        # pass, one thread; 3.2 → 4.8 and 2.8 → 5.6 s at offset 0).
        "kernel_depths": (5, 10, 15, 20),
        "n_train": 500, "n_val": 50, "n_test": 1000,
        "width": 16,
        "trials": 3,
        "cnn": train.TrainConfig(epochs=200, batch_size=50, lr=0.1, momentum=0.0, restore_best=True,
                                 stop_at_train_accuracy=1.0, log_every=None),
        # lr 1 / 10: a run whose validation accuracy stalls for `patience` epochs is over.
        "large_lrs": (1.0, 10.0), "large_lr_depths": (5,), "large_lr_patience": 3,
        # The fused CPU kernel in float32 (values agree with float64 to ~1e-6 relative; the test
        # predictions were identical at MNIST 14×14 and it is ~10× faster on one CPU thread).
        "kernel_dtype": torch.float32,
        # claim 4: CNTK-GAP costs (H·W)² per position pair, so 8×8 CIFAR-10 and ≈ 120k pairs
        # (≈ 15 CPU seconds in float32): expected inconclusive, a code path and a sign. No size that
        # fits CI's budget (≈ 100 CPU-s left) resolves it: below 500 training images the gain measured
        # below, ≤ 4 points, is within the ±3.3 points that 1,000 test images resolve. Measured
        # (fused float32 kernel, one pass, nested class-balanced subsets of one split, seeds 0 / 1):
        # 12×12, 500 / 1,000: +1.7 [−1.4, 4.8]; 16×16, 1,000 test images, depth 3 (depth 6), n_train
        # 100: +0.7 (−0.2) / −2.4; 200: +2.1 (+1.6) / +1.4; 300: +1.2 (+1.2) / +3.7; 400: +3.4 (+2.1)
        # / +2.0; 500: +3.1 [−0.2, 6.6] (+4.2 [1.1, 7.3]) / +1.5 [−1.8, 4.9] points; 16×16 GAP
        # depth 3 cost ≈ 0.37 ms per pair on one core (depth 6: × 2.2) then; ≈ 0.2 ms since the fused kernel
        # batches the column shifts of a row shift (issue 17, 2026-12-02). Re-explored with that kernel
        # (the test's split / kernel_hits / paired bootstrap, seeds 0 / 1 / 2, 2 threads): 12×12,
        # 1,000 / 2,000, depth 3: +2.65 [0.30, 5.00], +1.05 [−1.30, 3.40], +2.00 [−0.30, 4.35] points,
        # 245 s each (≈ 490 CPU-s, 5× what CI has left): neither decisive nor affordable.
        "gap": {"image_size": 8, "n_train": 200, "n_test": 500, "depths": (3, 6)},
        # claim 4, `slow` (test_cntk_gap_beats_cntk_v_more_data): chosen from the exploration above
        # (a protocol choice made toward resolving the claim, stated here): the gain rose from ≈ 0 at
        # 100 to 1.5–4 points at 500 training images, so twice the training set and twice the test
        # images (CI ≈ ±2.4 points); depth 3 only (the paper's +8.8-point column; depth 6 would cost
        # 2.2×). 2.5·10⁶ GAP pairs: 484 s wall on 2 threads (offset 0, same numbers; 750 s before the
        # column shifts were batched), 935 s on 1 thread beside a second run (before).
        # Measured (`pytest claims -k gap_beats_cntk_v_more_data -m slow`), GAP − V at offsets 0-4:
        # +5.45 [2.95, 7.95], +6.30 [3.85, 8.80], +4.70 [2.40, 7.00], +4.30 [1.90, 6.85], +6.00 [3.60, 8.65]
        # points: the direction reproduced at every offset (CNTK-V 35.7-39.6 %, CNTK-GAP 41.1-43.9 %); the
        # paper's size (+8.8 at 32×32 with 2,000 images) is not tested. The exploration's seeds 0 / 1 are
        # not the test's derived seeds (its splits differ from every measured offset's).
        "gap_more_data": {"image_size": 16, "n_train": 1000, "n_test": 2000, "depths": (3,)},
        # Claim 3 for the CNN (`slow` test_cnn_depth_drop): the same CNNs at depths 10 and 20. Not smoke:
        # a depth-20 trial runs the whole 200-epoch cap (it never fits), 132 CPU-s on MNIST and 178 CPU-s
        # on CIFAR-10 (offset 0, one thread), so ≈ 18 CPU-min for both datasets with the depth-10 nets
        # (MNIST alone: 29 min wall on the loaded 2-core box). The depth-20 Glorot CNN at lr 0.1 does not
        # train at all (train accuracy 9-15 %), so the drop is recorded, not asserted, and the fit at
        # depth 20 (the seed's precondition) is the registered finding below.
        "cnn_depth_drop": {"depths": (10, 20)},
        # Known findings of this protocol: the measured value's range at seed offsets 0-4, widened
        # by about one CI half-width (the CNTK-V beats the narrow 3-trial CNN on both datasets).
        "findings": {
            "mnist cnn − cntk": Finding(-0.085, 0.0, (
                "smoke (MNIST 14×14, width-16 CNN, lr 0.1, fitted to 100 % train accuracy, 3 trials): the "
                "CNTK-V beats the CNN; CNN − CNTK, mean over depths 5 and 10, was −3.85 / −5.72 / −2.23 / "
                "−4.62 / −4.88 points at offsets 0-4 (CIs within [−8.4, −0.7]); range widened by ≈ 2.8 "
                "points below (above, it reaches the region); seed 001: +2.0 (28×28, 50 validation "
                "images). Arora et al.'s Table 1 (seed 004) also has CNTK-V above CNN-V at depths 3-6.")),
            "mnist depth 20 fit": Finding(0.0, 1 / 3, (
                "provisional: measured at offset 0 only. "
                "slow smoke (MNIST 14×14, width-16 Glorot CNN, lr 0.1, 500 images, 200-epoch cap, 3 trials): 0 of 3 "
                "depth-20 CNNs reach 100 % train accuracy (final train accuracy 10.2 / 15.0 / 8.6 %, test 17.0 % "
                "[12.3, 23.3] vs 88.1 % at depth 10) at offset 0; offsets 1-4 not run (≈ 8 CPU-min each). The seed's "
                "depth-20 CNN reached 96 % (28×28, width unstated). Range up to 1 of 3 before it is re-examined.")),
            "cifar10 depth 20 fit": Finding(0.0, 1 / 3, (
                "provisional: measured at offset 0 only (one trial, by hand). "
                "slow smoke (CIFAR-10 16×16, same CNN and protocol): trial 0 of offset 0 measured by hand only — the "
                "depth-20 CNN ran the 200-epoch cap without fitting (test 12.9 %); trials 1-2 and offsets 1-4 not "
                "run (≈ 10 CPU-min per offset). The seed's depth-20 CNN reached 30 %. Range up to 1 of 3.")),
            "cifar10 cnn − cntk": Finding(-0.175, -0.03, (
                "smoke (CIFAR-10 16×16, width-16 CNN, lr 0.1, fitted to 100 % train accuracy, 3 trials): "
                "the CNTK-V beats the CNN; CNN − CNTK, mean over depths 5 and 10, was −9.87 / −12.63 / "
                "−14.03 / −6.43 / −7.47 points at offsets 0-4 (CIs within [−17.5, −3.9]); range widened "
                "by ≈ 3.4 points; seed 001: +7.0 (32×32, 50 validation images). Arora et al.'s Table 1 "
                "(seed 004) also has CNTK-V above CNN-V at depths 3-6.")),
        },
    },
    "full": {  # the seed's protocol at native resolution (GPU)
        "datasets": {"mnist": 28, "fashion_mnist": 28, "cifar10": 32},
        "depths": (5, 10, 15, 20),
        "kernel_depths": (5, 10, 15, 20),
        "n_train": 500, "n_val": 50, "n_test": 1000,
        "width": 128,
        "trials": 3,
        "cnn": train.TrainConfig(epochs=400, batch_size=50, lr=0.1, momentum=0.0, restore_best=True,
                                 stop_at_train_accuracy=1.0, log_every=None),
        "large_lrs": (1.0, 10.0), "large_lr_depths": (5, 10, 15, 20), "large_lr_patience": 5,
        "kernel_dtype": torch.float64,
        "gap": {"image_size": 32, "n_train": 500, "n_test": 2000, "depths": (3, 6)},
        "findings": {},  # none measured at this scale
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet): replace with measured
# figures and the card's name after a GPU run. "paper" tier: too big for the nightly's 2 h on 4 GPUs.
COST = {
    "test_cnn_vs_cntk[mnist]": {
        "smoke": {"gpu_s": 90, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 2000, "peak_gib": 4, "measured_on": "estimate"},
    },
    "test_cnn_vs_cntk[fashion_mnist]": {
        "full": {"gpu_s": 2000, "peak_gib": 4, "measured_on": "estimate"},
    },
    "test_cnn_vs_cntk[cifar10]": {
        "smoke": {"gpu_s": 120, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 3000, "peak_gib": 5, "measured_on": "estimate"},
    },
    "test_cnn_depth_drop": {  # slow at smoke (3 trials × depths 10 and 20, 2 datasets); skips at full
        "smoke": {"gpu_s": 120, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 5, "peak_gib": 0, "measured_on": "estimate"},
    },
    "test_cntk_gap_beats_cntk_v": {
        "smoke": {"gpu_s": 30, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 1300, "peak_gib": 4, "measured_on": "estimate"},
    },
    "test_cntk_gap_beats_cntk_v_more_data": {  # slow at smoke; skips at full
        "smoke": {"gpu_s": 60, "peak_gib": 1, "measured_on": "estimate"},
        "full": {"gpu_s": 5, "peak_gib": 0, "measured_on": "estimate"},
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


def cnn_hits(model, x, y) -> tuple[torch.Tensor, int]:
    """(hits, rows with non-finite outputs): the prediction is the argmax of the outputs as they are.

    torch's argmax treats NaN as the maximum (as numpy's does on a Keras model's outputs), so an
    all-NaN row predicts class 0; that is measured, not substituted.
    """
    outputs = train.predict(model, x)
    nonfinite = int((~torch.isfinite(outputs).all(dim=1)).sum())
    return (outputs.argmax(dim=1) == y).cpu(), nonfinite


def new_cnn(x_train, depth, width, seed):
    """A VanillaCNN (Glorot-uniform init) whose initial weights depend on `seed` only."""
    torch.manual_seed(seed)
    return VanillaCNN(x_train.shape[1], depth=depth, width=width, image_size=x_train.shape[-1],
                      parameterization="standard").to(x_train.device)


@dataclasses.dataclass
class Run:
    val: torch.Tensor  # hits on the 50 validation images
    test: torch.Tensor  # hits on the test images
    nonfinite: int  # test rows with non-finite outputs
    history: train.History


def train_cnn(x_train, y_train, val, test, depth, config, width, seed) -> Run:
    """One trial: fit (to 100 % train accuracy unless it stops earlier), keep the best validation epoch."""
    model = new_cnn(x_train, depth, width, seed)
    history = train.fit(model, x_train, y_train, config, seed=seed, holdout=val)
    test_hits, nonfinite = cnn_hits(model, *test)
    return Run(cnn_hits(model, *val)[0], test_hits, nonfinite, history)


def stacked(hits: list[torch.Tensor]) -> np.ndarray:
    """(trials, n) float array of per-trial hits."""
    return torch.stack([h.float() for h in hits]).numpy()


def depth_mean(per_depth: dict) -> np.ndarray:
    """(trials, n): trial t's hits averaged over depths (trial t of every depth is one unit)."""
    return np.mean([stacked(hits) for hits in per_depth.values()], axis=0)


def trial_accuracy(hits: list[torch.Tensor], seed: int) -> stats.Estimate:
    """Mean accuracy over trials, hierarchical bootstrap over trials × images (Wilson for one run)."""
    return stats.accuracy(hits[0]) if len(hits) == 1 else stats.trials_ci(stacked(hits), seed=seed)


@pytest.mark.parametrize("dataset", DATASETS)
def test_cnn_vs_cntk(dataset, device, protocol, seed, claim, baseline):
    if dataset not in protocol["datasets"]:
        pytest.skip(f"{dataset} is not in this scale's protocol (smoke: MNIST and CIFAR-10 only)")
    size, depths, trials, width = (protocol["datasets"][dataset], protocol["depths"], protocol["trials"],
                                   protocol["width"])
    kernel_depths = protocol["kernel_depths"]
    (x_train, y_train), val, test = split(dataset, device, seed, size, protocol["n_train"],
                                          protocol["n_test"], protocol["n_val"])
    n_test = len(test[1])
    tag = f"{dataset} {size}×{size}, n_train={len(y_train)}"
    findings = protocol.get("findings", {})
    trial_seeds = [seed + 1000 * t for t in range(trials)]
    shuffled_labels = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
                              .to(y_train.device)]
    kernel, null_kernel = kernel_hits(x_train, [y_train, shuffled_labels], [val, test], kernel_depths, device,
                                      dtype=protocol["kernel_dtype"])

    runs = {d: [train_cnn(x_train, y_train, val, test, d, protocol["cnn"], width, s) for s in trial_seeds]
            for d in depths}
    untrained = {d: [cnn_hits(new_cnn(x_train, d, width, s), *test)[0] for s in trial_seeds] for d in depths}
    large_lr = {}
    for lr in protocol["large_lrs"]:
        config = dataclasses.replace(protocol["cnn"], lr=lr, patience=protocol["large_lr_patience"])
        for d in protocol["large_lr_depths"]:
            large_lr[lr, d] = [train_cnn(x_train, y_train, val, test, d, config, width, s) for s in trial_seeds]

    cnn_test = {d: [r.test for r in runs[d]] for d in depths}
    numbers = {}
    # Every cell beside the seed's number (the seed's are 50-image validation accuracies).
    cells = [("CNN lr 0.1", d) for d in depths] + [("CNTK-V", d) for d in kernel_depths]
    for model, d in cells:
        is_cnn = model.startswith("CNN")
        runs_behind = trials if is_cnn else None
        val_hits, test_hits, paper = (([r.val for r in runs[d]], cnn_test[d], SEED_CNN[0.1][dataset][d]) if is_cnn
                                      else ([kernel[d][0]], [kernel[d][1]], SEED_CNTK[dataset][d]))
        fits = [r.history.epochs_to_fit() for r in runs[d]] if is_cnn else []
        claim.record(f"{tag}: {model}, depth {d}, 50 validation images", trial_accuracy(val_hits, seed),
                     paper=paper, unit="%", trials=runs_behind)
        acc = trial_accuracy(test_hits, seed)
        claim.record(f"{tag}: {model}, depth {d}, {n_test} test images", acc, unit="%", trials=runs_behind,
                     **({"epochs_to_fit": fits, "best_epochs": [r.history.best_epoch for r in runs[d]]}
                        if is_cnn else {}))
        per_trial = stacked(test_hits).mean(axis=1)
        numbers[f"{model.split()[0]}_depth{d}_test"] = (
            binomial(acc.value, n_test, f"mean test accuracy of {trials} trained CNNs (measured trial sd "
                     "added)", seed_sd=float(per_trial.std(ddof=1) / np.sqrt(trials))) if is_cnn
            else binomial(acc.value, n_test, "CNTK regression: an argmax that flips only at near-ties "
                          "under rounding"))
        if is_cnn:
            numbers[f"CNN_depth{d}_epochs_to_fit"] = trajectory(
                [f or 0 for f in fits], "epochs to fit: fixed by the exact training trajectory")
    # Baselines are registered before any claim can fail.
    for (lr, d), lr_runs in large_lr.items():
        per_trial = stacked([r.test for r in lr_runs]).mean(axis=1)
        numbers[f"CNN_lr{lr:g}_depth{d}_test"] = binomial(
            per_trial.mean(), n_test, f"mean test accuracy of {trials} CNNs at lr {lr:g}",
            seed_sd=float(per_trial.std(ddof=1) / np.sqrt(trials)) if trials > 1 else 0.0)
    baseline.check(numbers)

    # Claim 0: the seed's CNNs were trained to full training accuracy.
    fitted = [r.history.epochs_to_fit() is not None for d in depths for r in runs[d]]
    first_epoch = [r.history.epochs[0].train_accuracy >= 1.0 for d in depths for r in runs[d]]
    claim.check(f"{tag}: fraction of lr 0.1 CNNs (depths {depths}, {trials} trials) at 100 % train accuracy",
                float(np.mean(fitted)), ALL_FITTED, paper=1.0, trials=trials,
                epochs_to_fit={d: [r.history.epochs_to_fit() for r in runs[d]] for d in depths},
                epoch_cap=protocol["cnn"].epochs, finding=findings.get(f"{dataset} fit"))
    claim.control(f"{tag}: the same CNNs after their first epoch at 100 % train accuracy",
                  float(np.mean(first_epoch)), ALL_FITTED, trials=trials,
                  first_epoch_train_accuracy=[r.history.epochs[0].train_accuracy for d in depths for r in runs[d]])

    # Claim 3: a drop in accuracy from depth 10 to depth 20 (figure: accuracy at every depth).
    figure_accuracy_vs_depth(claim, tag, dataset, depths, kernel_depths, runs, kernel, seed)
    check_depth_drop(claim, tag, "CNTK-V", {d: stacked([kernel[d][1]]) for d in kernel_depths},
                     stacked([null_kernel[DROP_FROM][1]]), "a CNTK-V fitted to shuffled training labels",
                     SEED_CNTK[dataset], None, seed, findings.get(f"{dataset} cntk depth drop"))
    if DROP_TO in depths:
        check_depth_drop(claim, tag, "CNN", {d: stacked(cnn_test[d]) for d in depths},
                         stacked(untrained[DROP_FROM]), "the untrained CNN (initial weights of the same trials)",
                         SEED_CNN[0.1][dataset], trials, seed, findings.get(f"{dataset} cnn depth drop"),
                         unfitted=unfitted_reason(runs, (DROP_FROM, DROP_TO)))

    # Claim 2: lr 1 and 10 give bogus accuracy: within the seed's own 6–18 %.
    for (lr, d), lr_runs in large_lr.items():
        claim.record(f"{tag}: CNN lr {lr:g}, depth {d}, 50 validation images",
                     trial_accuracy([r.val for r in lr_runs], seed), paper=SEED_CNN[lr][dataset][d], unit="%",
                     trials=trials)
        claim.check(f"{tag}: CNN with lr {lr:g}, depth {d}: test accuracy (bogus, seed's 6–18 %)",
                    trial_accuracy([r.test for r in lr_runs], seed), BOGUS_ACCURACY,
                    paper=SEED_CNN[lr][dataset][d], unit="%", trials=trials,
                    stop_reasons=[r.history.stop_reason for r in lr_runs],
                    epochs=[len(r.history.epochs) for r in lr_runs],
                    nonfinite_test_rows=[r.nonfinite for r in lr_runs],
                    finding=findings.get(f"{dataset} lr {lr:g}"))
    d = protocol["large_lr_depths"][0]
    claim.control(f"{tag}: CNN with lr 0.1, depth {d}: test accuracy", trial_accuracy(cnn_test[d], seed),
                  BOGUS_ACCURACY, unit="%", trials=trials)

    # Claim 1: CNN − CNTK-V, mean over depths, on the test images.
    cnn_mean = depth_mean(cnn_test)
    kernel_mean = depth_mean({d: [kernel[d][1]] for d in depths})
    for d in depths:
        claim.record(f"{tag}: CNN − CNTK-V at depth {d} (test images)",
                     stats.trials_ci(stacked(cnn_test[d]), stacked([kernel[d][1]]), seed=seed), unit="%",
                     trials=trials, paper=SEED_CNN[0.1][dataset][d] - SEED_CNTK[dataset][d])
    claim.check(f"{tag}: CNN − CNTK-V, mean over depths {depths} (test images)",
                stats.trials_ci(cnn_mean, kernel_mean, seed=seed), CNN_MINUS_CNTK, unit="%", trials=trials,
                paper=float(np.mean([SEED_CNN[0.1][dataset][d] - SEED_CNTK[dataset][d] for d in depths])),
                finding=findings.get(f"{dataset} cnn − cntk"))
    claim.control(f"{tag}: CNN − a CNTK-V fitted to shuffled training labels (upper side)",
                  stats.trials_ci(cnn_mean, depth_mean({d: [null_kernel[d][1]] for d in depths}), seed=seed),
                  CNN_MINUS_CNTK, unit="%", trials=trials)
    claim.control(f"{tag}: untrained CNN (initial weights of the same trials) − CNTK-V (lower side)",
                  stats.trials_ci(depth_mean(untrained), kernel_mean, seed=seed), CNN_MINUS_CNTK, unit="%",
                  trials=trials)


def check_depth_drop(claim, tag, model, hits, null_hits, null_name, seed_cells, trials, seed, finding,
                     unfitted: str = ""):
    """Claim 3: acc(DROP_TO) − acc(DROP_FROM) ≤ −1 test image for `model`; `hits`: depth → (trials, n).

    Sanity control: acc(DROP_TO) − `null_hits` (the depth-DROP_FROM model without its signal),
    decisively above the edge: it only rejects a destroyed model. The seed's own tables give a change
    of the other sign before the turning point (depth 5 → 10: CNTK +2 MNIST, +8 CIFAR-10; CNN +2, +6);
    where `hits` has depth RISE_FROM that change is recorded beside the seed's, not used as the control:
    our CNTK-V does not rise there (smoke, offsets 0-4: MNIST −1.3 … −0.1, CIFAR-10 −1.5 … +1.8 points,
    no CI above 0), so it would not reject the region. `unfitted` (CNNs): why the comparison
    is outside the seed's protocol (a net that never reached 100 % train accuracy); then the change is
    only recorded — a drop caused by a net that did not train is not the seed's drop.
    """
    change = stats.trials_ci(hits[DROP_TO], hits[DROP_FROM], seed=seed)
    if RISE_FROM in hits:
        claim.record(f"{tag}: {model} accuracy change from depth {RISE_FROM} to depth {DROP_FROM} (before the "
                     "seed's turning point; its tables rise there)",
                     stats.trials_ci(hits[DROP_FROM], hits[RISE_FROM], seed=seed),
                     paper=seed_cells[DROP_FROM] - seed_cells[RISE_FROM], unit="%", trials=trials)
    if unfitted:
        claim.record(f"{tag}: {model} accuracy change from depth {DROP_FROM} to depth {DROP_TO} (not asserted: "
                     f"{unfitted})", change, paper=seed_cells[DROP_TO] - seed_cells[DROP_FROM], unit="%",
                     trials=trials, accuracy_by_depth={d: float(h.mean()) for d, h in hits.items()})
        return
    region = depth_drop(hits[DROP_TO].shape[1])
    claim.check(f"{tag}: {model} accuracy change from depth {DROP_FROM} to depth {DROP_TO} (test images; "
                "seed 001: a drop beyond 10–15 layers)", change, region,
                paper=seed_cells[DROP_TO] - seed_cells[DROP_FROM], unit="%", trials=trials, finding=finding,
                accuracy_by_depth={d: float(h.mean()) for d, h in hits.items()})
    claim.control(f"{tag}: {model} at depth {DROP_TO} − {null_name} at depth {DROP_FROM} (sanity control)",
                  stats.trials_ci(hits[DROP_TO], null_hits, seed=seed), region, unit="%", trials=trials)


def unfitted_reason(runs: dict, depths) -> str:
    """Why a depth comparison of these CNNs is outside the seed's protocol ("" when every run fitted)."""
    missing = {d: sum(r.history.epochs_to_fit() is None for r in runs[d]) for d in depths}
    return ", ".join(f"{n} of {len(runs[d])} depth-{d} CNNs never reached 100 % train accuracy"
                     for d, n in missing.items() if n)


def figure_accuracy_vs_depth(claim, tag, dataset, depths, kernel_depths, runs, kernel, seed):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, per_depth, style in (
            ("CNN, test", {d: trial_accuracy([r.test for r in runs[d]], seed) for d in depths}, "o-"),
            ("CNTK-V, test", {d: stats.accuracy(kernel[d][1]) for d in kernel_depths}, "s-"),
            ("CNN, 50 val", {d: trial_accuracy([r.val for r in runs[d]], seed) for d in depths}, "o:"),
            ("CNTK-V, 50 val", {d: stats.accuracy(kernel[d][0]) for d in kernel_depths}, "s:")):
        values = np.array([[e.value, e.value - e.lo, e.hi - e.value] for e in per_depth.values()]) * 100
        ax.errorbar(list(per_depth), values[:, 0], yerr=values[:, 1:].T, fmt=style, capsize=3, label=label)
    seed_depths = sorted(SEED_CNTK[dataset])
    ax.plot(seed_depths, [100 * SEED_CNN[0.1][dataset][d] for d in seed_depths], "k^--", alpha=.5,
            label="seed 001 CNN (val)")
    ax.plot(seed_depths, [100 * SEED_CNTK[dataset][d] for d in seed_depths], "kv--", alpha=.5,
            label="seed 001 CNTK (val)")
    ax.set(xlabel="depth (layers)", ylabel="accuracy (%)", title=tag)
    ax.legend(fontsize=7)
    claim.figure(fig, f"accuracy_vs_depth_{dataset}")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_cnn_depth_drop(dataset, device, scale, protocol, seed, claim, baseline):
    """Claim 3 for the CNN at smoke sizes: lr 0.1 CNNs at depths 10 and 20 (the smoke
    `test_cnn_vs_cntk` stops at depth 10), the same split, net, training and trials."""
    spec = protocol.get("cnn_depth_drop")
    if spec is None:
        pytest.skip("at --scale=full test_cnn_vs_cntk trains depths 5–20 and asserts claim 3 for the CNN")
    if dataset not in protocol["datasets"]:
        pytest.skip(f"{dataset} is not in this scale's protocol (smoke: MNIST and CIFAR-10 only)")
    size, depths, trials, width = (protocol["datasets"][dataset], spec["depths"], protocol["trials"],
                                   protocol["width"])
    (x_train, y_train), val, test = split(dataset, device, seed, size, protocol["n_train"],
                                          protocol["n_test"], protocol["n_val"])
    tag = f"{dataset} {size}×{size}, n_train={len(y_train)}"
    trial_seeds = [seed + 1000 * t for t in range(trials)]
    runs = {d: [train_cnn(x_train, y_train, val, test, d, protocol["cnn"], width, s) for s in trial_seeds]
            for d in depths}
    untrained = [cnn_hits(new_cnn(x_train, DROP_FROM, width, s), *test)[0] for s in trial_seeds]
    hits = {d: stacked([r.test for r in runs[d]]) for d in depths}
    fitted_deep = [r.history.epochs_to_fit() is not None for r in runs[DROP_TO]]
    numbers = {}
    for d in depths:
        per_trial = hits[d].mean(axis=1)
        numbers[f"CNN_depth{d}_test"] = binomial(
            float(per_trial.mean()), hits[d].shape[1], f"mean test accuracy of {trials} trained CNNs (measured "
            "trial sd added)", seed_sd=float(per_trial.std(ddof=1) / np.sqrt(trials)))
        numbers[f"CNN_depth{d}_epochs_to_fit"] = trajectory(
            [r.history.epochs_to_fit() or 0 for r in runs[d]], "epochs to fit: fixed by the exact training trajectory")
    baseline.check(numbers)
    for d in depths:
        claim.record(f"{tag}: CNN lr 0.1, depth {d}, {hits[d].shape[1]} test images",
                     stats.trials_ci(hits[d], seed=seed), paper=SEED_CNN[0.1][dataset][d], unit="%", trials=trials,
                     epochs_to_fit=[r.history.epochs_to_fit() for r in runs[d]],
                     best_epochs=[r.history.best_epoch for r in runs[d]])
    findings = protocol.get("findings", {})
    # The seed compared CNNs "trained till full training accuracy was reached"; claim 0 of
    # test_cnn_vs_cntk asserts it up to depth 10, this asserts it at depth 20.
    claim.check(f"{tag}: fraction of lr 0.1 CNNs at depth {DROP_TO} ({trials} trials) at 100 % train accuracy "
                "(the seed's protocol for the depth comparison)", float(np.mean(fitted_deep)), ALL_FITTED, paper=1.0,
                trials=trials, epoch_cap=protocol["cnn"].epochs,
                train_accuracy=[r.history.final.train_accuracy for r in runs[DROP_TO]],
                finding=findings.get(f"{dataset} depth {DROP_TO} fit"))
    # Sanity check only: it rejects a fit measure that is 1 from the start; when the claim fails (0 of 3
    # fit) it cannot tell the claim's value from the control's, which are then both 0.
    claim.control(f"{tag}: the same depth-{DROP_TO} CNNs after their first epoch at 100 % train accuracy "
                  "(sanity check of the fit measure)",
                  float(np.mean([r.history.epochs[0].train_accuracy >= 1.0 for r in runs[DROP_TO]])), ALL_FITTED,
                  trials=trials)
    check_depth_drop(claim, tag, "CNN", hits, stacked(untrained), "the untrained CNN (initial weights of the same "
                     "trials)", SEED_CNN[0.1][dataset], trials, seed, findings.get(f"{dataset} cnn depth drop"),
                     unfitted=unfitted_reason(runs, (DROP_FROM, DROP_TO)))


def test_cntk_gap_beats_cntk_v(device, protocol, seed, claim, baseline):
    check_gap_beats_v(protocol["gap"], device, protocol, seed, claim, baseline)


@pytest.mark.slow
def test_cntk_gap_beats_cntk_v_more_data(device, protocol, seed, claim, baseline):
    """Claim 4 at a size that resolves it on a CPU (`gap_more_data`: 16×16, 1,000 / 2,000 images, depth 3)."""
    spec = protocol.get("gap_more_data")
    if spec is None:
        pytest.skip("at --scale=full test_cntk_gap_beats_cntk_v runs 32×32 CIFAR-10 with 500 / 2,000 images")
    check_gap_beats_v(spec, device, protocol, seed, claim, baseline)


def check_gap_beats_v(spec, device, protocol, seed, claim, baseline):
    """Claims 4 and 5 on one CIFAR-10 split of `spec`'s size; claim 5 only where `spec` has two depths."""
    size = spec["image_size"]
    (x_train, y_train), _, test = split("cifar10", device, seed, size, spec["n_train"], spec["n_test"])
    n_test = len(test[1])
    tag = f"CIFAR-10 {size}×{size}, n_train={len(y_train)}, n_test={n_test}"
    shuffled_labels = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
                              .to(y_train.device)]
    # Arora et al.'s flags (README of github.com/ruosongwang/CNTK): CNTK-V `--fix no`, CNTK-GAP `--fix yes`.
    kernel_options = dict(dtype=protocol["kernel_dtype"])
    vanilla, null_vanilla = kernel_hits(x_train, [y_train, shuffled_labels], [test], spec["depths"], device,
                                        pooling="flatten", **kernel_options)
    gap, null_gap = kernel_hits(x_train, [y_train, shuffled_labels], [test], spec["depths"], device,
                                pooling="gap", fix_first_layer=True, fix_readout=True, **kernel_options)
    # CNTK regression: an argmax that flips only at near-ties under rounding; binomial bounds it.
    baseline.check({f"{name}_depth{d}": binomial(float(hits[d][0].float().mean()), n_test,
                                                 "accuracy of CNTK regression")
                    for name, hits in (("v", vanilla), ("gap", gap)) for d in spec["depths"]})
    for d in spec["depths"]:
        claim.record(f"{tag}: CNTK-V depth {d}", stats.accuracy(vanilla[d][0]), unit="%")
        claim.record(f"{tag}: CNTK-GAP depth {d}", stats.accuracy(gap[d][0]), unit="%")
    gap_source = "Arora et al. 2019, Table 1 (seed 004), 2K columns"
    for d in spec["depths"]:
        claim.check(f"{tag}: CNTK-GAP − CNTK-V at depth {d}", stats.difference_ci(gap[d][0], vanilla[d][0], seed=seed),
                    gap_gain(n_test), paper=ARORA_GAP_GAIN[d], unit="%", source=gap_source,
                    finding=protocol.get("findings", {}).get(f"gap depth {d}"))
    deep = spec["depths"][-1]
    claim.control(f"{tag}: CNTK-GAP fitted to shuffled training labels − CNTK-V at depth {deep}",
                  stats.difference_ci(null_gap[deep][0], vanilla[deep][0], seed=seed), gap_gain(n_test), unit="%",
                  source=gap_source)

    # Claim 5: depth affects the CNTK's accuracy: depth 6 − depth 3 ≥ +1 test image (the paper's 2K pair
    # and sign). Only a sanity control: the opposite sign would need a third depth (the paper's 2K rows
    # fall from 6 to 21 by 0.9 points, far below what 500 test images resolve).
    if len(spec["depths"]) < 2:
        return
    shallow = spec["depths"][0]
    matters = depth_matters(n_test)
    depth_source = "Arora et al. 2019, §5 and Table 1 (seed 004), 2K rows"
    for name, hits, null_hits in (("V", vanilla, null_vanilla), ("GAP", gap, null_gap)):
        claim.check(f"{tag}: CNTK-{name} accuracy at depth {deep} − at depth {shallow} (seed 004: "
                    "depth can affect the CNTK's accuracy)", stats.difference_ci(hits[deep][0], hits[shallow][0],
                                                                                 seed=seed),
                    matters, paper=ARORA_2K[name][deep] - ARORA_2K[name][shallow], unit="%",
                    source=depth_source, finding=protocol.get("findings", {}).get(f"{name} depth"))
        claim.control(f"{tag}: CNTK-{name} fitted to shuffled training labels at depth {deep} − CNTK-{name} at "
                      f"depth {shallow} (sanity control)",
                      stats.difference_ci(null_hits[deep][0], hits[shallow][0], seed=seed),
                      matters, unit="%", source=depth_source)
