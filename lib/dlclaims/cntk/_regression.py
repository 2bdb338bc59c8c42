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


def _float64(x, device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """`x` as a float64 tensor (on `device`, default: where it is) and whether that made a new copy.

    A tensor stays on its device (a CUDA Gram matrix is never copied to the host); an array is
    wrapped without a copy where its dtype allows.
    """
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    out = t.to(device=device if device is not None else t.device, dtype=torch.float64)
    return out, out is not t  # Tensor.to returns the tensor itself when nothing changes


def _targets(y_train, num_classes: int, device: torch.device) -> torch.Tensor:
    labels = (y_train.detach() if isinstance(y_train, torch.Tensor)
              else torch.as_tensor(np.asarray(y_train))).to(device=device, dtype=torch.int64)
    if labels.ndim != 1:
        raise ValueError(f"need y_train (n,), got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return torch.nn.functional.one_hot(labels, num_classes).double() - TARGET_SHIFT


def cholesky_factor(k_train, ridge: float = 0.0) -> torch.Tensor:
    """The lower Cholesky factor of ``k_train + ridge·I`` in float64, on k_train's device.

    No identity matrix is formed: the ridge goes onto the diagonal in place — of the float64 copy
    when converting made one, else of a single copy — and at ridge 0 a float64 kernel is factored
    as it is. Peak memory is the kernel plus its factor (a 50,000² float64 Gram: 20 + 20 GB), on the
    GPU when the kernel is there, so the O(n³) factorisation runs on the GPU too. Raises
    `SingularKernelError` naming the ridge when the system is not numerically positive definite.
    """
    system, owned = _float64(k_train)
    n = system.shape[0]
    if system.ndim != 2 or system.shape != (n, n):
        raise ValueError(f"need k_train (n, n), got {tuple(system.shape)}")
    if ridge:
        if not owned:
            system = system.clone()  # never change the caller's kernel
        system.diagonal().add_(ridge)
    factor, info = torch.linalg.cholesky_ex(system)
    del system
    pivots = factor.diagonal()
    if info.item() != 0 or not torch.isfinite(pivots).all() or (
            n and pivots.min() ** 2 <= _SINGULAR_RCOND * n * pivots.max() ** 2):
        raise SingularKernelError(
            f"the training kernel plus ridge={ridge:g} is singular or not positive definite "
            f"(n={n}); increase the ridge or remove duplicate training points")
    return factor


def solve_scores(factor: torch.Tensor, y_train, k_test, num_classes: int = 10) -> KernelRegressionResult:
    """Scores ``k_test @ (K + ridge·I)⁻¹ Y`` from `cholesky_factor`'s factor, on the factor's device."""
    n = factor.shape[0]
    targets = _targets(y_train, num_classes, factor.device)
    k_test, _ = _float64(k_test, factor.device)
    if targets.shape[0] != n or k_test.ndim != 2 or k_test.shape[1] != n:
        raise ValueError(f"need k_train (n, n), y_train (n,), k_test (m, n); got "
                         f"{(n, n)}, {(targets.shape[0],)}, {tuple(k_test.shape)}")
    alpha = torch.cholesky_solve(targets, factor)
    scores = k_test @ alpha
    return KernelRegressionResult(scores=scores, predictions=scores.argmax(dim=1))


def kernel_regression(k_train, y_train, k_test, ridge: float = 0.0,
                      num_classes: int = 10) -> KernelRegressionResult:
    """Solve ``(k_train + ridge·I) α = Y`` by Cholesky in float64 and score ``k_test @ α``.

    ``Y`` is one-hot(``y_train``) − 0.1, as in the reference code (ruosongwang/CNTK).
    ``k_test`` is (n_test, n_train); ``ridge`` is added to the diagonal as is (in place, no identity
    matrix; nothing at ridge 0). The solve runs where ``k_train`` is — on the GPU for a CUDA kernel,
    whose result then stays there — and always in float64. Raises `SingularKernelError` (a
    ValueError and numpy LinAlgError) naming the ridge when the system is not numerically positive
    definite.
    """
    k_train = k_train if hasattr(k_train, "shape") else np.asarray(k_train)
    k_test = k_test if hasattr(k_test, "shape") else np.asarray(k_test)
    n = k_train.shape[0]
    labels_shape = tuple(np.shape(y_train))
    if tuple(k_train.shape) != (n, n) or labels_shape != (n,) or len(k_test.shape) != 2 or k_test.shape[1] != n:
        raise ValueError(f"need k_train (n, n), y_train (n,), k_test (m, n); got "
                         f"{tuple(k_train.shape)}, {labels_shape}, {tuple(k_test.shape)}")
    _targets(y_train, num_classes, torch.device("cpu"))  # label range checked before the factorisation
    return solve_scores(cholesky_factor(k_train, ridge), y_train, k_test, num_classes)


def cntk_predictions(x_train, label_sets, x_test, depths, **cntk_options) -> list[dict[int, torch.Tensor]]:
    """CNTK kernel regression at every depth from one kernel pass per side (depths are prefixes
    of one recursion): for each training label set in `label_sets`, depth → test predictions (on
    the CPU).

    `cntk_options` go to `cntk` (pooling, fix flags, device, dtype, ...). Each depth's kernel is
    factored once, on the device that computed it, for every label set.
    """
    from ._engine import cntk

    depths = list(depths)
    k_train = cntk(x_train, depth=depths, **cntk_options)
    k_test = cntk(x_test, x_train, depth=depths, **cntk_options)
    out = [{} for _ in label_sets]
    for d in depths:
        factor = cholesky_factor(k_train.pop(d))  # the kernel is freed once factored
        for by_depth, labels in zip(out, label_sets):
            by_depth[d] = solve_scores(factor, labels, k_test[d]).predictions.cpu()
        del factor
        k_test.pop(d)
    return out


def depth_passes(depths, n_train: int, n_test: int, memory_bytes: float, itemsize: int = 8) -> list[list[int]]:
    """Split `depths` into as few kernel passes as `memory_bytes` allows (depths are prefixes of one
    recursion, so a pass costs about its deepest depth: all depths in one pass is cheapest).

    A pass over k depths holds k training kernels (n_train², `itemsize` bytes) and k test kernels
    (n_test × n_train), plus one Cholesky factor (n_train²) while it solves. Consecutive depths share a
    pass, grouped from the deepest down (a pass's cost is its deepest depth, so the shallow leftovers
    go alone); at least one depth per pass (then the device must hold one kernel and its factor).
    """
    depths = sorted(depths, reverse=True)
    per_depth = itemsize * (n_train * n_train + n_test * n_train)
    factor = itemsize * n_train * n_train
    fit = max(1, int((memory_bytes - factor) // per_depth))
    return sorted(sorted(depths[i:i + fit]) for i in range(0, len(depths), fit))
