"""Bad inputs of the commands' arguments and config files: `train --config` YAML of wrong types
or not YAML at all, numbers that are no numbers to the run (nan, inf, seeds beyond 2**32 - 1),
devices that are not present, `compare` lists with repeats and studies whose data is missing,
`bench` arguments, and `report` folders whose files are not what `attnlab compare` writes; see
bad_inputs.py. Every file is written in its real format into the scratch folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def _absent(*names: str) -> str:
    """The first device name of `names` that this process cannot use (so that each case refuses
    on any machine); 'cuda:99' when all are present."""
    from attnlab.train.device import available_devices

    present = available_devices()
    return next((n for n in names if n not in present), "cuda:99")


def _files(tmp: Path) -> dict:
    f = {}

    def write(name: str, content) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    yaml_cases = {
        "epochs three": "epochs: three\n",
        "seed list": "seed: [1]\n",
        "attention int": "attention: 5\n",
        "augment int": "augment: 5\n",
        "max_bad_steps word": "max_bad_steps: many\n",
        "nesterov int": "nesterov: 1\n",
        "epochs bool": "epochs: true\n",
        "lr list": "lr: [0.1]\n",
        "lr no dot": "lr: 1e-3\n",
        "flip int": "augment: {flip: 1}\n",
        "top string": "just a sentence\n",
        "syntax": "model: resnet20\nlr: [0.1\nepochs: 2\n",
    }
    for key, text in yaml_cases.items():
        f["yaml " + key] = write(f"yaml/{key.replace(' ', '_')}.yaml", text)
    f["yaml latin-1"] = write("yaml/latin1.yaml", "model: resnet20\n# r\u00e9glage\n".encode("latin-1"))
    f["empty"] = tmp / "empty"
    f["empty"].mkdir(exist_ok=True)
    f["a file"] = write("a_file.txt", "not a folder")
    # report: folders that are not what `attnlab compare` writes
    f["not a run"] = tmp / "report/not_a_run"
    f["not a run"].mkdir(parents=True, exist_ok=True)
    write("report/bad_json/compare.json", '{"variants": [{"name": "none"},]')
    write("report/a_list/compare.json", json.dumps([{"name": "none"}]))
    write("report/no_variants/compare.json", json.dumps({"preset": "quick", "seeds": [0]}))
    write("report/variant_without_name/compare.json", json.dumps({"variants": [{"role": "baseline"}]}))
    write("report/latin1/compare.json", '{"preset": "r\u00e9glage", "variants": [{"name": "none"}]}'.encode("latin-1"))
    plan = {"preset": "quick", "baseline": "none", "variants": [{"name": "none", "role": "baseline"}]}
    write("report/final_a_list/compare.json", json.dumps(plan))
    write("report/final_a_list/runs/none/seed0/final.json", json.dumps([0.9]))
    write("report/final_without_acc/compare.json", json.dumps(plan))
    write("report/final_without_acc/runs/none/seed0/final.json", json.dumps({"epochs": 1}))
    write("report/baseline_elsewhere/compare.json", json.dumps({**plan, "baseline": "se"}))
    write("report/costs_a_number/compare.json", json.dumps(plan))
    write("report/costs_a_number/runs/none/seed0/final.json", json.dumps({"test_acc": 0.5, "epochs": 1}))
    write("report/costs_a_number/costs.json", json.dumps({"none": 12}))
    return f


def cases(tmp: Path, Case) -> list:
    from attnlab.models import create_model
    from attnlab.report import build_report
    from attnlab.train import TrainConfig, evaluate
    from attnlab.study import plan_compare, run_compare
    from attnlab.train import load_trained
    from attnlab.train.device import resolve_device

    f = _files(tmp)
    out = str(tmp / "run")                  # never made: every train case is refused before it
    train = ["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--out", out, "--no-progress"]
    cmp_out = str(tmp / "compare_runs")
    bench = ["bench", "--models", "resnet20", "--repeats", "1"]
    report = tmp / "report"
    planned = tmp / "planned_study"          # a study planned (compare.json of the main job), nothing trained
    planned.mkdir(exist_ok=True)
    (planned / "compare.json").write_text(plan_compare().to_json())

    def config(key: str) -> list:               # no flag that would override the file's field
        return ["train", "--model", "resnet20", "--dataset", "digits", "--out", out, "--no-progress",
                "--config", str(f["yaml " + key])]

    cli = [
        # --config YAML: the types come from TrainConfig's annotations, checked before any value
        ("train: --config with epochs: three", config("epochs three")),
        ("train: --config with seed: [1] (a list for an int)", config("seed list")),
        ("train: --config with attention: 5 (a number for a name)", config("attention int")),
        ("train: --config with augment: 5 (a number for a mapping)", config("augment int")),
        ("train: --config with max_bad_steps: many", config("max_bad_steps word")),
        ("train: --config with nesterov: 1 (an int for a bool)", config("nesterov int")),
        ("train: --config with epochs: true (a bool for an int)", config("epochs bool")),
        ("train: --config with lr: [0.1] (a list for a number)", config("lr list")),
        ("train: --config with lr: 1e-3 (YAML reads it as a string)", config("lr no dot")),
        ("train: --config with augment flip: 1 (an int for a bool)", config("flip int")),
        ("train: --config whose top level is a string", config("top string")),
        ("train: --config with a YAML syntax error", config("syntax")),
        ("train: --config that is not UTF-8 (Latin-1)", [*train, "--config", str(f["yaml latin-1"])]),
        ("train: --config that is a folder", [*train, "--config", str(f["empty"])]),
        # numbers that parse but would crash or poison the run later
        ("train: --seed 2**63 (beyond 2**32 - 1)", [*train, "--seed", str(2**63)]),
        ("train: --warmup-epochs inf", [*train, "--warmup-epochs", "inf"]),
        ("train: --milestones inf", [*train, "--schedule", "step", "--milestones", "5", "inf"]),
        ("train: --lr nan", [*train, "--lr", "nan"]),
        ("train: --lr inf", [*train, "--lr", "inf"]),
        ("train: --momentum nan", [*train, "--momentum", "nan"]),
        ("train: --weight-decay nan", [*train, "--weight-decay", "nan"]),
        ("train: --gamma nan", [*train, "--gamma", "nan"]),
        ("train: --label-smoothing nan", [*train, "--label-smoothing", "nan"]),
        ("train: --stn-lr-scale inf", [*train, "--stn-lr-scale", "inf"]),
        # devices: one line naming the device and the available ones
        ("train: --device mps where MPS is absent", [*train, "--device", _absent("mps", "xpu")]),
        ("train: --device cuda:99 (no such CUDA device)", [*train, "--device", "cuda:99"]),
        ("train: --device xpu where XPU is absent", [*train, "--device", _absent("xpu", "mps")]),
        ("train: --device nonsense", [*train, "--device", "nonsense"]),
        ("bench: --device cuda:99 (no such CUDA device)", [*bench, "--device", "cuda:99"]),
        ("bench: --device nonsense", [*bench, "--device", "nonsense"]),
        # arithmetic: a precision that is not one
        ("train: --precision half (not a precision)", [*train, "--precision", "half"]),
        ("compare: --precision fp8", ["compare", "--precision", "fp8", "--out", cmp_out]),
        # bench: every argument before any timing
        ("bench: --image-size 0", [*bench, "--image-size", "0"]),
        ("bench: an ImageNet model at 8 px (Inception v3 needs 75)",
         ["bench", "--models", "inception_v3", "--image-size", "8", "--repeats", "1"]),
        ("bench: --repeats 0", [*bench[:-1], "0"]),
        ("bench: --batch-sizes 0 4", [*bench, "--batch-sizes", "0", "4"]),
        ("bench: --batch-sizes 1 1 (a training batch of one image)", [*bench, "--batch-sizes", "1", "1"]),
        ("bench: --out is a file", [*bench, "--out", str(f["a file"])]),
        # compare: repeats, shapes and missing data before any training
        ("compare: duplicate seeds (--seeds 0 0)", ["compare", "--seeds", "0", "0", "--out", cmp_out]),
        ("compare: duplicate attentions (--attentions se se)", ["compare", "--attentions", "se", "se", "--out", cmp_out]),
        ("compare: duplicate models (--models resnet20 resnet20)",
         ["compare", "--models", "resnet20", "resnet20", "--out", cmp_out]),
        ("compare: a seed beyond 2**32 - 1", ["compare", "--seeds", str(2**32), "--out", cmp_out]),
        ("compare: a model that cannot take the preset's small RTS canvas (STN paper CNN)",
         ["compare", "--models", "cnn_mnist", "--out", cmp_out]),
        ("compare: preset fashion-mnist with an empty --data-dir",
         ["compare", "--preset", "fashion-mnist", "--data-dir", str(f["empty"]), "--out", cmp_out]),
        ("compare: preset cifar10-se with an empty --data-dir",
         ["compare", "--preset", "cifar10-se", "--data-dir", str(f["empty"]), "--out", cmp_out]),
        ("compare: preset stn-rts with an empty --data-dir",
         ["compare", "--preset", "stn-rts", "--data-dir", str(f["empty"]), "--out", cmp_out]),
        ("compare: --out is a file", ["compare", "--out", str(f["a file"])]),
        # compare --resume / --jobs: the folder, its plan and the study it describes, before any work
        ("compare: --resume of a folder that does not exist", ["compare", "--resume", str(tmp / "no_such_study")]),
        ("compare: --resume of a file", ["compare", "--resume", str(f["a file"])]),
        ("compare: --resume of a folder without compare.json", ["compare", "--resume", str(f["empty"])]),
        ("compare: --resume of a compare.json without variants", ["compare", "--resume", str(report / "no_variants")]),
        ("compare: --resume with --out", ["compare", "--resume", str(report / "no_variants"), "--out", cmp_out]),
        ("compare: --resume of a study with a changed recipe (--epochs 7)",
         ["compare", "--resume", str(planned), "--epochs", "7"]),
        ("compare: --jobs 0", ["compare", "--jobs", "0", "--out", cmp_out]),
        ("compare: --jobs -2", ["compare", "--jobs", "-2", "--out", cmp_out]),
        # report: the folder and each file it reads
        ("report: a folder that is not a compare run", ["report", str(f["not a run"])]),
        ("report: compare.json that is not JSON", ["report", str(report / "bad_json")]),
        ("report: compare.json holding a list", ["report", str(report / "a_list")]),
        ("report: compare.json without variants", ["report", str(report / "no_variants")]),
        ("report: compare.json with a variant without a name", ["report", str(report / "variant_without_name")]),
        ("report: compare.json that is not UTF-8", ["report", str(report / "latin1")]),
        ("report: a final.json holding a list", ["report", str(report / "final_a_list")]),
        ("report: a final.json without test_acc", ["report", str(report / "final_without_acc")]),
        ("report: costs.json with a number for a variant's costs", ["report", str(report / "costs_a_number")]),
    ]
    api = [
        ("TrainConfig(epochs='three')", lambda: TrainConfig(epochs="three")),
        ("TrainConfig(seed=True) (a bool for an int)", lambda: TrainConfig(seed=True)),
        ("TrainConfig(seed=2**32)", lambda: TrainConfig(seed=2**32)),
        ("TrainConfig(lr=nan)", lambda: TrainConfig(lr=math.nan)),
        ("TrainConfig(warmup_epochs=inf)", lambda: TrainConfig(warmup_epochs=math.inf)),
        ("TrainConfig(attention_stages=[1, '2'])", lambda: TrainConfig(attention="se", attention_stages=[1, "2"])),
        ("TrainConfig(augment=5)", lambda: TrainConfig(augment=5)),
        ("TrainConfig(device='cuda:x')", lambda: TrainConfig(device="cuda:x")),
        ("TrainConfig(precision='half')", lambda: TrainConfig(precision="half")),
        ("TrainConfig(compile='yes') (a string for a bool)", lambda: TrainConfig(compile="yes")),
        ("plan_compare: precision='fp8'", lambda: plan_compare(precision="fp8")),
        ("TrainConfig.replace(batch_size=2.5)", lambda: TrainConfig().replace(batch_size=2.5)),
        ("TrainConfig.from_yaml: a file whose top level is a string",
         lambda: TrainConfig.from_yaml(f["yaml top string"])),
        ("TrainConfig.from_yaml: a file that is not UTF-8", lambda: TrainConfig.from_yaml(f["yaml latin-1"])),
        ("resolve_device('nonsense')", lambda: resolve_device("nonsense")),
        ("resolve_device: a CUDA index that does not exist", lambda: resolve_device("cuda:99")),
        ("evaluate: device that is not present",
         lambda: evaluate(create_model("resnet20", in_chans=1), torch.zeros(2, 1, 8, 8), torch.zeros(2).long(),
                          device="cuda:99")),
        ("load_trained: device that is not present", lambda: load_trained(tmp / "nowhere", device="nonsense")),
        ("plan_compare: duplicate seeds", lambda: plan_compare(seeds=[1, 1])),
        ("plan_compare: one attention twice under two spellings ('SE', 'se')",
         lambda: plan_compare(attentions=["SE", "se"])),
        ("plan_compare: an attention that is not a name", lambda: plan_compare(attentions=["none", 5])),
        ("plan_compare: a seed given as a bool", lambda: plan_compare(seeds=[True])),
        ("plan_compare: a dataset folder without the data",
         lambda: plan_compare("cifar10-se", data_dir=str(f["empty"]))),
        ("run_compare: a plan together with seeds=", lambda: run_compare(seeds=[0], plan={"variants": []},
                                                                          out_root=str(tmp / "never"))),
        ("build_report: compare.json whose baseline is not a variant",
         lambda: build_report(report / "baseline_elsewhere")),
    ]
    return [Case("cli", what, argv) for what, argv in cli] + [Case("api", what, call) for what, call in api]
