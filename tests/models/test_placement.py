"""The placement spec: one `Placement` object (also given as a name or a dict) that every family
binds once in `Backbone._setup`; create_model's shorthand keywords fold into it."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import attnlab
from attnlab.models import layers
from attnlab.models.layers import Backbone, Placement
from attnlab.models.resnet import ResidualBlock

# One small builder per family class (family name as it appears in errors, stage count, positions).
FAMILIES = [
    ("resnet20", "resnet", 3, layers.RESIDUAL_POSITIONS),
    ("preact_resnet18_cifar", "preact_resnet", 4, layers.RESIDUAL_POSITIONS),
    ("vgg11_bn_cifar", "vgg", 5, layers.PLAIN_POSITIONS),
    ("densenet_bc100_k12", "DenseNet", 3, layers.PLAIN_POSITIONS),
    ("xception_small", "Xception", 3, layers.RESIDUAL_POSITIONS),
    ("shufflenet_v1_g3_small", "ShuffleNetV1", 3, layers.PLAIN_POSITIONS),
    ("shufflenet_v2_x0_5_small", "ShuffleNetV2", 3, layers.PLAIN_POSITIONS),
    ("googlenet_small", "GoogLeNet", 3, layers.PLAIN_POSITIONS),
    ("inception_v3_small", "InceptionV3", 3, layers.PLAIN_POSITIONS),
    ("nasnet_a_cifar", "NASNet", 3, layers.PLAIN_POSITIONS),
    ("attention56_cifar", "ran", 4, layers.RESIDUAL_POSITIONS),
    ("cnn_mnist", "cnn_mnist", 2, layers.PLAIN_POSITIONS),
]


def attention_paths(model) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, attnlab.attention.AttentionModule)]


# ------------------------------------------------------------------------------------- the object
def test_a_name_a_dict_and_the_object_are_the_same_placement():
    obj = Placement("cbam", {"reduction": 8}, stages=(3, 4), position="identity")
    assert Placement.coerce({"name": "cbam", "kwargs": {"reduction": 8}, "stages": [3, 4],
                             "position": "identity"}) == obj
    assert Placement.coerce(obj) is obj
    assert Placement.coerce("se") == Placement("se")
    assert Placement.coerce(None).is_empty and not Placement("se").is_empty
    assert Placement.coerce(obj.as_dict()) == obj                      # plain data round trip


def test_fields_are_normalised_once_and_the_object_is_frozen():
    p = Placement("Non-Local", stages=2)
    assert p.name == "non_local" and p.stages == (2,) and p.kwargs == {} and p.position is None
    assert Placement("nl").name == "non_local"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "se"


@pytest.mark.parametrize("value, error, message", [
    (3, TypeError, r"attention must be None, an attention name, a dict or a Placement, got int 3"),
    ("cbma", ValueError, r"unknown attention 'cbma'.*Did you mean 'cbam'"),
    ({"name": "se", "stage": [1]}, ValueError, r"unknown key\(s\) 'stage'; accepted: name, kwargs, stages, position"),
    ({"name": "se", "kwargs": [("reduction", 8)]}, TypeError, r"attention_kwargs must be a dict.*got list"),
    ({"name": "se", "kwargs": {1: 8}}, TypeError, r"attention_kwargs must be a dict of settings with str keys"),
    ({"name": "se", "stages": "12"}, TypeError, r"attention_stages must be a stage number or a sequence.*'12'"),
    ({"name": "se", "stages": [1, 2.0]}, TypeError, r"attention_stages must hold stage numbers \(ints\), got 2\.0"),
    ({"name": "se", "stages": [True]}, TypeError, r"got True"),
    ({"name": "se", "position": 1}, TypeError, r"attention_position must be a str, got int 1"),
])
def test_bad_values_are_refused_in_one_line_naming_them(value, error, message):
    with pytest.raises(error, match=message) as err:
        Placement.coerce(value)
    assert "\n" not in str(err.value)


def test_bind_checks_what_depends_on_the_family():
    bound = Placement("se", stages=(1, 3)).bind("toy", 3, ("standard", "post"))
    assert bound.position == "standard" and bound.stages == (1, 3)
    with pytest.raises(ValueError, match=r"toy: attention_stages \(4,\) invalid; accepted: stage numbers 1\.\.3"):
        Placement("se", stages=4).bind("toy", 3, ("post",))
    with pytest.raises(ValueError, match=r"toy: attention_stages \(\) invalid"):
        Placement("se", stages=()).bind("toy", 3, ("post",))
    with pytest.raises(ValueError, match=r"toy: attention_position 'pre' is not supported; accepted: post"):
        Placement("se", position="pre").bind("toy", 3, ("post",))


def test_with_defaults_fills_only_what_is_unset():
    mine = Placement("cbam", {"reduction": 4})
    filled = mine.with_defaults(name="gc", stages=(2, 3, 4))
    assert (filled.name, filled.kwargs, filled.stages) == ("cbam", {"reduction": 4}, (2, 3, 4))
    assert Placement().with_defaults(name="se").name == "se"


# ----------------------------------------------------------------------------------- create_model
def test_create_model_takes_a_name_a_dict_an_object_or_the_shorthand_alike():
    kinds = [
        dict(attention="se", attention_kwargs={"reduction": 4}, attention_stages=(2, 3), attention_position="pre"),
        dict(attention={"name": "se", "kwargs": {"reduction": 4}, "stages": [2, 3], "position": "pre"}),
        dict(attention=Placement("se", {"reduction": 4}, (2, 3), "pre")),
        dict(attention={"name": "se", "stages": [2, 3]}, attention_kwargs={"reduction": 4}, attention_position="pre"),
    ]
    models = []
    for kw in kinds:
        torch.manual_seed(0)
        models.append(attnlab.create_model("resnet20", **kw).eval())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = models[0](x)
    for model in models:
        assert model.placement == Placement("se", {"reduction": 4}, (2, 3), "pre")
        assert list(model.state_dict()) == list(models[0].state_dict())
        with torch.no_grad():
            assert torch.equal(model(x), reference)
    assert len(attention_paths(models[0])) == 6   # 3 blocks in each of stages 2 and 3


def test_create_model_refuses_a_field_given_twice_with_different_values():
    with pytest.raises(ValueError, match=r"attention_stages given twice: \(3,\) as attention_stages= and \(2,\) "
                                         r"in attention=; give it once"):
        attnlab.create_model("resnet20", attention={"name": "se", "stages": [2]}, attention_stages=3)
    with pytest.raises(ValueError, match=r"attention_kwargs given twice"):
        attnlab.create_model("resnet20", attention=Placement("se", {"reduction": 4}), attention_kwargs={"reduction": 8})
    same = attnlab.create_model("resnet20", attention=Placement("se", position="post"), attention_position="post")
    assert same.placement.position == "post"


def test_paper_name_models_fill_what_the_caller_leaves_unset():
    gc = attnlab.create_model("gc_resnet50", attention={"name": "cbam"})
    assert gc.placement.name == "cbam" and gc.placement.stages == (2, 3, 4)
    se = attnlab.create_model("se_resnet20", attention_kwargs={"reduction": 8})
    assert se.placement.name == "se" and se.placement.kwargs == {"reduction": 8}
    assert se.layer1[0].attention.hidden_channels == 2
    assert attnlab.create_model("se_resnet20", attention=Placement(stages=(3,))).placement.stages == (3,)


def test_settings_without_a_mechanism_build_no_attention():
    model = attnlab.create_model("resnet20", attention_stages=(2,), attention_position="post")
    assert attention_paths(model) == [] and model.placement.name is None
    assert all(b.attention_position == "post" for b in model.modules() if isinstance(b, ResidualBlock))


# ----------------------------------------------------------------------------------------- families
def test_family_constructors_take_one_attention_argument():
    classes = {cls for cls in _subclasses(Backbone) if "attention" in inspect.signature(cls.__init__).parameters}
    assert {c.__name__ for c in classes} >= {"ResNet", "VGG", "DenseNet", "Xception", "ShuffleNetV1", "ShuffleNetV2",
                                             "GoogLeNet", "InceptionV3", "NASNetA", "ResidualAttentionNet",
                                             "MnistCNN"}
    for cls in classes:
        params = inspect.signature(cls.__init__).parameters
        assert not {"attention_kwargs", "attention_stages", "attention_position"} & set(params), cls.__name__


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.mark.parametrize("name, family, num_stages, positions", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_binds_the_placement_to_its_stages_and_positions(name, family, num_stages, positions):
    model = attnlab.create_model(name, attention={"name": "se", "kwargs": {"reduction": 2},
                                                  "stages": [num_stages]})
    assert model.placement == Placement("se", {"reduction": 2}, (num_stages,), positions[0])
    assert attention_paths(model)                        # the last stage has its modules
    with pytest.raises(ValueError, match=rf"^{family}: attention_stages \({num_stages + 1},\) invalid; accepted: "
                                         rf"stage numbers 1\.\.{num_stages}$"):
        attnlab.create_model(name, attention={"name": "se", "stages": [num_stages + 1]})
    refused = "identity" if positions == layers.PLAIN_POSITIONS else "inside"
    with pytest.raises(ValueError, match=rf"^{family}: attention_position '{refused}' is not supported; accepted: "
                                         rf"{', '.join(positions)}$"):
        attnlab.create_model(name, attention=Placement("se", position=refused))
