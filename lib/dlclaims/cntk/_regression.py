"""Kernel regression with the protocol of Arora et al. (2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TARGET_SHIFT = 0.1  # targets are one-hot − 0.1: 0.9 for the class, −0.1 elsewhere
# A Cholesky factor whose smallest pivot² is below this × n × the largest pivot² is
# treated as singular: the solve would only amplify rounding noise.
_SINGULAR_RCOND = float(np.finfo(np.float64).eps)


class SingularKernelError(np.linalg.LinAlgError):  # LinAlgError is a ValueError
    """The regularised training kernel is singular or not positive definite."""


@dataclass(frozen=True)
class KernelRegressionResult:
    scores: torch.Tensor  # (n_test, num_classes) float64: k_test @ (K + ridge·I)⁻¹ Y
    predictions: torch.Tensor  # (n_test,) int64: argmax of scores


def kernel_regression(k_train, y_train, k_test, ridge: float = 0.0,
                      num_classes: int = 10) -> KernelRegressionResult:
    """Solve ``(k_train + ridge·I) α = Y`` by Cholesky in float64 and score ``k_test @ α``.

    ``Y`` is one-hot(``y_train``) − 0.1, as in the reference code (ruosongwang/CNTK).
    ``k_test`` is (n_test, n_train); ``ridge`` is added to the diagonal as is. Raises
    `SingularKernelError` (a ValueError and numpy LinAlgError) naming the ridge when
    the system is not numerically positive definite.
    """
    k_train = torch.as_tensor(np.asarray(k_train), dtype=torch.float64)
    k_test = torch.as_tensor(np.asarray(k_test), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    n = k_train.shape[0]
    if k_train.shape != (n, n) or labels.shape != (n,) or k_test.ndim != 2 or k_test.shape[1] != n:
        raise ValueError(f"need k_train (n, n), y_train (n,), k_test (m, n); got "
                         f"{tuple(k_train.shape)}, {tuple(labels.shape)}, {tuple(k_test.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    targets = torch.nn.functional.one_hot(labels, num_classes).double() - TARGET_SHIFT

    system = k_train + ridge * torch.eye(n, dtype=torch.float64)
    factor, info = torch.linalg.cholesky_ex(system)
    pivots = factor.diagonal()
    if info.item() != 0 or not torch.isfinite(pivots).all() or (
            n and pivots.min() ** 2 <= _SINGULAR_RCOND * n * pivots.max() ** 2):
        raise SingularKernelError(
            f"the training kernel plus ridge={ridge:g} is singular or not positive definite "
            f"(n={n}); increase the ridge or remove duplicate training points")
    alpha = torch.cholesky_solve(targets, factor)
    scores = k_test @ alpha
    return KernelRegressionResult(scores=scores, predictions=scores.argmax(dim=1))


def cntk_predictions(x_train, label_sets, x_test, depths, **cntk_options) -> list[dict[int, torch.Tensor]]:
    """CNTK kernel regression at every depth from one kernel pass per side (depths are prefixes
    of one recursion): for each training label set in `label_sets`, depth → test predictions.

    `cntk_options` go to `cntk` (pooling, fix flags, device, dtype, ...).
    """
    from ._engine import cntk

    depths = list(depths)
    k_train = cntk(x_train, depth=depths, **cntk_options)
    k_test = cntk(x_test, x_train, depth=depths, **cntk_options)
    return [{d: kernel_regression(k_train[d], torch.as_tensor(labels).cpu(), k_test[d]).predictions for d in depths}
            for labels in label_sets]
