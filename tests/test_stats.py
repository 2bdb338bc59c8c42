"""dlclaims.stats: the intervals claims report."""

import numpy as np
import pytest

from dlclaims import stats


def test_wilson_interval_known_value():
    est = stats.binomial_ci(81, 100)
    # Wilson 95 % interval for 81/100 (by hand: centre 0.79853 ± 0.07632).
    assert est.value == 0.81 and est.lo == pytest.approx(0.7222, abs=1e-4) and est.hi == pytest.approx(0.8749, abs=1e-4)


def test_wilson_interval_at_the_edges_stays_in_unit_interval():
    assert stats.binomial_ci(100, 100).hi == 1.0 and stats.binomial_ci(0, 100).lo == 0.0


def test_accuracy_from_hits():
    est = stats.accuracy(np.array([1, 0, 1, 1], dtype=bool))
    assert est.value == 0.75 and est.n == 4 and est.lo < 0.75 < est.hi


def test_chance_interval_covers_a_random_guesser():
    lo, hi = stats.chance_interval(2000, 10, level=0.99)
    rng = np.random.default_rng(0)
    accs = (rng.integers(0, 10, (2000, 2000)) == rng.integers(0, 10, (1, 2000))).mean(axis=1)
    inside = np.mean((accs >= lo) & (accs <= hi))
    assert 0.98 <= inside <= 1.0 and lo < 0.1 < hi


def test_mean_ci_t_interval():
    est = stats.mean_ci([1.0, 2.0, 3.0])
    assert est.value == 2.0 and est.hi - est.value == pytest.approx(4.303 * 1 / np.sqrt(3), rel=1e-3)


def test_bootstrap_difference_is_paired():
    a = np.ones(500, dtype=bool)
    b = a.copy()
    b[:50] = False
    est = stats.difference_ci(a, b, seed=0)
    assert est.value == pytest.approx(0.1) and 0.07 < est.lo < est.hi < 0.13


def test_class_permutation_interval_is_the_null_of_an_uninformed_predictor():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), 100)
    # A memorising net answers alike for similar images, so its answers group by class without
    # naming the classes: here each class is sent to an arbitrary class (mostly noise per image).
    arbitrary = rng.integers(0, 10, size=10)[labels]
    uninformed = np.where(rng.random(labels.size) < 0.5, arbitrary, rng.integers(0, 10, size=labels.size))
    lo, hi = stats.class_permutation_interval(uninformed, labels, 0.99, seed=0)
    blo, bhi = stats.chance_interval(labels.size, 10, 0.99)
    assert lo <= np.mean(uninformed == labels) <= hi and hi - lo > 2 * (bhi - blo)
    # A predictor that knows the labels is far outside it.
    informed = np.where(rng.random(labels.size) < 0.9, labels, 0)
    assert np.mean(informed == labels) > stats.class_permutation_interval(informed, labels, 0.99, seed=0)[1]


def test_generalization_gap_scores_average_to_train_minus_test_accuracy():
    rng = np.random.default_rng(2)
    train_hits = (rng.random((3, 40)) < 0.9).astype(float)  # 3 runs × 40 train images
    test_hits = (rng.random((3, 100)) < 0.6).astype(float)  # the same runs × 100 test images
    scores = stats.generalization_gap_scores(train_hits, test_hits)
    assert scores.shape == (3, 140)
    gaps = train_hits.mean(axis=1) - test_hits.mean(axis=1)
    np.testing.assert_allclose(scores.mean(axis=1), gaps)
    gap = stats.trials_ci(scores, seed=0)
    assert gap.value == pytest.approx(gaps.mean()) and gap.lo < gap.value < gap.hi and gap.n == 140
    # Two models' gaps on the same images: the difference of their gaps, paired over the images.
    other = stats.generalization_gap_scores(np.ones((3, 40)), test_hits)
    difference = stats.trials_ci(other, scores, seed=0)
    assert difference.value == pytest.approx(1 - train_hits.mean())
    with pytest.raises(ValueError):  # a gap scored on other images cannot be paired
        stats.trials_ci(stats.generalization_gap_scores(train_hits, test_hits[:, :50]), scores)
