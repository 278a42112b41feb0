"""`attnlab compare`: presets, the plan it validates before work, and a tiny real compare
(2 variants + the width-matched baseline, 2 seeds, 1 epoch on digits) ending in the report."""
import csv
import json

import pytest
import torch

from attnlab import study
from attnlab.io.study_files import StudyFolder
from attnlab.study import presets
from attnlab.study.variants import build_variant

TINY = """
description: tiny test study
dataset: digits
image_size: 8
model: resnet_cifar
model_kwargs: {depth: 8, width: 4}
seeds: [0, 1]
variants: [none, {name: gc, attention_kwargs: {reduction: 0.5}}]   # GC with 2C hidden units: +1 width step
train: {epochs: 1, batch_size: 128, lr: 0.05, warmup_epochs: 0, channels_last: false}
capacity: {match: gc, kwarg: width}
cost: {large_batch: 8, train_batch: 8, repeats: 1, warmup: 0}
explain: false   # the figures have their own tests (tests/explain); this keeps the test fast
workers: 1
"""


def test_shipped_presets_plan_without_error():
    assert {"quick", "fashion-mnist", "stn-rts", "cifar10-se"} <= set(study.list_presets())
    quick = study.plan_compare()  # no argument = the quick preset
    assert quick.preset == "quick" and len(quick.seeds) >= 3 and quick.dataset == "digits-rts"
    names = [v.name for v in quick.variants]
    assert names[:4] == ["none", "se", "non_local", "stn"]
    roles = {v.name: v.role for v in quick.variants}
    assert roles["none"] == "baseline" and roles[names[-1]] == "capacity"
    stn = quick.variants[3]
    assert stn.attention is None and stn.model_kwargs["spatial_transformer"] is True
    nl = quick.variants[2]
    assert nl.attention is None and nl.model_kwargs["nonlocal_stages"] == [2, 3]
    cifar = study.load_preset("cifar10-se")
    assert cifar["train"]["milestones"] == [82, 123] and cifar["train"]["weight_decay"] == 1.0e-4


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="unknown preset 'nope'; accepted: .*quick"):
        study.load_preset("nope")
    with pytest.raises(ValueError, match="seeds"):
        study.plan_compare(seeds=[-1])
    with pytest.raises(ValueError, match="epochs"):
        study.plan_compare(epochs=-2)
    with pytest.raises(ValueError, match="unknown attention"):
        study.plan_compare(attentions=["sse"])
    # cnn_mnist needs 24 px or more; the quick preset's distorted digits are 10 px
    with pytest.raises(ValueError, match="cannot run on digits-rts at \\(1, 10, 10\\)"):
        study.plan_compare(models=["cnn_mnist"], attentions=["none"])


def test_match_width_picks_the_closest_parameter_count():
    info = {"num_classes": 10, "in_chans": 1}
    base = study.make_variant("none", "resnet_cifar", {"depth": 8, "width": 8})
    params = {w: sum(p.numel() for p in build_variant(base, info, width=w).parameters()) for w in (8, 9, 10)}
    target = (params[9] + params[10]) // 2 + 1  # just nearer to width 10
    assert study.match_width(base, target, info) == (10, params[10])
    assert study.match_width(base, params[8], info) == (8, params[8])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    preset_dir = tmp_path_factory.mktemp("presets")
    (preset_dir / "tiny.yaml").write_text(TINY)
    old_dir, old_threads = presets.PRESET_DIR, torch.get_num_threads()
    presets.PRESET_DIR = preset_dir
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("runs")
        first = study.run_compare("tiny", out_root=out, progress=False)
        second_plan = study.plan_compare("tiny")
    finally:
        presets.PRESET_DIR = old_dir
        torch.set_num_threads(old_threads)
    return first, second_plan


def test_tiny_compare_writes_runs_costs_explanations_and_report(tiny_run):
    run_dir, _ = tiny_run
    plan = json.loads((run_dir / "compare.json").read_text())
    names = [v["name"] for v in plan["variants"]]
    assert names == ["none", "gc", "none-width5"]
    for name in names:
        for seed in (0, 1):
            final = json.loads((run_dir / "runs" / name / f"seed{seed}" / "final.json").read_text())
            assert 0.0 <= final["test_acc"] <= 1.0 and final["epochs"] == 1
    costs = json.loads((run_dir / "costs.json").read_text())
    assert costs["gc"]["params"] > costs["none"]["params"]
    assert costs["gc"]["flops"] > costs["none"]["flops"]
    # the capacity baseline is the widened baseline closest in parameters to GC
    cap = plan["variants"][2]["capacity"]
    assert cap["target_params"] == costs["gc"]["params"] and cap["params"] == costs[names[2]]["params"]
    assert cap["value"] == 5 and cap["multiplier"] == pytest.approx(1.25)
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == names
    accs = [json.loads((run_dir / "runs" / "gc" / f"seed{s}" / "final.json").read_text())["test_acc"] for s in (0, 1)]
    assert float(rows[1]["acc_mean"]) == pytest.approx(sum(accs) / 2)
    page = (run_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "3. Capacity control" in page
    assert "gc vs none-width5" in (run_dir / "report.md").read_text()


def test_each_compare_gets_a_new_folder(tiny_run, tmp_path):
    a = StudyFolder.create(tmp_path, "x").root
    b = StudyFolder.create(tmp_path, "x").root
    assert a != b and a.is_dir() and b.is_dir()


def test_the_study_resolves_auto_precision_once_and_says_why(tiny_run):
    import yaml

    run_dir, _ = tiny_run
    plan = json.loads((run_dir / "compare.json").read_text())
    chosen = plan["train"]["precision"]
    assert chosen in ("fp32", "bf16", "fp16") and plan["precision_reason"].startswith("auto:")
    for name in ("none", "gc"):
        config = yaml.safe_load((run_dir / "runs" / name / "seed0" / "config.yaml").read_text())
        assert config["precision"] == chosen
    assert f"{plan['precision_reason']} (resolved once for the study)" in (run_dir / "report.md").read_text()


def test_explicit_precision_and_compile_override_the_preset():
    plan = study.plan_compare(precision="bf16", compile=False)
    assert plan.train["precision"] == "bf16" and plan.train["compile"] is False and plan.precision_reason is None
    with pytest.raises(ValueError, match="precision"):
        study.plan_compare(precision="fp8")
