"""The vanilla CNN of the CNTK claims: architecture, parameterisations, and its NTK limit."""

import pytest
import torch
from torch import nn

from dlclaims.finite_ntk import empirical_ntk
from dlclaims.models.vanilla_cnn import VanillaCNN

# Relative Frobenius error of one width-512 network's empirical NTK against the exact CNTK
# (depth 3, 4 images 2×5×5). The error shrinks like c/√width; measured c ≈ 0.5–2.3 over
# 5 initialisations and both poolings (errors 0.01–0.10 at width 512, 0.07–0.43 at width 32),
# so 0.15 (≈ 3.4/√512) holds at 512 and fails at width 32.
NTK_WIDTH = 512
NTK_REL_ERROR_BOUND = 0.15


def test_depth_counts_the_readout_as_arora_does():
    model = VanillaCNN(3, depth=5, width=8, image_size=8)
    assert len(model.convs) == 4
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)
    gap = VanillaCNN(3, depth=5, width=8, pooling="gap")  # GAP needs no image size
    assert gap(torch.zeros(2, 3, 7, 7)).shape == (2, 10)


def test_rejects_invalid_configurations():
    with pytest.raises(ValueError, match="image_size"):
        VanillaCNN(3, depth=3, width=8)
    with pytest.raises(ValueError, match="depth"):
        VanillaCNN(3, depth=1, width=8, image_size=8)
    with pytest.raises(ValueError, match="parameterization"):
        VanillaCNN(3, depth=3, width=8, image_size=8, parameterization="mup")


@pytest.mark.parametrize("pooling", ["flatten", "gap"])
def test_standard_and_ntk_parameterisations_compute_the_same_function(pooling):
    """The same network: the scale in the weights or in a multiplier gives equal outputs for matched weights."""
    torch.manual_seed(0)
    ntk = VanillaCNN(2, depth=4, width=16, pooling=pooling, image_size=6, parameterization="ntk")
    standard = VanillaCNN(2, depth=4, width=16, pooling=pooling, image_size=6, parameterization="standard")
    ntk_layers = [*ntk.convs, ntk.readout]
    for src, dst in zip(ntk_layers, [*standard.convs, standard.readout]):
        dst.weight.data.copy_(src.weight.data * src.multiplier)
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(standard(x), ntk(x), rtol=1e-5, atol=1e-6)


def test_standard_parameterisation_initialises_as_keras_layers_do():
    """"standard" is what a framework user gets: Keras' default Glorot-uniform weights, no multiplier."""
    torch.manual_seed(0)
    model = VanillaCNN(3, depth=3, width=8, image_size=4, parameterization="standard")
    torch.manual_seed(0)
    for layer in [*model.convs, model.readout]:
        assert layer.multiplier == 1.0
        reference = nn.init.xavier_uniform_(torch.empty(layer.weight.shape))
        torch.testing.assert_close(layer.weight, reference, rtol=0, atol=0)
        fan_in, fan_out = layer.weight[0].numel(), layer.weight[:, 0].numel()
        assert float(layer.weight.detach().abs().max()) <= (6 / (fan_in + fan_out)) ** 0.5


def test_fix_flags_leave_the_first_layer_and_readout_untrained():
    model = VanillaCNN(3, depth=4, width=8, image_size=4)
    every = model.trainable_parameters()
    fixed = model.trainable_parameters(fix_first_layer=True, fix_readout=True)
    assert len(every) == 4 and len(fixed) == 2
    assert all(p is not model.convs[0].weight and p is not model.readout.weight for p in fixed)


@pytest.mark.parametrize("pooling, fix", [("flatten", False), ("gap", False), ("gap", True)])
def test_wide_network_empirical_ntk_approaches_the_exact_cntk(pooling, fix):
    cntk = pytest.importorskip("dlclaims.cntk", reason="the CNTK engine is not importable yet")
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    exact = cntk.cntk(x, depth=3, pooling=pooling, fix_first_layer=fix, fix_readout=fix, device="cpu")

    def relative_error(width: int) -> float:
        torch.manual_seed(1)
        model = VanillaCNN(2, depth=3, width=width, pooling=pooling, image_size=5, num_classes=1)
        trained = model.trainable_parameters(fix_first_layer=fix, fix_readout=fix)
        for p in model.parameters():  # the NTK is over the trained parameters only
            p.requires_grad_(any(p is q for q in trained))
        return float((empirical_ntk(model, x) - exact).norm() / exact.norm())

    assert relative_error(NTK_WIDTH) < NTK_REL_ERROR_BOUND
    assert relative_error(8) > NTK_REL_ERROR_BOUND  # the bound separates wide from narrow nets


def test_empirical_ntk_cross_kernel_matches_the_gram_blocks():
    torch.manual_seed(0)
    model = VanillaCNN(1, depth=3, width=8, image_size=4)
    x = torch.randn(5, 1, 4, 4)
    gram = empirical_ntk(model, x)
    torch.testing.assert_close(empirical_ntk(model, x[:2], x[2:]), gram[:2, 2:])
    torch.testing.assert_close(gram, gram.T)
