"""PLACEHOLDER: being written (this text is replaced by the real module)."""
from .base import AttentionModule
class EfficientChannelAttention(AttentionModule):
    pass
def eca_kernel_size(channels, gamma=2, b=1):
    pass
