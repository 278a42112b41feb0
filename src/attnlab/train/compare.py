"""`attnlab compare`: the same recipe for every variant, several seeds, costs, explanations, report.

    folder = run_compare()                       # the `quick` preset on the embedded digits
    folder = run_compare("fashion-mnist")        # a preset of configs/ (YAML)
    folder = run_compare(models=["resnet20"], attentions=["none", "se"], seeds=[0, 1], epochs=2)

Not a paper module. The study design follows what a fair comparison needs:

* Same recipe: every variant is trained by `attnlab.train.train` from one `TrainConfig`; only
  the placement spec (or `model_kwargs`) differs. Same seeds: seed s of every variant sees the
  same data order (the Trainer draws epoch e's permutation from (seed, e) alone), so accuracies
  pair by seed and the report uses paired differences.
* Baseline: the variant without attention (named ``none``). ``stn`` is the spatial transformer
  in front of the backbone (``create_model(model, spatial_transformer=True)``), not an
  attention slot; ``non_local`` is inserted *between* residual blocks as in the non-local paper
  (``nonlocal_stages``), not inside every block.
* Capacity control: the preset's ``capacity`` entry trains the baseline widened (`match_width`:
  the integer width whose parameter count is closest to the target variant's) so the report can
  separate the gain of attention from the gain of size. For every attention variant the width
  that would match is recorded in costs.json (``matched_width``), trained or not.
* Runs execute in `workers` processes with one intra-op thread each (default: one per CPU core,
  1 on CUDA). Deviation from the usual one-process loop, and why: the quick study's tensors are
  tiny, and two single-threaded runs side by side finish about twice as fast as one run with two
  threads on a 2-core machine (and do not fight over cores when the machine is shared). The
  workers are spawned processes, so a script that calls `run_compare` needs the usual
  ``if __name__ == "__main__":`` guard; ``workers=1`` trains in this process.
* Under torchrun (`torchrun --nproc_per_node=N -m attnlab compare ...`) the runs are dealt
  round-robin to the N ranks instead, each run single-process (train.distributed.spread_jobs);
  rank 0 makes the folder, waits for every rank, then measures costs and writes the report.
  The output folder must be on a filesystem all ranks share.
* Costs are measured once per variant (sequentially, in this process, after training) on a
  freshly built model: they depend on the architecture, not on the weights.

Output: a new folder ``out_root/<preset>-<UTC time>`` (never reused) holding compare.json (the
plan), runs/<variant>/seed<S>/ (each run), costs.json, explain/<variant>/ (figures of the first
seed's checkpoint) and the report (see attnlab.report).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import distributed
from .config import TrainConfig, check_seed, read_yaml_mapping

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESET = "quick"
BASELINE = "none"
# Preset keys and what they hold; anything else is refused with this list.
PRESET_KEYS = ("description", "dataset", "data_dir", "image_size", "model", "model_kwargs", "seeds", "baseline",
               "variants", "train", "capacity", "cost", "explain", "workers", "notes")


# --------------------------------------------------------------------------------------------- presets

def list_presets() -> list[str]:
    """Names of the YAML presets in configs/ (without .yaml), sorted."""
    if not PRESET_DIR.is_dir():
        return []
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """The preset `name` as a dict (configs/<name>.yaml), checked against PRESET_KEYS."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"preset name must be a non-empty str, got {name!r}")
    known = list_presets()
    if name not in known:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(known) or '(none found in ' + str(PRESET_DIR) + ')'}")
    path = PRESET_DIR / f"{name}.yaml"
    data = read_yaml_mapping(path, "preset")
    unknown = [k for k in data if k not in PRESET_KEYS]
    if unknown:
        raise ValueError(f"preset {path}: unknown key(s) {unknown}; accepted: {', '.join(PRESET_KEYS)}")
    data["name"] = name
    return data


# --------------------------------------------------------------------------------------------- variants

def make_variant(spec, model: str, model_kwargs: dict) -> dict:
    """A variant dict {name, model, attention, attention_kwargs, attention_stages,
    attention_position, model_kwargs, role} from a preset entry (a name or a mapping)."""
    from ..attention import resolve_attention_name

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"a variant must be an attention name or a mapping with a 'name', got {spec!r}")
    allowed = {"name", "model", "attention", "attention_kwargs", "attention_stages", "attention_position",
               "model_kwargs", "role", "matches"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"variant {spec['name']!r}: unknown key(s) {sorted(unknown)}; accepted: {sorted(allowed)}")
    name = spec["name"]
    out = {"name": name, "model": spec.get("model", model), "attention": None, "attention_kwargs": {},
           "attention_stages": spec.get("attention_stages"), "attention_position": spec.get("attention_position"),
           "model_kwargs": dict(model_kwargs), "role": spec.get("role", "attention")}
    out["model_kwargs"].update(spec.get("model_kwargs") or {})
    out["attention_kwargs"].update(spec.get("attention_kwargs") or {})
    attention = spec.get("attention", name)
    if attention is None or str(attention).lower() == BASELINE:
        out["role"] = spec.get("role", "baseline" if name == BASELINE else "attention")
    elif str(attention).lower() == "stn":
        out["model_kwargs"].setdefault("spatial_transformer", True)
    elif str(attention).lower().replace("-", "_") in ("non_local", "nonlocal", "nl") and "attention" not in spec:
        # The non-local paper inserts whole blocks between residual blocks, not one per block.
        out["model_kwargs"].setdefault("nonlocal_stages", [2, 3])
    else:
        out["attention"] = resolve_attention_name(attention)
    if "matches" in spec:
        out["matches"] = spec["matches"]
    return out


def _variants_from_lists(models: Sequence[str], attentions: Sequence[str], model_kwargs: dict) -> list[dict]:
    names = [a if a.lower() != BASELINE else BASELINE for a in attentions]
    if BASELINE not in names:
        names = [BASELINE] + names
    else:
        names = [BASELINE] + [n for n in names if n != BASELINE]
    variants = []
    for model in models:
        for name in names:
            v = make_variant(name, model, model_kwargs)
            if len(models) > 1:
                v["name"] = f"{model}-{name}"
                v["baseline"] = f"{model}-{BASELINE}"
            variants.append(v)
    return variants


def _train_config(plan: dict, variant: dict, seed: int) -> TrainConfig:
    settings = dict(plan["train"])
    settings.update(model=variant["model"], attention=variant["attention"],
                    attention_kwargs=dict(variant["attention_kwargs"]), attention_stages=variant["attention_stages"],
                    attention_position=variant["attention_position"], model_kwargs=dict(variant["model_kwargs"]),
                    dataset=plan["dataset"], data_dir=plan.get("data_dir"), image_size=plan.get("image_size"),
                    seed=seed)
    return TrainConfig.from_dict(settings)


# --------------------------------------------------------------------------------------------- capacity

def _build(variant: dict, info: dict, **overrides):
    from ..models import create_model

    kwargs = dict(variant["model_kwargs"])
    kwargs.update(overrides)
    return create_model(variant["model"], num_classes=info["num_classes"], in_chans=info["in_chans"],
                        attention=variant["attention"], attention_kwargs=variant["attention_kwargs"] or None,
                        attention_stages=variant["attention_stages"],
                        attention_position=variant["attention_position"], **kwargs)


def _param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def match_width(baseline: dict, target_params: int, info: dict, kwarg: str = "width", base: Optional[int] = None,
                max_factor: float = 4.0) -> tuple[int, int]:
    """(width, params): the integer value of `kwarg` for which the baseline's parameter count is
    closest to `target_params`, searched upward from `base` (the baseline's own width)."""
    if base is None:
        base = baseline["model_kwargs"].get(kwarg)
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ValueError(f"capacity control needs the baseline's integer {kwarg!r} in model_kwargs, got {base!r}")
    best = (base, _param_count(_build(baseline, info, **{kwarg: base})))
    width = base
    while width < base * max_factor:
        width += 1
        params = _param_count(_build(baseline, info, **{kwarg: width}))
        if abs(params - target_params) < abs(best[1] - target_params):
            best = (width, params)
        if params >= target_params:
            break
    return best


def _plan_capacity(plan: dict, info: dict) -> None:
    """Add the capacity-matched baseline the preset asks for (role 'capacity') to plan['variants']."""
    cap = plan.get("capacity")
    if not cap:
        return
    if not isinstance(cap, dict):
        raise ValueError(f"capacity must be a mapping like {{match: largest, kwarg: width}}, got {cap!r}")
    kwarg = cap.get("kwarg", "width")
    base = next(v for v in plan["variants"] if v["name"] == plan["baseline"])
    attention_variants = [v for v in plan["variants"] if v["role"] == "attention"]
    if not attention_variants:
        return
    params = {v["name"]: _param_count(_build(v, info)) for v in attention_variants}
    target = cap.get("match", "largest")
    if target == "largest":
        target = max(params, key=params.get)
    if target not in params:
        raise ValueError(f"capacity.match {target!r} is not an attention variant of this study; "
                         f"accepted: largest, {', '.join(params)}")
    width, matched = match_width(base, params[target], info, kwarg)
    own = base["model_kwargs"].get(kwarg)
    if width == own:
        plan.setdefault("notes", []).append(
            f"capacity control: {target} adds fewer parameters than one step of {kwarg} ({own} -> {own + 1}); "
            f"the baseline itself is the closest match, so no wider baseline was trained")
        return
    variant = copy.deepcopy(base)
    variant.update(name=f"{BASELINE}-{kwarg}{width}", role="capacity", matches=target)
    variant["model_kwargs"][kwarg] = width
    variant["capacity"] = {"kwarg": kwarg, "base": own, "value": width, "multiplier": width / own,
                           "params": matched, "target_params": params[target]}
    plan["variants"].append(variant)


# --------------------------------------------------------------------------------------------- running

_DATA_CACHE: dict = {}


def _run_one(config: TrainConfig, out_dir, progress: bool) -> dict:
    """Train one run; the dataset is loaded once per process (every seed sees the same splits:
    seeds change only the synthetic set, which is keyed by seed)."""
    from ..data.datasets import load_dataset, resolve_dataset_name
    from .trainer import Trainer

    synthetic = resolve_dataset_name(config.dataset)[1] == "synthetic"
    size = tuple(config.image_size) if isinstance(config.image_size, list) else config.image_size
    key = (config.dataset, config.data_dir, size, config.seed if synthetic else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time is enough
        _DATA_CACHE[key] = load_dataset(config.dataset, config.data_dir, seed=config.seed, image_size=config.image_size)
    # Always one process per run, also inside a torchrun launch (there the ranks share the runs).
    return Trainer(config, out_dir, progress, data=_DATA_CACHE[key], dist_context=distributed.SINGLE_PROCESS).fit()


def _train_worker(config: dict, out_dir: str, threads: Optional[int]) -> dict:
    """One training run in a worker process (module-level so that it pickles). An error reaches
    the parent as the same exception (type and message) that the run raised in one process."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_one(TrainConfig.from_dict(config), out_dir, progress=False)
    except Exception as err:  # noqa: BLE001 - only made portable here, handled by the parent
        raise _portable(err) from None


def _portable(err: BaseException) -> BaseException:
    """`err` if it survives pickling into the parent process unchanged, else a RuntimeError with
    its type and message (an exception whose constructor needs more than its message would
    otherwise break the process pool)."""
    import pickle

    try:
        back = pickle.loads(pickle.dumps(err))
        if type(back) is type(err) and str(back) == str(err):
            return err
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a plain copy
        pass
    return RuntimeError(f"{type(err).__name__}: {err}")


SPREAD_TIMEOUT_MINUTES = 7 * 24 * 60   # ranks wait for each other's share of runs: allow long studies


def _gather_spread_runs(context, jobs: list, run_dirs: list) -> None:
    """Wait for every rank's share of runs; rank 0 checks that it sees every run's final.json
    (the output folder must be shared by all ranks) and names the missing ones."""
    context.gather_objects(len(distributed.spread_jobs(jobs, context)))
    if context.is_main:
        missing = [str(d) for d in run_dirs if not (Path(d) / "final.json").exists()]
        if missing:
            raise RuntimeError(f"compare over {context.world_size} ranks: rank 0 cannot see {len(missing)} run(s), "
                               f"e.g. {missing[0]}; the output folder must be on a filesystem every rank shares")


def trains_channels_last(plan: dict) -> bool:
    """The Trainer's memory format for this plan (channels_last unless the recipe turns it off),
    so that the cost table times the models as they were trained."""
    return (plan.get("train") or {}).get("channels_last") is not False


def _new_run_dir(out_root, label: str) -> Path:
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = root / (f"{label}-{stamp}" + (f"-{k + 1}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not make a new run folder under {root}")


def _stderr_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _reporter(progress) -> Optional[Callable[[str], None]]:
    """The function that receives each progress line: `progress` itself when it is callable,
    a line on stderr for True, None (silence) for False."""
    if callable(progress):
        return progress
    return _stderr_line if progress else None


def _say(progress, text: str) -> None:
    report = _reporter(progress)
    if report is not None:
        report(text)


def _duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 1 h 02 min: the length of a phase as a reader wants it."""
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Phase:
    """Progress of one phase of `total` items: a line when it starts, then one per item with the
    elapsed time and the phase's ETA (from the mean time per item so far) and what comes after."""

    def __init__(self, progress, name: str, total: int, what: str, then: str = ""):
        self.progress, self.name, self.total, self.then = progress, name, total, then
        self.done, self.start = 0, time.time()
        _say(progress, f"{what} ...")

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        left = elapsed / self.done * (self.total - self.done)
        eta = f"ETA {self.name} {_duration(left)}" if self.done < self.total else f"{self.name} done"
        then = f", then {self.then}" if self.then else ""
        _say(self.progress, f"{self.name} [{self.done}/{self.total}] {text} "
                            f"(elapsed {_duration(elapsed)}, {eta}{then})")


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
    from ..attention import resolve_attention_name

    if not isinstance(name, str):
        raise TypeError(f"attentions must be names (str), got {type(name).__name__} {name!r}")
    if name.lower() == BASELINE:
        return BASELINE
    try:
        return resolve_attention_name(name)
    except ValueError:
        return name        # make_variant names the unknown attention with the accepted ones


def _default_workers(train: dict, runs: int) -> int:
    """1 on an accelerator (runs share it one after another), else one process per CPU core."""
    import torch

    device = str(train.get("device", "auto"))
    if device.startswith("cuda") or device == "mps" or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(os.cpu_count() or 1, runs))


def plan_compare(preset: Optional[str] = None, models=None, attentions=None, seeds=None, epochs=None, dataset=None,
                 data_dir=None) -> dict:
    """The validated plan of a compare (nothing trained): variants, seeds, recipe, input shape."""
    from ..data.datasets import dataset_info
    from ..models.registry import resolve_model_name

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
        variants = _variants_from_lists(models or [model], attentions or [v if isinstance(v, str) else v["name"]
                                                                          for v in cfg.get("variants", [BASELINE])],
                                        model_kwargs)
    else:
        variants = [make_variant(v, model, model_kwargs) for v in cfg.get("variants") or []]
        if not variants:
            raise ValueError(f"preset {label!r} lists no variants")
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct, got {names}")
    baseline = cfg.get("baseline", BASELINE) if not models or len(models) == 1 else variants[0]["name"]
    if baseline not in names:
        raise ValueError(f"the baseline {baseline!r} is not among the variants {names}")
    for v in variants:
        if v["name"] == baseline:
            v["role"] = "baseline"
    train = dict(cfg.get("train") or {})
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        train["epochs"] = epochs
    train.setdefault("checkpoint_every", 0)
    train.setdefault("keep_checkpoints", 1)
    plan = {"preset": label, "description": cfg.get("description", ""), "dataset": dataset or cfg.get("dataset", "digits"),
            "data_dir": data_dir if data_dir is not None else cfg.get("data_dir"), "image_size": cfg.get("image_size"),
            "seeds": _check_seeds(seeds if seeds is not None else cfg.get("seeds", [0, 1, 2])),
            "baseline": baseline, "variants": variants, "train": train, "capacity": cfg.get("capacity"),
            "cost": dict(cfg.get("cost") or {}), "explain": bool(cfg.get("explain", True)),
            "workers": cfg.get("workers")}
    if models and models != [cfg.get("model")]:
        plan["capacity"] = None
    info = dataset_info(plan["dataset"], plan.get("image_size"))
    plan["input_shape"] = [info["in_chans"], *info["image_size"]]
    # Validate every run's config and model (built, one zero image through it) before any work.
    import torch

    from ..data.datasets import load_dataset
    from .trainer import resolve_device

    shape_only = dict(info, num_classes=info["num_classes"] or 2)   # the class count does not change the shape
    for v in variants:
        _train_config(plan, v, plan["seeds"][0])
        try:
            with torch.no_grad():
                _build(v, shape_only).eval()(torch.zeros(1, *plan["input_shape"]))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"variant {v['name']!r} ({v['model']}) cannot run on {plan['dataset']} at "
                             f"{tuple(plan['input_shape'])}: {' '.join(str(exc).split())}") from None
    resolve_device(_train_config(plan, variants[0], plan["seeds"][0]).device)
    # The data is loaded once here, so that a missing or damaged set is refused before any work
    # (not found later by each worker process); in this process the runs reuse it.
    loaded = load_dataset(plan["dataset"], plan["data_dir"], seed=plan["seeds"][0], image_size=plan.get("image_size"))
    if info["num_classes"] is None:
        info["num_classes"] = loaded.num_classes
    plan["num_classes"] = info["num_classes"]
    _plan_capacity(plan, info)
    return plan


def run_compare(preset: Optional[str] = None, models=None, attentions=None, seeds=None, epochs=None, dataset=None,
                data_dir=None, out_root="runs", progress=True, workers: Optional[int] = None,
                explain: Optional[bool] = None, plan: Optional[dict] = None) -> Path:
    """Train every variant over every seed, measure costs, explain, report; return the new run folder.

    `preset` names a YAML file of configs/ (default `quick`); `models`, `attentions`, `seeds`,
    `epochs`, `dataset`, `data_dir` override it (without a preset, the quick preset's recipe and
    data are the base; a model other than the preset's drops the preset's model_kwargs). `workers`: parallel training processes (default: one per CPU core, 1 on CUDA);
    `explain`: make the explanation figures (default: the preset's `explain`, else True).
    `plan`: a plan made by `plan_compare` (validated, nothing trained yet) to run instead of
    making one; then `preset` ... `data_dir` must be left out.
    `progress`: True = one line per run and per phase on stderr (in-process runs also show the
    Trainer's own epoch lines), False = silence, or a function that receives each line (the
    Trainer's lines still go to stderr unless False).
    """
    from ..data.datasets import dataset_info
    from ..measure.cost import measure_costs
    from ..report import build_report

    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"run_compare: progress must be True, False or a function of one line (str), got {progress!r}")
    started = time.time()
    if plan is None:
        plan = plan_compare(preset, models, attentions, seeds, epochs, dataset, data_dir)
    elif not isinstance(plan, dict):
        raise TypeError(f"run_compare: plan must be the dict plan_compare returns, got {type(plan).__name__}")
    else:
        given = [k for k, v in dict(preset=preset, models=models, attentions=attentions, seeds=seeds, epochs=epochs,
                                    dataset=dataset, data_dir=data_dir).items() if v is not None]
        if given:
            raise ValueError(f"run_compare: plan= already holds the study; leave out {', '.join(given)}")
        plan = copy.deepcopy(plan)
    if explain is not None:
        plan["explain"] = bool(explain)
    jobs = [(v, s) for v in plan["variants"] for s in plan["seeds"]]
    if workers is None:
        workers = plan.get("workers") or _default_workers(plan["train"], len(jobs))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    # Under torchrun: the ranks share the runs (one process each); gloo carries only small objects.
    context = distributed.init_distributed(str(plan["train"].get("device", "auto")), backend="gloo",
                                           timeout_minutes=SPREAD_TIMEOUT_MINUTES)
    if context.enabled:
        workers = 1
        progress = progress if context.is_main else False
    run_dir = context.broadcast_object(_new_run_dir(out_root, plan["preset"]) if context.is_main else None)
    plan["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan["workers"] = workers
    plan["ranks"] = context.world_size
    if context.is_main:
        (run_dir / "compare.json").write_text(json.dumps(plan, indent=2))
    _say(progress, f"compare {plan['preset']}: {len(plan['variants'])} variants x {len(plan['seeds'])} seeds = "
                   f"{len(jobs)} runs on {plan['dataset']} {tuple(plan['input_shape'])}, {workers} worker(s) -> {run_dir}")
    n_variants = len(plan["variants"])
    after_training = f"cost{' and explanations' if plan['explain'] else ''} of {n_variants} variants"

    def out_dir(v, s):
        return run_dir / "runs" / v["name"] / f"seed{s}"

    t_train = time.time()
    mine = list(distributed.spread_jobs(jobs, context)) if workers == 1 else jobs
    training = _Phase(progress, "training", len(mine), f"training {len(mine)} runs", then=after_training)
    if workers == 1:
        for v, s in mine:
            result = _run_one(_train_config(plan, v, s), out_dir(v, s), bool(progress))
            training.step(f"{v['name']} seed {s}: test acc {100 * result['test_acc']:.2f}% "
                          f"in {result['seconds']:.1f} s")
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_train_worker, _train_config(plan, v, s).to_dict(), str(out_dir(v, s)), 1): (v, s)
                       for v, s in jobs}
            for fut in as_completed(futures):
                v, s = futures[fut]
                try:
                    result = fut.result()
                except BaseException:
                    for other in futures:   # stop at the first failed run, as one process does
                        other.cancel()
                    raise
                training.step(f"{v['name']} seed {s}: test acc {100 * result['test_acc']:.2f}% "
                              f"in {result['seconds']:.1f} s")
    if context.enabled:
        _gather_spread_runs(context, jobs, [out_dir(v, s) for v, s in jobs])
        if not context.is_main:
            context.barrier()   # wait for rank 0's report, so that all ranks leave the group together
            return run_dir
    train_seconds = time.time() - t_train

    # Costs: once per variant, on a fresh model (they depend on the architecture only).
    t_cost = time.time()
    info = dataset_info(plan["dataset"], plan.get("image_size"))
    info["num_classes"] = plan["num_classes"]
    costs = {}
    shape = tuple(plan["input_shape"])
    cost_kwargs = {k: plan["cost"][k] for k in ("large_batch", "train_batch", "repeats", "warmup", "threads")
                   if k in plan["cost"]}
    base = next(v for v in plan["variants"] if v["name"] == plan["baseline"])
    can_widen = isinstance(base["model_kwargs"].get("width"), int)
    costing = _Phase(progress, "cost", n_variants,
                     f"measuring cost of {n_variants} variants (params, FLOPs, latency)",
                     then=f"explanations of {n_variants} variants" if plan["explain"] else "")
    for v in plan["variants"]:
        model = _build(v, info)
        costs[v["name"]] = measure_costs(model, shape, channels_last=trains_channels_last(plan), **cost_kwargs)
        if can_widen and v["role"] == "attention":
            width, params = match_width(base, costs[v["name"]]["params"], info)
            costs[v["name"]]["matched_width"] = width / base["model_kwargs"]["width"]
            costs[v["name"]]["matched_width_params"] = params
        costing.step(f"{v['name']}: {costs[v['name']]['params']} params, {costs[v['name']]['flops'] / 1e6:.2f} MFLOPs, "
                     f"{1e3 * costs[v['name']]['latency_b1_s']:.2f} ms at batch 1")
    (run_dir / "costs.json").write_text(json.dumps(costs, indent=2))
    cost_seconds = time.time() - t_cost

    t_explain = time.time()
    notes = []
    if plan["explain"]:
        from ..explain import explain_checkpoint

        explaining = _Phase(progress, "explain", n_variants,
                            f"explaining {n_variants} variants (seed {plan['seeds'][0]}'s run of each)")
        for v in plan["variants"]:
            seed = plan["seeds"][0]
            try:
                figures = explain_checkpoint(out_dir(v, seed), run_dir / "explain" / v["name"],
                                             dataset=plan["dataset"], data_dir=plan.get("data_dir"))
            except Exception as exc:  # named in compare.json and the report, never silently dropped
                notes.append(f"explanations of {v['name']} failed: {type(exc).__name__}: {exc}")
                explaining.step(notes[-1])
            else:
                explaining.step(f"{v['name']}: {len(list(figures))} file(s)")
        _say(progress, f"explanations written under {run_dir / 'explain'}")
    explain_seconds = time.time() - t_explain

    plan.update(finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                seconds={"train": round(train_seconds, 1), "cost": round(cost_seconds, 1),
                         "explain": round(explain_seconds, 1)}, notes=plan.get("notes", []) + notes)
    (run_dir / "compare.json").write_text(json.dumps(plan, indent=2))
    t_report = time.time()
    _say(progress, "writing the report ...")
    report = build_report(run_dir, explain=False, measure=False)
    plan["seconds"]["report"] = round(time.time() - t_report, 1)
    plan["seconds"]["total"] = round(time.time() - started, 1)
    (run_dir / "compare.json").write_text(json.dumps(plan, indent=2))
    _say(progress, f"report: {report} ({plan['seconds']['total']:.0f} s in all)")
    context.barrier()   # the other ranks wait here (a no-op alone)
    return run_dir


__all__ = ["list_presets", "load_preset", "plan_compare", "run_compare", "match_width", "make_variant"]
