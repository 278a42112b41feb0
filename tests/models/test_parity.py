"""Parity with torchvision and timm: their randomly initialised weights (BN statistics and affine
parameters randomised too, so that every tensor matters), saved to a local file and loaded through
`create_model(name, pretrained=path)`, give attnlab logits equal to theirs to 1e-5 in eval mode.

The reference packages are imported only here, through the `torchvision` / `timm` fixtures of
tests/conftest.py (skipped when absent). Inputs are small (64 px, Inception 75 px) to save time.
To add a family: append a row to TORCHVISION_CASES or TIMM_CASES; a row whose attnlab model is
not registered (yet) is skipped.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import attnlab

pytestmark = pytest.mark.parity
NUM_CLASSES = 5

# (torchvision builder, its kwargs, attnlab model, attnlab kwargs, input px, file format)
TORCHVISION_CASES = [
    ("resnet18", {}, "resnet18", {}, 64, ".pth"),
    ("resnet50", {}, "resnet50", {}, 64, ".safetensors"),
    ("resnext50_32x4d", {}, "resnext50_32x4d", {}, 64, ".pth"),
    ("wide_resnet50_2", {}, "wide_resnet50_2", {}, 64, ".safetensors"),
    ("vgg16_bn", {}, "vgg16_bn", {}, 64, ".safetensors"),
    ("densenet121", {}, "densenet121", {}, 64, ".pth"),
    ("shufflenet_v2_x1_0", {}, "shufflenet_v2_x1_0", {}, 64, ".safetensors"),
    ("inception_v3", {"init_weights": False}, "inception_v3", {"aux_logits": True}, 75, ".pth"),
    ("googlenet", {"init_weights": False}, "googlenet", {"torchvision_compat": True, "aux_logits": True}, 64,
     ".safetensors"),
]
# (timm model, its kwargs, attnlab model, attnlab kwargs). timm's CBAM is the official code's (BN after
# the spatial 7x7 conv, which has no bias) with an MLP without biases, and pools [mean; max] as the
# paper: attnlab's switches spatial_norm=True, mlp_bias=False. timm's ECA kernel is max(paper's k, 3),
# equal to the paper's for every ResNet-50 width (256..2048 -> 5, 5, 5, 7). timm's SE width is C/16
# rounded up to a multiple of 8, equal to the paper's C/16 for these widths; its FCs are 1x1 convs
# (weights reshaped on load).
TIMM_CASES = [
    ("seresnet50", {}, "se_resnet50", {}),
    ("resnet50", {"block_args": {"attn_layer": "eca"}}, "eca_resnet50", {}),
    ("resnet50", {"block_args": {"attn_layer": "cbam"}}, "cbam_resnet50",
     {"attention_kwargs": {"spatial_norm": True, "mlp_bias": False}}),
    ("legacy_xception", {}, "xception", {}),
]


def _save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _check_parity(reference, name, kwargs, size, path, randomise, expected_source):
    if name not in attnlab.list_models():
        pytest.skip(f"attnlab model {name} is not registered")
    torch.manual_seed(0)
    randomise(reference).eval()
    _save(reference.state_dict(), path)
    model = attnlab.create_model(name, num_classes=NUM_CLASSES, pretrained=str(path), **kwargs).eval()
    report = model.pretrained_report
    assert report["source"] == expected_source
    assert report["new"] == [] and report["unexpected"] == [] and report["classifier_reset"] == []
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("builder,ref_kwargs,name,kwargs,size,suffix", TORCHVISION_CASES,
                         ids=[c[0] for c in TORCHVISION_CASES])
def test_torchvision_parity(torchvision, tmp_path, randomise_norms_fn, builder, ref_kwargs, name, kwargs, size, suffix):
    reference = getattr(torchvision.models, builder)(num_classes=NUM_CLASSES, **ref_kwargs)
    _check_parity(reference, name, kwargs, size, tmp_path / f"{builder}{suffix}", randomise_norms_fn, "torchvision")


@pytest.mark.parametrize("timm_name,ref_kwargs,name,kwargs", TIMM_CASES, ids=[c[2] for c in TIMM_CASES])
def test_timm_parity(timm, tmp_path, randomise_norms_fn, timm_name, ref_kwargs, name, kwargs):
    reference = timm.create_model(timm_name, num_classes=NUM_CLASSES, **ref_kwargs)
    _check_parity(reference, name, kwargs, 64, tmp_path / f"{name}.safetensors", randomise_norms_fn, "timm")


def test_both_file_formats_give_the_same_model(torchvision, tmp_path):
    reference = torchvision.models.resnet18(num_classes=NUM_CLASSES).eval()
    outputs = []
    x = torch.randn(2, 3, 32, 32)
    for suffix in (".pth", ".safetensors"):
        _save(reference.state_dict(), tmp_path / f"r{suffix}")
        model = attnlab.create_model("resnet18", num_classes=NUM_CLASSES, pretrained=str(tmp_path / f"r{suffix}"))
        with torch.no_grad():
            outputs.append(model.eval()(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(outputs[0], reference(x), rtol=1e-5, atol=1e-5)


def test_attention_added_to_torchvision_weights_keeps_their_logits(torchvision, tmp_path, randomise_norms_fn):
    """pretrained= plus attention=: the backbone loads, the SE modules are new and start as identities."""
    reference = randomise_norms_fn(torchvision.models.resnet18(num_classes=NUM_CLASSES)).eval()
    _save(reference.state_dict(), tmp_path / "r18.pth")
    model = attnlab.create_model("resnet18", num_classes=NUM_CLASSES, attention="se",
                                 pretrained=str(tmp_path / "r18.pth")).eval()
    report = model.pretrained_report
    assert len(report["identity_init"]["exact"]) == 8 and report["identity_init"]["approximate"] == []
    assert {k.rsplit(".", 2)[-2] for k in report["new"]} == {"fc1", "fc2"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
