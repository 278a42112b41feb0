"""Running a study: train every variant over every seed, measure costs, explain, report.

    folder = run_compare()                       # the `quick` preset on the embedded digits
    folder = run_compare("fashion-mnist")        # a preset of configs/ (YAML)
    folder = run_compare(models=["resnet20"], attentions=["none", "se"], seeds=[0, 1], epochs=2)
    folder = run_compare(resume=folder)          # continue an interrupted study (study.resume)

The phases, in order: a new folder with compare.json (the plan); training (study.workers: here,
in worker processes or over torchrun ranks); costs, once per variant on a freshly built model
(they depend on the architecture, not on the weights), sequentially in this process; the
explanation figures of each variant's first seed; the report (attnlab.report). compare.json is
written again after the explanations and after the report, with the seconds each phase took.
Under torchrun rank 0 makes the folder, waits for every rank's runs, then does the rest alone.
The study folder is locked (io.run_folder) while a process writes it. A resumed study
(`resume=`, study.resume) keeps what earlier sessions finished: runs, costs, explanations.
"""
from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..checks import check_positive_int
from ..data.datasets import dataset_info
from ..io.run_folder import lock_run_folder
from ..io.study_files import StudyFolder, StudyPlan
from ..measure.cost import measure_costs
from ..train import distributed
from ..train.trainer import TrainingInterrupted
from .capacity import match_width
from .plan import default_workers, plan_compare
from .progress import Phase, say
from .resume import check_runs_on_disk, open_study
from .variants import build_variant
from .workers import SPREAD_TIMEOUT_MINUTES, gather_spread_runs, train_runs


def run_compare(preset: Optional[str] = None, models=None, attentions=None, seeds=None, epochs=None, dataset=None,
                data_dir=None, out_root="runs", progress=True, workers: Optional[int] = None,
                explain: Optional[bool] = None, plan=None, resume=None) -> Path:
    """Train every variant over every seed, measure costs, explain, report; return the run folder.

    `preset` ... `data_dir`: the study, as `plan_compare` takes them. `workers`: runs trained at
    once, each in its own process (default: the plan's, else one per CPU core, 1 on CUDA; on a
    GPU several workers share the device); `explain`: make the explanation figures (default: the
    preset's `explain`, else True).
    `plan`: a plan made by `plan_compare` (a StudyPlan, or its dict as compare.json holds it;
    validated, nothing trained yet) to run instead of making one; then `preset` ... `data_dir`
    must be left out.
    `resume`: a study folder made before (interrupted, or finished: then only the report is made
    again) to continue instead of making a new one (study.resume): its compare.json is the plan,
    checked before any work unless `plan` (checked already) is given; a plan or study given as
    well must be the same study (ValueError otherwise); finished runs,
    costs and explanations are kept, cut runs continue from their checkpoints; `data_dir` may
    point to the data's new place.
    `progress`: True = one line per run and per phase on stderr (in-process runs also show the
    Trainer's own epoch lines), False = silence, or a function that receives each line (the
    Trainer's lines still go to stderr unless False).
    An interrupt (Ctrl-C, SIGTERM) or a kill keeps every finished run and the checkpoints of the
    runs in flight; `StudyInterrupted` names the folder to resume.
    """
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"run_compare: progress must be True, False or a function of one line (str), got {progress!r}")
    started = time.time()
    study = dict(preset=preset, models=models, attentions=attentions, seeds=seeds, epochs=epochs, dataset=dataset,
                 data_dir=data_dir)
    folder = None
    if resume is not None:
        given = None                      # resumed as planned unless a plan or a study is given as well
        if plan is not None:
            given = _the_plan(plan, {k: v for k, v in study.items() if k != "data_dir"})
        elif any(v is not None for k, v in study.items() if k != "data_dir"):
            given = _the_plan(None, study)
        folder, plan = open_study(resume, given, data_dir=data_dir)
    else:
        plan = _the_plan(plan, study)
    if explain is not None:
        plan.explain = bool(explain)
    if workers is None:
        workers = plan.workers or default_workers(plan.train, len(plan.runs()))
    check_positive_int("run_compare", "workers", workers)
    # Under torchrun: the ranks share the runs (one process each); gloo carries only small objects.
    context = distributed.init_distributed(str(plan.train.get("device", "auto")), backend="gloo",
                                           timeout_minutes=SPREAD_TIMEOUT_MINUTES)
    if context.enabled:
        workers = 1
        progress = progress if context.is_main else False
    if folder is None:
        folder = StudyFolder(context.broadcast_object(StudyFolder.create(out_root, plan.preset).root
                                                      if context.is_main else None))
    lock = lock_run_folder(folder.root) if context.is_main else None   # one writer per study folder
    try:
        return _run(plan, folder, workers, context, progress, started, resuming=resume is not None)
    except (KeyboardInterrupt, TrainingInterrupted) as err:
        raise StudyInterrupted(f"study interrupted ({type(err).__name__}: {' '.join(str(err).split()) or 'Ctrl-C'}); "
                               f"finished runs and the checkpoints of cut runs are kept in {folder.root}; resume "
                               f"with: attnlab compare --resume {folder.root}", folder.root) from None
    finally:
        if lock is not None:
            lock.release()


class StudyInterrupted(RuntimeError):
    """A study stopped by an interrupt; `folder` is the study folder to resume."""

    def __init__(self, message: str, folder: Path):
        super().__init__(message)
        self.folder = folder


def _run(plan: StudyPlan, folder: StudyFolder, workers: int, context, progress, started: float,
         resuming: bool) -> Path:
    """The phases of `run_compare` in `folder` (made or opened, and locked, by the caller)."""
    before = dict(plan.seconds or {}) if resuming else {}
    states = None
    if context.is_main:
        if resuming:
            states = check_runs_on_disk(plan, folder)   # every run trained so far fits the plan, before any work
            plan.resumed = (plan.resumed or []) + [_now()]
            plan.finished = None
        else:
            plan.started = _now()
        plan.workers = workers
        plan.ranks = context.world_size
        folder.write_plan(plan)
    states = context.broadcast_object(states) if context.enabled else states
    n_variants = len(plan.variants)
    say(progress, f"compare {plan.preset}: {n_variants} variants x {len(plan.seeds)} seeds = {len(plan.runs())} "
                  f"runs on {plan.dataset} {tuple(plan.input_shape)}, {workers} worker(s) -> {folder.root}"
                  + (" (resumed)" if resuming else ""))

    t_train = time.time()
    train_runs(plan, folder, workers, context, progress,
               then=f"cost{' and explanations' if plan.explain else ''} of {n_variants} variants", states=states)
    if context.enabled:
        gather_spread_runs(context, plan, folder)
        if not context.is_main:
            context.barrier()   # wait for rank 0's report, so that all ranks leave the group together
            return folder.root
    seconds = {"train": time.time() - t_train}
    t_cost = time.time()
    costs = folder.read_costs() if resuming else {}
    missing = [v for v in plan.variants if v.name not in costs]
    if missing:
        costs.update(_measure_costs(plan, missing, progress))
        folder.write_costs({v.name: costs[v.name] for v in plan.variants})
    seconds["cost"] = time.time() - t_cost
    t_explain = time.time()
    notes = _explain(plan, folder, progress)
    seconds["explain"] = time.time() - t_explain

    plan.finished = _now()
    plan.seconds = {k: round(before.get(k, 0.0) + v, 1) for k, v in seconds.items()}
    plan.notes = (plan.notes or []) + notes
    folder.write_plan(plan)
    from ..report import build_report

    t_report = time.time()
    say(progress, "writing the report ...")
    report = build_report(folder.root, explain=False, measure=False)
    plan.seconds["report"] = round(time.time() - t_report, 1)
    plan.seconds["total"] = round(before.get("total", 0.0) + time.time() - started, 1)
    folder.write_plan(plan)
    say(progress, f"report: {report} ({time.time() - started:.0f} s in all"
                  + (f", {plan.seconds['total']:.0f} s over {1 + len(plan.resumed or [])} sessions)" if resuming else ")"))
    context.barrier()   # the other ranks wait here (a no-op alone)
    return folder.root


def _the_plan(plan, study: dict) -> StudyPlan:
    """The plan to run: `plan_compare(**study)` without `plan`, else a copy of `plan` (then every
    entry of `study` must be None)."""
    if plan is None:
        return plan_compare(**study)
    if not isinstance(plan, (StudyPlan, dict)):
        raise TypeError(f"run_compare: plan must be the StudyPlan plan_compare returns, got {type(plan).__name__}")
    given = [k for k, v in study.items() if v is not None]
    if given:
        raise ValueError(f"run_compare: plan= already holds the study; leave out {', '.join(given)}")
    return copy.deepcopy(plan) if isinstance(plan, StudyPlan) else StudyPlan.from_dict(plan, "run_compare: plan")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _measure_costs(plan: StudyPlan, variants: list, progress) -> dict:
    """{variant: costs} of `variants`, measured on a fresh model of each, timed in the memory format the
    Trainer used; attention variants also get the baseline width that would match their
    parameter count (`matched_width`, a multiplier, when the baseline has an integer width)."""
    info = dataset_info(plan.dataset, plan.image_size)
    info["num_classes"] = plan.num_classes
    base = plan.baseline_variant
    can_widen = isinstance(base.model_kwargs.get("width"), int)
    n_variants = len(variants)
    costing = Phase(progress, "cost", n_variants, f"measuring cost of {n_variants} variants (params, FLOPs, latency)",
                    then=f"explanations of {n_variants} variants" if plan.explain else "")
    costs = {}
    for v in variants:
        cost = measure_costs(build_variant(v, info), tuple(plan.input_shape), channels_last=plan.trains_channels_last,
                             **plan.cost_settings)
        if can_widen and v.role == "attention":
            width, params = match_width(base, cost["params"], info)
            cost["matched_width"] = width / base.model_kwargs["width"]
            cost["matched_width_params"] = params
        costs[v.name] = cost
        costing.step(f"{v.name}: {cost['params']} params, {cost['flops'] / 1e6:.2f} MFLOPs, "
                     f"{1e3 * cost['latency_b1_s']:.2f} ms at batch 1")
    return costs


def _explain(plan: StudyPlan, folder: StudyFolder, progress) -> list[str]:
    """Explanation figures of each variant's first-seed run (when the plan asks for them; with the
    class evidence and the explorer page when it asks for `evidence`), without
    the checkpoint-independent illustration, which the report draws once for the study; returns a
    note for each variant whose explanations failed (named in compare.json and the report)."""
    notes: list[str] = []
    if not plan.explain:
        return notes
    from ..explain import explain_checkpoint

    seed = plan.seeds[0]
    explaining = Phase(progress, "explain", len(plan.variants),
                       f"explaining {len(plan.variants)} variants (seed {seed}'s run of each)")
    for v in plan.variants:
        if folder.explain_summary(v.name).is_file():   # made by an earlier session of this study
            explaining.step(f"{v.name}: kept from before")
            continue
        try:
            figures = explain_checkpoint(folder.seed_dir(v.name, seed), folder.explain_dir(v.name),
                                         dataset=plan.dataset, data_dir=plan.data_dir, illustration=False,
                                         evidence=bool(plan.evidence), html=bool(plan.evidence))
        except Exception as exc:  # named in compare.json and the report, never silently dropped
            notes.append(f"explanations of {v.name} failed: {type(exc).__name__}: {exc}")
            explaining.step(notes[-1])
        else:
            explaining.step(f"{v.name}: {len(list(figures))} file(s)")
    say(progress, f"explanations written under {folder.explain_root}")
    return notes


__all__ = ["StudyInterrupted", "run_compare"]
