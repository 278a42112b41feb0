"""Spatial transformer (Jaderberg et al. 2015) and the soft-mask branch of residual attention
(Wang et al. 2017; the attention module that applies the mask: tests/models/test_ran_stn.py)."""
import math

import pytest
import torch
from torch import nn

from attnlab.attention.soft_mask import SoftMaskBranch
from attnlab.attention.stn import SpatialTransformer, identity_theta


def conv_unit(channels: int) -> nn.Module:
    """A shape-keeping residual-unit stand-in for the soft-mask branch (models/ran.py passes the
    pre-activation bottleneck)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))



SIZES = [(28, 28), (5, 17), (1, 1), (60, 60)]


# ----------------------------------------------------------------------------- spatial transformer
@pytest.mark.parametrize("transform", ["affine", "projective"])
@pytest.mark.parametrize("size", SIZES)
def test_stn_is_identity_at_init(transform, size):
    torch.manual_seed(0)
    stn = SpatialTransformer(3, transform=transform)
    x = torch.randn(2, 3, *size)
    y = stn(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, x, atol=1e-6, rtol=0)


def test_stn_dtype_follows_the_input_and_fast_path_is_close():
    stn = SpatialTransformer(2, transform="projective")
    x = torch.randn(2, 2, 9, 7, dtype=torch.float64)
    assert stn.double()(x).dtype == torch.float64 and torch.allclose(stn(x), x, atol=1e-12)
    fast = SpatialTransformer(2, precise_sampling=False)
    y = torch.randn(2, 2, 9, 7)
    assert fast(y).dtype == torch.float32 and torch.allclose(fast(y), y, atol=1e-4)


def test_stn_out_size_and_grid_shape():
    stn = SpatialTransformer(2, out_size=(10, 12))
    assert stn(torch.randn(3, 2, 28, 20)).shape == (3, 2, 10, 12)
    assert stn.grid(identity_theta("affine", 3), (3, 2, 7, 9)).shape == (3, 7, 9, 2)


def _set_transform(stn, theta):
    with torch.no_grad():
        stn.regression.weight.zero_()
        stn.regression.bias.copy_(theta.flatten()[: stn.num_params])


def test_known_rotation_rotates_the_image():
    stn = SpatialTransformer(1)
    image = torch.arange(25.0).view(1, 1, 5, 5)
    angle = math.pi / 2   # source = R(90 deg) target: a quarter turn counter-clockwise on screen
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
    _set_transform(stn, rotation)
    assert torch.allclose(stn(image), torch.rot90(image, 1, dims=(2, 3)), atol=1e-5)
    _set_transform(stn, torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))   # half turn
    assert torch.allclose(stn(image), torch.flip(image, dims=(2, 3)), atol=1e-5)


def test_translation_shifts_by_whole_pixels_with_zero_padding():
    stn = SpatialTransformer(1)
    image = torch.rand(1, 1, 4, 8)
    _set_transform(stn, torch.tensor([[1.0, 0.0, 2 * 2 / 8], [0.0, 1.0, 0.0]]))   # source x = target x + 2 px
    out = stn(image)
    assert torch.allclose(out[..., :6], image[..., 2:], atol=1e-6)
    assert torch.all(out[..., 6:] == 0)


def test_projective_identity_equals_affine_identity_and_embeds_affine():
    affine = SpatialTransformer(1)
    projective = SpatialTransformer(1, transform="projective")
    g_affine = affine.grid(identity_theta("affine", 2), (7, 9))
    g_projective = projective.grid(identity_theta("projective", 2), (7, 9))
    assert torch.allclose(g_affine, g_projective, atol=1e-6)
    theta = torch.tensor([[[0.9, -0.2, 0.1], [0.3, 1.1, -0.2]]])
    homography = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]])], dim=1)
    assert torch.allclose(affine.grid(theta, (5, 6)), projective.grid(homography, (5, 6)), atol=1e-6)


def test_projective_perspective_divides_and_guards_zero_denominator():
    stn = SpatialTransformer(1, transform="projective")
    scaled = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]])   # w = 2: zoom in by 2
    grid = stn.grid(scaled, (4, 4))
    assert torch.allclose(grid, stn.grid(identity_theta("projective", 1), (4, 4)) / 2, atol=1e-6)
    degenerate = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])   # w = x: 0 on a column
    grid = stn.grid(degenerate, (3, 3))
    assert torch.isfinite(grid).all()
    _set_transform(stn, degenerate)
    assert torch.isfinite(stn(torch.rand(1, 1, 3, 3))).all()


def test_stn_gradients_reach_every_parameter():
    torch.manual_seed(0)
    stn = SpatialTransformer(3, transform="projective", zero_init=False)
    x = torch.randn(2, 3, 16, 12, requires_grad=True)
    (stn(x) * torch.randn(2, 3, 16, 12)).sum().backward()
    for name, p in stn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_stn_theta_is_observable_and_overridable():
    stn = SpatialTransformer(1)
    _set_transform(stn, torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    seen = {}
    stn.recorder = lambda module, name, value: seen.setdefault(name, value.detach())
    x = torch.rand(2, 1, 6, 6)
    stn(x)
    assert stn.observables == ("theta",) and seen["theta"].shape == (2, 2, 3)
    stn.gate_override = {"theta": identity_theta("affine")}
    assert torch.allclose(stn(x), x, atol=1e-6)


def test_stn_localisation_parameters_are_the_theta_predictors():
    stn = SpatialTransformer(3)
    assert {id(p) for p in stn.localisation_parameters()} == {id(p) for p in stn.parameters()}


def test_stn_bad_input_and_arguments():
    stn = SpatialTransformer(3)
    with pytest.raises(ValueError, match=r"SpatialTransformer.*\(N, 3, H, W\).*\(2, 4, 8, 8\)"):
        stn(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="SpatialTransformer"):
        stn(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="transform"):
        SpatialTransformer(3, transform="tps")
    with pytest.raises(ValueError, match="out_size"):
        SpatialTransformer(3, out_size=(0, 4))
    with pytest.raises(ValueError, match="theta"):
        stn.grid(torch.zeros(2, 3), (4, 4))


# ------------------------------------------------------------------------------ soft-mask branch
@pytest.mark.parametrize("size", [(16, 16), (1, 1), (3, 17), (1, 9)])
def test_soft_mask_is_a_bounded_map_of_the_input_shape_at_any_size(size):
    branch = SoftMaskBranch(8, depth=3, unit=conv_unit)
    x = torch.randn(2, 8, *size)
    mask = branch(x)
    assert mask.shape == x.shape and mask.min() >= 0 and mask.max() <= 1


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 9), (3, 17), (16, 16)])
def test_every_size_gets_all_downsamplings_so_the_traced_branch_equals_eager(size):
    torch.manual_seed(0)
    branch = SoftMaskBranch(8, depth=3, unit=conv_unit).eval()
    seen = []
    hooks = [unit.register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape[-2:]))) for unit in branch.down]
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        eager = branch(x)
    for hook in hooks:
        hook.remove()
    expected, side = [], size        # the padded 3x3/2 pooling halves a side, rounding up; 1 stays 1
    for _ in range(3):
        side = tuple(-(-s // 2) for s in side)
        expected.append(side)
    assert seen == expected
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(branch)(x)
    torch.testing.assert_close(traced, eager)


@pytest.mark.parametrize("r,depth", [(1, 3), (3, 2), (2, 1), (1, 0)])
def test_the_branch_builds_its_units_with_the_given_factory(r, depth):
    built = []

    def unit(channels):
        built.append(channels)
        return conv_unit(channels)

    branch = SoftMaskBranch(8, depth=depth, r=r, unit=unit)
    assert built == [8] * (2 * r * depth + max(depth - 1, 0))   # r down + r up per level, one unit per skip
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(built) + 2   # the units' and the two 1x1 convs of the head


def test_mask_activation_variants_stay_shaped():
    x = torch.randn(2, 8, 6, 6)
    spatial = SoftMaskBranch(8, depth=1, mask_activation="spatial", unit=conv_unit)(x)
    standardised = torch.logit(spatial.double())   # per channel: mean 0, std 1 over the positions
    assert spatial.shape == x.shape
    assert torch.allclose(standardised.mean(dim=(2, 3)), torch.zeros(2, 8, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(standardised.std(dim=(2, 3), unbiased=False), torch.ones(2, 8, dtype=torch.float64),
                          atol=1e-3)
    channel = SoftMaskBranch(8, depth=1, mask_activation="channel", unit=conv_unit)(x)
    norms = channel.norm(dim=1)   # 1, or 0 where the ReLU before the last 1x1 conv zeroes every channel
    assert ((norms - 1).abs() < 1e-5).float().mean() > 0.5 and (((norms - 1).abs() < 1e-5) | (norms == 0)).all()


def test_soft_mask_bad_arguments():
    with pytest.raises(ValueError, match="mask_activation"):
        SoftMaskBranch(8, mask_activation="softmax", unit=conv_unit)
    with pytest.raises(ValueError, match=r"SoftMaskBranch: depth must be an int >= 0, got -1"):
        SoftMaskBranch(8, depth=-1, unit=conv_unit)
    with pytest.raises(TypeError, match=r"SoftMaskBranch: unit must be a callable.*got str 'bottleneck'"):
        SoftMaskBranch(8, unit="bottleneck")
    with pytest.raises(TypeError, match="unit"):
        SoftMaskBranch(8)   # the unit is the caller's: no backbone block is built in here
    with pytest.raises(ValueError, match=r"SoftMaskBranch.*\(N, 8, H, W\)"):
        SoftMaskBranch(8, unit=conv_unit)(torch.randn(2, 4, 8, 8))
