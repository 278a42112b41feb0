"""Planning a study: a preset and its overrides -> a checked `StudyPlan`, before any training.

    plan = plan_compare("quick", seeds=[0, 1])      # variants, seeds, recipe, input shape, ...

Every run's TrainConfig, every variant's model (built, one zero image through it), the device
and the data are checked here, so that a mistake costs one line before any folder or worker
exists. The same recipe serves every variant (`train_config`): only the placement (or
`model_kwargs`) differs, and seed s of every variant sees the same data order, so accuracies
pair by seed.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..attention import resolve_attention_name
from ..checks import check_bool, check_int
from ..data.datasets import dataset_info, load_dataset
from ..io.study_files import BASELINE, StudyPlan, Variant
from ..models.registry import resolve_model_name
from ..train.config import TrainConfig, check_seed
from ..train.device import resolve_device
from ..train.precision import resolve_precision
from .capacity import add_capacity_variant
from .presets import DEFAULT_PRESET, load_preset
from .variants import build_variant, make_variant, variants_from_lists


def plan_compare(preset: Optional[str] = None, models=None, attentions=None, seeds=None, epochs=None, dataset=None,
                 data_dir=None, precision=None, compile=None) -> StudyPlan:
    """The validated plan of a compare (nothing trained): variants, seeds, recipe, input shape.

    `preset` names a YAML file of configs/ (default `quick`); `models`, `attentions`, `seeds`,
    `epochs`, `dataset`, `data_dir`, `precision`, `compile` override it (without a preset, the
    quick preset's recipe and data are the base; a model other than the preset's drops the
    preset's model_kwargs). A precision of `auto` is resolved here, once, for the study's device
    (train.precision), so that every run of the study computes in the same arithmetic."""
    if preset is None and not models and not attentions:
        preset = DEFAULT_PRESET
    cfg = load_preset(preset) if preset is not None else load_preset(DEFAULT_PRESET)
    label = preset if preset is not None else "custom"
    model = cfg.get("model", "resnet20")
    model_kwargs = dict(cfg.get("model_kwargs") or {})
    if models:
        if isinstance(models, str):
            models = [models]
        models = [resolve_model_name(m) for m in models]
        _check_distinct(models, "models")
        if models != [model]:
            model_kwargs = {}  # the preset's kwargs belong to the preset's model
    if attentions and isinstance(attentions, str):
        attentions = [attentions]
    if attentions:
        _check_distinct([_attention_key(a) for a in attentions], "attentions")
    if models or attentions:
        variants = variants_from_lists(models or [model], attentions or [v if isinstance(v, str) else v["name"]
                                                                         for v in cfg.get("variants", [BASELINE])],
                                       model_kwargs)
    else:
        variants = [make_variant(v, model, model_kwargs) for v in cfg.get("variants") or []]
        if not variants:
            raise ValueError(f"preset {label!r} lists no variants")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct, got {names}")
    baseline = cfg.get("baseline", BASELINE) if not models or len(models) == 1 else variants[0].name
    if baseline not in names:
        raise ValueError(f"the baseline {baseline!r} is not among the variants {names}")
    for v in variants:
        if v.name == baseline:
            v.role = "baseline"
    train = dict(cfg.get("train") or {})
    if epochs is not None:
        train["epochs"] = check_int("plan_compare", "epochs", epochs, minimum=0)
    if precision is not None:
        train["precision"] = precision
    if compile is not None:
        train["compile"] = check_bool("plan_compare", "compile", compile)
    train.setdefault("checkpoint_every", 1)   # every epoch: a killed study resumes mid-run (compare --resume)
    train.setdefault("keep_checkpoints", 1)
    plan = StudyPlan(preset=label, description=cfg.get("description", ""), dataset=dataset or cfg.get("dataset", "digits"),
                     data_dir=data_dir if data_dir is not None else cfg.get("data_dir"), image_size=cfg.get("image_size"),
                     seeds=_check_seeds(seeds if seeds is not None else cfg.get("seeds", [0, 1, 2])),
                     baseline=baseline, variants=variants, train=train, capacity=cfg.get("capacity"),
                     cost=dict(cfg.get("cost") or {}), explain=bool(cfg.get("explain", True)),
                     evidence=True if cfg.get("evidence") else None,
                     workers=cfg.get("workers"))
    if models and models != [cfg.get("model")]:
        plan.capacity = None
    info = check_plan(plan)
    add_capacity_variant(plan, info)
    first = train_config(plan, plan.variants[0], plan.seeds[0])
    if first.precision == "auto":
        choice = resolve_precision("auto", resolve_device(first.device))
        plan.train["precision"], plan.precision_reason = choice.name, choice.reason
    return plan


def check_plan(plan: StudyPlan) -> dict:
    """Check `plan` before any work (every run's config, every variant's model on one zero image,
    the device, the data: loaded once here, so that a missing or damaged set is refused now, not
    later by each worker process); fill in its input shape and class count (a plan read back from
    compare.json must agree with them) and return the dataset's info."""
    info = dataset_info(plan.dataset, plan.image_size)
    shape = [info["in_chans"], *info["image_size"]]
    if plan.input_shape is not None and list(plan.input_shape) != shape:
        raise ValueError(f"the plan's input shape {plan.input_shape} is not that of {plan.dataset} at image size "
                         f"{plan.image_size}: {shape}")
    plan.input_shape = shape
    _check_runs(plan, info)
    loaded = load_dataset(plan.dataset, plan.data_dir, seed=plan.seeds[0], image_size=plan.image_size)
    if info["num_classes"] is None:
        info["num_classes"] = loaded.num_classes
    if plan.num_classes is not None and plan.num_classes != info["num_classes"]:
        raise ValueError(f"the plan has {plan.num_classes} classes, the data {plan.dataset} has {info['num_classes']}")
    plan.num_classes = info["num_classes"]
    return info


def train_config(plan: StudyPlan, variant: Variant, seed: int) -> TrainConfig:
    """The TrainConfig of one run: the plan's recipe, the variant's model and placement, `seed`."""
    settings = dict(plan.train)
    settings.update(model=variant.model, attention=variant.attention,
                    attention_kwargs=dict(variant.attention_kwargs), attention_stages=variant.attention_stages,
                    attention_position=variant.attention_position, model_kwargs=dict(variant.model_kwargs),
                    dataset=plan.dataset, data_dir=plan.data_dir, image_size=plan.image_size, seed=seed)
    return TrainConfig.from_dict(settings)


def default_workers(train: dict, runs: int) -> int:
    """1 on an accelerator (runs share it one after another), else one process per CPU core."""
    device = str(train.get("device", "auto"))
    if device.startswith("cuda") or device == "mps" or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(os.cpu_count() or 1, runs))


def _check_runs(plan: StudyPlan, info: dict) -> None:
    """Every run's config and every variant's model (built, one zero image through it) and the
    device, before any work."""
    shape_only = dict(info, num_classes=info["num_classes"] or 2)   # the class count does not change the shape
    for v in plan.variants:
        train_config(plan, v, plan.seeds[0])
        try:
            with torch.no_grad():
                build_variant(v, shape_only).eval()(torch.zeros(1, *plan.input_shape))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"variant {v.name!r} ({v.model}) cannot run on {plan.dataset} at "
                             f"{tuple(plan.input_shape)}: {' '.join(str(exc).split())}") from None
    resolve_device(train_config(plan, plan.variants[0], plan.seeds[0]).device)


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise TypeError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    for seed in seeds:
        check_seed(seed, "seeds entry")
    _check_distinct(seeds, "seeds")
    return list(seeds)


def _check_distinct(values, what: str) -> None:
    """ValueError naming the first value of `values` that is given twice."""
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what}: {value!r} is given twice; list each once")
        seen.add(value)


def _attention_key(name) -> str:
    """The name an attention entry of `attentions` stands for (so that 'SE' and 'se' are one)."""
    if not isinstance(name, str):
        raise TypeError(f"attentions must be names (str), got {type(name).__name__} {name!r}")
    if name.lower() == BASELINE:
        return BASELINE
    try:
        return resolve_attention_name(name)
    except ValueError:
        return name        # make_variant names the unknown attention with the accepted ones


__all__ = ["check_plan", "default_workers", "plan_compare", "train_config"]
