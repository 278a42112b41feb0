"""Feature backbones, gradient checkpointing and the data config (models.features,
models.data_config), one small model per family; the per-model checks of the feature stages and
of torch.fx tracing are in test_all_models.py.

* create_model(features_only=True, out_indices=...) returns the selected maps with the shapes
  its feature_info announces, without the classifier's and the later stages' parameters; bad
  indices are refused with the value and the valid range;
* forward_intermediates honours indices as a count, as negative indices, intermediates_only,
  stop_early and norm;
* set_grad_checkpointing(True) gives the plain model's output, parameter gradients and BatchNorm
  running statistics, in training mode with dropout, while keeping fewer tensors for backward;
* pretrained_cfg names the first convolution and the classifier that the model really has,
  follows reset_classifier, takes overrides; VGG's head_hidden_size is its pre-logits width;
* torchvision's create_feature_extractor reads the maps feature_info names (parity marker);
* `attnlab list models --details` prints the config.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import attnlab
from attnlab.cli import main
from attnlab.models.nasnet import NASNetA

# One model per family (and per block type / attention kind with its own code path).
FAMILY_MODELS = ["resnet20", "se_resnet20", "preact_resnet164", "wrn16_8", "nl_resnet20", "vgg11_bn_cifar",
                 "densenet_bc100_k12", "xception_small", "shufflenet_v1_g3_small", "shufflenet_v2_x0_5_small",
                 "googlenet_small", "inception_v3_small", "nasnet_a_cifar", "attention56_cifar", "cnn_mnist",
                 "stn_cnn"]


def _build(name: str, **kwargs):
    """The model; NASNet-A CIFAR with one cell per stack and narrow cells (the same code, 1/10
    of the time)."""
    if name == "nasnet_a_cifar":
        return NASNetA(cells_per_stack=1, filters=8, stem_filters=12, small_input=True, drop_rate=0.0, **kwargs)
    return attnlab.create_model(name, **kwargs)


def _input(model, batch: int = 2) -> torch.Tensor:
    size = max(model.min_size, 8)
    return torch.randn(batch, model.in_chans, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["resnet20", "se_resnet20", "densenet_bc100_k12", "nasnet_a_cifar", "stn_cnn"])
def test_features_only_returns_the_announced_maps_without_the_head(name):
    torch.manual_seed(0)
    full = attnlab.create_model(name)
    net = attnlab.create_model(name, features_only=True, out_indices=(0, -1)).eval()
    last = len(full.feature_info) - 1
    assert net.feature_info.out_indices == (0, last)
    assert net.feature_info.channels() == [full.feature_info[0]["num_chs"], full.feature_info[last]["num_chs"]]
    assert net.feature_info.module_name() == [full.feature_info[0]["module"], full.feature_info[last]["module"]]
    x = _input(full, batch=1)
    maps = net(x)
    assert [m.shape[1] for m in maps] == net.feature_info.channels()
    assert maps[0].shape[-1] >= maps[1].shape[-1]
    assert not any("head" in n for n, p in net.named_parameters() if p.numel())
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in full.parameters())


def test_features_only_drops_the_stages_after_the_deepest_selected_one():
    net = attnlab.create_model("resnet18", features_only=True, out_indices=(1, 2))
    assert not any(n.startswith(("model.layer3", "model.layer4")) for n, _ in net.named_parameters())
    maps = net(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (128, 8, 8)]


@pytest.mark.parametrize("bad", [(4,), (0, 0), 0, 5, (-5,), "1", (1.0,)])
def test_bad_out_indices_name_the_value_and_the_range(bad):
    with pytest.raises(ValueError, match=r"out_indices=.*\[-4, 3\]"):
        attnlab.create_model("resnet20", features_only=True, out_indices=bad)


def test_out_indices_without_features_only_is_refused():
    with pytest.raises(ValueError, match="features_only=True"):
        attnlab.create_model("resnet20", out_indices=(1, 2))


def test_forward_intermediates_index_forms():
    torch.manual_seed(0)
    model = attnlab.create_model("preact_resnet18_cifar").eval()
    x = _input(model)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert len(maps) == len(model.feature_info) == 5
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two, maps[-2:], rtol=0, atol=0)
        picked = model.forward_intermediates(x, indices=[-1, 1], intermediates_only=True)
        torch.testing.assert_close(picked, [maps[1], maps[4]], rtol=0, atol=0)
        early_final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early, [maps[1]], rtol=0, atol=0)
        assert early_final.shape != final.shape  # stopped after stage 1
        # norm: the pre-activation net's closing BN-ReLU applied to the last map
        _, normed = model.forward_intermediates(x, indices=[-1], norm=True)
        torch.testing.assert_close(normed[0], final, rtol=0, atol=0)
        assert not torch.equal(maps[-1], final)
    with pytest.raises(ValueError, match="output_fmt 'NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match=r"indices=\(7,\)"):
        model.forward_intermediates(x, indices=(7,))


def _saved_tensor_count(model, x) -> int:
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return count


# The conformance matrix checks output, gradients and statistics with checkpointing on every model
# (tests/models/test_conformance.py); here: the same under dropout, whose random draws the
# recomputation must repeat, and that checkpointing saves fewer tensors for the backward pass.
@pytest.mark.parametrize("name", ["resnet20", "densenet_bc100_k12"])
def test_grad_checkpointing_gives_the_plain_output_gradients_and_statistics(name):
    torch.manual_seed(0)
    kwargs = {"drop_rate": 0.3}
    plain = _build(name, num_classes=3, **kwargs).train()
    ckpt = copy.deepcopy(plain)
    assert plain.grad_checkpointing is False
    ckpt.set_grad_checkpointing(True)
    assert ckpt.grad_checkpointing is True
    x = _input(plain)
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        out = model(x)
        (out * torch.arange(1.0, 4.0)).sum().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        results.append((out.detach(), grads, buffers))
    (out_p, grads_p, bufs_p), (out_c, grads_c, bufs_c) = results
    torch.testing.assert_close(out_c, out_p)
    assert grads_c.keys() == grads_p.keys()
    for n in grads_p:
        assert (grads_p[n] is None) == (grads_c[n] is None), n
        if grads_p[n] is not None:
            torch.testing.assert_close(grads_c[n], grads_p[n], msg=f"{name}: gradient of {n}")
    for n in bufs_p:
        torch.testing.assert_close(bufs_c[n], bufs_p[n], msg=f"{name}: buffer {n}")
    assert _saved_tensor_count(ckpt, x) < _saved_tensor_count(plain, x)


def test_grad_checkpointing_is_off_without_gradients_and_refuses_non_bools():
    model = attnlab.create_model("resnet20")
    model.set_grad_checkpointing()
    with torch.no_grad():
        model(_input(model))   # runs plainly: no checkpoint without autograd
    with pytest.raises(TypeError, match="True or False"):
        model.set_grad_checkpointing("yes")
    net = attnlab.create_model("resnet20", features_only=True)
    net.set_grad_checkpointing(True)
    assert net.grad_checkpointing and net.model.grad_checkpointing


@pytest.mark.parametrize("name", FAMILY_MODELS + ["vgg11_bn", "inception_v3", "xception"])
def test_pretrained_cfg_names_real_modules(name):
    with torch.device("meta"):
        model = attnlab.create_model(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "first_conv", "classifier",
                "num_classes", "paper_name", "paper_ids"):
        assert key in cfg, f"{name}: no {key}"
    assert cfg["input_size"] == tuple(model.input_size) and cfg["architecture"] == name
    assert len(cfg["mean"]) == len(cfg["std"]) == model.in_chans
    first = (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]
    for conv in first:
        module = model.get_submodule(conv)
        assert isinstance(module, nn.Conv2d) and module.in_channels == model.in_chans, conv
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert cfg["paper_ids"] and all(p.startswith("arXiv:") for p in cfg["paper_ids"])


def test_pretrained_cfg_follows_the_model_and_takes_overrides():
    model = attnlab.create_model("se_resnet20")
    assert model.pretrained_cfg["paper_ids"] == ("arXiv:1512.03385", "arXiv:1709.01507")
    model.reset_classifier(7)
    assert model.pretrained_cfg["num_classes"] == 7
    model.pretrained_cfg = {"crop_pct": 0.9}
    assert model.pretrained_cfg["crop_pct"] == 0.9 and model.pretrained_cfg["num_classes"] == 7
    with pytest.raises(TypeError, match="pretrained_cfg must be a dict"):
        model.pretrained_cfg = 0.9
    gray = attnlab.create_model("resnet20", in_chans=1).pretrained_cfg
    assert len(gray["mean"]) == len(gray["std"]) == 1


def test_vgg_head_hidden_size_is_its_pre_logits_width():
    with torch.device("meta"):   # shapes only
        model = attnlab.create_model("vgg11_bn", num_classes=0).eval()
        pre_logits = model(torch.empty(1, 3, 32, 32))
    assert model.num_features == 512
    assert pre_logits.shape[1] == model.head_hidden_size == 4096


def test_mhsa_and_soft_mask_trace():
    torch.manual_seed(0)
    for model in (attnlab.create_model("resnet20", attention="mhsa"),
                  attnlab.create_model("resnet20", spatial_transformer=True),
                  attnlab.create_model("resnet20", features_only=True, out_indices=(2, 3))):
        model.eval()
        x = torch.randn(2, 3, 8, 8)
        traced = torch.fx.symbolic_trace(model)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["se_resnet20", "densenet_bc100_k12", "nasnet_a_cifar", "stn_cnn"])
def test_torchvision_create_feature_extractor_reads_the_feature_info_modules(torchvision, name):
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = _build(name).eval()
    names = model.feature_info.module_name()
    extractor = create_feature_extractor(model, return_nodes={n: str(i) for i, n in enumerate(names)})
    x = _input(model)
    with torch.no_grad():
        got = extractor(x)
        expected = model.forward_intermediates(x, intermediates_only=True)
    torch.testing.assert_close([got[str(i)] for i in range(len(names))], expected)


def test_cli_list_models_details(capsys):
    assert main(["list", "models", "resnet20", "--details"]) == 0
    out = capsys.readouterr().out
    assert "\nresnet20\n  architecture: resnet20\n" in out   # after nl_resnet20's block
    for line in ("  input_size: (3, 32, 32)", "  first_conv: conv1", "  classifier: head.fc",
                 "  feature_reductions: (1, 1, 2, 4)", "  paper_ids: ('arXiv:1512.03385',)"):
        assert line in out
    assert main(["list", "models", "resnet20"]) == 0
    assert capsys.readouterr().out == "nl_resnet20\nresnet20\nse_resnet20\n"
    assert main(["list", "attention", "--details"]) == 2
    assert "--details describes models only" in capsys.readouterr().err
