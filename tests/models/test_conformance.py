"""The conformance matrix (docs/conformance.md, written by tools/conformance.py) is what the models
do. Its per-model columns run on every registered model: tests/models/test_all_models.py runs
forward and backward (at the native size), forward_intermediates against forward_features and
feature_info, and the FX trace, and are not repeated here; here, on each registered model built
once, gradient checkpointing against plain training, the torch.export round trip and
features_only against feature_info, each with the page's outcome. The round trip is left to
`python tools/conformance.py` for the models of `SCRIPT_ONLY_EXPORTS` (the suite's time).
Also here: the page covers every model and check and claims only passes, and its costly columns
(ONNX in onnxruntime, torch.compile tracing in training, bf16, and the torch.export program they
start from) are recomputed on one model per family, on one thread, in the small configuration
`CI_MODELS` gives; the page's representative of the family must have the same outcome.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch

import attnlab
from attnlab.deploy.conformance import (CHECK_KEYS, COSTLY, NUM_CLASSES, SCRIPT_ONLY_EXPORTS, check_model,
                                        read_matrix)
from attnlab.models.densenet import DenseNet
from attnlab.models.nasnet import NASNetA

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
TEXT = DOC.read_text()
PAGE = read_matrix(TEXT)
ALL_MODELS = attnlab.list_models()
CLAIMS = ("pass", "n/a")      # what a column may say of a model: it passes, or its family declares it cannot
NOT_RUN = "—"                 # a costly column not run on that model yet (tools/conformance.py --costly runs it)
# The per-model columns that test_all_models.py does not already run on every model.
PER_MODEL_HERE = ("grad_checkpointing", "torch_export", "features_only")


def _representatives() -> dict[str, str]:
    section = TEXT.split("## One model per family", 1)[-1]
    rows = dict(re.findall(r"^\| (\w+) \| (\w+) \|$", section, re.M))
    rows.pop("family", None)                          # the header
    return rows


REPRESENTATIVES = _representatives()


def _registered(name: str, **kwargs):
    return functools.partial(attnlab.create_model, name, num_classes=NUM_CLASSES, **kwargs)


def _round_tripped_per_model(build) -> bool:
    """Whether `build` makes a registered model as registered whose torch.export round trip
    test_per_model_columns_on_every_model already checks."""
    return (isinstance(build, functools.partial) and build.keywords == {"num_classes": NUM_CLASSES}
            and build.args[0] not in SCRIPT_ONLY_EXPORTS)


# The model each family's costly columns run on in CI, and why that configuration. Tracing,
# exporting and translating to ONNX cost time per graph node, not per pixel or parameter, so each
# family's model is built with the fewest blocks its own arguments allow that still hold every
# kind of layer (and of attention) the family has; the full registered models run in
# `python tools/conformance.py --costly`. The input is `model_input`'s (batch 2, every stage's
# map at least 2 x 2).
CI_MODELS = {
    # DenseNet-BC k=12 as densenet_bc100_k12 (bottleneck layers, compression 0.5, CIFAR stem) with
    # 2 layers per dense block instead of 16: the second layer of a block reads the concatenation
    # of the block input and the first layer, in all three blocks and both transitions.
    "densenet": lambda: DenseNet((2, 2, 2), growth_rate=12, num_init_features=24, small_input=True,
                                 num_classes=NUM_CLASSES),
    # googlenet_small as registered: GoogLeNet's nine inception modules are fixed (no argument).
    "inception": _registered("googlenet_small"),
    # nasnet_a_cifar with N = 1 normal cell per stack instead of 6: both cell kinds (normal and the
    # two reductions), every operation and the factorized reduction of h_{i-1} remain.
    "nasnet": lambda: NASNetA(cells_per_stack=1, filters=32, stem_filters=96, small_input=True, drop_rate=0.0,
                              num_classes=NUM_CLASSES),
    # attention56_cifar with its stage-1 attention module only (stages 2 and 3 keep their
    # transition units) and one final unit instead of three: the module that remains has the
    # depth-3 soft mask, so every pooling, up-sampling, skip unit and the (1 + M) * T gating.
    "ran": _registered("attention56_cifar", stage_modules=(1, 0, 0), final_units=1),
    # the 8-layer CIFAR ResNet (one basic block per stage, option-A shortcuts) with SE in every
    # block: the family's attention path and its adaptive pooling, a classic ONNX failure.
    "resnet": _registered("resnet_cifar", depth=8, attention="se"),
    # shufflenet_v2_x0_5 with stage repeats (2, 1, 1) instead of (4, 8, 4): the stride-2 unit
    # opening each stage and, in stage 1, the stride-1 unit with its channel split and shuffle.
    "shufflenet": _registered("shufflenet_v2_x0_5", stage_repeats=(2, 1, 1)),
    # the ST-CNN rather than its plain CNN (the family's smallest): the spatial transformer's grid
    # sampling is what an exporter must carry.
    "stn_cnn": _registered("stn_cnn"),
    # vgg11_bn_cifar as registered: the family's smallest depth.
    "vgg": _registered("vgg11_bn_cifar"),
    # xception as registered: its entry, middle (8 blocks) and exit flows are fixed (no argument).
    "xception": _registered("xception"),
}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_page_covers_every_model_and_check_and_claims_only_passes():
    assert sorted(PAGE) == ALL_MODELS, "docs/conformance.md is stale: run python tools/conformance.py"
    assert all(set(row) == {"family", *CHECK_KEYS} for row in PAGE.values())
    claimed = [(name, key, row[key]) for name, row in PAGE.items() for key in CHECK_KEYS
               if row[key] not in CLAIMS and not (key in COSTLY and row[key] == NOT_RUN)]
    assert not claimed, f"cells that are neither a pass nor a declared n/a: {claimed[:10]}"
    assert set(REPRESENTATIVES) == {row["family"] for row in PAGE.values()}
    assert all(PAGE[name]["family"] == family for family, name in REPRESENTATIVES.items())


def test_every_family_on_the_page_has_a_ci_model():
    assert set(CI_MODELS) == set(REPRESENTATIVES)


def _differences(row, claimed: dict, of: str) -> list[str]:
    return [f"{key}: page says {claimed[key]!r} of {of}, now {outcome.status!r} {outcome.detail}"
            for key, outcome in row.cells.items() if outcome.status != claimed[key]]


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_per_model_columns_on_every_model(name, one_thread):
    keys = tuple(k for k in PER_MODEL_HERE if not (k == "torch_export" and name in SCRIPT_ONLY_EXPORTS))
    row = check_model(name, keys)
    assert not _differences(row, PAGE[name], name)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CI_MODELS))
def test_costly_columns_on_one_model_per_family(family, one_thread):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    build = CI_MODELS[family]
    # the ONNX check translates the torch.export program either way; its round trip is checked once
    keys = COSTLY if _round_tripped_per_model(build) else ("torch_export", *COSTLY)
    row = check_model(f"{family} (CI configuration)", keys, model=build())
    assert row.family == family
    assert not _differences(row, PAGE[REPRESENTATIVES[family]], REPRESENTATIVES[family])
