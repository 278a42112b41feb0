"""Backbone families, one per file, all registered in `registry`."""
from . import densenet, inception, nasnet, ran, resnet, shufflenet, stn_cnn, vgg, xception  # noqa: F401  (register)
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
