"""Kernel regression with Arora et al.'s protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlclaims.cntk import SingularKernelError, cntk, cntk_predictions, depth_passes, kernel_regression

N_CLASSES = 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 2, 6, 6))
    labels = rng.integers(0, N_CLASSES, size=12)
    return cntk(x, depth=4, pooling="gap"), labels


def test_exact_fit_on_training_data(data):
    k, labels = data
    result = kernel_regression(k, labels, k, ridge=0.0, num_classes=N_CLASSES)
    targets = torch.nn.functional.one_hot(torch.as_tensor(labels), N_CLASSES).double() - 0.1
    torch.testing.assert_close(result.scores, targets, rtol=0.0, atol=1e-8)
    assert torch.equal(result.predictions, torch.as_tensor(labels))
    assert result.scores.dtype == torch.float64 and result.predictions.dtype == torch.int64


def test_predicts_held_out_rows(data):
    k, labels = data
    train, test = slice(0, 9), slice(9, 12)
    result = kernel_regression(k[train, train], labels[train], k[test, train], ridge=1e-3,
                               num_classes=N_CLASSES)
    assert result.scores.shape == (3, N_CLASSES) and result.predictions.shape == (3,)
    targets = torch.nn.functional.one_hot(torch.as_tensor(labels[train]), N_CLASSES).double() - 0.1
    expected = k[test, train] @ torch.linalg.solve(k[train, train] + 1e-3 * torch.eye(9, dtype=torch.float64), targets)
    torch.testing.assert_close(result.scores, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(result.predictions, expected.argmax(dim=1))


def test_cntk_predictions_match_kernel_then_regression_at_every_depth():
    rng = np.random.default_rng(1)
    x_train, x_test = rng.standard_normal((10, 2, 5, 5)), rng.standard_normal((4, 2, 5, 5))
    label_sets = [rng.integers(0, N_CLASSES, size=10) for _ in range(2)]
    predictions = cntk_predictions(x_train, label_sets, x_test, (3, 5), pooling="flatten")
    for labels, by_depth in zip(label_sets, predictions):
        assert sorted(by_depth) == [3, 5]
        for d, p in by_depth.items():
            expected = kernel_regression(cntk(x_train, depth=d), labels, cntk(x_test, x_train, depth=d)).predictions
            assert torch.equal(p, expected)


def test_singular_system_raises_clear_error(data):
    k, labels = data
    duplicated = [0, 1, 2, 2]  # a repeated training image: rank-deficient kernel
    k_dup = k[duplicated][:, duplicated]
    with pytest.raises(SingularKernelError, match=r"ridge=0\b"):
        kernel_regression(k_dup, labels[duplicated], k_dup, ridge=0.0, num_classes=N_CLASSES)
    assert issubclass(SingularKernelError, ValueError)
    assert issubclass(SingularKernelError, np.linalg.LinAlgError)
    # A ridge makes the same system solvable.
    kernel_regression(k_dup, labels[duplicated], k_dup, ridge=1e-2, num_classes=N_CLASSES)


def test_indefinite_system_raises():
    with pytest.raises(SingularKernelError, match="ridge=0.5"):
        kernel_regression(-np.eye(3), [0, 1, 2], np.eye(3), ridge=0.5, num_classes=3)


@pytest.mark.parametrize("labels", [[0, 1, 7], [0, -1, 1]])
def test_rejects_labels_outside_classes(labels):
    with pytest.raises(ValueError, match="labels"):
        kernel_regression(np.eye(3), labels, np.eye(3), num_classes=3)


def test_depth_passes_put_as_many_depths_in_one_pass_as_memory_holds():
    gib = 2 ** 30
    depths = [21, 3, 4, 6, 11]
    # Arora's full rows: 50,000 training and 10,000 test images, float64 kernels (≈ 22.4 GiB a depth).
    assert depth_passes(depths, 50_000, 10_000, 1000 * gib) == [[3, 4, 6, 11, 21]]
    assert depth_passes(depths, 50_000, 10_000, 120 * gib) == [[3], [4, 6, 11, 21]]  # an H200's share: 3 + 21
    assert depth_passes(depths, 50_000, 10_000, 70 * gib) == [[3], [4, 6], [11, 21]]  # an H100's: 3 + 6 + 21
    assert depth_passes(depths, 50_000, 10_000, 1 * gib) == [[3], [4], [6], [11], [21]]  # never empty
