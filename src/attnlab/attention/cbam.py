"""PLACEHOLDER: being written (this text is replaced by the real module)."""
from .base import AttentionModule
class CBAM(AttentionModule):
    pass
class ChannelAttention(AttentionModule):
    pass
class SpatialAttention(AttentionModule):
    pass
