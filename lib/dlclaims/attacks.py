"""L∞ input perturbations of a classifier: the worst case found by projected gradient ascent
(Madry et al. 2018's PGD; one step without a random start is Goodfellow et al. 2015's FGSM) and
random-sign noise of the same size (the attack's control).

Every perturbation stays in the L∞ ball of `radius` around the clean input and in the valid-input
box `box = (lo, hi)`; both are in the model's input units (for standardised images: the [0, 1]
pixel box and ε divided by the standardisation's std, see `data.prepare_stats`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project_linf(x: torch.Tensor, around: torch.Tensor, radius: float, box: tuple[float, float]) -> torch.Tensor:
    """x projected onto the L∞ ball of `radius` around `around`, then onto the valid-input box."""
    return torch.minimum(torch.maximum(x, around - radius), around + radius).clamp(*box)


def pgd(model, x: torch.Tensor, y: torch.Tensor, radius: float, steps: int, step: float,
        box: tuple[float, float], generator: torch.Generator | None = None) -> torch.Tensor:
    """L∞ projected gradient ascent on the cross-entropy of `model` at (x, y) (Madry et al. 2018):
    `steps` signed-gradient steps of size `step`, each projected back (`project_linf`); a uniform
    random start in the ball when `generator` is given. One step of size `radius` from x without a
    start is FGSM. The model's parameters are not touched (no gradient is accumulated in them)."""
    adversarial = x.clone()
    if generator is not None:
        start = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        adversarial = project_linf(x + (2 * start - 1) * radius, x, radius, box)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(model(adversarial), y), adversarial)
        adversarial = project_linf(adversarial.detach() + step * gradient.sign(), x, radius, box)
    return adversarial.detach()


def random_sign_noise(x: torch.Tensor, radius: float, box: tuple[float, float],
                      generator: torch.Generator) -> torch.Tensor:
    """Every input coordinate moved by ± radius (independent fair signs), clipped to the valid box."""
    signs = torch.randint(0, 2, x.shape, generator=generator, device=generator.device).to(x.device) * 2 - 1
    return (x + radius * signs).clamp(*box)
