"""Bad inputs of the placement spec (`attnlab.Placement`, create_model's attention=); loaded by
tools/bad_inputs.py beside the cases of the other areas."""
from __future__ import annotations

from pathlib import Path


def cases(tmp: Path, Case) -> list:
    from attnlab import Placement, create_attention, create_model
    from attnlab.models.ran import ResidualAttentionModule

    return [
        Case("api", "placement: a dict with an unknown key",
             lambda: create_model("resnet20", attention={"name": "se", "stage": [2]})),
        Case("api", "placement: a field given in the object and as a different shorthand keyword",
             lambda: create_model("resnet20", attention={"name": "se", "stages": [2]}, attention_stages=3)),
        Case("api", "placement: attention that is neither a name, a dict nor a Placement",
             lambda: create_model("resnet20", attention=["se"])),
        Case("api", "placement: stages given as a string", lambda: Placement("se", stages="23")),
        Case("api", "placement: settings that are not a dict", lambda: Placement("se", kwargs=[("reduction", 4)])),
        Case("api", "placement: a position the family does not offer",
             lambda: create_model("vgg11_bn_cifar", attention=Placement("se", position="identity"))),
        Case("api", "create_attention: the residual attention trunk is no plug-in",
             lambda: create_attention("residual_attention", 8)),
        Case("api", "ResidualAttentionModule: channels not divisible by 4", lambda: ResidualAttentionModule(6)),
    ]
