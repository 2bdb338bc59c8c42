"""Assaraf (2021), HW0 §2 (seed 003): a CNN trained on CIFAR-10 is not robust to upside-down images.

Per training set, `trials` independent plain Conv-4s and as many trained on original + vertically
flipped images (seeds `seed + 1000·t`), all scored on the whole test set; every CI resamples the
trials and the test images (`stats.trials_ci`) unless said otherwise.

  claim 1  §2.1.1 "the new model is not completely random": the flipped test accuracy lies above
           chance (Binomial(n, 1/10), 99 % upper edge). No control (see `test_vertical_flip_collapse`).
  claim 2  §2.1.1 "the test accuracy drops from 0.858 to 0.392": test accuracy, flipped accuracy and
           their difference each within ±5 points of the seed's 85.8 / 39.2 / 46.6 %, where the
           protocol is the seed's (50,000 images); control: the augmented model's drop. Smoke cannot
           decide these numbers (its width-8 net on 3,000 images reaches ≈ 46-51 %: 46.6 points below
           that is below chance), nor can the 20,000-image variant (2.5× fewer images than the
           seed's): there they are recorded beside the seed's numbers, not asserted.
  claim 3  §2.1.1 "once these initial features are learnt, the rest of the training is not useful
           for the performances on the flipped test set": the flipped curve's late gain is at most
           half the plain one's (Fig. 2); control: the augmented model (full scale; recorded at smoke).
  claim 4  §2.1.2 "some classes are more easily recognizable when flipped than the others ... This is
           the case for: airplanes, frogs": both rank in the top 2 least-degraded classes (per-class
           accuracy drop). Asserted at full scale (the seed's width-64 model); at smoke, whose weak
           model (≈ 50 %) ranks frog 4th-6th, checked against a registered finding (see PROTOCOL).
  claim 5  §2.2 training on original + flipped images "to alleviate this issue": the flip gap of the
           augmented model is within ±5 points of 0 (equivalence); control: the plain model.
  check    the horizontal flip (no seed claim; CIFAR-10 is nearly left-right symmetric) costs within
           ±3 points of 0: the method's sanity check; control: the vertical flip.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dlclaims import data, stats, train
from dlclaims.baselines import binomial, trajectory
from dlclaims.models.conv4 import Conv4
from dlclaims.verdict import Finding, at_least, at_most, equivalent

SOURCE = "Assaraf 2021, HW0 §2, Figures 2-4 (seed 003)"

# §2.1.1: "We can see that the test accuracy drops from 0.858 to 0.392. Therefore, the new model is
# not completely random, but the drop in performance is important." (Conv-4 width 64, all 50,000
# CIFAR-10 training images, batch 64, SGD lr 0.1 constant, 80 epochs; one run.)
SEED_TEST_ACCURACY = 0.858
SEED_FLIPPED_ACCURACY = 0.392
SEED_DROP = SEED_TEST_ACCURACY - SEED_FLIPPED_ACCURACY  # 46.6 points
# Ours: "reproduces the seed's number" = within ±5 points. The seed reports one run whose last-epoch
# accuracy, at a constant lr 0.1 without momentum, swings by 3-4 points from epoch to epoch (our curves).
SEED_NUMBER_MARGIN = 0.05
CHANCE_LEVEL = 0.99  # "not completely random": above the 99 % range of a label-blind guesser
# §2.1.2 names exactly two classes as "more easily recognizable when flipped than the others".
LEAST_DEGRADED = ("airplane", "frog")
TOP_K = 2  # the same at every scale: the literal reading of "than the others"
# §2.2 gives no number for the augmented model (its Fig. 4 is not in the text). Training on a
# flip-symmetric set makes the flipped test set as in-distribution as the original: the expected
# gap is 0 either way, so the claim is two-sided; ±5 points is ours.
AUG_GAP_MARGIN = 0.05
# Not a seed claim: the method's check. CIFAR-10 is nearly left-right symmetric, so the expected
# loss under the horizontal flip is 0 either way; ±3 points is ours.
HFLIP_MARGIN = 0.03
# §2.1.1: "the rest of the training is not useful" (late flipped gain ≈ 0); half the plain late gain
# is ours, room for the noise of a constant-lr curve.
STALL_RATIO_MAX = 0.5
# §2.1 "Trained the model for 80 epochs (the training loss was 0 after 40 epochs ...)" and §2.2 "after 40
# epochs, the global training loss function (over the entire flipped and non-flipped training set) is 0":
# the first epoch whose training loss (mean cross-entropy over the whole training set — the concatenated
# set for the original + flipped arm — in eval mode, `train.fit`'s per-epoch record) is ≤ ZERO_LOSS is at
# most FIT_EPOCHS. The seed's "0" is a displayed value; ZERO_LOSS = 0.01 nats is ours: 0.4 % of the
# initial ln 10, indistinguishable from 0 on the seed's linear loss axis, and it leaves at most 1.4 % of
# the images misclassified (each costs ≥ ln 2). A run that never reaches it counts as
# max(budget, FIT_EPOCHS) + 1 (a lower bound, and never ≤ FIT_EPOCHS). Asserted at full scale (the seed's
# width-64 model); the epoch of 100 % train accuracy is kept beside it.
ZERO_LOSS = 0.01
FIT_EPOCHS = 40
# Seed-to-seed sd of one trial's test accuracy beyond test sampling, for the baselines (another code
# path is another trajectory): measured, the smoke trials' test accuracies at offsets 0-4 (3 per offset,
# 41.4-51.8 %) have a pooled within-offset sd of 3.1 points (the last epoch of a constant lr 0.1).
SEED_SD = 0.03

# Units: images, epochs (passes over the training set), lr per step, accuracies as fractions.
PROTOCOL = {
    "smoke": {  # 6 models: 205 single-thread CPU seconds at offset 0 (user + sys, shared machine)
        # class-balanced CIFAR-10 subset, the same for every trial (seed: all 50,000 images)
        "training_sets": {"subset": {"n_train": 3000, "required": None}},
        "width": 8,  # Conv-4 channels 8-16-32-64, 25 k parameters (seed: width 64, 1.56 M)
        # seed: 80 epochs. eval_batch_size only sets how many images are scored at once (512: smaller
        # buffers: sys time 30 → 4 s, ≈ 10 % less CPU time than 2,048); no number changed at offset 0.
        "budget": train.TrainConfig(epochs=30, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.0,
                                    stop_at_train_accuracy=None, eval_batch_size=512),
        "trials": 3,  # per arm (plain, original + flipped)
        # flip a random half of every minibatch: the seed's 2× concatenated set would double the cost
        "augmentation": "flip_random_half",
        "curve_test_images": 1000,  # per-epoch curves on a balanced test subset; claims use all 10,000
        # trials with per-epoch curves per arm (claim 3 is recorded at smoke: one plain curve suffices)
        "curve_trials": {"plain": 1, "original + flipped": 0},
        "early_epochs": (4, 8),  # window where the plain curve has made most of its rise
        "late_epochs": 6,  # the last epochs
        # What smoke decides: claim 1 (above chance), claim 4 (rank; a finding), claim 5 and the
        # horizontal-flip check with their controls — the plain model's drop is then decisively more
        # than a flip-symmetric model's ±5 points. It cannot decide claim 2 (a width-8 net on 3,000
        # images reaches 46-51 % (trial means, offsets 0-4): 46.6 points below that is below chance),
        # so the seed's numbers are recorded beside ours; nor claim 3: per-epoch curves for all trials
        # and both arms (its control) would cost ≈ 25 % more, and one trial's ratio swings from −0.63
        # to 0.30 across offsets 0-4 (plain late gain 3-9 points): trial 0's ratio is recorded.
        "seed_protocol": (),  # training sets whose protocol is the seed's: claim 2 is asserted there
        "assert_dynamics": False,
        # Claim 4 is checked here against a registered finding (the seed's ranking is a property of its
        # 85.8 % model, which smoke's ≈ 50 % model is not) and asserted without one at full scale. Smoke, at
        # seed offsets 0-4 (worse of the two ranks, 1 = least degraded, from the trial-mean per-class drops):
        # 5, 4, 6, 6, 6 (bootstrap CIs [3, 6] / [4, 6], all excluding ≤ 2); frog's drop 14.6-19.4 points,
        # airplane 1st-2nd (2.9-8.1); cat, airplane and bird lead at every offset. A stronger CPU model
        # (issue 18, one-off, width 16, 10,000 images, 15 epochs, ≈ 110 CPU-s per model) gave frog 1st /
        # airplane 2nd in one trial (61.3 % test accuracy) and frog 3rd / airplane 6th in the next (42.9 %: a
        # constant lr 0.1 ends wherever its last epoch lands), so ranks swing with the run; 3 trials × 5
        # offsets of it (≈ 28 CPU-min) could still not be expected to decide a top-2 rank. Earlier: 6,000
        # images × 15 epochs at width 8 (53.8 %, one trial) ranked frog 6th.
        "assert_least_degraded": True,
        "least_degraded_finding": Finding(
            3, 7,
            "smoke (width 8, 3,000 images, 30 epochs, 3 trials; a weak model, 46-51 % test accuracy against the "
            "seed's 85.8 %, whose class ranking need not be the seed model's): frog ranks 4th-6th by per-class "
            "accuracy drop at seed offsets 0-4 (14.6-19.4 points; airplane 1st-2nd, 2.9-8.1; cat, airplane, bird "
            "lead): worse rank 5, 4, 6, 6, 6 (CIs [3, 6] / [4, 6], all excluding ≤ 2), registered as 3-7 (± one "
            "rank, about the CI half-width); seed §2.1.2: airplanes and frogs are the least degraded. A width-16 "
            "CPU model (10,000 images) ranked frog 1st then 3rd, airplane 2nd then 6th in two trials"),
    },
    "full": {  # the seed's protocol: Conv-4 width 64, batch 64, SGD lr 0.1 constant, 80 epochs
        # "50k": the seed's training set; "20k-available": the 20,000 images of the offline
        # copy (deviation: 2.5× fewer images), so that a GPU run here reports something.
        "training_sets": {"50k": {"n_train": None, "required": 50000},
                          "20k-available": {"n_train": None, "required": 20000}},
        "width": 64,
        "budget": train.TrainConfig(epochs=80, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.0,
                                    stop_at_train_accuracy=None),
        "trials": 3,
        "augmentation": "concatenate",  # the seed: original + flipped set (2× images, same epochs)
        "curve_test_images": 10000,
        "curve_trials": {"plain": 3, "original + flipped": 3},
        "early_epochs": (6, 15),
        "late_epochs": 15,
        "seed_protocol": ("50k",),  # the 20,000-image variant records the seed's numbers (2.5× fewer images)
        "assert_dynamics": True,
        "assert_least_degraded": True,  # the seed's model (width 64, 85.8 %): the protocol its Fig. 3 describes
        "assert_fit_epoch": True,  # §2.1 / §2.2: training loss 0 after 40 epochs (every trial of both arms)
        "least_degraded_finding": None,  # not measured at this scale
    },
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet): replace with measured
# figures and the card's name after a GPU run. "paper" tier: too big for the nightly's 2 h on 4 GPUs.
COST = {
    "test_vertical_flip_collapse[subset]": {
        "smoke": {"gpu_s": 60, "peak_gib": 1, "measured_on": "estimate"},
    },
    "test_vertical_flip_collapse[50k]": {
        "full": {"gpu_s": 4200, "peak_gib": 5, "measured_on": "estimate", "tier": "paper"},
    },
    "test_vertical_flip_collapse[20k-available]": {
        "full": {"gpu_s": 1800, "peak_gib": 4, "measured_on": "estimate", "tier": "paper"},
    },
}


def pytest_generate_tests(metafunc):
    """Instantiate the test once per training set of the chosen scale."""
    if "training_set" in metafunc.fixturenames:
        scale = metafunc.config.getoption("scale")
        metafunc.parametrize("training_set", list(PROTOCOL[scale]["training_sets"]))


def flip_random_half(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`fit`'s augment hook: each image of the minibatch upside down with probability 1/2."""
    upside_down = torch.rand(len(xb), generator=gen, device=xb.device) < 0.5
    return torch.where(upside_down.view(-1, 1, 1, 1), data.flip_vertical(xb), xb)


def per_class(scores: np.ndarray, labels: np.ndarray, num_classes: int = data.NUM_CLASSES) -> np.ndarray:
    """Per-class mean of per-image scores (trials averaged): shape (num_classes,)."""
    return np.array([scores[..., labels == c].mean() for c in range(num_classes)])


def worse_rank_statistic(named: list[int], num_classes: int = data.NUM_CLASSES):
    """For `stats.trials_ci` on arms [drop·1{y=c} for c] + [1{y=c} for c]: the larger rank
    (1 = least degraded) of the `named` classes by per-class accuracy drop."""

    def statistic(*means):
        sums, counts = np.stack(means[:num_classes]), np.stack(means[num_classes:])
        drops = sums / counts
        rank = np.argsort(np.argsort(drops, axis=0, kind="stable"), axis=0, kind="stable") + 1
        return rank[named].max(axis=0)

    return statistic


def least_degraded_rank(plain_hits: np.ndarray, flipped_hits: np.ndarray, labels: np.ndarray, seed: int):
    """Bootstrap CI (`stats.trials_ci`) of the worse rank of the LEAST_DEGRADED classes by per-class
    accuracy drop, from (trials, n) hits on the test set and its vertical flip."""
    trials, n = plain_hits.shape
    names = data.SPECS["cifar10"].class_names
    named = [names.index(c) for c in LEAST_DEGRADED]
    indicators = [np.broadcast_to((labels == c).astype(float), (trials, n)) for c in range(data.NUM_CLASSES)]
    per_image_drop = plain_hits - flipped_hits
    # `trials_ci` resamples each arm's trials on its own: the classes' drops lose their common
    # trial-to-trial shift (a more or less robust run), so this rank CI is wider than a bootstrap
    # that resampled the same trials for every class (conservative: more often inconclusive).
    return stats.trials_ci(*[per_image_drop * ind for ind in indicators], *indicators,
                           statistic=worse_rank_statistic(named), seed=seed)


def train_trial(arm: str, x_train, y_train, x_test, y_test, curve, protocol, device, seed: int, curves: bool):
    """Train one Conv-4 (`arm`: "plain" or "original + flipped"); return its history (per-epoch curves
    on the plain and flipped test subset when `curves`) and its test hits per transform."""
    augment = None
    if arm != "plain" and protocol["augmentation"] == "concatenate":
        x_train, y_train = torch.cat([x_train, data.flip_vertical(x_train)]), torch.cat([y_train, y_train])
    elif arm != "plain":
        augment = flip_random_half
    torch.manual_seed(seed)
    model = Conv4(protocol["width"]).to(device, memory_format=torch.channels_last)
    # The flipped curve goes in as `holdout`: recorded per epoch, never used to select (no
    # patience, no restore_best).
    watch = {}
    if curves:
        x_curve, y_curve = x_test[curve], y_test[curve]
        watch = dict(test=(x_curve, y_curve), holdout=(data.flip_vertical(x_curve), y_curve))
    history = train.fit(model, x_train, y_train, protocol["budget"], seed=seed, augment=augment, **watch)
    transforms = {"plain": lambda x: x, "vertical": data.flip_vertical}
    if arm == "plain":
        transforms["horizontal"] = data.flip_horizontal
    scoring = protocol["budget"].eval_batch_size
    hits = {name: stats.to_numpy(train.evaluate(model, transform(x_test), y_test, batch_size=scoring)[2], float)
            for name, transform in transforms.items()}
    return (history if curves else None), hits


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


def plot_curves(histories: dict, protocol):
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.5), sharey=True, squeeze=False)
    first, last = protocol["early_epochs"]
    for ax, (name, history) in zip(axes[0], histories.items()):
        epochs = history.column("epoch")
        ax.plot(epochs, history.column("test_accuracy"), color="tab:blue", label="test set")
        ax.plot(epochs, history.column("holdout_accuracy"), color="tab:red", label="vertically flipped test set")
        ax.axvspan(first - 0.5, last + 0.5, color="0.9")
        ax.axvspan(epochs[-1] - protocol["late_epochs"] + 0.5, epochs[-1] + 0.5, color="0.9")
        ax.set(title=f"{name} training (trial 0)", xlabel="epoch")
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend()
    return fig


def plot_per_class(plain: np.ndarray, flipped: np.ndarray, class_names):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    pos = np.arange(len(class_names))
    ax.bar(pos - 0.2, plain, 0.4, label="test set")
    ax.bar(pos + 0.2, flipped, 0.4, label="vertically flipped")
    ax.set_xticks(pos, class_names, rotation=30)
    ax.set(ylabel="accuracy", title="per-class accuracy, plain training (mean over trials)")
    ax.legend()
    return fig


def test_vertical_flip_collapse(training_set, device, scale, protocol, seed, claim, baseline):
    """No control for claim 1 (a label-blind control lands *at* the chance edge, not decisively below
    it) nor for claim 4 (under the horizontal flip, or for the augmented model, no class degrades
    systematically, so any pair's rank is noise and its CI straddles any top-k: such a control
    cannot fail decisively; the claim itself can fail, and does at smoke)."""
    sizes = protocol["training_sets"][training_set]
    x_train, y_train, x_test, y_test = data.prepare("cifar10", device=device, seed=seed, n_train=sizes["n_train"],
                                                    train_size_required=sizes["required"])
    x_train = x_train.contiguous(memory_format=torch.channels_last)
    x_test = x_test.contiguous(memory_format=torch.channels_last)
    curve = data.balanced_indices(y_test, min(protocol["curve_test_images"], len(y_test)), seed + 2)
    class_names = data.SPECS["cifar10"].class_names
    labels = stats.to_numpy(y_test)
    T = protocol["trials"]
    arms = ("plain", "original + flipped")
    histories: dict[str, list] = {arm: [] for arm in arms}
    hits: dict[str, dict[str, np.ndarray]] = {arm: {} for arm in arms}
    for arm in arms:
        per_trial = [train_trial(arm, x_train, y_train, x_test, y_test, curve, protocol, device, seed + 1000 * t,
                                 curves=t < protocol["curve_trials"][arm]) for t in range(T)]
        histories[arm] = [h for h, _ in per_trial if h is not None]
        hits[arm] = {name: np.stack([h[name] for _, h in per_trial]) for name in per_trial[0][1]}  # (T, n)
    plain, aug = hits["plain"], hits["original + flipped"]
    n = len(labels)
    tag = (f"Conv-4 width {protocol['width']}, CIFAR-10 n={len(x_train)}, {protocol['budget'].epochs} epochs, "
           f"{T} trials")

    # Registered first, compared after the test body (a mismatch hides none of the claims below).
    baseline.check({
        # Per-epoch curves follow the trajectory: a single epoch swings by tens of points across thread
        # counts, so they are compared on the same code path only.
        **{f"{name}_{curve_name}": trajectory(histories[arm][0].column(column),
                                              "per-epoch accuracy curve of a Conv-4 (trial 0)")
           for arm, name in (("plain", "plain"), ("original + flipped", "augmented")) if histories[arm]
           for curve_name, column in (("test_curve", "test_accuracy"), ("flipped_curve", "holdout_accuracy"))},
        # One number per trial: a trained Conv-4's test accuracy; the seed spread adds to the binomial SE.
        **{f"{name}_{transform}_accuracy": binomial(arm_hits[transform].mean(axis=1), n,
                                                    "test accuracy of a trained Conv-4, per trial", seed_sd=SEED_SD)
           for name, arm_hits in (("plain", plain), ("augmented", aug)) for transform in arm_hits},
    })

    plain_acc = stats.trials_ci(plain["plain"], seed=seed)
    flipped_acc = stats.trials_ci(plain["vertical"], seed=seed)
    # Per-image differences of the same run: the bootstrap resamples trials and images, paired.
    drop = stats.trials_ci(plain["plain"] - plain["vertical"], seed=seed)
    aug_gap = stats.trials_ci(aug["plain"] - aug["vertical"], seed=seed)
    hflip_loss = stats.trials_ci(plain["plain"] - plain["horizontal"], seed=seed)

    # Claim 1: "not completely random".
    _, chance_hi = stats.chance_interval(n, data.NUM_CLASSES, CHANCE_LEVEL)
    claim.check(f"{tag}: the vertically flipped test accuracy is above chance (\"not completely random\")",
                flipped_acc, at_least(chance_hi), paper=SEED_FLIPPED_ACCURACY, unit="%", trials=T,
                chance_level=CHANCE_LEVEL)

    # Claim 2: the seed's numbers, where the protocol is the seed's.
    seed_numbers = (("test accuracy", plain_acc, SEED_TEST_ACCURACY, plain["plain"]),
                    ("vertically flipped test accuracy", flipped_acc, SEED_FLIPPED_ACCURACY, plain["vertical"]),
                    ("accuracy lost to the vertical flip", drop, SEED_DROP, plain["plain"] - plain["vertical"]))
    if training_set in protocol["seed_protocol"]:
        for what, measured, paper, scores in seed_numbers:
            claim.check(f"{tag}: {what} matches the seed's", measured, equivalent(SEED_NUMBER_MARGIN, paper),
                        paper=paper, unit="%", trials=T, per_trial=scores.mean(axis=1))
        claim.control(f"{tag}, trained on original + flipped: accuracy lost to the vertical flip matches the "
                      "seed's", aug_gap, equivalent(SEED_NUMBER_MARGIN, SEED_DROP), paper=SEED_DROP, unit="%",
                      trials=T)
    else:
        for what, measured, paper, scores in seed_numbers:
            claim.record(f"{tag}: {what} (the seed's number is not decided at this protocol)", measured,
                         paper=paper, unit="%", trials=T, per_trial=scores.mean(axis=1))

    # Claim 5: training on original + flipped images closes the gap (two-sided: a flip-symmetric set).
    closed = equivalent(AUG_GAP_MARGIN)
    claim.check(f"{tag}, trained on original + flipped ({protocol['augmentation']}): test − flipped accuracy "
                "≈ 0", aug_gap, closed, paper="gap alleviated (§2.2, Fig. 4; no number in the text)", unit="%",
                trials=T, test_accuracy=aug["plain"].mean(axis=1), flipped_accuracy=aug["vertical"].mean(axis=1))
    claim.control(f"{tag}, plain training: test − flipped accuracy ≈ 0", drop, closed, unit="%", trials=T)

    # Method check: the horizontal flip, a near symmetry of CIFAR-10, costs nothing either way.
    symmetric = equivalent(HFLIP_MARGIN)
    claim.check(f"{tag}: method check (no seed claim): test − horizontally flipped accuracy ≈ 0", hflip_loss,
                symmetric, unit="%", trials=T, per_trial=(plain["plain"] - plain["horizontal"]).mean(axis=1))
    claim.control(f"{tag}: test − vertically flipped accuracy ≈ 0 (the horizontal flip's ±3 points)", drop,
                  symmetric, unit="%", trials=T)

    # Claim 3: the flipped curve stalls after the early phase.
    stalls = at_most(STALL_RATIO_MAX)
    window = f"epochs {protocol['early_epochs']} → last {protocol['late_epochs']}"
    statement = f"{tag}: the flipped accuracy's late gain is at most half the plain one's ({window})"
    ratios = {arm: [late_gain_ratio(h, protocol) for h in histories[arm]] for arm in arms}
    if histories["plain"]:
        claim.figure(plot_curves({arm: hs[0] for arm, hs in histories.items() if hs}, protocol), "accuracy_curves")
    if protocol["assert_dynamics"]:
        plain_ratio = stats.mean_ci([r for r, _, _ in ratios["plain"]])
        aug_ratio = stats.mean_ci([r for r, _, _ in ratios["original + flipped"]])
        claim.check(statement, plain_ratio, stalls, paper="≈ 0 (Fig. 2)", trials=len(ratios["plain"]),
                    gains=[g[1:] for g in ratios["plain"]])
        claim.control(f"{tag}, trained on original + flipped: the flipped accuracy's late gain is at most half "
                      f"the plain one's ({window})", aug_ratio, stalls, trials=len(ratios["original + flipped"]),
                      gains=[g[1:] for g in ratios["original + flipped"]])
    else:
        ratio, plain_gain, flipped_gain = ratios["plain"][0]
        claim.record(statement + " (trial 0; asserted at full scale)", ratio, paper="≈ 0 (Fig. 2)", trials=1,
                     plain_gain=plain_gain, flipped_gain=flipped_gain)

    # §2.1 / §2.2: the training loss is 0 after 40 epochs, plain and original + flipped.
    check_zero_loss_epoch(claim, tag, histories, protocol)

    # Claim 4: airplane and frog degrade least (ranks of the trial-mean per-class drops).
    plain_per_class, flipped_per_class = per_class(plain["plain"], labels), per_class(plain["vertical"], labels)
    claim.figure(plot_per_class(plain_per_class, flipped_per_class, class_names), "per_class_accuracy")
    class_drop = plain_per_class - flipped_per_class
    class_rank = np.argsort(np.argsort(class_drop, kind="stable"), kind="stable") + 1
    for c, name in enumerate(class_names):
        claim.record(f"{tag}: {name} accuracy, test → vertically flipped", -class_drop[c], unit="%", trials=T,
                     test=plain_per_class[c], flipped=flipped_per_class[c], rank_least_degraded=int(class_rank[c]))
    rank = least_degraded_rank(plain["plain"], plain["vertical"], labels, seed)
    statement = (f"{tag}, vertical flip: airplane and frog both rank in the top {TOP_K} least-degraded classes "
                 "(worse of their ranks by per-class accuracy drop)")
    ranks = {name: int(class_rank[class_names.index(name)]) for name in LEAST_DEGRADED}
    if protocol["assert_least_degraded"]:
        claim.check(statement, rank, at_most(TOP_K), paper="airplane, frog (§2.1.2, Fig. 3)", trials=T,
                    finding=protocol["least_degraded_finding"], ranks=ranks)
    else:
        claim.record(statement + " (asserted at full scale only)", rank, paper="airplane, frog (§2.1.2, Fig. 3)",
                     trials=T, ranks=ranks)


def first_epoch_at_most(history, column: str, threshold: float) -> int | None:
    """First epoch whose `column` (e.g. "train_loss") is ≤ `threshold` (None if never)."""
    return next((r.epoch for r in history.epochs if getattr(r, column) <= threshold), None)


def check_zero_loss_epoch(claim, tag: str, histories: dict, protocol: dict) -> None:
    """Seed 003 §2.1 / §2.2: the first epoch with training loss ≤ ZERO_LOSS is ≤ FIT_EPOCHS, per arm (mean
    over the trials with per-epoch histories, t-interval). Asserted where `assert_fit_epoch` (full scale);
    recorded otherwise. Control: the plain runs' loss on the test images of the curves, which a trained
    net does not drive to 0, under the same region (the threshold is not met by any loss curve)."""
    censored = max(protocol["budget"].epochs, FIT_EPOCHS) + 1
    within = at_most(FIT_EPOCHS)

    def epochs(arm: str, column: str) -> list[int]:
        return [first_epoch_at_most(h, column, ZERO_LOSS) or censored for h in histories[arm]]

    for arm, arm_histories in histories.items():
        if not arm_histories:
            continue
        statement = (f"{tag}, {arm}: first epoch with training loss ≤ {ZERO_LOSS} (the seed: 0 after 40 epochs; "
                     f"a run that never reaches it counts as {censored})")
        values = epochs(arm, "train_loss")
        details = dict(per_trial=values, epochs_to_100_percent=[h.epochs_to_fit() for h in arm_histories],
                       final_train_loss=[h.final.train_loss for h in arm_histories])
        if protocol.get("assert_fit_epoch", False):
            claim.check(statement, stats.mean_ci(values), within, paper=FIT_EPOCHS, trials=len(values), **details)
        else:
            claim.record(statement + " (asserted at full scale)", stats.mean_ci(values), paper=FIT_EPOCHS,
                         trials=len(values), **details)
    if protocol.get("assert_fit_epoch", False):
        claim.control(f"{tag}, plain: first epoch with the test-curve loss ≤ {ZERO_LOSS} (counted as {censored} "
                      "when never)", stats.mean_ci(epochs("plain", "test_loss")), within,
                      trials=len(histories["plain"]))


@pytest.mark.slow
def test_zero_loss_epoch_code_path():
    """Every line of the 40-epoch check on a tiny CPU protocol (width 4, 200 images, 3 epochs, 2 trials per
    arm, the concatenated augmentation): the statements are made and decided. The numbers mean nothing at
    this size (no run reaches zero loss): the records go to a private log, not the report."""
    from dlclaims.record import ClaimLog

    tiny = {**PROTOCOL["full"], "width": 4, "augmentation": "concatenate", "assert_fit_epoch": True,
            "budget": train.TrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.0,
                                        stop_at_train_accuracy=None, log_every=None)}
    device = torch.device("cpu")
    x_train, y_train, x_test, y_test = data.prepare("cifar10", device=device, seed=0, n_train=200, n_test=100)
    curve = data.balanced_indices(y_test, 100, 2)
    histories = {arm: [train_trial(arm, x_train, y_train, x_test, y_test, curve, tiny, device, 1000 * t,
                                   curves=True)[0] for t in range(2)] for arm in ("plain", "original + flipped")}
    log = ClaimLog()
    check_zero_loss_epoch(log, "tiny", histories, tiny)
    checks = [r for r in log.records if r.role == "claim"]
    assert len(checks) == 2 and [r.role for r in log.records].count("control") == 1
    assert all(r.trials == 2 and r.measured == FIT_EPOCHS + 1 and r.verdict for r in log.records)
    smoke_like = ClaimLog()  # smoke's shape: one plain history, recorded (not asserted)
    check_zero_loss_epoch(smoke_like, "tiny", {"plain": histories["plain"][:1], "original + flipped": []},
                          {**tiny, "assert_fit_epoch": False})
    assert [(r.role, r.trials) for r in smoke_like.records] == [("record", 1)]
