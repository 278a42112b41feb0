"""Backbone families, one per file, all registered in `registry`."""
from . import densenet, inception, nasnet, ran, resnet, shufflenet, stn_cnn, vgg, xception  # noqa: F401  (register)
from .layers import Placement
from .registry import create_model, describe_model, list_models, register_model

__all__ = ["Placement", "create_model", "describe_model", "list_models", "register_model"]
