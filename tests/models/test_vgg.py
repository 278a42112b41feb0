"""VGG-BN (models/vgg.py): published parameter count, torchvision layer indices, attention slots,
small-input variant."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attnlab
from attnlab.attention import AttentionModule


def test_vgg16_bn_parameter_count_matches_torchvision():
    model = attnlab.create_model("vgg16_bn")
    measured = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(measured - 138.37) / 138.37 < 0.01, f"{measured:.3f}M vs 138.37M (torchvision vgg16_bn)"


def test_layer_indices_are_torchvision_s_even_with_attention():
    model = attnlab.create_model("vgg16_bn", attention="non_local", num_classes=3)
    assert isinstance(model.features[0], nn.Conv2d) and isinstance(model.features[1], nn.BatchNorm2d)
    keys = [k for k in model.state_dict() if not k.split(".")[1].endswith("_attention")]
    assert "features.41.weight" in keys and "head.classifier.6.weight" in keys
    assert model.state_dict()["features.40.weight"].shape == (512, 512, 3, 3)


def test_attention_after_each_stage_or_each_conv():
    per_stage = attnlab.create_model("vgg16_bn_cifar", attention="non_local")
    slots = [n for n, m in per_stage.features.named_children() if isinstance(m, AttentionModule)]
    assert slots == ["5_attention", "12_attention", "22_attention", "32_attention", "42_attention"]
    # each sits right before its stage's max-pool
    names = list(per_stage.features._modules)
    assert all(isinstance(per_stage.features._modules[names[names.index(s) + 1]], nn.MaxPool2d) for s in slots)
    per_conv = attnlab.create_model("vgg16_bn_cifar", attention="non_local", attention_per_conv=True,
                                    attention_stages=(4, 5))
    assert sum(isinstance(m, AttentionModule) for m in per_conv.features) == 6


def test_placement_errors_name_family_and_accepted_values():
    with pytest.raises(ValueError, match=r"vgg: attention_position 'standard' is not supported; accepted: post"):
        attnlab.create_model("vgg11_bn", attention="non_local", attention_position="standard")
    with pytest.raises(ValueError, match=r"vgg: attention_stages .*1\.\.5"):
        attnlab.create_model("vgg11_bn", attention="non_local", attention_stages=6)
    with pytest.raises(ValueError, match="depth must be one of"):
        attnlab.models.vgg.VGG(depth=12)


def test_small_input_variant_runs_at_28_px_and_rejects_too_small():
    model = attnlab.create_model("vgg11_bn_cifar", in_chans=1).eval()
    assert model.input_size == (1, 32, 32) and model.num_classes == 10
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, 512, 1, 1)
    with pytest.raises(ValueError, match=r"H, W >= 17"):
        model(torch.randn(2, 1, 16, 16))
