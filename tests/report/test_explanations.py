"""The explanations of a study: one folder of figures per variant, the operators' illustration once
per study (in figures/), and one copy of it in the report for older folders that hold it per variant."""
import json
import re

import pytest

from attnlab.io.study_files import StudyFolder
from attnlab.report import build_report
from attnlab.report.explanations import ILLUSTRATION, OLD_ILLUSTRATION, explanation_section
from attnlab.train import TrainConfig, train

VARIANTS = {"none": {}, "se": {"attention": "se", "attention_kwargs": {"reduction": 2}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of two variants, one seed, one epoch of a width-4 ResNet-8 on the 8x8 digits."""
    root = tmp_path_factory.mktemp("study")
    variants = [{"name": "none", "model": "resnet_cifar", "role": "baseline"},
                {"name": "se", "model": "resnet_cifar", "attention": "se", "role": "attention"}]
    (root / "compare.json").write_text(json.dumps({"preset": "tiny", "baseline": "none", "variants": variants,
                                                   "seeds": [0], "dataset": "digits", "input_shape": [1, 8, 8]}))
    costs = {}
    for name, extra in VARIANTS.items():
        config = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits",
                             image_size=8, epochs=1, batch_size=128, seed=0, device="cpu", num_workers=0,
                             checkpoint_every=0, **extra)
        final = train(config, root / "runs" / name / "seed0")
        costs[name] = {"params": final["params"], "flops": 1000, "latency_b1_s": 0.001}
    (root / "costs.json").write_text(json.dumps(costs))
    build_report(root, explain=True, measure=False)
    return StudyFolder(root)


def test_the_illustration_is_drawn_once_per_study(study):
    assert (study.figures_dir / ILLUSTRATION).stat().st_size > 1000
    assert not list(study.explain_root.rglob(OLD_ILLUSTRATION))
    assert list(study.explain_dir("se").glob("*.png")) and study.explain_summary("none").is_file()
    page = study.report_html.read_text()
    md = study.report_md.read_text()
    assert md.count(f"figures/{ILLUSTRATION}") == 1
    assert len(re.findall(r'<img alt="operators"', page)) == 1


def test_an_older_folder_with_a_copy_per_variant_shows_one(study, tmp_path):
    old = StudyFolder(tmp_path)
    (tmp_path / "compare.json").write_text(study.plan_file.read_text())
    for name in VARIANTS:
        old.explain_dir(name).mkdir(parents=True)
        (old.explain_dir(name) / OLD_ILLUSTRATION).write_bytes((study.figures_dir / ILLUSTRATION).read_bytes())
    lines = explanation_section(old, old.read_plan())
    shown = [line for line in lines if OLD_ILLUSTRATION in line]
    assert shown == [f"![operators](explain/none/{OLD_ILLUSTRATION})"]
