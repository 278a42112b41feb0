"""The one attention registry: every name builds a module that keeps the shape, names sorted,
unknown names rejected with the known names and the closest match."""
from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab.attention import AttentionModule, create_attention, list_attention, resolve_attention_name

C = 32
SIZES = [(1, 1), (7, 5), (8, 8)]
EXPECTED_NAMES = ["cbam", "eca", "gc", "mhsa", "non_local", "qkv", "se", "stn"]




def test_list_attention_is_sorted_and_complete():
    names = list_attention()
    assert names == sorted(names)
    assert names == EXPECTED_NAMES
    assert attnlab.list_attention() == names


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_registered_name_builds_a_shape_keeping_attention_module(name):
    torch.manual_seed(0)
    module = create_attention(name, C)
    assert isinstance(module, AttentionModule) and module.channels == C
    assert isinstance(module.observables, tuple) and module.observables
    for size in SIZES:
        x = torch.randn(2, C, *size)
        y = module(x)
        assert y.shape == x.shape, (name, size)
        assert torch.isfinite(y).all(), (name, size)
    with pytest.raises(ValueError, match=type(module).__name__):
        module(torch.randn(2, C + 1, 4, 4))


def test_keyword_arguments_reach_the_module_and_aliases_resolve():
    assert create_attention("se", 64, reduction=8).hidden_channels == 8
    assert create_attention("ECA", 64, kernel_size=5).kernel_size == 5  # case-insensitive
    assert type(create_attention("nl", C)).__name__ == "NonLocalBlock"
    assert resolve_attention_name("non-local") == "non_local"
    with pytest.raises(TypeError):
        create_attention("se", 64, no_such_argument=1)


@pytest.mark.parametrize("typo, closest", [("cbma", "cbam"), ("squeeze", None), ("non_locl", "non_local"),
                                           ("gcc", "gc")])
def test_unknown_name_lists_known_names_and_closest_match(typo, closest):
    with pytest.raises(ValueError) as err:
        create_attention(typo, C)
    message = str(err.value)
    assert repr(typo) in message
    assert ", ".join(EXPECTED_NAMES) in message
    if closest is not None:
        assert f"Did you mean {closest!r}?" in message


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="str"):
        create_attention(3, C)
