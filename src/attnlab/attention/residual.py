"""PLACEHOLDER: being written (this text is replaced by the real module)."""
from .base import AttentionModule
class ResidualAttentionModule(AttentionModule):
    pass
class SoftMaskBranch(AttentionModule):
    pass
