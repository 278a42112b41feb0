"""Every registered model (attnlab.list_models(), whatever family registered it), batch 2:

* train-mode forward gives finite logits of shape (2, num_classes), and backward gives a finite
  gradient for every parameter that requires one;
* forward_features has `num_features` channels and forward_head(forward_features(x)) equals
  forward(x); in eval mode forward_head(pre_logits=True) equals the output after
  reset_classifier(0), and reset_classifier(k) gives k logits.

Size: models whose native input (model.input_size) is at most 32 px (CIFAR, MNIST) run at it.
ImageNet-size models run at REDUCED_SIZE = 32 px (or their min_size when larger, e.g. Inception v3
at 75): at 224 px the ~45 ImageNet variants alone would take most of the suite's 10-minute budget on
2 cores (measured: 64 px already made this file ~490 CPU-seconds), and nothing checked here
depends on the size beyond the minimum the network accepts. `test_native_size_imagenet` runs
representatives at 224 px.
"""
from __future__ import annotations

import pytest
import torch

import attnlab

NUM_CLASSES = 3
REDUCED_SIZE = 32
ALL_MODELS = attnlab.list_models()


def _input_for(model, size=None) -> torch.Tensor:
    chans, height, width = model.input_size
    if size is None and max(height, width) > REDUCED_SIZE:
        size = max(REDUCED_SIZE, getattr(model, "min_size", 1))
    if size is not None:
        height = width = size
    return torch.randn(2, chans, height, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_contract(name):
    torch.manual_seed(0)
    model = attnlab.create_model(name, num_classes=NUM_CLASSES)
    x = _input_for(model)

    # One forward with grad and one without, both in training mode (the seed makes dropout draw
    # the same masks; BN uses batch statistics both times): the second, through forward_features
    # and forward_head, must reproduce the first.
    model.train()
    torch.manual_seed(1)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, NUM_CLASSES), \
        f"{name}: logits {type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
    assert torch.isfinite(out).all(), f"{name}: non-finite logits"
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients: {bad[:10]}"

    with torch.no_grad():
        torch.manual_seed(1)
        features = model.forward_features(x)
        assert features.shape[0] == 2 and features.shape[1] == model.num_features, \
            f"{name}: features {tuple(features.shape)} vs num_features {model.num_features}"
        torch.testing.assert_close(model.forward_head(features), out.detach(), rtol=1e-5, atol=1e-5)
        model.eval()  # the head checks without dropout
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape[0] == 2 and pre_logits.dim() == 2
        model.reset_classifier(5)
        assert model.forward_head(features).shape == (2, 5)
        assert model.num_classes == 5
        model.reset_classifier(0)
        torch.testing.assert_close(model.forward_head(features), pre_logits)


@pytest.mark.parametrize("name", ["resnet50", "se_resnet50", "vgg16_bn"])
def test_native_size_imagenet(name):
    """The ImageNet representatives at their native 224 px (eval, no grad: the shape contract)."""
    if name not in ALL_MODELS:
        pytest.skip(f"{name} not registered")
    model = attnlab.create_model(name, num_classes=NUM_CLASSES).eval()
    assert tuple(model.input_size) == (3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(_input_for(model, size=224))
        out = model.forward_head(features)
    assert features.shape == (2, model.num_features, 7, 7)
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()
