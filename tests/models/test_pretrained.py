"""models/pretrained.py: reading weight files (.pth weights_only, .safetensors, attnlab checkpoints),
source detection, the load report, the errors, and the identity initialisation of new attention."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

import attnlab
from attnlab.models.pretrained import load_pretrained, read_state_dict

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def base(tmp_path_factory, randomise_norms_fn):
    """A ResNet-18 (ImageNet layout, run at 32 px) saved with torchvision's key names."""
    torch.manual_seed(0)
    model = randomise_norms_fn(attnlab.create_model("resnet18", num_classes=5)).eval()
    state = {("fc." + k[len("head.fc."):] if k.startswith("head.fc.") else k): v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    with torch.no_grad():
        logits = model(X)
    return model, path, logits


def test_torchvision_keys_are_detected_and_loaded(base):
    _, path, logits = base
    model = attnlab.create_model("resnet18", num_classes=5, pretrained=str(path)).eval()
    report = model.pretrained_report
    assert report["source"] == "torchvision"
    assert report["new"] == [] and report["unexpected"] == [] and report["classifier_reset"] == []
    assert len(report["loaded"]) == len(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(X), logits, rtol=0, atol=0)


def test_wrappers_and_prefixes_are_removed(base, tmp_path):
    _, path, logits = base
    state = torch.load(path, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, wrapped)
    model = attnlab.create_model("resnet18", num_classes=5, pretrained=str(wrapped)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), logits, rtol=0, atol=0)


def test_attnlab_checkpoint_folder_and_file(base, tmp_path):
    from attnlab.io.checkpoint import save_checkpoint

    trained, _, logits = base
    json_path = save_checkpoint(tmp_path / "run" / "checkpoints", 7, {"epoch": 1}, trained.state_dict())
    for target in (tmp_path / "run", json_path.with_suffix(".safetensors")):
        model = attnlab.create_model("resnet18", num_classes=5, pretrained=str(target)).eval()
        assert model.pretrained_report["source"] == "attnlab"
        with torch.no_grad():
            torch.testing.assert_close(model(X), logits, rtol=0, atol=0)
    # a bare .safetensors holding the model state under "model." (no JSON record beside it)
    bare = tmp_path / "bare.safetensors"
    save_file({"model." + k: v.contiguous() for k, v in trained.state_dict().items()} | {"optim.x": torch.ones(1)},
              str(bare))
    state = read_state_dict(bare)
    assert set(state) == set(trained.state_dict())


def test_shufflenet_v2_checkpoint_with_the_old_nested_branch_keys_loads(tmp_path, randomise_norms_fn,
                                                                        shufflenet_v2_old_keys):
    # Until the unit branches became flat Sequentials, attnlab saved them as nested conv-norm-act
    # blocks: branch2.0.conv.weight for today's branch2.0.weight, branch2.1.bn for branch2.4, ...
    torch.manual_seed(0)
    model = randomise_norms_fn(attnlab.create_model("shufflenet_v2_x0_5_small", num_classes=4)).eval()
    old = shufflenet_v2_old_keys(model.state_dict())
    assert "stage2.0.branch2.1.conv.weight" in old and "stage2.0.branch2.3.weight" not in old
    path = tmp_path / "old.pth"
    torch.save(old, path)
    loaded = attnlab.create_model("shufflenet_v2_x0_5_small", num_classes=4, pretrained=str(path)).eval()
    assert loaded.pretrained_report["source"] == "attnlab" and loaded.pretrained_report["new"] == []
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), rtol=0, atol=0)


def test_classifier_of_another_size_is_reset_and_reported(base):
    _, path, _ = base
    model = attnlab.create_model("resnet18", num_classes=7, pretrained=str(path))
    assert model.pretrained_report["classifier_reset"] == ["head.fc.weight", "head.fc.bias"]


def test_missing_or_mismatched_backbone_keys_raise(base, tmp_path):
    _, path, _ = base
    state = torch.load(path, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, partial)
    with pytest.raises(ValueError, match=r"missing from the file \(layer1\.0\.conv1\.weight"):
        attnlab.create_model("resnet18", num_classes=5, pretrained=str(partial))
    mismatch = r"shape mismatches \(conv1\.weight: file \(64, 3, 7, 7\) vs model \(64, 1, 7, 7\)"
    with pytest.raises(ValueError, match=mismatch):
        attnlab.create_model("resnet18", num_classes=5, in_chans=1, pretrained=str(path))
    # A tensor the model lacks is refused by default; pretrained_strict=False loads the rest and reports it.
    extra = tmp_path / "extra.pth"
    torch.save(state | {"aux.weight": torch.ones(2)}, extra)
    with pytest.raises(ValueError, match=r"has 1 tensors that resnet18 lacks, in 1 module\(s\) \(aux\).*pretrained_strict=False"):
        attnlab.create_model("resnet18", num_classes=5, pretrained=str(extra))
    model = attnlab.create_model("resnet18", num_classes=5, pretrained=str(extra), pretrained_strict=False)
    assert model.pretrained_report["unexpected"] == ["aux.weight"]


@pytest.mark.parametrize("deeper,model_name", [("resnet32", "resnet20"), ("resnet34", "resnet18")])
def test_weights_of_a_deeper_model_of_the_family_are_refused(tmp_path, deeper, model_name):
    # Every stage of the shallower model matches by name and shape; only the extra blocks are left over.
    torch.manual_seed(0)
    path = tmp_path / f"{deeper}.safetensors"
    save_file({k: v.contiguous() for k, v in attnlab.create_model(deeper).state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=rf"has \d+ tensors that {model_name} lacks, in \d+ module\(s\) \(layer1\.\d\.bn1, "):
        attnlab.create_model(model_name, pretrained=str(path))
    model = attnlab.create_model(model_name, pretrained=str(path), pretrained_strict=False)
    report = model.pretrained_report
    assert report["unexpected"] and all(k.split(".")[1] not in ("0", "1") for k in report["unexpected"])
    assert len(report["loaded"]) == len(model.state_dict())
    with pytest.raises(TypeError, match="pretrained_strict must be True or False"):
        attnlab.create_model(model_name, pretrained=str(path), pretrained_strict="no")


def test_strict_keeps_attention_keys_new_and_the_file_head_reportable(base, tmp_path):
    # Attention the file lacks stays new (strict is about the file's extra tensors); a file's head
    # of another layout (ImageNet VGG into the small-input VGG) or a model without a classifier
    # still loads, the head being reported.
    _, path, _ = base
    model = attnlab.create_model("resnet18", num_classes=5, attention="se", pretrained=str(path))
    assert model.pretrained_report["new"] and model.pretrained_report["unexpected"] == []
    headless = attnlab.create_model("resnet18", num_classes=0, pretrained=str(path))
    assert headless.pretrained_report["unexpected"] == ["head.fc.bias", "head.fc.weight"]
    vgg = tmp_path / "vgg11_bn.pth"
    torch.save(attnlab.create_model("vgg11_bn").state_dict(), vgg)
    report = attnlab.create_model("vgg11_bn_cifar", pretrained=str(vgg)).pretrained_report
    assert report["classifier_reset"] == ["head.fc.weight", "head.fc.bias"]
    assert {k.rsplit(".", 1)[0] for k in report["unexpected"]} == {"head.classifier.0", "head.classifier.3",
                                                                   "head.classifier.6"}
    # An attnlab run with attention into a plain model: the attention tensors are extra.
    attended = tmp_path / "se.pth"
    torch.save(attnlab.create_model("resnet20", attention="se").state_dict(), attended)
    with pytest.raises(ValueError, match="tensors that resnet20 lacks, .*attention"):
        attnlab.create_model("resnet20", pretrained=str(attended))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_empty_or_truncated_weight_files_are_one_value_error(base, tmp_path, suffix):
    trained, _, _ = base
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".pth":
        torch.save(trained.state_dict(), whole)
    else:
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(whole))
    blob = whole.read_bytes()
    for name, data in [("empty", b""), ("half", blob[:len(blob) // 2]), ("tail cut", blob[:-16]),
                       ("header only", blob[:64])]:
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        with pytest.raises(ValueError) as err:
            attnlab.create_model("resnet18", num_classes=5, pretrained=str(path))
        message = str(err.value)
        assert str(path) in message and "\n" not in message, (name, message)
        assert ("empty" in message) if not data else ("truncated" in message or "not a readable" in message), message


class NotAWeight:
    pass


def test_files_with_code_or_unknown_format_are_refused(tmp_path):
    pickled = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.ones(1), "payload": NotAWeight()}, pickled)
    model = attnlab.create_model("resnet20")
    with pytest.raises(ValueError, match="weights_only"):
        load_pretrained(model, pickled)
    (tmp_path / "w.h5").write_bytes(b"\0")
    with pytest.raises(ValueError, match="unknown format '.h5'"):
        load_pretrained(model, tmp_path / "w.h5")
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(model, tmp_path / "none.pth")
    with pytest.raises(ValueError, match="source must be one of"):
        load_pretrained(model, pickled, source="keras")
    with pytest.raises(TypeError, match="str or os.PathLike"):
        load_pretrained(model, 3)


# Identity init: exact (logits equal the pretrained network's) for these types at these positions.
EXACT = [("se", "standard"), ("eca", "standard"), ("cbam", "standard"), ("gc", "standard"),
         ("non_local", "standard"), ("gc", "pre")]


@pytest.mark.parametrize("attention,position", EXACT, ids=[f"{a}-{p}" for a, p in EXACT])
def test_new_attention_starts_as_identity(base, attention, position):
    _, path, logits = base
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exact init must not warn
        model = attnlab.create_model("resnet18", num_classes=5, attention=attention, attention_position=position,
                                     pretrained=str(path)).eval()
    report = model.pretrained_report
    assert report["new"] and all(".attention." in k for k in report["new"])
    assert len(report["identity_init"]["exact"]) == 8 and report["identity_init"]["approximate"] == []
    with torch.no_grad():
        torch.testing.assert_close(model(X), logits, rtol=1e-6, atol=1e-6)


def test_identity_init_is_exact_in_training_mode_too(base):
    pretrained, path, _ = base
    model = attnlab.create_model("resnet18", num_classes=5, attention="se", pretrained=str(path))
    reference = attnlab.create_model("resnet18", num_classes=5, pretrained=str(path))
    model.train(), reference.train()
    with torch.no_grad():
        torch.testing.assert_close(model(X), reference(X), rtol=1e-6, atol=1e-6)


def test_gates_without_a_norm_to_fold_into_are_reported_approximate(base):
    _, path, _ = base
    with pytest.warns(UserWarning, match="cannot start as an exact identity"):
        model = attnlab.create_model("resnet18", num_classes=5, attention="se", attention_position="identity",
                                     pretrained=str(path))
    init = model.pretrained_report["identity_init"]
    # Projection shortcuts (first block of stages 2-4) have a BN to fold into; identity ones do not.
    assert init["exact"] == ["layer2.0.attention", "layer3.0.attention", "layer4.0.attention"]
    assert len(init["approximate"]) == 5


def test_vgg_gates_fold_through_relu(tmp_path, randomise_norms_fn):
    torch.manual_seed(0)
    plain = randomise_norms_fn(attnlab.create_model("vgg11_bn_cifar")).eval()
    path = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    model = attnlab.create_model("vgg11_bn_cifar", attention="se", pretrained=str(path)).eval()
    assert len(model.pretrained_report["identity_init"]["exact"]) == 5
    with torch.no_grad():
        torch.testing.assert_close(model(X), plain(X), rtol=1e-6, atol=1e-6)
