"""ResNet family (models/resnet.py): published parameter counts, attention placement, stems,
shortcuts, non-local insertion, zero_init_last, and the errors of the placement spec."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attnlab
from attnlab.attention import AttentionModule
from attnlab.models.resnet import Bottleneck, ResidualBlock, ZeroPadShortcut


def count(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# (model, num_classes, published millions, source). Counting needs no forward.
PUBLISHED = [
    ("resnet18", 1000, 11.69, "CBAM paper Table / torchvision"),
    ("resnet50", 1000, 25.56, "SE paper Table 2, CBAM paper / torchvision"),
    ("resnet101", 1000, 44.55, "torchvision"),
    ("resnext50_32x4d", 1000, 25.03, "torchvision"),
    ("wide_resnet50_2", 1000, 68.88, "torchvision"),
    ("resnet20", 10, 0.27, "He et al. 2016, Table 6"),
    ("resnet32", 10, 0.46, "He et al. 2016, Table 6"),
    ("resnet44", 10, 0.66, "He et al. 2016, Table 6"),
    ("resnet56", 10, 0.85, "He et al. 2016, Table 6"),
    ("resnet110", 10, 1.7, "He et al. 2016, Table 6"),
    ("preact_resnet164", 10, 1.7, "He et al. ECCV 2016 (Identity Mappings), Table 3"),
    ("wrn16_8", 10, 11.0, "Zagoruyko & Komodakis 2016, Table 4"),
    ("wrn28_10", 10, 36.5, "Zagoruyko & Komodakis 2016, Table 4"),
    ("resnext29_8x64d", 10, 34.4, "Xie et al. 2017, Table 7"),
]
PUBLISHED_ATTENTION = [
    ("se_resnet50", 1000, 28.09, "SE paper Table 2 (28.1M), CBAM paper Table 3"),
    ("cbam_resnet50", 1000, 28.09, "CBAM paper Table 3"),
]


@pytest.mark.parametrize("name,num_classes,published,source", PUBLISHED + PUBLISHED_ATTENTION,
                         ids=[p[0] for p in PUBLISHED + PUBLISHED_ATTENTION])
def test_parameter_count_matches_publication(name, num_classes, published, source):
    measured = count(attnlab.create_model(name, num_classes=num_classes))
    assert matches_published(measured, published), f"{name}: {measured:.3f}M vs {published}M ({source})"


def matches_published(measured: float, published: float) -> bool:
    """Within 1%, or equal once rounded as the paper rounds (ResNet-110: 1.728M is printed "1.7M")."""
    decimals = len(repr(published).split(".")[1]) if "." in repr(published) else 0
    return abs(measured - published) / published < 0.01 or round(measured, decimals) == published


def test_option_a_shortcut_has_no_parameters_and_option_b_adds_projections():
    a = attnlab.create_model("resnet20")
    b = attnlab.create_model("resnet20", shortcut="B")
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert count(b) > count(a)
    assert b.layer2[0].downsample[0].kernel_size == (1, 1)


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 4, 5, 7)
    y = ZeroPadShortcut(4, 6, 2)(x)
    assert y.shape == (2, 6, 3, 4)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert (y[:, 4:] == 0).all()
    with pytest.raises(ValueError, match="out_chs"):
        ZeroPadShortcut(6, 4, 1)


def _attention_inputs(model, x):
    """Run `model` and return {block name: (block input, attention input, block output)}."""
    seen = {}
    hooks = []
    for name, block in model.named_modules():
        if isinstance(block, ResidualBlock) and isinstance(block.attention, AttentionModule):
            hooks.append(block.register_forward_hook(
                lambda m, i, o, name=name: seen.setdefault(name, {}).update(block_in=i[0], block_out=o)))
            hooks.append(block.attention.register_forward_pre_hook(
                lambda m, i, name=name: seen.setdefault(name, {}).update(attn_in=i[0].clone())))
            last_norm = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            hooks.append(last_norm.register_forward_hook(
                lambda m, i, o, name=name: seen.setdefault(name, {}).update(norm_out=o.clone())))
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity"])
def test_attention_position_receives_the_right_tensor(position):
    # A non-local block starts as the identity (zero-initialised BN), so the block computes what the
    # plain block computes and the attention's input can be compared with the plain tensors.
    torch.manual_seed(0)
    model = attnlab.create_model("resnet20", attention="non_local", attention_position=position,
                                 attention_stages=(2,)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        seen = _attention_inputs(model, x)
    assert sorted(seen) == ["layer2.0", "layer2.1", "layer2.2"]
    for name, t in seen.items():
        block = model.get_submodule(name)
        if position == "standard":
            expected = t["norm_out"]
        elif position == "pre":
            expected = t["block_in"]
        elif position == "post":
            expected = t["block_out"]
        else:
            shortcut = block.downsample(t["block_in"]) if block.downsample is not None else t["block_in"]
            expected = shortcut
        torch.testing.assert_close(t["attn_in"], expected)


def test_pre_position_sizes_the_module_for_the_block_input():
    model = attnlab.create_model("resnet50", attention="non_local", attention_position="pre", attention_stages=1)
    assert model.layer1[0].attention.channels == 64      # block input
    assert model.layer1[1].attention.channels == 256
    model = attnlab.create_model("resnet50", attention="non_local", attention_stages=1)
    assert model.layer1[0].attention.channels == 256     # branch output
    assert isinstance(model.layer2[0].attention, nn.Identity)


def test_named_variants_place_attention_as_their_papers():
    gc = attnlab.create_model("gc_resnet50")
    stages_with_gc = {name.split(".")[0] for name, m in gc.named_modules()
                      if isinstance(m, AttentionModule) and name.endswith("attention")}
    assert stages_with_gc == {"layer2", "layer3", "layer4"}  # GCNet: c3-c5
    assert all(b.attention_position == "standard" for b in gc.modules() if isinstance(b, ResidualBlock))

    nl = attnlab.create_model("nl_resnet50")
    inserted = [name for name, _ in nl.named_modules() if name.endswith("_nonlocal")]
    # Wang et al.: 5 blocks, every other residual block of res3 (2) and res4 (3).
    assert inserted == ["layer2.1_nonlocal", "layer2.3_nonlocal", "layer3.1_nonlocal", "layer3.3_nonlocal",
                        "layer3.5_nonlocal"]
    assert not any(isinstance(b.attention, AttentionModule) for b in nl.modules() if isinstance(b, ResidualBlock))
    se = attnlab.create_model("se_resnet20")
    assert sum(isinstance(b.attention, AttentionModule) for b in se.modules() if isinstance(b, ResidualBlock)) == 9


def test_nonlocal_blocks_keep_torchvision_block_names_and_run():
    model = attnlab.create_model("nl_resnet20").eval()
    names = list(model.layer2._modules)
    assert names == ["0", "1", "1_nonlocal", "2"]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_placement_errors_name_family_and_accepted_values():
    with pytest.raises(ValueError, match=r"resnet: attention_position 'middle'.*standard, pre, post, identity"):
        attnlab.create_model("resnet18", attention="non_local", attention_position="middle")
    with pytest.raises(ValueError, match=r"resnet: attention_stages .*1\.\.3"):
        attnlab.create_model("resnet20", attention="non_local", attention_stages=(4,))
    with pytest.raises(ValueError, match=r"resnet: attention_stages .*1\.\.4"):
        attnlab.create_model("resnet18", attention="non_local", attention_stages=0)
    with pytest.raises(ValueError, match=r"preact_resnet: nonlocal_stages .*1\.\.3"):
        attnlab.create_model("preact_resnet164", nonlocal_stages=(5,))
    with pytest.raises(ValueError, match="nonlocal_every"):
        attnlab.create_model("resnet20", nonlocal_stages=2, nonlocal_every=0)
    with pytest.raises(ValueError, match="unknown attention"):
        attnlab.create_model("resnet20", attention="sqeeze")
    with pytest.raises(ValueError, match="shortcut"):
        attnlab.create_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match="shortcut 'A'"):
        attnlab.create_model("preact_resnet164", shortcut="A")
    with pytest.raises(ValueError, match="num_classes"):
        attnlab.create_model("resnet20", num_classes=-1)


def test_small_input_stem_runs_fashion_mnist_size():
    model = attnlab.create_model("resnet18_cifar", in_chans=1).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.input_size == (1, 32, 32)
    imagenet = attnlab.create_model("resnet18", small_input=True)
    assert imagenet.conv1.kernel_size == (3, 3) and imagenet.input_size == (3, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_zero_init_last_makes_every_branch_start_at_zero():
    model = attnlab.create_model("resnet50", zero_init_last=True)
    assert all((b.bn3.weight == 0).all() for b in model.modules() if isinstance(b, Bottleneck))
    assert not (attnlab.create_model("resnet50").layer1[0].bn3.weight == 0).any()  # torchvision default: off
    preact = attnlab.create_model("preact_resnet164", zero_init_last=True).eval()
    block = preact.layer1[1]  # identity shortcut: the block must return its input
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_preact_network_ends_with_norm_and_relu():
    model = attnlab.create_model("preact_resnet18_cifar").eval()
    assert isinstance(model.final_norm[0], nn.BatchNorm2d)
    with torch.no_grad():
        assert (model.forward_features(torch.randn(2, 3, 32, 32)) >= 0).all()
