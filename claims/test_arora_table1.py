"""Arora et al. (2019), "On exact computation with an infinitely wide neural net", Table 1 (seed 004):
CIFAR-10 test accuracy of CNTK-V and CNTK-GAP kernel regression at depths 3 / 4 / 6 / 11 / 21.

What is claimed: each cell of the table, i.e. our accuracy within ±1.5 points of the paper's
(equivalence, TOST: the whole CI inside); the control asks the same of the *other* row's paper number
(V ↔ GAP, 6-13 points apart at every depth) and must land decisively outside, so the margin tells the
rows apart.

  2K rows    the paper's own 2K protocol: 2,000 training images, the whole 10,000-image test set, so
             the paper's 2K number is the region. Ours is the mean over 3 random class-balanced
             2,000-image subsets (the paper's subset is not given); its CI is the hierarchical
             bootstrap over subsets × test images (`stats.trials_ci`). No network is trained: the
             kernel is deterministic given the data, so `trials` is None (the subsets are in `details`).
             CNTK-V-2K: `slow` CPU test (`pytest claims -k arora_2k_v -m slow`, 10.9 min on 2 cores);
             CNTK-GAP-2K: `gpu`.
  full rows  all 50,000 training images (`--scale=full`, GPU; skip when the data has fewer): the same
             data as the paper, one deterministic kernel; CI = Wilson over the 10,000 test images.
  depth      "for both CNN and CNTK, depth can affect the classification accuracy" (§5): in each row,
             accuracy at the depth where the paper's row is highest − at the depth where it is lowest ≥
             +1 test image (1/n_test, a non-zero effect; `depth_matters`; CNTK-V-2K: 6 vs 3, +2.49
             points; CNTK-GAP-2K: 21 vs 3; CNTK-V: 6 vs 21; CNTK-GAP: 11 vs 3). "Can affect" is read as
             two depths whose accuracies differ; the pair and the sign come from the paper's table, not
             from our data (the max − min of our own depths is ≥ 0 by construction and its bootstrap CI
             excludes 0 even when depth changes nothing). CI: 2K rows, bootstrap over subsets × test
             images of the per-subset paired difference; full rows, paired bootstrap over the test
             images. Sanity control (it rejects only a destroyed kernel): the kernel at the high depth
             fitted to shuffled training labels − the low depth (decisively below the edge).
  smoke      nothing runs in CI (the 2K rows are `slow` / `gpu`, the full rows `full` + `gpu`): smoke
             asserts nothing of this table. No protocol here compares a subset's accuracy with the
             paper's full-data number.

Protocol, from the reference code github.com/ruosongwang/CNTK (CNTK.py, utils.py, README):
  preprocessing  pixels / 255, then per-channel standardisation with the training split's mean and
                 std (no ZCA whitening: that is Li et al. 2019's enhanced CNTK, not this table);
  kernel         [3×3 conv → ReLU] × (depth − 1) → Flatten (CNTK-V, `--gap no --fix no`: every
                 layer trained) or GAP (CNTK-GAP, `--gap yes --fix yes`: first conv and readout
                 fixed); the README gives the flags for the full-data columns, the 2K columns are
                 read as the same kernels;
  regression     targets one-hot − 0.1, exact solve, no ridge (`dlclaims.cntk.kernel_regression`).
"""

import numpy as np
import pytest
import torch

from dlclaims import data, stats
from dlclaims.verdict import Region, at_least, equivalent, one_test_image

SOURCE = "Arora et al. 2019, Table 1 (seed 004)"

DEPTHS = (3, 4, 6, 11, 21)
PAPER = {  # test accuracy, fractions
    "CNTK-V-2K": dict(zip(DEPTHS, (0.4094, 0.4254, 0.4343, 0.4342, 0.4253))),
    "CNTK-GAP-2K": dict(zip(DEPTHS, (0.4971, 0.5106, 0.5173, 0.5192, 0.5222))),
    "CNTK-V": dict(zip(DEPTHS, (0.6447, 0.6552, 0.6603, 0.6590, 0.6409))),
    "CNTK-GAP": dict(zip(DEPTHS, (0.7047, 0.7593, 0.7673, 0.7743, 0.7708))),
}
KERNELS = {  # Arora et al.'s flags per column
    "V": dict(pooling="flatten", fix_first_layer=False, fix_readout=False),
    "GAP": dict(pooling="gap", fix_first_layer=True, fix_readout=True),
}
CIFAR_TRAIN_SIZE = 50000
# "Reproduces the table's cell" = within ±1.5 points (ours; the paper gives no tolerance). For the 2K
# rows this is about twice the spread of CNTK-V-2K accuracy across random 2,000-image subsets that we
# measured (sd 0.55-0.87 points per depth, 3 subsets): the paper's number is one such draw. The full
# rows use the paper's data, so there the margin only covers implementation details (float32
# recursion, the solver), and the Wilson CI (±0.9 points at 65 %) takes most of it.
TOLERANCE = 0.015
# Arora §5: "depth can affect the classification accuracy": accuracy(paper's best depth of the row) −
# accuracy(paper's worst depth) ≥ one test image (see the module docstring for the reading). "Affect" is a
# non-zero effect: the edge is the measurement's resolution, 1 / n_test (an accuracy on n_test images
# moves in steps of 1 / n_test), so a CI ending at 0 ("no effect") is not inside; fixed before any run.
# `one_test_image` places the edge at half an image, off the grid, so rounding never decides it.
def depth_matters(n_test: int) -> Region:
    return at_least(one_test_image(n_test))

# Units: images (CIFAR-10 at its native 32×32), accuracies as fractions.
# The recursion runs in float32 as the reference code's does (sums and the solve stay float64), in
# the fused CNTK kernel (`cntk(backend="auto")`: numba on CPU, Triton on CUDA).
PAPER_2K = {"n_train": 2000, "n_test": 10000, "subsets": 3, "depths": DEPTHS, "dtype": torch.float32}
PROTOCOL = {
    # The 2K rows are the paper's protocol at every scale; they are `slow` / `gpu`, never in CI.
    # CPU cost of CNTK-V-2K (all five depths from one pass, 2·10⁶ + 2·10⁷ pairs per subset, fused
    # float32 kernel): `pytest claims -k arora_2k_v -m slow` with DLCLAIMS_THREADS=2, alone on the
    # 2-core box (AMD EPYC, 2026-12-02 07:31, at 764ae70: pairs in L2-sized tiles): 652 s wall (10.9 min;
    # ≈ 10 µs per pair on both cores, all depths); before the tiling 1,107 s (18.5 min), and with other
    # jobs taking half the box 2,248 CPU-s, 47 min wall, 3.4 GB peak. Measured (all three runs
    # identical) 40.35 / 41.84 / 42.96 / 43.36 / 42.63 % vs the paper's 40.94 / 42.54 / 43.43 / 43.42 /
    # 42.53: every point within ±0.7 points; per-subset sd 0.55-0.87 points, so
    # the TOST verdict is reproduced at depths 11 and 21 and inconclusive at 3, 4, 6 (CI lower ends
    # 0.02 / 0.14 / 0.10 points past the −1.5 edge). Depth 6 − depth 3: +2.61 [1.99, 3.26], reproduced.
    # The torch engine took ≈ 0.41 ms per pair (≈ 7.5 h).
    "smoke": {"2k": PAPER_2K},
    "full": {"2k": PAPER_2K, "n_test": 10000, "depths": DEPTHS, "dtype": torch.float32},
}

# What each test's CUDA variant costs per scale (dlclaims.plan; `pytest claims -m gpu --plan`).
# Estimates from the protocols' sizes and CPU rates (no GPU has run them yet): replace with measured
# figures and the card's name after a GPU run. "paper" tier: too big for the nightly's 2 h on 4 GPUs.
COST = {
    "test_arora_2k_v": {
        "smoke": {"gpu_s": 300, "peak_gib": 4, "measured_on": "estimate"},
        "full": {"gpu_s": 300, "peak_gib": 4, "measured_on": "estimate"},
    },
    "test_arora_2k_gap": {
        "smoke": {"gpu_s": 86400, "peak_gib": 8, "measured_on": "estimate", "tier": "paper"},
        "full": {"gpu_s": 86400, "peak_gib": 8, "measured_on": "estimate", "tier": "paper"},
    },
    "test_arora_full_cntk[V]": {
        "full": {"gpu_s": 4000, "peak_gib": 60, "measured_on": "estimate", "tier": "paper"},
    },
    "test_arora_full_cntk[GAP]": {
        "full": {"gpu_s": 5500000.0, "peak_gib": 60, "measured_on": "estimate", "tier": "paper"},
    },
}


def standardised_cifar(device):
    """CIFAR-10 as the reference code prepares it: /255, then per-channel train mean and std."""
    full = data.load("cifar10", device=device)
    mean, std = data.channel_stats(full.x_train)
    return full, mean, std


def cntk_test_hits(kernel: str, train_idx, test_idx, full, mean, std, depths, device, dtype,
                   shuffled_seed: int) -> list[dict[int, torch.Tensor]]:
    """Hits of CNTK regression on the test images `test_idx`, every depth from one kernel pass:
    [depth → hits with the true training labels, depth → hits with the labels shuffled by
    `shuffled_seed`] (the second costs only a solve with the same factor)."""
    from dlclaims.cntk import cntk_predictions

    x_train = data.to_float(full.x_train[train_idx], mean, std)
    x_test = data.to_float(full.x_test[test_idx], mean, std)
    labels = full.y_train[train_idx]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(shuffled_seed))
                      .to(labels.device)]
    predictions = cntk_predictions(x_train, [labels, shuffled], x_test, depths, device=device, dtype=dtype,
                                   progress=True, **KERNELS[kernel])
    return [{d: p == full.y_test[test_idx].cpu() for d, p in by_depth.items()} for by_depth in predictions]


def paper_extremes(row: str, depths) -> tuple[int, int]:
    """(depth of the paper's highest, depth of its lowest accuracy) in `row` among `depths`."""
    return (max(depths, key=lambda d: PAPER[row][d]), min(depths, key=lambda d: PAPER[row][d]))


def evaluation_indices(full, n_test: int, seed: int):
    """The whole test set (the paper's), or a class-balanced subset where the data holds more than
    `n_test` (a tiny trial run of the code path)."""
    if n_test >= len(full.y_test):
        return torch.arange(len(full.y_test), device=full.y_test.device)
    return data.balanced_indices(full.y_test, n_test, seed)


def check_2k_row(kernel: str, device, spec, seed, claim, baseline):
    full, mean, std = standardised_cifar(device)
    row, other = (f"CNTK-{kernel}-2K", f"CNTK-{'GAP' if kernel == 'V' else 'V'}-2K")
    test_idx = evaluation_indices(full, spec["n_test"], seed)
    hits = {d: [] for d in spec["depths"]}  # per depth: one (n_test,) hit vector per subset
    null_hits = {d: [] for d in spec["depths"]}  # the same kernels fitted to shuffled training labels
    for s in range(spec["subsets"]):
        train_idx = data.balanced_indices(full.y_train, spec["n_train"], seed + s)
        real, null = cntk_test_hits(kernel, train_idx, test_idx, full, mean, std, spec["depths"], device,
                                    spec["dtype"], shuffled_seed=seed + s)
        for d in spec["depths"]:
            hits[d].append(stats.to_numpy(real[d], float))
            null_hits[d].append(stats.to_numpy(null[d], float))
    per_subset = {d: [float(h.mean()) for h in hs] for d, hs in hits.items()}
    from dlclaims.baselines import binomial

    # Registered before the claims: CNTK regression accuracies on the test set, an argmax that flips
    # only at near-ties; binomial bounds it.
    baseline.check({f"depth{d}": binomial(accs, len(test_idx), "accuracy of CNTK regression")
                    for d, accs in per_subset.items()})
    for d, hs in hits.items():
        # Subsets × test images (the paper's 2,000 images are one unknown draw); no trained network.
        measured = stats.trials_ci(np.stack(hs), seed=seed)
        claim.check(f"{row}, depth {d}: CIFAR-10 test accuracy (mean of {len(hs)} subsets of {spec['n_train']}, "
                    f"{len(test_idx)} test images)", measured, equivalent(TOLERANCE, PAPER[row][d]),
                    paper=PAPER[row][d], unit="%", subsets=per_subset[d])
        claim.control(f"{row}, depth {d} measured against the {other} paper number", measured,
                      equivalent(TOLERANCE, PAPER[other][d]), paper=PAPER[other][d], unit="%")
    # Depth matters: the per-subset paired difference (same subset, same test images), subsets × images.
    top, bottom = paper_extremes(row, spec["depths"])
    claim.check(f"{row}: accuracy at depth {top} − at depth {bottom} (the paper's highest and lowest depth of the "
                "row; depth can affect the CNTK's accuracy)",
                stats.trials_ci(np.stack(hits[top]) - np.stack(hits[bottom]), seed=seed), depth_matters(len(test_idx)),
                paper=PAPER[row][top] - PAPER[row][bottom], unit="%",
                per_subset=[a - b for a, b in zip(per_subset[top], per_subset[bottom])])
    claim.control(f"{row}: depth {top} fitted to shuffled training labels − depth {bottom} (sanity control)",
                  stats.trials_ci(np.stack(null_hits[top]) - np.stack(hits[bottom]), seed=seed),
                  depth_matters(len(test_idx)), unit="%")


@pytest.mark.slow
def test_arora_2k_v(device, protocol, seed, claim, baseline):
    check_2k_row("V", device, protocol["2k"], seed, claim, baseline)


@pytest.mark.gpu
def test_arora_2k_gap(device, protocol, seed, claim, baseline):
    if device.type != "cuda":
        pytest.skip("CNTK-GAP at 32×32 costs (H·W)² = 10⁶ position pairs per image pair, ~10⁴× CNTK-V: "
                    "2.2·10⁷ pairs are GPU work (CUDA only)")
    check_2k_row("GAP", device, protocol["2k"], seed, claim, baseline)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_arora_full_cntk(kernel, device, scale, protocol, claim):
    if scale != "full" or device.type != "cuda":
        pytest.skip("the full-data rows train on all 50,000 CIFAR-10 images: --scale=full on CUDA only")
    full, mean, std = standardised_cifar(device)
    data.require_train_size(full, CIFAR_TRAIN_SIZE)
    row, other = f"CNTK-{kernel}", f"CNTK-{'GAP' if kernel == 'V' else 'V'}"
    test_idx = evaluation_indices(full, protocol["n_test"], 0)
    # Depths are prefixes of one recursion: as many per kernel pass as the GPU holds (a 50,000² float64
    # Gram matrix is 20 GB; 80 % of the card for kernels, the rest for the recursion's blocks).
    from dlclaims.cntk import depth_passes

    memory = 0.8 * torch.cuda.get_device_properties(device).total_memory
    hits, null_hits = {}, {}
    for depths in depth_passes(protocol["depths"], CIFAR_TRAIN_SIZE, len(test_idx), memory):
        real, null = cntk_test_hits(kernel, torch.arange(CIFAR_TRAIN_SIZE), test_idx, full, mean, std, depths,
                                    device, protocol["dtype"], shuffled_seed=0)
        hits.update(real)
        null_hits.update(null)
    for d in protocol["depths"]:
        measured = stats.accuracy(hits[d])  # one deterministic kernel on the paper's data: test sampling only
        claim.check(f"{row}, depth {d}: CIFAR-10 test accuracy (50,000 training images)", measured,
                    equivalent(TOLERANCE, PAPER[row][d]), paper=PAPER[row][d], unit="%")
        claim.control(f"{row}, depth {d} measured against the {other} paper number", measured,
                      equivalent(TOLERANCE, PAPER[other][d]), paper=PAPER[other][d], unit="%")
    top, bottom = paper_extremes(row, protocol["depths"])
    claim.check(f"{row}: accuracy at depth {top} − at depth {bottom} (the paper's highest and lowest depth of the "
                "row; depth can affect the CNTK's accuracy)", stats.difference_ci(hits[top], hits[bottom]),
                depth_matters(len(test_idx)), paper=PAPER[row][top] - PAPER[row][bottom], unit="%")
    claim.control(f"{row}: depth {top} fitted to shuffled training labels − depth {bottom} (sanity control)",
                  stats.difference_ci(null_hits[top], hits[bottom]), depth_matters(len(test_idx)), unit="%")
