"""Confidence intervals for the numbers a claim reports.

Accuracies are fractions in [0, 1]. Every estimate carries its interval and the method
that produced it, so a report line can say "97.1 % [96.4, 97.7] (Wilson, n=2000)".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats

DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A measured value with a confidence interval [lo, hi] at `level`."""

    value: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = DEFAULT_LEVEL

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}] ({self.method}, n={self.n})"


def _z(level: float) -> float:
    return float(_scipy_stats.norm.ppf(0.5 + level / 2))


def binomial_ci(successes: int, n: int, level: float = DEFAULT_LEVEL) -> Estimate:
    """Wilson score interval for a proportion (accuracy = correct / n)."""
    if n <= 0:
        raise ValueError("binomial_ci needs n > 0")
    successes = int(successes)
    p = successes / n
    z = _z(level)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, not 1e-18 off
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, lo, hi, n, "Wilson", level)


def to_numpy(x, dtype=None) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=dtype)


def accuracy(correct) -> Estimate:
    """Accuracy with a Wilson interval from a boolean vector (tensor or array) of hits."""
    hits = to_numpy(correct, bool)
    return binomial_ci(int(hits.sum()), hits.size)


def chance_interval(n: int, num_classes: int = 10, level: float = 0.99) -> tuple[float, float]:
    """Central `level` range of the accuracy of a guesser independent of the labels.

    A classifier whose predictions carry no information about the labels scores
    Binomial(n, 1/num_classes)/n on balanced classes; this is the range it lands in.
    """
    dist = _scipy_stats.binom(n, 1.0 / num_classes)
    tail = (1 - level) / 2
    return float(dist.ppf(tail)) / n, float(dist.isf(tail)) / n


def class_permutation_interval(predictions, labels, level: float = 0.99, *, seed: int = 0,
                               n_perm: int = 4000, num_classes: int = 10) -> tuple[float, float]:
    """Central `level` range of the accuracy of `predictions` with the class names permuted at random.

    `predictions` is (n,) or (n, runs) predicted classes on the test points `labels` (n,); with
    several runs the range is for their mean accuracy. A network trained on labels independent
    of its images is, in distribution, unchanged by renaming the classes, so this is the accuracy
    of a predictor with no information about the labels that keeps the model's grouping of similar
    images. That grouping makes neighbouring test points' hits dependent, so for a memorising MLP
    on MNIST this range is about twice as wide as Binomial(n, 1/k) (`chance_interval`), which
    assumes independent hits and is too narrow for such models.
    """
    labels = to_numpy(labels).astype(int)
    preds = to_numpy(predictions).astype(int).reshape(len(labels), -1)
    runs = preds.shape[1]
    confusion = np.zeros((runs, num_classes, num_classes))
    for r in range(runs):
        np.add.at(confusion[r], (preds[:, r], labels), 1)
    renamings = np.argsort(np.random.default_rng(seed).random((n_perm, runs, num_classes)), axis=2)
    hits = np.take_along_axis(confusion[None], renamings[..., None], axis=3).sum(axis=(1, 2, 3))
    tail = (1 - level) / 2
    lo, hi = np.quantile(hits / (len(labels) * runs), [tail, 1 - tail])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], level: float = DEFAULT_LEVEL,
            bounds: tuple[float, float] | None = None) -> Estimate:
    """Student-t interval for the mean of a few repeats (seeds, trials); `bounds` clips it to the
    quantity's range (e.g. (0, 1) for accuracies)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    m = float(x.mean())
    if x.size == 1:
        return Estimate(m, m, m, 1, "single run", level)
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Estimate(m, lo, hi, int(x.size), "t", level)


def bootstrap_ci(
    samples,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Estimate:
    """Percentile bootstrap over the first axis of `samples` (a tuple of arrays resamples rows jointly)."""
    arrays = samples if isinstance(samples, tuple) else (samples,)
    arrays = tuple(to_numpy(a) for a in arrays)
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    value = float(statistic(*arrays))
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=float)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    return Estimate(value, float(lo), float(hi), n, f"bootstrap×{n_boot}", level)


def difference_ci(a_hits, b_hits, *, seed: int = 0, level: float = DEFAULT_LEVEL) -> Estimate:
    """Paired bootstrap interval of accuracy(a) − accuracy(b) on the same test points."""
    return bootstrap_ci(
        (to_numpy(a_hits, float), to_numpy(b_hits, float)),
        lambda a, b: float(a.mean() - b.mean()),
        seed=seed,
        level=level,
    )


def trials_ci(*arms, statistic: Callable[..., float] | None = None, n_boot: int = 2000, seed: int = 0,
              level: float = DEFAULT_LEVEL) -> Estimate:
    """Hierarchical bootstrap over independent training runs *and* test images.

    Each arm is a (trials, n) array (tensor or array-like) of per-image scores (hits 0/1, losses)
    of independent training runs (different seeds) scored on the same n test images. A replicate
    resamples each arm's trials with replacement and, jointly for every arm (paired), the test
    images; the statistic of the arms' mean scores is taken over the replicates. `statistic`
    defaults to the mean of one arm, or arm 0 − arm 1 for two. The CI therefore carries the
    run-to-run variance of training as well as the sampling of test images; with T trials the
    trial level is the plug-in bootstrap (its variance is (T − 1)/T of the unbiased one).
    """
    if not arms:
        raise ValueError("trials_ci needs at least one arm")
    arrays = [np.atleast_2d(to_numpy(a, float)) for a in arms]
    n = arrays[0].shape[1]
    if any(a.shape[1] != n for a in arrays):
        raise ValueError("every arm must be scored on the same test images")
    if statistic is None:
        if len(arrays) > 2:
            raise ValueError("give a statistic for more than two arms")
        statistic = (lambda a: a) if len(arrays) == 1 else (lambda a, b: a - b)
    rng = np.random.default_rng(seed)
    image_weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T / n  # (n, n_boot)
    means = []
    for a in arrays:
        trials = a.shape[0]
        trial_weights = rng.multinomial(trials, np.full(trials, 1.0 / trials), size=n_boot) / trials  # (B, T)
        per_trial = a @ image_weights  # (T, B): each trial's mean over the resampled images
        means.append(np.einsum("bt,tb->b", trial_weights, per_trial))
    boots = np.asarray(statistic(*means), dtype=float)
    value = float(statistic(*(a.mean() for a in arrays)))
    tail = (1 - level) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    shape = " vs ".join(str(a.shape[0]) for a in arrays)
    return Estimate(value, float(min(lo, value)), float(max(hi, value)), n,
                    f"hierarchical bootstrap×{n_boot} (trials {shape} × {n} test images)", level)


def generalization_gap_scores(train_scores, test_scores) -> np.ndarray:
    """Per-image scores over the train ∪ test images whose mean is mean(train) − mean(test).

    `trials_ci` needs every arm scored on the same images; a generalisation gap (train accuracy −
    test accuracy) draws on two image sets of different sizes. Each run's n_train train scores are
    weighted by (n_train + n_test) / n_train and its n_test test scores by −(n_train + n_test) / n_test,
    side by side: (trials, n_train + n_test). `trials_ci` on the result (or on two such arms built
    from the same images) then resamples the trials and the train and test images together.
    """
    train_scores, test_scores = to_numpy(train_scores, float), to_numpy(test_scores, float)
    n_train, n_test = train_scores.shape[-1], test_scores.shape[-1]
    total = n_train + n_test
    return np.concatenate([train_scores * (total / n_train), -test_scores * (total / n_test)], axis=-1)


def trial_count(*arms) -> int:
    """The fewest independent training runs among the arms (what `verdict.decide` needs as `trials`)."""
    return min(np.atleast_2d(to_numpy(a)).shape[0] for a in arms)
