"""Models of the claims, one module per family. Models know no datasets and no training loops."""

from .cnn import ConvStack, WidthCNN, width_cnn_parameter_count
from .conv4 import Conv4
from .ioc import IOCMLP, midpoint_convexity_violations, project_nonnegative
from .mlp import MLP, count_parameters, linear_classifier
from .vanilla_cnn import VanillaCNN
from .wrn import WideResNet

__all__ = [
    "Conv4",
    "ConvStack",
    "IOCMLP",
    "MLP",
    "VanillaCNN",
    "WideResNet",
    "WidthCNN",
    "count_parameters",
    "linear_classifier",
    "midpoint_convexity_violations",
    "project_nonnegative",
    "width_cnn_parameter_count",
]
