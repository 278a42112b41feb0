"""Parity with torchvision and timm: their randomly initialised weights (BN statistics and affine
parameters randomised too, so that every tensor matters), saved to a local file and loaded through
`create_model(name, pretrained=path)`, give attnlab logits equal to theirs to 1e-5 in eval mode, in
training mode (batch statistics, dropout off), and again in eval mode after that training-mode
step (so that a BatchNorm momentum differing from the reference's changes the logits). Parameters
that start at zero (zero-initialised last layers) are drawn at random too, so that they matter.
The other depths and widths of each family are compared structurally (on the meta device): the
reference's state dict, renamed by the model's `remap_pretrained`, has exactly the model's keys
and shapes.

The reference packages are imported only here, through the `torchvision` / `timm` fixtures of
tests/conftest.py (skipped when absent). Inputs are small (64 px, Inception 75 px) to save time.
To add a family: append a row to TORCHVISION_CASES or TIMM_CASES (and its other sizes to
TIMM_TWINS; torchvision's are found by name); a row whose attnlab model is not registered (yet) is
skipped.
"""
from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

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
# Settings that make an attnlab model torchvision's when the registered default is the paper's.
TORCHVISION_SETTINGS = {"inception_v3": {"aux_logits": True},
                        "googlenet": {"torchvision_compat": True, "aux_logits": True}}
# (timm model, its kwargs, attnlab model, attnlab kwargs). timm's CBAM is the official code's (BN after
# the spatial 7x7 conv, which has no bias) with an MLP without biases, and pools [mean; max] as the
# paper: attnlab's switches spatial_norm=True, mlp_bias=False. timm's ECA kernel is max(paper's k, 3),
# equal to the paper's for every ResNet-50 width (256..2048 -> 5, 5, 5, 7). timm's SE width is C/16
# rounded up to a multiple of 8, equal to the paper's C/16 for these widths; its FCs are 1x1 convs
# (weights reshaped on load); on the 64-channel stage of the basic-block nets it is 8 units, not the
# paper's 4: attnlab's min_channels=8. timm's spatial BN in CBAM has PyTorch's momentum 0.1, the
# official code's 0.01: spatial_norm_momentum=0.1. timm's GlobalContext, built with the paper's additive fusion
# (fuse_add=True, fuse_scale=False) and r = 16, is attnlab's GC block in every stage of a ResNet-50;
# its multiplicative default is attnlab's fusion='mul' (timm does not zero the last layer then);
# timm's LayerNorm there has eps 1e-6 (the official code's 1e-5): norm_eps=1e-6.
# A row's timm kwargs may be a function of the timm module (for timm's layer classes).
SE_AS_TIMM = {"attention_kwargs": {"min_channels": 8}}
CBAM_AS_TIMM = {"attention_kwargs": {"spatial_norm": True, "mlp_bias": False, "spatial_norm_momentum": 0.1}}


def _timm_gc(timm, **settings) -> dict:
    layer = functools.partial(timm.layers.GlobalContext, rd_ratio=1 / 16, **settings)
    return {"block_args": {"attn_layer": layer}}


TIMM_CASES = [
    ("seresnet50", {}, "se_resnet50", {}),
    ("seresnet18", {}, "se_resnet18", SE_AS_TIMM),
    ("seresnext50_32x4d", {}, "se_resnext50_32x4d", {}),
    ("resnet50", {"block_args": {"attn_layer": "eca"}}, "eca_resnet50", {}),
    ("resnet18", {"block_args": {"attn_layer": "eca"}}, "eca_resnet18", {}),
    ("resnet50", {"block_args": {"attn_layer": "cbam"}}, "cbam_resnet50", CBAM_AS_TIMM),
    ("resnet18", {"block_args": {"attn_layer": "cbam"}}, "cbam_resnet18", CBAM_AS_TIMM),
    ("resnet50", functools.partial(_timm_gc, fuse_add=True, fuse_scale=False), "gc_resnet50",
     {"attention_stages": (1, 2, 3, 4), "attention_kwargs": {"norm_eps": 1e-6}}),
    ("resnet50", functools.partial(_timm_gc, fuse_add=False, fuse_scale=True), "resnet50",
     {"attention": "gc", "attention_kwargs": {"fusion": "mul", "zero_init": False, "norm_eps": 1e-6}}),
    ("legacy_xception", {}, "xception", {}),
]
# Other depths of the TIMM_CASES families, compared structurally (rows as TIMM_CASES).
TIMM_TWINS = [
    ("seresnet34", {}, "se_resnet34", SE_AS_TIMM),
    ("seresnet101", {}, "se_resnet101", {}),
    ("seresnet152", {}, "se_resnet152", {}),
    ("resnet101", {"block_args": {"attn_layer": "eca"}}, "eca_resnet101", {}),
]


def _save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _randomise_zeros(model: nn.Module) -> nn.Module:
    """Parameters that are all zero (zero-initialised last layers, biases) drawn at random."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _dropout_off(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


def _assert_same_outputs(ours, theirs) -> None:
    """Equal logits (to 1e-5 of their largest magnitude: float32 rounding grows with it); in
    training mode with auxiliary heads, equal tuples."""
    if isinstance(theirs, torch.Tensor):
        theirs = (theirs,)
        ours = (ours,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))


def _check_parity(reference, name, kwargs, size, path, randomise, expected_source, train_size=None,
                  dtype=torch.float32):
    if name not in attnlab.list_models():
        pytest.skip(f"attnlab model {name} is not registered")
    torch.manual_seed(0)
    _randomise_zeros(randomise(reference)).eval()
    _save(reference.state_dict(), path)
    model = attnlab.create_model(name, num_classes=NUM_CLASSES, pretrained=str(path), **kwargs).eval()
    report = model.pretrained_report
    assert report["source"] == expected_source
    assert report["new"] == [] and report["unexpected"] == [] and report["classifier_reset"] == []
    model, reference = model.to(dtype), reference.to(dtype)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)
    train_size = train_size or size
    x_train = torch.randn(2, 3, train_size, train_size, generator=torch.Generator().manual_seed(2), dtype=dtype)
    with torch.no_grad():
        _assert_same_outputs(model(x), reference(x))
        # training mode: batch statistics, and the running statistics updated with each side's momentum
        _assert_same_outputs(_dropout_off(model.train())(x_train), _dropout_off(reference.train())(x_train))
        _assert_same_outputs(model.eval()(x), reference.eval()(x))


def _assert_same_structure(model: nn.Module, reference: nn.Module, source: str) -> None:
    """The reference's state dict, renamed by the model, has the model's keys and shapes (up to
    singleton dimensions, which loading reshapes)."""
    squeeze = lambda shape: tuple(d for d in shape if d != 1)  # noqa: E731
    theirs = {k: squeeze(v.shape) for k, v in model.remap_pretrained(reference.state_dict(), source).items()}
    ours = {k: squeeze(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(theirs) ^ set(ours)) == []
    assert {k: v for k, v in theirs.items() if ours[k] != v} == {}


@pytest.mark.parametrize("builder,ref_kwargs,name,kwargs,size,suffix", TORCHVISION_CASES,
                         ids=[c[0] for c in TORCHVISION_CASES])
def test_torchvision_parity(torchvision, tmp_path, randomise_norms_fn, builder, ref_kwargs, name, kwargs, size, suffix):
    reference = getattr(torchvision.models, builder)(num_classes=NUM_CLASSES, **ref_kwargs)
    # the auxiliary head of Inception v3 (5x5/3 pooling, then a 5x5 conv, on the 17x17 grid) needs
    # its native 299 px in training
    train_size = 299 if builder == "inception_v3" else None
    _check_parity(reference, name, kwargs, size, tmp_path / f"{builder}{suffix}", randomise_norms_fn, "torchvision",
                  train_size)


def _timm_model(timm, timm_name, ref_kwargs):
    ref_kwargs = ref_kwargs(timm) if callable(ref_kwargs) else ref_kwargs
    return timm.create_model(timm_name, num_classes=NUM_CLASSES, **ref_kwargs)


@pytest.mark.parametrize("timm_name,ref_kwargs,name,kwargs", TIMM_CASES,
                         ids=[f"{c[2]}-{c[3]['attention_kwargs']['fusion']}" if c[2] == "resnet50" else c[2]
                              for c in TIMM_CASES])
def test_timm_parity(timm, tmp_path, randomise_norms_fn, timm_name, ref_kwargs, name, kwargs):
    reference = _timm_model(timm, timm_name, ref_kwargs)
    # float64 for GC: its softmax pooling of eval-mode maps (random BN statistics, no batch
    # normalisation) is so peaked that float32 rounding alone moves the logits by ~1e-4
    gc = name.startswith("gc_") or kwargs.get("attention") == "gc"
    _check_parity(reference, name, kwargs, 64, tmp_path / f"{name}.safetensors", randomise_norms_fn, "timm",
                  dtype=torch.float64 if gc else torch.float32)


def test_every_torchvision_twin_has_the_reference_structure(torchvision):
    """Every registered model that torchvision also builds (other depths and widths of the
    TORCHVISION_CASES families), on the meta device."""
    twins = set(attnlab.list_models()) & set(torchvision.models.list_models())
    compared = {case[2] for case in TORCHVISION_CASES}   # loaded and run by test_torchvision_parity
    assert compared <= twins
    for name in sorted(twins - compared):
        with torch.device("meta"):
            model = attnlab.create_model(name, **TORCHVISION_SETTINGS.get(name, {}))
            reference = torchvision.models.get_model(name, **({"init_weights": False} if name in TORCHVISION_SETTINGS
                                                              else {}))
        _assert_same_structure(model, reference, "torchvision")


@pytest.mark.parametrize("timm_name,ref_kwargs,name,kwargs", TIMM_TWINS, ids=[c[2] for c in TIMM_TWINS])
def test_timm_twin_has_the_reference_structure(timm, timm_name, ref_kwargs, name, kwargs):
    with torch.device("meta"):
        model = attnlab.create_model(name, num_classes=NUM_CLASSES, **kwargs)
        reference = _timm_model(timm, timm_name, ref_kwargs)
    _assert_same_structure(model, reference, "timm")


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
