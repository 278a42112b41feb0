"""The report's setup section: what was trained, how, on what, and on which machine.

Everything is read from the run folder: the plan (compare.json), the TrainConfig each run saved
(config.yaml), each run's final.json (image size, classes, precision, compile, seconds), its
metrics.jsonl (images per epoch) and test_predictions.json (the test-set size). What a run did
not record is said to be "not recorded", never guessed. Runs record their machine in final.json;
for older runs that did not, the section names the machine the report was built on, labelled as such.
"""
from __future__ import annotations

from typing import Optional

from ..io.run_folder import CONFIG_FILE
from ..io.study_files import StudyFolder, StudyPlan
from ..train.config import read_yaml_mapping
from ..train.device import describe_machine
from .format import finite, human, listing, md_table

NOT_RECORDED = "not recorded"
# the TrainConfig settings that make the recipe (model, data set and seed are set per variant / run)
RECIPE_KEYS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "milestones", "gamma",
               "warmup_epochs", "epochs", "batch_size", "label_smoothing", "augment", "precision", "compile",
               "channels_last", "stn_lr_scale")


# --------------------------------------------------------------------------------------------- reading

def read_config(folder: StudyFolder, variant: str, seed: int) -> dict:
    """The config.yaml a run saved, as written ({} when the run kept none); ValueError naming the
    file when it is not a YAML mapping (a damaged file would hide a recipe that differs)."""
    path = folder.seed_dir(variant, seed) / CONFIG_FILE
    if not path.exists():
        return {}
    return read_yaml_mapping(path, "run config")


def _machines(finals: dict) -> str:
    """The machines the runs recorded (final.json's `machine`), else the machine building the report."""
    seen = sorted({f["machine"] for runs in finals.values() for f in runs.values() if isinstance(f.get("machine"), str)})
    if not seen:
        return f"the runs do not record theirs; this report was built on {build_machine()}"
    unrecorded = sum(1 for runs in finals.values() for f in runs.values() if not isinstance(f.get("machine"), str))
    tail = f" ({unrecorded} run(s) recorded none)" if unrecorded else ""
    return ("the runs trained on " + "; and on ".join(seen)) + tail + _device_changes(finals)


def _device_changes(finals: dict) -> str:
    """The runs resumed on another device type (final.json's `device_changes`), as a clause."""
    crossed = [f"{name}/seed{seed}: {change.get('from')} -> {change.get('to')} at step {change.get('at_step')}"
               for name, runs in sorted(finals.items()) for seed, f in sorted(runs.items())
               for change in (f.get("device_changes") if isinstance(f.get("device_changes"), list) else [])
               if isinstance(change, dict)]
    if not crossed:
        return ""
    return (f"; {len(crossed)} resume(s) on another device type ({', '.join(crossed)}), each with a fresh "
            "augmentation stream from there, so those runs are not bit-identical to uninterrupted ones")


def first_run(plan: StudyPlan, finals: dict) -> Optional[tuple[str, int]]:
    """(variant, seed) of the baseline's first finished run, else of any variant's."""
    for name in [plan.baseline] + [v.name for v in plan.variants]:
        if finals.get(name):
            return name, min(finals[name])
    return None


def build_machine() -> str:
    """One line naming the machine this report is built on (train.device.describe_machine)."""
    return describe_machine()


# --------------------------------------------------------------------------------------------- pieces

def _settings(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "defaults"


def _variant_table(plan: StudyPlan, costs: dict) -> str:
    base_kwargs = plan.baseline_variant.model_kwargs
    head = ["variant", "role", "attention", "its settings", "stages", "position", "params"]
    body = []
    for v in plan.variants:
        extra = {k: val for k, val in v.model_kwargs.items() if base_kwargs.get(k) != val}
        mechanism = v.attention or ("built into the backbone" if v.role == "attention" else "none")
        role = v.role + (f" (matches {v.matches})" if v.matches else "")
        body.append([v.name, role, mechanism, _settings({**v.attention_kwargs, **extra}),
                     "all" if v.attention_stages is None else ", ".join(map(str, v.attention_stages)),
                     v.attention_position or "default", human(costs.get(v.name, {}).get("params"))])
    return md_table(head, body)


def _recipe(config: dict, plan: StudyPlan, precisions: list[str], compiled: list[bool]) -> str:
    def get(key):
        value = config.get(key, plan.train.get(key))
        return NOT_RECORDED if value is None else value

    optimizer = get("optimizer")
    if optimizer == "sgd":
        optimizer = f"SGD (momentum {get('momentum')}{', Nesterov' if config.get('nesterov') else ''})"
    schedule = get("schedule")
    if finite(config.get("warmup_epochs")) and config["warmup_epochs"] > 0:
        schedule = f"{schedule} after {config['warmup_epochs']:g} warm-up epoch(s)"
    augment = config.get("augment")
    augment = _settings(augment) if augment else ("the data set's default" if "augment" in config else NOT_RECORDED)
    parts = [f"optimizer {optimizer}", f"learning rate {get('lr')}", f"weight decay {get('weight_decay')}",
             f"schedule {schedule}", f"epochs {get('epochs')}", f"batch {get('batch_size')}",
             f"label smoothing {get('label_smoothing')}", f"augmentation {augment}",
             f"precision {', '.join(precisions) if precisions else NOT_RECORDED}",
             "torch.compile " + (listing(sorted({'on' if c else 'off' for c in compiled})) if compiled else NOT_RECORDED),
             f"channels_last {'on' if plan.trains_channels_last else 'off'}"]
    return "; ".join(str(p) for p in parts)


def _data(plan: StudyPlan, final: dict, metrics: list[dict], test_size: Optional[int]) -> str:
    size = final.get("image_size")
    if isinstance(size, list):
        resolution = "x".join(map(str, size)) + " pixels"
    elif plan.input_shape:
        resolution = "x".join(map(str, plan.input_shape[-2:])) + " pixels (compare.json's input shape)"
    else:
        resolution = f"a resolution {NOT_RECORDED}"
    classes = final.get("num_classes", plan.num_classes)
    test = f"{test_size:,} test images" if test_size else f"test-set size {NOT_RECORDED}"
    train_size = final.get("train_size")
    if isinstance(train_size, int):
        train = f"{train_size:,} training images"
    else:
        first = next((r for r in metrics if finite(r.get("images_per_s")) and finite(r.get("seconds"))), None)
        train = (f"{round(first['images_per_s'] * first['seconds']):,} training images seen per epoch (full batches; "
                 f"the training-set size itself is {NOT_RECORDED})" if first else f"training-set size {NOT_RECORDED}")
    return f"{plan.dataset or NOT_RECORDED} at {resolution}, {classes or NOT_RECORDED} classes; {train}; {test}"


def _compute(plan: StudyPlan, finals: dict) -> str:
    seconds = [f.get("seconds") for per in finals.values() for f in per.values()]
    total = sum(s for s in seconds if finite(s))
    text = f"{len(seconds)} training runs, {total:.0f} s of training in all (the sum over runs of final.json's seconds)"
    timing = plan.seconds or {}
    if timing:
        text += (f"; the compare took {timing.get('total', sum(timing.values())):.0f} s of wall time ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items() if k != "total")
                 + f") with {plan.workers if plan.workers is not None else 1} worker process(es)")
    return text


def _run_name(first: Optional[tuple[str, int]]) -> str:
    return f"runs/{first[0]}/seed{first[1]}/{CONFIG_FILE}" if first else "no run"


def recipe_differences(folder: StudyFolder, finals: dict) -> list[str]:
    """For each recipe setting whose value differs between the runs' config.yaml files,
    "setting: value (variant/seed, ...), value (...)"; [] when every run used one recipe."""
    seen: dict[str, dict[str, list[str]]] = {}
    for name, per_seed in finals.items():
        for seed in per_seed:
            config = read_config(folder, name, seed)
            for key in RECIPE_KEYS:
                if key in config:
                    seen.setdefault(key, {}).setdefault(repr(config[key]), []).append(f"{name}/seed{seed}")
    return [f"{key}: " + ", ".join(f"{value} ({', '.join(runs)})" for value, runs in values.items())
            for key, values in seen.items() if len(values) > 1]


# --------------------------------------------------------------------------------------------- the section

def setup_section(folder: StudyFolder, plan: StudyPlan, finals: dict, metrics: dict, costs: dict,
                  test_size: Optional[int]) -> list[str]:
    """The Markdown lines of the setup section."""
    first = first_run(plan, finals)
    config = read_config(folder, *first) if first else {}
    final = finals[first[0]][first[1]] if first else {}
    base = plan.baseline_variant
    runs = [f for per in finals.values() for f in per.values()]
    precisions = sorted({str(f["precision"]) for f in runs if f.get("precision")})
    reasons = ([f"{plan.precision_reason} (resolved once for the study)"] if plan.precision_reason else
               sorted({str(f["precision_reason"]) for f in runs if f.get("precision_reason")}))
    compiled = [bool(f["compile"]) for f in runs if "compile" in f] or (
        [bool(config["compile"])] if "compile" in config else [])
    model = base.model or config.get("model") or final.get("model") or NOT_RECORDED
    kwargs = base.model_kwargs or config.get("model_kwargs") or {}
    lines = [f"- **Backbone**: {model} ({_settings(kwargs)}), {human(costs.get(base.name, {}).get('params'))} "
             f"parameters without attention.",
             f"- **Recipe** (one for every run, read from {_run_name(first) if config else 'compare.json'}): "
             f"{_recipe(config, plan, precisions, compiled)}."]
    differences = recipe_differences(folder, finals)
    if differences:
        lines[-1] = lines[-1].replace("(one for every run, read from", "(read from")
        lines.append(f"- **Where the runs' recipes differ**: {'; '.join(differences)}.")
    if reasons:
        lines.append(f"- **Why that precision**: {'; '.join(reasons)}.")
    lines += [f"- **Data**: {_data(plan, final, metrics.get(first[0], {}).get(first[1], []) if first else [], test_size)}.",
              f"- **Seeds**: {', '.join(map(str, plan.seeds or [])) or NOT_RECORDED}; one run per variant and seed. "
              "The same seed gives the same data order and, where the layers agree, the same initial weights.",
              f"- **Compute**: {_compute(plan, finals)}.",
              f"- **Hardware and libraries**: {_machines(finals)}.",
              "", "Variants and their attention settings:", "", _variant_table(plan, costs), ""]
    return lines


__all__ = ["NOT_RECORDED", "read_config", "first_run", "build_machine", "setup_section"]
