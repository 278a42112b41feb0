"""`attnlab compare` reports every phase, not only training: a line when training, the cost
measurement and the explanations start, then one line per run / variant with the phase's
elapsed time, its ETA and what comes after; the lines go to the function the caller gives."""
import re

import pytest
import torch

from attnlab import study
from attnlab.study import presets as study_presets

TINY = """
description: tiny progress study
dataset: digits
image_size: 8
model: resnet_cifar
model_kwargs: {depth: 8, width: 4}
seeds: [0]
variants: [none, {name: se, attention_kwargs: {reduction: 2}}]
train: {epochs: 1, batch_size: 256, lr: 0.05, warmup_epochs: 0, channels_last: false}
cost: {large_batch: 4, train_batch: 4, repeats: 1, warmup: 0}
explain: true
workers: 1
"""


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "tiny.yaml").write_text(TINY)
    monkeypatch.setattr(study_presets, "PRESET_DIR", presets)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "runs"
    torch.set_num_threads(threads)


def test_every_phase_announced_with_per_item_progress_and_eta(tiny_preset, capsys):
    lines = []
    run_dir = study.run_compare("tiny", out_root=tiny_preset, progress=lines.append)
    text = "\n".join(lines)
    phases = ["training 2 runs ...", "measuring cost of 2 variants", "explaining 2 variants", "writing the report ..."]
    where = [next(i for i, line in enumerate(lines) if line.startswith(p)) for p in phases]
    assert where == sorted(where), text                         # in the order they run
    for phase, item in (("training", "none seed 0: test acc"), ("cost", "se: "), ("explain", "none: ")):
        first = next(line for line in lines if line.startswith(f"{phase} [1/2]"))
        assert item.split(":")[0] in first and re.search(r"\(elapsed \d+ s, ETA " + phase + r" \d+", first), first
        last = next(line for line in lines if line.startswith(f"{phase} [2/2]"))
        assert f"{phase} done" in last, last
    # training announces the phases after it; cost announces the explanations
    assert "then cost and explanations of 2 variants" in next(line for line in lines if line.startswith("training [1/2]"))
    assert "then explanations of 2 variants" in next(line for line in lines if line.startswith("cost [1/2]"))
    assert lines[-1].startswith("report: ") and str(run_dir) in lines[-1]
    # the in-process Trainer still writes its epoch lines to stderr; compare's own lines went to the function
    err = capsys.readouterr().err
    assert "training [1/2]" not in err and "epoch 1/1:" in err
