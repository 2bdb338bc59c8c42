"""dlclaims.attacks: PGD / FGSM stay in the L∞ ball and the valid box, and find what random noise of
the same size does not (a linear classifier, whose worst case is known in closed form)."""

import torch

from dlclaims import attacks


def linear_model(d: int = 20, classes: int = 3, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, classes)


def test_perturbations_stay_in_the_ball_and_the_box():
    model = linear_model()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(50, 20, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    radius, box = 0.1, (0.0, 1.0)
    for perturbed in (attacks.pgd(model, x, y, radius, 10, 0.025, box, torch.Generator().manual_seed(2)),
                      attacks.pgd(model, x, y, radius, 1, radius, box),
                      attacks.random_sign_noise(x, radius, box, torch.Generator().manual_seed(3))):
        assert (perturbed - x).abs().max() <= radius + 1e-6
        assert perturbed.min() >= box[0] and perturbed.max() <= box[1]


def test_fgsm_is_one_signed_gradient_step():
    # Two classes, linear logits: the cross-entropy's input gradient is (p₁ − 1[y=1])·(w₁ − w₀) per image, so FGSM
    # moves every coordinate by ε·sign(w_other − w_y) (no box in the way: a wide box).
    model = linear_model(d=5, classes=2, seed=4)
    x = torch.zeros(2, 5)
    y = torch.tensor([0, 1])
    adversarial = attacks.pgd(model, x, y, 0.3, 1, 0.3, (-10.0, 10.0))
    w = model.weight.detach()
    torch.testing.assert_close(adversarial, 0.3 * torch.stack([(w[1] - w[0]).sign(), (w[0] - w[1]).sign()]))


def test_pgd_fools_a_linear_classifier_that_random_signs_do_not():
    # Well-separated Gaussian classes: clean accuracy ~1; the worst-case ε-move along −sign(w_y − w_other) costs
    # ε·‖w_y − w_other‖₁ of margin (d = 200 coordinates add up), a random-sign move only ~ε·‖·‖₂.
    d, n = 200, 400
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.5 + 0.02 * (2 * y[:, None] - 1) + 0.01 * torch.randn(n, d, generator=gen)
    model = torch.nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([-torch.ones(d), torch.ones(d)]))
        model.bias.copy_(torch.tensor([0.5 * d, -0.5 * d]))
    accuracy = lambda inputs: float((model(inputs).argmax(dim=1) == y).float().mean())  # noqa: E731
    radius, box = 0.05, (0.0, 1.0)
    assert accuracy(x) > 0.99
    assert accuracy(attacks.pgd(model, x, y, radius, 10, radius / 4, box, torch.Generator().manual_seed(6))) < 0.01
    assert accuracy(attacks.random_sign_noise(x, radius, box, torch.Generator().manual_seed(7))) > 0.95
    assert not any(p.grad is not None for p in model.parameters())
