"""The cascading randomisation test: it randomises from the classifier down, leaves the model as
it was, flags a map that ignores the weights and passes one the weights determine."""
import pytest
import torch
from torch import nn

import attnlab
from attnlab.explain.evidence import evidence_maps
from attnlab.explain.sanity import cascading_randomisation, randomisation_steps


class PixelNet(nn.Module):
    """conv -> flatten -> linear over the pixels: the input gradient of a logit is the head's weights
    seen through the convolution, so it changes with every weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _maps(model, x, y):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, y.view(-1, 1)).sum().backward()
    return {"input": x.detach().abs(), "gradient": x.grad.detach()}


def test_a_map_that_ignores_the_weights_is_flagged_and_a_gradient_is_not():
    torch.manual_seed(0)
    model = PixelNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 3
    result = cascading_randomisation(model, x, y, _maps, threshold=0.5)
    assert result["steps"] == ["fc", "conv"]                     # top layer first
    by_name = {r["map"]: r for r in result["maps"]}
    assert by_name["input"]["correlations"] == pytest.approx([1.0, 1.0])
    assert by_name["input"]["flagged"] is True
    assert by_name["gradient"]["final"] < 0.5 and by_name["gradient"]["flagged"] is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the model is untouched


def test_steps_of_a_backbone_and_its_maps():
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="cbam",
                                 attention_kwargs={"reduction": 2}).eval()
    x = torch.randn(3, 1, 12, 12)
    steps = randomisation_steps(model, x)
    assert steps[0] == "head" and steps[-1] == "conv1" and steps.index("layer3") < steps.index("layer1")
    result = cascading_randomisation(model, x, torch.arange(3), lambda m, a, b: evidence_maps(m, a, b, ["grad_cam"]).maps)
    assert {r["map"] for r in result["maps"]} >= {"layer1.0.attention:spatial_gate", "grad_cam@layer3.0"}
    for r in result["maps"]:
        assert len(r["correlations"]) == len(steps)
        # a module map does not depend on the layers above its own: intact until the cascade reaches them
        if r["map"] == "layer1.0.attention:spatial_gate":
            assert r["correlations"][0] == pytest.approx(1.0)


def test_threshold_out_of_range_is_named():
    with pytest.raises(ValueError, match="threshold"):
        cascading_randomisation(PixelNet(), torch.zeros(1, 1, 6, 6), torch.zeros(1, dtype=torch.long), _maps,
                                threshold=2.0)
