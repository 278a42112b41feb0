"""A study folder damaged or hand-edited after `attnlab compare` wrote it: `attnlab report` and
`attnlab compare --resume` name the bad file or value in one line (exit 2) before any work and
write nothing; a variant name that is not a safe folder name is refused wherever a plan is made or
read back; a study whose runs have not all finished yet is reported as partial.

One small study is fabricated once (its files written directly, nothing trained); each case damages
a copy of it."""
import json
import shutil

import pytest
from test_report import ACCS, _cost, make_run_folder

from attnlab.cli import main
from attnlab.io.study_files import StudyFolder, StudyPlan, Variant
from attnlab.report import build_report
from attnlab.study.resume import run_state
from attnlab.study.variants import make_variant, variants_from_lists

BAD_NAMES = ["../../evil", "..", ".hidden", "", "a/b", "a\\b", "se x", "se\n", "x" * 101, 5, "_se_", "-se", "+se"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    variants = [{"name": "none", "model": "m", "attention": None, "role": "baseline"},
                {"name": "se", "model": "m", "attention": "se", "role": "attention"}]
    costs = {"none": _cost(1000, 20000, 0.001), "se": _cost(1100, 20100, 0.0015)}
    return make_run_folder(tmp_path_factory.mktemp("study"), {n: ACCS[n] for n in ("none", "se")}, costs, variants,
                           explain=False, plan_extra={"num_classes": 10})


@pytest.fixture
def copy(study, tmp_path):
    return shutil.copytree(study, tmp_path / "study")


def _snapshot(root):
    """Every path under `root`'s parent (so that a write next to the study shows too) with its bytes."""
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(root.parent.rglob("*"))}


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _plan(change):
    return lambda root: _edit_json(root / "compare.json", change)


def _final(change, seed=0):
    return lambda root: _edit_json(root / "runs" / "se" / f"seed{seed}" / "final.json", change)


def _write(rel, text):
    return lambda root: (root / rel).write_text(text)


def _replace_with_file(rel):
    return lambda root: (shutil.rmtree(root / rel), (root / rel).write_text("x"))


def _replace_with_folder(rel):
    return lambda root: ((root / rel).unlink(), (root / rel).mkdir())


def _extra_seed(root):
    shutil.copytree(root / "runs" / "se" / "seed0", root / "runs" / "se" / "seed7")


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


DAMAGE = {  # case: (damage, a fragment the one line must hold)
    "name ../../evil": (_plan(lambda d: d["variants"][1].__setitem__("name", "../../evil")), "'../../evil'"),
    "name .hidden": (_plan(lambda d: d["variants"][1].__setitem__("name", ".hidden")), "'.hidden'"),
    "seeds a string": (_plan(_set("seeds", "x")), "'seeds'"),
    "seeds negative": (_plan(_set("seeds", [-1])), "'seeds'"),
    "seeds empty": (_plan(_set("seeds", [])), "'seeds'"),
    "seeds repeated": (_plan(_set("seeds", [0, 0])), "'seeds'"),
    "seed beyond TrainConfig's range": (_plan(_set("seeds", [2 ** 40])), str(2 ** 40)),
    "a run of a seed not planned": (_extra_seed, "seed7"),
    "train a list": (_plan(_set("train", [1])), "'train'"),
    "train.epochs -1": (_plan(lambda d: d["train"].__setitem__("epochs", -1)), "epochs"),
    "train.lr a string": (_plan(lambda d: d["train"].__setitem__("lr", "x")), "lr"),
    "train unknown key": (_plan(lambda d: d["train"].__setitem__("foo", 1)), "'foo'"),
    "image_size -1": (_plan(_set("image_size", -1)), "'image_size'"),
    "input_shape of 2": (_plan(_set("input_shape", [1, 8])), "'input_shape'"),
    "num_classes 0": (_plan(_set("num_classes", 0)), "'num_classes'"),
    "dataset a number": (_plan(_set("dataset", 5)), "'dataset'"),
    "variant kwargs a list": (_plan(lambda d: d["variants"][1].__setitem__("attention_kwargs", [1])),
                              "attention_kwargs"),
    "test_acc NaN": (_final(_set("test_acc", float("nan"))), "test_acc is nan"),
    "test_acc 5": (_final(_set("test_acc", 5)), "test_acc is 5"),
    "test_acc a string": (_final(_set("test_acc", "x")), "test_acc is 'x'"),
    "seconds negative": (_final(_set("seconds", -1)), "seconds is -1"),
    "final.json invalid": (_write("runs/se/seed0/final.json", "{"), "final.json is not valid JSON"),
    "predictions invalid": (_write("runs/se/seed0/test_predictions.json", "{"), "test_predictions.json"),
    "predictions a list": (_write("runs/se/seed0/test_predictions.json", "[1]"), "test_predictions.json"),
    "label out of range": (_write("runs/se/seed0/test_predictions.json", json.dumps(
        {"labels": [10] * 200, "predictions": [0] * 200})), "0 .. 9"),
    "predictions of another test set": (_write("runs/se/seed1/test_predictions.json", json.dumps(
        {"labels": [1, 2, 3], "predictions": [1, 2, 3]})), "3 test examples"),
    "config.yaml invalid": (_write("runs/se/seed0/config.yaml", "model: [\n"), "config.yaml"),
    "run folder a file": (_replace_with_file("runs/se/seed1"), "seed1 is a file"),
    "variant folder a file": (_replace_with_file("runs/se"), "se is a file"),
    "figures a file": (_replace_with_file("figures"), "figures is a file"),
    "explain a file": (lambda root: (root / "explain").write_text("x"), "explain is a file"),
    "report.md a folder": (_replace_with_folder("report.md"), "report.md is a folder"),
    "report.html a folder": (_replace_with_folder("report.html"), "report.html is a folder"),
    "results.json a folder": (_replace_with_folder("results.json"), "results.json is a folder"),
    "costs.json a folder": (_replace_with_folder("costs.json"), "costs.json is a folder"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_report_names_the_damage_in_one_line_and_writes_nothing(case, copy, capsys):
    damage, fragment = DAMAGE[case]
    damage(copy)
    before = _snapshot(copy)
    assert main(["report", str(copy)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("attnlab: error: report: ") and fragment in err
    assert _snapshot(copy) == before


@pytest.mark.parametrize("case", ["name ../../evil", "seeds negative", "train a list", "train.epochs -1", "test_acc 5",
                                  "label out of range", "run folder a file", "report.md a folder",
                                  "variant folder a file"])
def test_resume_names_the_damage_in_one_line_and_writes_nothing(case, copy, capsys):
    damage, fragment = DAMAGE[case]
    damage(copy)
    before = _snapshot(copy)
    assert main(["compare", "--resume", str(copy), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err and fragment in err
    assert _snapshot(copy) == before


def test_resume_refuses_a_plan_without_its_recipe(copy, capsys):
    _plan(lambda d: d.pop("train"))(copy)
    assert main(["compare", "--resume", str(copy), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "recipe (train)" in err


def test_a_run_folder_that_is_a_file_has_no_state(tmp_path):
    (tmp_path / "seed0").write_text("x")
    with pytest.raises(ValueError, match="seed0 is a file"):
        run_state(tmp_path / "seed0")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_unsafe_variant_name_is_refused_wherever_a_plan_is_made(name):
    with pytest.raises(ValueError, match="not a safe folder name"):
        Variant(name)
    with pytest.raises(ValueError, match="compare.json: variant name .* not a safe folder name"):
        StudyPlan.from_dict({"variants": [{"name": "none"}, {"name": name}]}, "compare.json")
    if isinstance(name, str):
        with pytest.raises(ValueError, match="not a safe folder name"):
            make_variant({"name": name, "attention": "se"}, "resnet_cifar", {})


def test_safe_names_pass_and_composite_names_are_checked():
    assert Variant("resnet_cifar-se+x.2").name == "resnet_cifar-se+x.2"
    names = [v.name for v in variants_from_lists(["resnet_cifar"], ["se"], {})]
    assert names == ["none", "se"]
    with pytest.raises(ValueError, match="not a safe folder name"):
        variants_from_lists(["m" * 98, "resnet20"], ["se"], {})   # mmm...-none: 103 characters


def test_hidden_folders_are_not_taken_for_variants(copy):
    (copy / "compare.json").unlink()
    (copy / "runs" / ".ipynb_checkpoints").mkdir()
    assert StudyFolder(copy).read_plan().baseline == "none"
    assert [v.name for v in StudyFolder(copy).read_plan().variants] == ["none", "se"]


def test_a_study_in_progress_is_reported_as_partial(copy):
    for seed in (0, 1, 2):   # se trained none of its seeds to the end yet
        (copy / "runs" / "se" / f"seed{seed}" / "final.json").unlink()
    build_report(copy, explain=False, measure=False)
    report = (copy / "report.md").read_text()
    assert "Partial study" in report and "se: no finished run" in report
    rows = {r["variant"]: r for r in json.loads((copy / "results.json").read_text())["variants"]}
    assert rows["se"]["n"] == 0 and rows["none"]["n"] == 3
