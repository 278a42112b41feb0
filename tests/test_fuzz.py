"""Property-based tests (hypothesis) over create_attention / create_model arguments: every
combination gives either a working module (a forward on a tiny input returns the expected shape,
finite) or a ValueError / TypeError with a message - never another exception. Small models only."""
from __future__ import annotations

import inspect

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnlab import create_model
from attnlab.attention import create_attention, list_attention


FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JUNK_NAMES = ["", "se ", "Non-Local", "resnet", "cbma", "none", 3, None]
# Concrete values, valid for some argument or other, and plainly bad ones (weights: repeats).
VALUES = [1, 2, 3, 4, 5, 7, 8, 16, 1, 2, 3, 4, 0, -1, 0.5, 2.5, float("nan"), float("inf"), True, False, None,
          "add", "mul", "avg", "attention", "affine", "projective", "gaussian", "embedded_gaussian", "dot",
          "scaled_dot", "relative", "mixed", "", [1, 2], (3, 3)]
values = st.sampled_from(VALUES)


def keyword_names(name: str) -> list[str]:
    """The keyword arguments of attention `name`'s constructor (its first argument is channels)."""
    params = list(inspect.signature(type(create_attention(name, 16)).__init__).parameters)
    return params[2:]


ATTENTION_KEYWORDS = {name: keyword_names(name) for name in list_attention()}


def check_failure(err: BaseException) -> None:
    event(f"refused: {type(err).__name__}")
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert len(str(err)) >= 10, f"uninformative message: {err!r}"


@FUZZ
@given(name=st.sampled_from(list_attention() * 4 + JUNK_NAMES),
       channels=st.sampled_from(list(range(1, 41)) + [0, -2, 16.0, "16", None]),
       data=st.data(), height=st.integers(1, 9), width=st.integers(1, 9))
def test_create_attention_works_or_says_why(name, channels, data, height, width):
    keys = ATTENTION_KEYWORDS.get(name, []) + ["bogus_keyword"]
    kwargs = data.draw(st.dictionaries(st.sampled_from(keys), values, max_size=2), label="kwargs")
    try:
        module = create_attention(name, channels, **kwargs)
    except Exception as err:  # noqa: BLE001 - the property is about which exceptions come out
        check_failure(err)
        return
    x = torch.randn(2, channels, height, width)
    try:
        with torch.no_grad():
            y = module.eval()(x)
    except Exception as err:  # noqa: BLE001 - e.g. a map too small for the settings: ValueError
        check_failure(err)
        return
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    event("working module")


SMALL_MODELS = ["resnet20", "resnet_cifar", "se_resnet20", "nl_resnet20", "cnn_mnist", "stn_cnn",
                "shufflenet_v2_x0_5_small", "attention56_cifar"]


@FUZZ
@given(name=st.sampled_from(SMALL_MODELS * 3 + ["resnet-20", "RESNET20", "resnet2O", "", 7]),
       num_classes=st.sampled_from([None] * 8 + [1, 2, 5, 10, 12, 0, -1, 2.5, "10", True]),
       in_chans=st.sampled_from([None] * 6 + [1, 3, 1, 3, 1, 3, 2, 0, -1, 3.0, "3"]),
       attention=st.sampled_from([None] * 4 + ["se", "eca", "cbam", "gc"] * 2
                                 + ["non_local", "mhsa", "stn", "cbma", "", "none", 3]),
       attention_kwargs=st.one_of(st.none(), st.none(), st.none(), st.dictionaries(
           st.sampled_from(["reduction", "kernel_size", "mode", "bogus_keyword"]), values, max_size=2)),
       attention_stages=st.sampled_from([None] * 10 + [[1], [2, 3], [1, 2, 3], [3], [], [0], [4], [-1], [1, 1], 2,
                                                       "1"]),
       attention_position=st.sampled_from([None] * 10 + ["standard", "pre", "post", "identity", "after_block",
                                                        "middle", "", 1]),
       model_kwargs=st.dictionaries(st.sampled_from(["depth", "width"]),
                                    st.sampled_from([8, 14, 2, 4, 8, 2, 0, -2, 9, 21, 2.0, None]), max_size=2),
       size=st.sampled_from([1, 7, 16, 28, 28]))
def test_create_model_works_or_says_why(name, num_classes, in_chans, attention, attention_kwargs, attention_stages,
                                        attention_position, model_kwargs, size):
    if name != "resnet_cifar":
        model_kwargs = {}                    # depth / width belong to the configurable CIFAR ResNet
    try:
        model = create_model(name, num_classes=num_classes, in_chans=in_chans, attention=attention,
                             attention_kwargs=attention_kwargs, attention_stages=attention_stages,
                             attention_position=attention_position, **model_kwargs)
    except Exception as err:  # noqa: BLE001 - the property is about which exceptions come out
        check_failure(err)
        return
    chans = in_chans if in_chans is not None else model.in_chans
    x = torch.randn(2, chans, size, size)
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    except Exception as err:  # noqa: BLE001 - input smaller than the model's min_size: ValueError
        check_failure(err)
        assert size < 32, f"{name} refused a {size}px input: {err}"
        return
    expected = num_classes if num_classes is not None else model.num_classes
    expected = expected or model.num_features          # num_classes=0: no classifier (timm's convention)
    assert logits.shape == (2, expected) and bool(torch.isfinite(logits).all())
    event("working model")
