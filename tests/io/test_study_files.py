"""The study's run folder, declared once: where each file lives, the typed plan in compare.json
(round trip, defaults for fields older files lack, named errors), and a checkpoint reader that
checks a run's config only through the caller's validator."""
from __future__ import annotations

import json

import pytest
import torch

from attnlab.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from attnlab.io.study_files import StudyFolder, StudyPlan, Variant


def test_the_layout(tmp_path):
    folder = StudyFolder(tmp_path)
    assert folder.plan_file == tmp_path / "compare.json" and folder.costs_file == tmp_path / "costs.json"
    assert folder.seed_dir("se", 3) == tmp_path / "runs" / "se" / "seed3"
    assert folder.explain_dir("se") == tmp_path / "explain" / "se"
    assert folder.explain_summary("se") == tmp_path / "explain" / "se" / "summary.json"
    assert folder.figures_dir == tmp_path / "figures" and folder.report_html == tmp_path / "report.html"
    assert (folder.results_csv.name, folder.results_json.name, folder.report_md.name) == (
        "results.csv", "results.json", "report.md")
    for seed in (10, 2):
        folder.seed_dir("se", seed).mkdir(parents=True)
        (folder.seed_dir("se", seed) / "final.json").write_text("{}")
    folder.seed_dir("se", 4).mkdir()                     # unfinished: no final.json
    (folder.variant_dir("se") / "notes").mkdir()          # not a seed folder
    assert folder.finished_runs("se") == [(10, folder.seed_dir("se", 10)), (2, folder.seed_dir("se", 2))]
    assert folder.finished_runs("none") == [] and folder.variants_on_disk() == ["se"]


def test_a_new_folder_is_never_reused(tmp_path):
    a, b = StudyFolder.create(tmp_path, "quick"), StudyFolder.create(tmp_path, "quick")
    assert a.root != b.root and a.root.name.startswith("quick-") and b.root.name.endswith("-2")


def test_plan_round_trip_and_defaults(tmp_path):
    plan = StudyPlan(preset="p", dataset="digits", seeds=[0, 1], baseline="none",
                     variants=[Variant("none", model="m", role="baseline"),
                               Variant("none-width5", model="m", role="capacity", matches="se",
                                       capacity={"kwarg": "width", "value": 5})],
                     train={"channels_last": False}, cost={"repeats": 2, "other": 1}, input_shape=[1, 8, 8])
    folder = StudyFolder(tmp_path)
    folder.write_plan(plan)
    data = json.loads(folder.plan_file.read_text())
    assert "notes" not in data and "started" not in data               # written once the study runs
    assert "baseline" not in data["variants"][0] and data["variants"][1]["matches"] == "se"
    back = folder.read_plan()
    assert back == plan and back.to_json() == plan.to_json()
    assert not back.trains_channels_last and back.cost_settings == {"repeats": 2}
    assert back.variant("none-width5").capacity["value"] == 5
    with pytest.raises(KeyError, match="no variant 'x'"):
        back.variant("x")
    # the smallest compare.json the report accepts: defaults for the rest
    old = StudyPlan.from_dict({"variants": [{"name": "a"}, {"name": "b", "attention_kwargs": None}]})
    assert old.baseline == "a" and old.variants[1].role == "attention" and old.variants[1].attention_kwargs == {}
    assert old.trains_channels_last and old.runs() == [] and old.notes is None


def test_a_folder_without_compare_json_infers_its_plan(tmp_path):
    folder = StudyFolder(tmp_path)
    with pytest.raises(ValueError, match="not a compare run folder"):
        folder.read_plan()
    for name in ("se", "none", "cbam"):
        folder.variant_dir(name).mkdir(parents=True)
    plan = folder.read_plan()
    assert [v.name for v in plan.variants] == ["none", "cbam", "se"] and plan.baseline == "none"
    assert [v.role for v in plan.variants] == ["baseline", "attention", "attention"]


@pytest.mark.parametrize("data,words", [
    ({"variants": []}, "'variants' is []"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant names ['a', 'a'] repeat"),
    ({"variants": [{"name": "a", "role": 3}]}, "variant 'a' has role 3; expected a string"),
    ({"variants": [{"role": "baseline"}]}, "variant name None is not a safe folder name"),
    ({"variants": ["a"]}, "variant 'a' is not an object with a 'name'"),
    ({"variants": [{"name": "a"}], "baseline": "b"}, "baseline 'b' is not among the variants ['a']"),
    ({"variants": [{"name": "a", "baseline": "z"}]}, "baseline 'z' is not among"),
    ({"variants": [{"name": "a"}], "notes": "x"}, "'notes' is 'x'; expected a list of strings"),
    ({"variants": [{"name": "a"}], "train": [1]}, "'train' is [1]; expected an object"),
    ({"variants": [{"name": "a"}], "input_shape": 8}, "'input_shape' is 8; expected a list [C, H, W]"),
], ids=lambda x: str(x)[:40])
def test_a_plan_of_the_wrong_shape_is_named(data, words):
    with pytest.raises(ValueError) as err:
        StudyPlan.from_dict(data, "runs/x/compare.json")
    assert str(err.value).startswith("runs/x/compare.json: ") and words in str(err.value), str(err.value)


def test_the_run_config_is_checked_by_the_callers_validator(tmp_path):
    state = {"config": {"model": "resnet20", "epochs": "ten"}, "data": {"num_classes": 10, "in_chans": 1}}
    path = save_checkpoint(tmp_path, 1, state, {"w": torch.zeros(2)})
    assert load_checkpoint(path, needs="run").state["config"]["epochs"] == "ten"   # the file itself is sound

    def check(config):
        if not isinstance(config["epochs"], int):
            raise TypeError(f"epochs = {config['epochs']!r} has the wrong type")

    with pytest.raises(CheckpointError, match="field state.config: epochs = 'ten' has the wrong type"):
        load_checkpoint(path, needs="run", check_config=check)
    load_checkpoint(path, check_config=check)   # 'tensors' reads no config
    from attnlab.train import load_checkpoint as load_run_checkpoint

    with pytest.raises(CheckpointError, match=f"checkpoint {path}: field state.config: "):
        load_run_checkpoint(path, needs="run")  # a training run's reader checks it as a TrainConfig
