"""Agreement and faithfulness metrics on cases small enough to compute by hand: Spearman's rho and
the top-k IoU of two maps, the trapezoid AUC, deletion and insertion curves of a model that reads
one pixel, and a constant map that is a random ranking."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from attnlab.explain.metrics import (auc, deletion_insertion, gaussian_blur, random_baseline, rank_correlation,
                                     ranking, top_overlap)


class OnePixel(nn.Module):
    """Two classes; the logit of class 0 is the value of pixel 0, the other logit is 0."""

    def forward(self, x):
        s = x.flatten(1)[:, 0]
        return torch.stack([s, torch.zeros_like(s)], 1)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


IMAGE = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]])          # all the evidence for class 0 in pixel 0


def _map_from_order(order):
    """A (1, 1, 2, 2) map that ranks the pixels in `order`, the first highest."""
    values = torch.zeros(4)
    for rank, pixel in enumerate(order):
        values[pixel] = 4 - rank
    return values.view(1, 1, 2, 2)


def test_rank_correlation_and_top_overlap_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 2.0, 4.0, 3.0]).view(1, 1, 2, 2)
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert rank_correlation(a, b)[0] == pytest.approx(0.8)
    assert math.isnan(rank_correlation(a, torch.ones_like(a))[0])
    u = torch.arange(10.0).view(1, 1, 2, 5)
    v = u.clone()
    v[0, 0, 1, 3] = -1.0                                    # 8 leaves the top two; 0 ... still 9 stays
    v[0, 0, 0, 0] = 20.0
    # top 20%: {9, 8} and {0, 9}: one shared of three
    assert top_overlap(u, v, 0.2)[0] == pytest.approx(1 / 3)


def test_auc_is_the_trapezoid_area_over_the_unit_interval():
    assert float(auc(torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.5)
    assert float(auc(torch.tensor([[1.0, 1.0, 0.0]]))) == pytest.approx(0.75)


def test_the_map_that_ranks_the_relevant_pixel_first_has_the_lowest_deletion_auc():
    model, target = OnePixel(), torch.tensor([0])
    first = deletion_insertion(model, IMAGE, _map_from_order([0, 1, 2, 3]), target, steps=4, blur_sigma=1.0)
    last = deletion_insertion(model, IMAGE, _map_from_order([1, 2, 3, 0]), target, steps=4, blur_sigma=1.0)
    p = _sigmoid(3.0)
    # deletion: pixel 0 goes first -> [p, .5, .5, .5, .5]; last -> [p, p, p, p, .5]
    assert first.deletion[0].tolist() == pytest.approx([p, 0.5, 0.5, 0.5, 0.5])
    assert float(first.deletion_auc[0]) == pytest.approx((p + 2.0 - (p + 0.5) / 2) / 4)
    assert float(last.deletion_auc[0]) == pytest.approx((4 * p + 0.5 - (p + 0.5) / 2) / 4)
    every = {order: deletion_insertion(model, IMAGE, _map_from_order(order), target, steps=4, blur_sigma=1.0)
             for order in itertools.permutations(range(4))}
    best_deletion = min(float(c.deletion_auc[0]) for c in every.values())
    best_insertion = max(float(c.insertion_auc[0]) for c in every.values())
    assert float(first.deletion_auc[0]) == pytest.approx(best_deletion)
    assert float(first.insertion_auc[0]) == pytest.approx(best_insertion)
    assert float(last.insertion_auc[0]) < best_insertion


def test_a_constant_map_is_a_random_ranking_and_matches_the_random_baseline_in_expectation():
    model, target = OnePixel(), torch.tensor([0])
    exact = np.mean([float(deletion_insertion(model, IMAGE, _map_from_order(o), target, steps=4).deletion_auc[0])
                     for o in itertools.permutations(range(4))])
    gen = torch.Generator().manual_seed(0)
    constant = [float(deletion_insertion(model, IMAGE, torch.ones(1, 1, 2, 2), target, steps=4,
                                         generator=gen).deletion_auc[0]) for _ in range(300)]
    random = float(random_baseline(model, IMAGE.expand(300, 1, 2, 2), target.expand(300), draws=1, steps=4,
                                   generator=gen).deletion_auc.mean())
    spread = np.std(constant) / math.sqrt(len(constant))
    assert abs(np.mean(constant) - exact) < 4 * spread
    assert abs(random - exact) < 4 * spread
    # the pixel order of a constant map is a permutation that changes from draw to draw
    orders = {tuple(ranking(torch.ones(1, 1, 2, 2), gen)[0].tolist()) for _ in range(50)}
    assert len(orders) > 10 and all(sorted(o) == [0, 1, 2, 3] for o in orders)


def test_gaussian_blur_keeps_a_constant_image_and_its_mass():
    flat = torch.full((1, 2, 5, 7), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5) and float(blurred.max()) < 0.2


def test_bad_maps_are_named():
    with pytest.raises(ValueError, match=r"same shape"):
        rank_correlation(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"input's size"):
        deletion_insertion(OnePixel(), IMAGE, torch.zeros(1, 1, 3, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        top_overlap(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
