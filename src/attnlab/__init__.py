"""attnlab: what does attention buy a convolutional network?

    import attnlab
    m = attnlab.create_model("resnet20", attention="se", num_classes=10)
    with attnlab.capture(m) as rec:
        m(x)
"""
from ._version import __version__
from .attention import create_attention, list_attention
from .deploy import export
from .explain.capture import capture
from .models import Placement, create_model, list_models

__all__ = ["create_attention", "list_attention", "create_model", "list_models", "Placement", "capture", "export",
           "__version__"]
