"""Models of the claims. Models know no datasets and no training loops."""

from .mlp import MLP, count_parameters, linear_classifier

__all__ = ["MLP", "count_parameters", "linear_classifier"]
