"""Exact Convolutional Neural Tangent Kernels (Arora et al., 2019) and kernel regression.

`cntk` computes CNTK-V ("flatten") and CNTK-GAP ("gap") NTK or NNGP Gram matrices of a
ReLU CNN in neural-tangents' conventions; `kernel_regression` is the paper's classifier and
`cntk_predictions` both together, every depth from one pass.
"""

from ._blocks import MemoryPlan, Progress, choose_block_size, log_progress, memory_plan
from ._engine import cntk
from ._regression import (
    KernelRegressionResult,
    SingularKernelError,
    cntk_predictions,
    depth_passes,
    kernel_regression,
)

__all__ = [
    "KernelRegressionResult",
    "MemoryPlan",
    "Progress",
    "SingularKernelError",
    "choose_block_size",
    "cntk",
    "cntk_predictions",
    "depth_passes",
    "kernel_regression",
    "log_progress",
    "memory_plan",
]
