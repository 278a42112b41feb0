"""Class evidence: captum's Grad-CAM and Ablation-CAM on a tiny network against the equations
computed by hand, the layers chosen after each attention module, the modules' own maps and their
agreement with the CAMs, and the faithfulness table."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlab
from attnlab.explain.evidence import (ablation_cam, agreement, evidence_layers, evidence_maps, faithfulness,
                                      grad_cam, module_maps)


class TinyNet(nn.Module):
    """conv (1 -> 3 channels) -> ReLU -> global mean -> linear: the textbook CAM network."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _hand(model, x, target):
    """A = ReLU(conv x) and y_c = sum_k W_ck mean(A_k) + b_c, so d y_c / d A_k = W_ck / (h w) at every
    position (its spatial mean, the Grad-CAM weight), and zeroing channel k lowers y_c by
    W_ck mean(A_k) (the Ablation-CAM drop)."""
    with torch.no_grad():
        a = model.features(x)
        h, w = a.shape[-2:]
        weights = model.fc.weight[target]                          # (N, C)
        grad_weights = weights / (h * w)                           # the gradient is the same at every position
        grad = F.relu((grad_weights[:, :, None, None] * a).sum(1, keepdim=True))
        score = model(x).gather(1, target.view(-1, 1))[:, 0]
        drops = weights * a.mean((2, 3))                           # y_c - y_c with channel k at zero
        ablation = F.relu(((drops / score[:, None])[:, :, None, None] * a).sum(1, keepdim=True))
    return grad, ablation


def test_captum_grad_cam_and_ablation_cam_match_the_equations_by_hand():
    model = TinyNet().eval()
    x = torch.randn(4, 1, 5, 6, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 1, 0])
    grad, ablation = _hand(model, x, target)
    assert torch.allclose(grad_cam(model, model.features, x, target), grad, atol=1e-6)
    assert torch.allclose(ablation_cam(model, model.features, x, target), ablation, atol=1e-5)
    unscaled = ablation_cam(model, model.features, x, target, scale_by_score=False)
    assert unscaled.shape == (4, 1, 5, 6) and not torch.allclose(unscaled, ablation)


@pytest.fixture(scope="module")
def cbam_nonlocal():
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="cbam",
                                 attention_kwargs={"reduction": 2}, nonlocal_stages=[2]).eval()
    gen = torch.Generator().manual_seed(0)
    return model, torch.randn(6, 1, 16, 16, generator=gen), torch.arange(6) % 3


def test_the_layer_after_each_attention_module_and_the_last_stage(cbam_nonlocal):
    model, x, _ = cbam_nonlocal
    # CBAM sits inside each residual block (the block's output follows it), the non-local block
    # between blocks (its own output); the last stage, layer3, has one block, whose output it is:
    # not listed twice
    assert evidence_layers(model, x) == {"layer1.0": ["layer1.0.attention"], "layer2.0": ["layer2.0.attention"],
                                         "layer2.0_nonlocal": ["layer2.0_nonlocal"],
                                         "layer3.0": ["layer3.0.attention"]}
    stn = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3,
                               spatial_transformer=True).eval()
    assert list(evidence_layers(stn, x)) == ["spatial_transformer", "model.layer3"]


def test_module_maps_cams_agreement_and_faithfulness(cbam_nonlocal):
    model, x, y = cbam_nonlocal
    maps = evidence_maps(model, x, y)
    names = [e.name for e in maps.entries]
    assert names[:4] == ["layer1.0.attention:spatial_gate", "layer2.0.attention:spatial_gate",
                         "layer2.0_nonlocal:affinity", "layer3.0.attention:spatial_gate"]
    assert {"grad_cam@layer3.0", "ablation_cam@layer3.0", "grad_cam@layer2.0_nonlocal"} <= set(names)
    assert all(m.shape == (6, 1, 16, 16) for m in maps.maps.values())
    assert maps.native["grad_cam@layer3.0"].shape == (6, 1, 4, 4)
    # the CBAM map of layer1 is its spatial gate averaged over channels, as captured
    with attnlab.capture(model) as rec, torch.no_grad():
        model(x)
    assert torch.allclose(maps.native["layer1.0.attention:spatial_gate"],
                          rec["layer1.0.attention"]["spatial_gate"].mean(1, keepdim=True))
    records = agreement(maps, y)
    assert len(records) == 4 * 2                                # four module maps, two CAMs at each layer
    for r in records:
        assert set(r["per_class"]) == {"0", "1", "2"}
        assert r["spearman"] is None or -1 <= r["spearman"] <= 1
        assert 0 <= r["top_iou"] <= 1
    table = faithfulness(model, x, y, maps, steps=4, draws=2)
    assert [r["map"] for r in table["maps"]] == names
    for r in table["maps"] + [table["random"]]:
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1 and len(r["deletion_per_image"]) == 6


def test_a_spatial_transformer_map_is_where_its_grid_samples():
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3,
                                 spatial_transformer=True).eval()
    x = torch.randn(2, 1, 8, 8)
    density = module_maps(model, x)[("spatial_transformer", "theta")]
    # the identity warp at initialisation samples every input position once
    assert torch.equal(density, torch.ones(2, 1, 8, 8))


def test_unknown_cam_methods_are_named(cbam_nonlocal):
    model, x, y = cbam_nonlocal
    with pytest.raises(ValueError, match=r"grad_cam, ablation_cam.*'score_cam'"):
        evidence_maps(model, x, y, methods=["score_cam"])
