"""The conformance matrix (docs/conformance.md, written by tools/conformance.py) is what the models
do. Its cheap columns run on every registered model elsewhere in the suite, and are not repeated
here: tests/models/test_all_models.py runs forward and backward (at the native size),
forward_intermediates against forward_features and feature_info, and the FX trace on every model;
tests/models/test_features.py runs features_only and grad checkpointing per family
(`python tools/conformance.py --check` recomputes every cheap cell of the page, about 4 CPU-minutes).
Here: the page covers every model and check and claims only passes, and its costly columns
(torch.export, ONNX in onnxruntime, torch.compile tracing in training, bf16) are recomputed on the
one model per family that the page names, on one thread.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import attnlab
from attnlab.deploy.conformance import CHECK_KEYS, COSTLY, check_model, read_matrix

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
TEXT = DOC.read_text()
PAGE = read_matrix(TEXT)
ALL_MODELS = attnlab.list_models()
CLAIMS = ("pass", "n/a")      # what a column may say of a model: it passes, or its family declares it cannot
NOT_RUN = "—"                 # a costly column not run on that model yet (tools/conformance.py --costly runs it)


def _representatives() -> dict[str, str]:
    section = TEXT.split("## One model per family", 1)[-1]
    rows = dict(re.findall(r"^\| (\w+) \| (\w+) \|$", section, re.M))
    rows.pop("family", None)                          # the header
    return rows


REPRESENTATIVES = _representatives()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _differences(name: str, row) -> list[str]:
    return [f"{name} {key}: page {PAGE[name][key]!r}, now {outcome.status!r} {outcome.detail}"
            for key, outcome in row.cells.items() if outcome.status != PAGE[name][key]]


def test_the_page_covers_every_model_and_check_and_claims_only_passes():
    assert sorted(PAGE) == ALL_MODELS, "docs/conformance.md is stale: run python tools/conformance.py"
    assert all(set(row) == {"family", *CHECK_KEYS} for row in PAGE.values())
    claimed = [(name, key, row[key]) for name, row in PAGE.items() for key in CHECK_KEYS
               if row[key] not in CLAIMS and not (key in COSTLY and row[key] == NOT_RUN)]
    assert not claimed, f"cells that are neither a pass nor a declared n/a: {claimed[:10]}"
    assert set(REPRESENTATIVES) == {row["family"] for row in PAGE.values()}
    assert all(PAGE[name]["family"] == family for family, name in REPRESENTATIVES.items())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRESENTATIVES.values()))
def test_costly_columns_on_one_model_per_family(name, one_thread):
    pytest.importorskip("onnxruntime")
    row = check_model(name, COSTLY)
    assert not _differences(name, row)
