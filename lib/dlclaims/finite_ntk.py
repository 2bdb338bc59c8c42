"""The finite-width (empirical) neural tangent kernel of a network at its initialisation, and
the linearized network it belongs to, via torch.func.

The linearized network around θ₀ is ``f_lin(x; θ) = f(x; θ₀) + J(x)(θ − θ₀)`` with
``J(x) = ∂f(x; θ₀)/∂θ``. Gradient flow on the squared loss trains it to the kernel-regression
interpolant of its empirical NTK ``Θ(x, x') = J(x) J(x')ᵀ``; we solve that regression exactly
(`dlclaims.cntk.kernel_regression`, one-hot − 0.1 targets) instead of running an optimizer —
the seed (001) trained the linearized network with Adam, batch 5, which for the squared loss
approaches the same solution. Like Arora et al.'s kernel classifiers we drop the output at
initialisation f(x; θ₀) (a centred linearization).

Conventions:
- the C × C output block of Θ is replaced by its trace / C (neural-tangents' `trace_axes`):
  at a random initialisation the off-diagonal blocks vanish in expectation and the diagonal
  ones share one expectation;
- the kernel of a network with BatchNorm is the kernel of its *eval-mode* function at init,
  i.e. BN as the fixed affine map of its running statistics (at init: the identity), so that
  f(x) depends on x alone. The caller puts the model in eval mode (we do it and restore it);
- every parameter with `requires_grad` counts (freeze parameters to leave them out).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from .cntk import kernel_regression

DEFAULT_CHUNK = 64  # images whose Jacobians are built at once
RELATIVE_RIDGE = 1e-6  # ridge = this × mean diagonal of the training kernel (scale-free)


def _split_parameters(model: nn.Module):
    trainable = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    fixed = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    fixed.update(dict(model.named_buffers()))
    return trainable, fixed


def linearized(model: nn.Module):
    """``f_lin(x, delta)``: the eval-mode model linearized around its current parameters.

    `delta` maps trainable parameter names to displacements θ − θ₀ (missing names: 0).
    Returns ``f(x; θ₀) + J(x)·delta`` computed with one forward-mode `jvp`.
    """
    theta0, fixed = _split_parameters(model)
    model.eval()

    def f(params, x):
        return functional_call(model, (params, fixed), (x,))

    def f_lin(x: torch.Tensor, delta: dict[str, torch.Tensor]) -> torch.Tensor:
        tangent = {k: delta.get(k, torch.zeros_like(v)) for k, v in theta0.items()}
        out, change = jvp(lambda p: f(p, x), (theta0,), (tangent,))
        return out + change

    return f_lin


def jacobian(model: nn.Module, x: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """(n, C, P) per-example Jacobians of the eval-mode outputs w.r.t. the trainable parameters."""
    params, fixed = _split_parameters(model)
    was_training = model.training
    model.eval()

    def one_output(p, image):
        return functional_call(model, (p, fixed), (image[None],))[0]

    per_example = vmap(jacrev(one_output), in_dims=(None, 0))
    try:
        blocks = []
        for i in range(0, len(x), chunk):
            jac = per_example(params, x[i : i + chunk])
            blocks.append(torch.cat([j.flatten(2) for j in jac.values()], dim=2))
        return torch.cat(blocks)
    finally:
        model.train(was_training)


def empirical_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None,
                  chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Trace-over-outputs empirical NTK ``Θ[a, b] = (1/C) Σ_c ⟨∂f_c(x1_a), ∂f_c(x2_b)⟩``, float64.

    The Jacobians of `x2` (default: `x1`, computed once) are held in memory; `x1` is streamed
    in chunks.
    """
    right = jacobian(model, x1 if x2 is None else x2, chunk)
    return _streamed_gram(model, x1, right, chunk, reuse=x2 is None)


def _streamed_gram(model, x1, right: torch.Tensor, chunk: int, reuse: bool) -> torch.Tensor:
    num_outputs = right.shape[1]
    flat = right.flatten(1)
    rows = []
    for i in range(0, len(x1), chunk):
        left = flat[i : i + chunk] if reuse else jacobian(model, x1[i : i + chunk], chunk).flatten(1)
        rows.append((left @ flat.T).double() / num_outputs)
    return torch.cat(rows)


def ntk_regression(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                   *, relative_ridge: float = RELATIVE_RIDGE, chunk: int = DEFAULT_CHUNK,
                   num_classes: int = 10) -> torch.Tensor:
    """Test predictions (on x_test's device) of the linearized network trained to convergence.

    That is kernel regression on the empirical NTK at the model's current parameters, with a
    ridge of `relative_ridge` × the mean diagonal of the training kernel.
    """
    train_jacobian = jacobian(model, x_train, chunk)
    k_train = _streamed_gram(model, x_train, train_jacobian, chunk, reuse=True)
    k_test = _streamed_gram(model, x_test, train_jacobian, chunk, reuse=False)
    ridge = relative_ridge * float(k_train.diagonal().mean())
    result = kernel_regression(k_train.cpu(), y_train.cpu(), k_test.cpu(), ridge=ridge, num_classes=num_classes)
    return result.predictions.to(x_test.device)


class FullyConnectedNTKNet(nn.Module):
    """Arora et al. (2019)'s fully-connected ReLU network, eq. (6), with the output multiplier κ of
    their Theorem 3.2: ``f_nn(x) = κ · W⁽ᴸ⁺¹⁾ g⁽ᴸ⁾(x)``, ``g⁽ʰ⁾ = √(2 / width) · relu(W⁽ʰ⁾ g⁽ʰ⁻¹⁾)``,
    ``g⁽⁰⁾ = x`` (flattened), every weight N(0, 1), no biases.

    `depth` counts hidden layers (L). As the width grows its empirical NTK divided by κ² tends to
    `dlclaims.linear.fully_connected_relu_ntk(·, ·, depth)` (per output; the outputs' kernels are
    independent in the limit). Weights are drawn from torch's global generator (seed it first).
    """

    def __init__(self, in_features: int, *, width: int, depth: int = 1, num_outputs: int = 1,
                 output_scale: float = 1.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth counts hidden layers and must be ≥ 1, got {depth}")
        fan_ins = [in_features] + [width] * (depth - 1)
        self.hidden = nn.ParameterList(nn.Parameter(torch.randn(width, fan_in)) for fan_in in fan_ins)
        self.readout = nn.Parameter(torch.randn(num_outputs, width))
        self.width, self.output_scale = width, output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        scale = (2.0 / self.width) ** 0.5
        for weight in self.hidden:
            h = scale * torch.relu(h @ weight.T)
        return self.output_scale * (h @ self.readout.T)


class AntisymmetricPair(nn.Module):
    """``f(x) = (g(x; θ_a) − g(x; θ_b)) / √2`` with θ_b initialised equal to θ_a: two copies of `net`
    trained as one model (Chizat, Oyallon & Bach 2019, "On lazy training", §2's zero-output trick).

    At initialisation f ≡ 0 exactly, and its empirical NTK equals `net`'s (each copy contributes half),
    so gradient flow on f follows kernel regression with that kernel from a zero start — what Arora
    et al.'s small output multiplier κ (Theorem 3.2) achieves approximately. After initialisation the
    copies are independent parameters.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.first, self.second = net, copy.deepcopy(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.first(x) - self.second(x)) / 2 ** 0.5
