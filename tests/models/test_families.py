"""DenseNet, Xception, ShuffleNet v1/v2, Inception v3 / GoogLeNet and NASNet-A: parameter counts
against their published figures, the attention placement per family, input-size limits, the aux
heads and the pieces particular to a family (channel shuffle, NASNet cell data, Xception's
residual positions). Forward/backward of every model and torchvision parity live in
test_all_models.py and test_parity.py.
"""
from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab.models.nasnet import NORMAL_CELL, REDUCTION_CELL
from attnlab.models.shufflenet import channel_shuffle, concat_shuffle


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# (model, kwargs, published parameter count in millions as printed, source)
PUBLISHED = [
    ("densenet121", {}, "7.98", "torchvision (DenseNet paper Table 1 architecture)"),
    ("densenet_bc100_k12", {}, "0.8", "DenseNet paper Table 2 (CIFAR-10 head)"),
    ("inception_v3", {"aux_logits": True}, "27.16", "torchvision, with the aux head"),
    ("inception_v3", {}, "23.83", "torchvision, without the aux head"),
    ("shufflenet_v2_x1_0", {}, "2.28", "torchvision (ShuffleNet v2 paper Table 5 architecture)"),
    ("xception", {}, "22.86", "Xception paper Table 3 (22,855,952); timm legacy_xception"),
    ("nasnet_a_mobile", {}, "5.3", "NASNet paper, mobile ImageNet table, NASNet-A (4 @ 1056)"),
    ("nasnet_a_cifar", {}, "3.3", "NASNet paper, CIFAR-10 table (Table 1), NASNet-A (6 @ 768)"),
    # NOT from the paper: the ShuffleNet v1 paper reports MFLOPs only; 1.87M is the
    # OpenMMLab (mmpretrain) model zoo figure for ShuffleNetV1 1.0x (group=3).
    ("shufflenet_v1_g3", {}, "1.87", "mmpretrain model zoo (not the paper)"),
]


@pytest.mark.parametrize("name, kwargs, published, source", PUBLISHED,
                         ids=[f"{p[0]}-{p[2]}M" for p in PUBLISHED])
def test_parameter_count_matches_publication(name, kwargs, published, source):
    """Within 1%, or within the rounding of the printed figure when that is coarser (0.8M and
    3.3M are printed to one decimal: DenseNet-BC-100 has 0.769M, NASNet-A CIFAR 3.35M)."""
    count = num_params(attnlab.create_model(name, **kwargs)) / 1e6
    decimals = len(published.split(".")[1])
    tolerance = max(0.01 * float(published), 0.5 * 10 ** -decimals)
    assert abs(count - float(published)) <= tolerance, \
        f"{name}{kwargs}: {count:.4f}M vs {published}M published ({source})"


def test_exact_counts_of_reference_implementations():
    """Exact figures of the reference implementations (torchvision, timm) leave no rounding slack."""
    assert num_params(attnlab.create_model("densenet121")) == 7_978_856
    assert num_params(attnlab.create_model("shufflenet_v2_x1_0")) == 2_278_604
    assert num_params(attnlab.create_model("xception")) == 22_855_952


# (model, input px, slots with every stage, a stage, slots in that stage)
PLACEMENT = [
    ("densenet_bc100_k12", 8, 48, 2, 16),      # one slot per dense layer: 3 blocks x 16
    ("shufflenet_v1_g3_small", 8, 16, 1, 4),   # one per unit: 4 + 8 + 4
    ("shufflenet_v2_x0_5_small", 8, 16, 3, 4),
    ("googlenet_small", 8, 9, 2, 5),           # one per Inception block: 3a-b, 4a-e, 5a-b
    ("inception_v3_small", 8, 11, 3, 3),       # Mixed_5b-d, 6a-e, 7a-c
    ("xception_small", 8, 12, 2, 8),           # blocks: entry 1-3, middle 4-11, exit 12
    ("nasnet_a_cifar", 8, 20, 1, 6),           # 18 normal + 2 reduction cells
    ("nasnet_a_mobile", 8, 14, 3, 5),          # stem cells excluded
]


def _attention_modules(model):
    return [m for m in model.modules() if isinstance(m, attnlab.attention.AttentionModule)]


@pytest.mark.parametrize("name, size, total, stage, in_stage", PLACEMENT, ids=[p[0] for p in PLACEMENT])
def test_post_placement_builds_and_runs_every_slot(name, size, total, stage, in_stage):
    kwargs = dict(num_classes=3, attention="se", attention_kwargs={"reduction": 4}, attention_position="post")
    model = attnlab.create_model(name, **kwargs)
    slots = _attention_modules(model)
    assert len(slots) == total
    assert len(_attention_modules(attnlab.create_model(name, attention_stages=stage, **kwargs))) == in_stage
    calls = []
    for slot in slots:
        slot.register_forward_hook(lambda module, inputs, output: calls.append(module))
    out = model.eval()(torch.randn(2, model.in_chans, size, size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert len(calls) == total and len(set(map(id, calls))) == total, "every slot runs exactly once"


class _CountingSlot(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 2


@pytest.mark.parametrize("name", ["resnet20", "shufflenet_v2_x0_5_small", "densenet_bc100_k12"])
def test_empty_attention_slots_pass_through_and_filled_slots_run(name):
    model = attnlab.create_model(name, num_classes=3).eval()
    slots = [(parent, attr) for parent in model.modules() for attr in ("attn", "attention")
             if type(getattr(parent, attr, None)) is torch.nn.Identity]
    assert slots, "a model without attention has empty slots"
    x = torch.randn(2, model.in_chans, 32, 32)
    before = model(x)
    for parent, attr in slots:                 # an empty slot is the identity
        setattr(parent, attr, torch.nn.Identity())
    torch.testing.assert_close(model(x), before)
    parent, attr = slots[len(slots) // 2]
    setattr(parent, attr, _CountingSlot())     # a module put into a slot by hand still runs
    after = model(x)
    assert getattr(parent, attr).calls == 1 and not torch.allclose(before, after)


FAMILY_OF = {"densenet121": "DenseNet", "shufflenet_v1_g3": "ShuffleNetV1", "shufflenet_v2_x1_0": "ShuffleNetV2",
             "googlenet": "GoogLeNet", "inception_v3": "InceptionV3", "nasnet_a_mobile": "NASNet"}


@pytest.mark.parametrize("name", sorted(FAMILY_OF))
def test_non_residual_family_rejects_residual_positions(name):
    for position in ("standard", "pre", "identity"):
        with pytest.raises(ValueError, match=rf"{FAMILY_OF[name]}.*{position}.*accepted: post$"):
            attnlab.create_model(name, attention="se", attention_position=position)


def test_xception_rejects_unknown_position_naming_the_accepted_ones():
    with pytest.raises(ValueError, match="Xception.*'inside'.*standard, pre, post, identity"):
        attnlab.create_model("xception_small", attention="se", attention_position="inside")
    with pytest.raises(ValueError, match="Xception.*attention_stages"):
        attnlab.create_model("xception_small", attention="se", attention_stages=4)


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity"])
def test_xception_residual_positions_are_wired_where_the_se_paper_puts_them(position):
    """Replace the attention output of block1 (a downsampling block with a 1x1 conv shortcut) by
    zeros: `standard` leaves the shortcut alone, `identity` the branch, `post` nothing, `pre`
    feeds zeros to the branch only."""
    model = attnlab.create_model("xception_small", attention="se", attention_position=position,
                                 attention_stages=1).eval()
    block = model.block1
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        branch, shortcut = block.branch(x), block.shortcut(x)
        zeros_through_branch = block.branch(torch.zeros_like(x))
        expected = {"standard": shortcut, "identity": branch, "post": torch.zeros_like(branch),
                    "pre": zeros_through_branch + shortcut}[position]
        block.attn.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
        torch.testing.assert_close(block(x), expected)
    assert block.attn.channels == (64 if position == "pre" else 128)


# Models whose min_size has a distinct reason; forward_features (no input check) must work at
# min_size and fail one pixel below.
MIN_SIZE_CASES = [("densenet121", {}), ("densenet_bc100_k12", {}), ("inception_v3", {}),
                  ("inception_v3_small", {}), ("googlenet", {}), ("googlenet", {"torchvision_compat": True}),
                  ("googlenet_small", {}), ("xception", {}), ("nasnet_a_mobile", {})]


@pytest.mark.parametrize("name, kwargs", MIN_SIZE_CASES, ids=[f"{n}{k or ''}" for n, k in MIN_SIZE_CASES])
def test_min_size_is_the_true_limit(name, kwargs):
    model = attnlab.create_model(name, num_classes=3, **kwargs).eval()
    size = model.min_size
    with torch.no_grad():
        assert model(torch.randn(1, model.in_chans, size, size)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            model.forward_features(torch.randn(1, model.in_chans, size - 1, size - 1))
    with pytest.raises(ValueError, match=r"H, W >= "):
        model(torch.randn(1, model.in_chans, size - 1, size - 1))


@pytest.mark.parametrize("name, native", [("densenet121", 224), ("densenet_bc100_k12", 32), ("xception", 299),
                                          ("xception_small", 32), ("inception_v3", 299), ("googlenet", 224),
                                          ("shufflenet_v2_x1_0_small", 32), ("nasnet_a_cifar", 32)])
def test_native_input_size(name, native):
    model = attnlab.create_model(name)
    assert tuple(model.input_size) == (3, native, native)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    with pytest.raises(ValueError, match="4 groups"):
        channel_shuffle(x, 4)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_keeps_channels_last_and_the_order(groups):
    x = torch.randn(2, 12, 5, 3)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = channel_shuffle(x_cl, groups)
    assert torch.equal(out, channel_shuffle(x, groups))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


@pytest.mark.parametrize("channels_last", [False, True])
def test_concat_shuffle_is_shuffle_of_the_concatenation(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 16, 4, 6).contiguous(memory_format=fmt)
    a, b = x.chunk(2, 1)                     # a strided view, as in the stride-1 unit
    b = (b * 2).contiguous(memory_format=fmt)
    out = concat_shuffle(a, b)
    assert torch.equal(out, channel_shuffle(torch.cat((a, b), 1).contiguous(), 2))
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("genotype", [NORMAL_CELL, REDUCTION_CELL], ids=["normal", "reduction"])
def test_nasnet_cell_data_uses_every_block_output(genotype):
    """Each block reads existing states only, and every block output is either read by a later
    block or concatenated; the NASNet-A concatenations (6 and 4 states) give 6C / 4C channels."""
    assert len(genotype.blocks) == 5
    read = set()
    for b, block in enumerate(genotype.blocks):
        for _, state in block:
            assert 0 <= state < 2 + b
            read.add(state)
    assert set(range(2, 7)) <= read | set(genotype.concat)
    assert len(genotype.concat) == (6 if genotype is NORMAL_CELL else 4)


def test_inception_aux_heads():
    with pytest.raises(ValueError, match="InceptionV3: aux_logits"):
        attnlab.create_model("inception_v3_small", aux_logits=True)
    with pytest.raises(ValueError, match="GoogLeNet: aux_logits"):
        attnlab.create_model("googlenet_small", aux_logits=True)
    v3 = attnlab.create_model("inception_v3", num_classes=5, aux_logits=True)
    assert v3.AuxLogits(torch.randn(2, 768, 17, 17)).shape == (2, 5)
    net = attnlab.create_model("googlenet", num_classes=5, aux_logits=True, torchvision_compat=True)
    out = net.train()(torch.randn(2, 3, 64, 64))
    assert type(out).__name__ == "GoogLeNetOutputs" and [o.shape for o in out] == [(2, 5)] * 3
    assert net.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    net.reset_classifier(7)
    assert net.aux1.fc2.out_features == net.aux2.fc2.out_features == 7


def test_inception_v3_remap_drops_aux_keys_when_the_model_has_none():
    """A torchvision-style state dict (aux head, classifier named `fc`) loads strictly into a
    model without the aux head."""
    with_aux = attnlab.create_model("inception_v3", aux_logits=True).state_dict()
    torchvision_style = {k.replace("head.fc.", "fc."): v for k, v in with_aux.items()}
    model = attnlab.create_model("inception_v3")
    model.load_state_dict(model.remap_pretrained(torchvision_style, "torchvision"), strict=True)
    torch.testing.assert_close(model.head.fc.weight, with_aux["head.fc.weight"])


def test_bad_arguments_are_rejected_with_the_family_name():
    with pytest.raises(ValueError, match="DenseNet: compression"):
        attnlab.create_model("densenet121", compression=0)
    with pytest.raises(ValueError, match="ShuffleNetV1: stage width"):
        attnlab.models.shufflenet.ShuffleNetV1(groups=7, stage_channels=(240, 480, 960))
    with pytest.raises(ValueError, match="NASNet: filters"):
        attnlab.models.nasnet.NASNetA(filters=42)
    with pytest.raises(ValueError, match="Xception: num_classes"):
        attnlab.create_model("xception", num_classes=-1)


def test_xception_pretrained_plus_attention_starts_as_the_pretrained_network(tmp_path, randomise_norms_fn):
    """`standard` slots sit behind one BN each (norms_before_attention), so the loader's identity
    init is exact: the attended model computes the pretrained one's logits."""
    torch.manual_seed(0)
    base = randomise_norms_fn(attnlab.create_model("xception_small", num_classes=3)).eval()
    torch.save(base.state_dict(), tmp_path / "xception.pth")
    model = attnlab.create_model("xception_small", num_classes=3, pretrained=str(tmp_path / "xception.pth"),
                                 attention="se", attention_position="standard").eval()
    report = model.pretrained_report["identity_init"]
    assert len(report["exact"]) == 12 and not report["approximate"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=1e-5, atol=1e-5)
