"""A run folder written by an earlier attnlab (compare.json as `attnlab compare` wrote it before the
plan became a `StudyPlan`) still rebuilds: the plan reads back to the same JSON, the report is
made from it, and compare.json is left untouched."""
import json

import pytest

from attnlab.io.study_files import StudyFolder, StudyPlan
from attnlab.report import build_report

# compare.json of `attnlab compare --attentions none se --seeds 0 1 --epochs 1`, as the earlier
# code wrote it (json.dumps(plan, indent=2)); the description is shortened.
OLD_COMPARE_JSON = """{
  "preset": "custom",
  "description": "What attention buys a small ResNet on the embedded 8x8 digits.",
  "dataset": "digits",
  "data_dir": null,
  "image_size": 16,
  "seeds": [
    0,
    1
  ],
  "baseline": "none",
  "variants": [
    {
      "name": "none",
      "model": "resnet_cifar",
      "attention": null,
      "attention_kwargs": {},
      "attention_stages": null,
      "attention_position": null,
      "model_kwargs": {
        "depth": 8,
        "width": 16
      },
      "role": "baseline"
    },
    {
      "name": "se",
      "model": "resnet_cifar",
      "attention": "se",
      "attention_kwargs": {},
      "attention_stages": null,
      "attention_position": null,
      "model_kwargs": {
        "depth": 8,
        "width": 16
      },
      "role": "attention"
    }
  ],
  "train": {
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.05,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "checkpoint_every": 0,
    "keep_checkpoints": 1
  },
  "capacity": {
    "match": "largest",
    "kwarg": "width"
  },
  "cost": {
    "large_batch": 64,
    "train_batch": 64,
    "repeats": 5,
    "warmup": 2
  },
  "explain": true,
  "workers": 2,
  "input_shape": [
    1,
    16,
    16
  ],
  "num_classes": 10,
  "notes": [
    "capacity control: se adds fewer parameters than one step of width (16 -> 17); the baseline itself is the closest match, so no wider baseline was trained"
  ],
  "started": "2026-11-29T16:09:18+00:00",
  "ranks": 1,
  "finished": "2026-11-29T16:10:47+00:00",
  "seconds": {
    "train": 42.0,
    "cost": 17.7,
    "explain": 29.2,
    "report": 3.2,
    "total": 92.0
  }
}"""
ACCS = {"none": {0: 0.21, 1: 0.25}, "se": {0: 0.20, 1: 0.27}}
COSTS = {"none": {"params": 75002, "memory_format": "channels_last", "flops": 5973248, "latency_b1_s": 0.0016},
         "se": {"params": 75793, "memory_format": "channels_last", "flops": 5974592, "latency_b1_s": 0.0036,
                "matched_width": 1.0, "matched_width_params": 75002}}


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom-20261129-160918")
    (root / "compare.json").write_text(OLD_COMPARE_JSON)
    (root / "costs.json").write_text(json.dumps(COSTS, indent=2))
    for name, per_seed in ACCS.items():
        for seed, acc in per_seed.items():
            run = root / "runs" / name / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "final.json").write_text(json.dumps({"model": "resnet_cifar", "seed": seed, "epochs": 1,
                                                        "test_acc": acc, "test_loss": 2.1, "seconds": 4.7}))
            (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 22, "train_loss": 2.2,
                                                           "train_acc": acc - 0.03, "test_acc": acc}) + "\n")
    build_report(root, explain=False, measure=False)
    return root


def test_the_old_plan_reads_back_to_the_same_json():
    plan = StudyPlan.from_dict(json.loads(OLD_COMPARE_JSON))
    assert [v.name for v in plan.variants] == ["none", "se"] and plan.baseline_variant.role == "baseline"
    assert plan.seeds == [0, 1] and plan.input_shape == [1, 16, 16] and plan.seconds["total"] == 92.0
    assert plan.trains_channels_last and plan.cost_settings == {"large_batch": 64, "train_batch": 64,
                                                                "repeats": 5, "warmup": 2}
    assert plan.to_json() == OLD_COMPARE_JSON


def test_the_report_rebuilds_and_leaves_compare_json_alone(old_run):
    folder = StudyFolder(old_run)
    assert folder.plan_file.read_text() == OLD_COMPARE_JSON
    for path in (folder.results_csv, folder.results_json, folder.report_md, folder.report_html):
        assert path.stat().st_size > 0, path
    rows = {r["variant"]: r for r in json.loads(folder.results_json.read_text())["variants"]}
    assert rows["none"]["role"] == "baseline" and rows["se"]["attention"] == "se"
    assert rows["se"]["acc_mean"] == pytest.approx(0.235) and rows["se"]["diff_mean"] == pytest.approx(0.005)
    assert rows["se"]["params_ratio"] == pytest.approx(75793 / 75002) and rows["se"]["matched_width"] == 1.0
    md = folder.report_md.read_text()
    assert ("the compare took 92 s of wall time (train 42 s, cost 18 s, explain 29 s, report 3 s) with 2 worker "
            "process(es).") in md
    assert "- **Data**: digits at 16x16 pixels (compare.json's input shape), 10 classes;" in md
    assert "- **Seeds**: 0, 1;" in md and "learning rate 0.05;" in md and "epochs 1; batch 64;" in md
    assert "- capacity control: se adds fewer parameters than one step of width (16 -> 17)" in md
    assert "timed in the channels_last memory format" in md


def test_what_the_old_runs_did_not_record_is_said(old_run):
    md = StudyFolder(old_run).report_md.read_text()
    top = md.split("## 1. Effect")[0]
    assert top.index("## Headline") < top.index("## Setup")
    assert "No per-example test: test_predictions.json not recorded" in top
    assert "precision not recorded; torch.compile not recorded" in top
    assert "training-set size not recorded; test-set size not recorded" in top
    assert "The repeats behind each timing were not recorded in costs.json" in md
    assert "It costs 1.01x the parameters, 1.00x the FLOPs and 2.25x the batch-1 latency of its baseline." in top


def test_the_cli_rebuilds_it_too(old_run, capsys):
    from attnlab.cli import main

    assert main(["report", str(old_run)]) == 0
    assert capsys.readouterr().out.strip() == str(StudyFolder(old_run).report_html)
