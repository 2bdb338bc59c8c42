"""Input-output-convex MLPs (Sivaprasad et al., "The curious case of convex neural networks",
arXiv 2006.05103; seed 002) and the tools to check them.

An IOC-MLP is an MLP (Flatten → [Linear → ELU] × depth → Linear) whose every logit is a convex
function of the input: the first Linear is free (an affine map keeps convexity), every later
Linear has non-negative weights, and ELU is convex and non-decreasing, so each layer maps convex
functions to convex functions. That is all seed 002 describes ("restricting the weights (for all
but the first layer) to be non-negative and using a non-decreasing convex activation function",
"w_ij = e^{w_ij − 5}, for negative weights", "ELU ... instead of ReLU"), so it is the default.

BatchNorm (`batch_norm=True`, not in the seed; kept for the ablation of issue 18): Linear →
BatchNorm → ELU. In eval mode BatchNorm is the per-unit affine map u ↦ γ (u − μ) / sqrt(σ² + ε) + β.
After the first Linear that is still affine in x (harmless). After any later Linear its scale
must not flip the sign of a convex function, so γ of those BatchNorms is constrained like a
weight (γ ≥ 0; the running variance makes the divisor positive). Biases and β are free. In train
mode BatchNorm normalises by batch statistics, so convexity is a statement about eval mode only.
It also makes each constrained unit invariant to the scale of its incoming weights, which
undoes much of the projection's e^{w−5} shrink (issue 18's ablation, in claims/test_ioc_nn.py:
on random labels the IOC-MLP lags its twin by 4.4-8.3 points with it, 6.2-14.2 without).

The constraint is the paper's projection, applied after every optimizer step through
`dlclaims.train.fit(after_step=project_nonnegative)`: a negative constrained weight w becomes
exp(w − 5) (small and positive, so the unit is not dead). The unconstrained twin is the same
class with `convex=False`: identical architecture and parameter count, nothing projected.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .mlp import MLP

# A negative constrained weight w is replaced by exp(w - NEGATIVE_SHIFT) (the paper's choice: 5).
NEGATIVE_SHIFT = 5.0


class IOCMLP(MLP):
    """An MLP with ELU (and BatchNorm after every hidden Linear if `batch_norm`); `convex=True`
    makes it an IOC-MLP.

    A convex model starts projected (every constrained weight ≥ 0), so it is convex before
    training too; `project_nonnegative` keeps it so after each step.
    """

    def __init__(self, in_features: int, *, depth: int = 3, width: int = 800, num_classes: int = 10,
                 convex: bool = True, batch_norm: bool = False):
        super().__init__(in_features, depth=depth, width=width, num_classes=num_classes, activation=nn.ELU,
                         batch_norm=batch_norm)
        self.convex = convex
        if convex:
            project_nonnegative(self)

    def constrained_parameters(self) -> list[nn.Parameter]:
        """Weights of every Linear after the first and γ of every BatchNorm after a later Linear
        (empty for the unconstrained twin)."""
        if not self.convex:
            return []
        return sign_constrained_parameters(self)


def sign_constrained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters convexity needs non-negative, whatever the model's `convex` flag says:
    weights of each Linear after the first, and γ of each BatchNorm that follows a later Linear."""
    params, seen_linear = [], 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            seen_linear += 1
            if seen_linear > 1:
                params.append(module.weight)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and seen_linear > 1 and module.affine:
            params.append(module.weight)
    return params


@torch.no_grad()
def project_nonnegative(model: IOCMLP) -> None:
    """The paper's projection, in place: each negative constrained weight w ← exp(w − 5).

    Use as `fit(..., after_step=project_nonnegative)`; a no-op for the unconstrained twin.
    """
    for param in model.constrained_parameters():
        param.copy_(torch.where(param < 0, torch.exp(param - NEGATIVE_SHIFT), param))


def min_constrained_weight(model: nn.Module) -> float:
    """The smallest entry among the sign-constrained parameters (≥ 0 iff the constraint holds)."""
    return min(float(p.detach().min()) for p in sign_constrained_parameters(model))


@torch.no_grad()
def midpoint_convexity_violations(model: nn.Module, x: torch.Tensor, x2: torch.Tensor, *,
                                  rtol: float = 1e-9) -> torch.Tensor:
    """Boolean (n, outputs): where f((x + x2)/2) > (f(x) + f(x2))/2, i.e. convexity fails on the segment.

    Evaluated on a float64 copy of `model` in eval mode (BatchNorm as its fixed affine map), so
    rounding is ~1e-16 and `rtol` (relative to the outputs' magnitude) only absorbs that:
    an exactly linear stretch of a convex function is not reported.
    """
    probe = copy.deepcopy(model).double().eval()
    x, x2 = x.double(), x2.double()
    f_mid = probe((x + x2) / 2)
    f_chord = (probe(x) + probe(x2)) / 2
    scale = f_mid.abs() + f_chord.abs() + 1.0
    return f_mid - f_chord > rtol * scale
