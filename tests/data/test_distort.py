"""The STN paper's distortions: shapes, determinism from the seed, independence of train and test."""
from __future__ import annotations

import pytest
import torch

from attnlab.data.datasets import load_dataset
from attnlab.data.distort import DISTORTIONS, canvas_size, distort


@pytest.fixture(scope="module")
def images():
    return load_dataset("digits").train_x[:32]


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_deterministic_from_seed_and_seed_matters(images, kind):
    a = distort(images, kind, seed=5)
    b = distort(images, kind, seed=5)
    c = distort(images, kind, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape[-1] == canvas_size(kind, 8)


def test_canvas_ratios_match_the_paper():
    assert canvas_size("rts", 28) == 42 and canvas_size("tc", 28) == 60 and canvas_size("r", 28) == 28


def test_rotation_keeps_the_ink_and_rts_places_it_on_the_canvas(images):
    big = torch.nn.functional.interpolate(images.float(), size=28, mode="bilinear").round().to(torch.uint8)
    rotated = distort(big, "r", seed=0)
    # A rotation about the centre keeps most of the ink (digits do not touch the corners).
    assert rotated.float().sum().item() == pytest.approx(big.float().sum().item(), rel=0.1)
    rts = distort(big, "rts", seed=0)
    assert rts.shape[-1] == 42 and rts.float().sum(dim=(1, 2, 3)).min() > 0


def test_train_and_test_distorted_independently():
    d = load_dataset("digits-r")
    plain = load_dataset("digits")
    same_stream = distort(plain.test_x, "r", seed=0, out_size=8)       # the train split's stream
    assert not torch.equal(d.test_x, same_stream)
    again = load_dataset("digits-r")
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_x, again.test_x)


def test_bad_kind_and_shape():
    with pytest.raises(ValueError, match="accepted: r, rts, p, e, tc"):
        distort(torch.zeros(1, 1, 8, 8), "swirl")
    with pytest.raises(ValueError, match="square"):
        distort(torch.zeros(1, 1, 8, 9), "r")
