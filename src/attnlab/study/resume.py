"""Continuing an interrupted study: `attnlab compare --resume RUN_DIR`, `run_compare(resume=...)`.

    folder, plan = open_study("runs/quick-20260101-120000")          # the plan compare.json holds
    folder, plan = open_study(run_dir, plan=plan_compare("quick"))    # refused if the study changed
    check_runs_on_disk(plan, folder)                                  # every run trained so far fits the plan

A study is resumed from its own compare.json: the same variants, seeds, recipe and data, so that
runs of several sessions pair by seed exactly as runs of one session do. A plan given again (a
preset or flags next to `--resume`) must describe the same study; it is refused, naming each
field that differs, before any work. What may change between sessions is how runs use the machine
(`SESSION_FIELDS`: threads, data loading, checkpoint cadence) and where the data lives.

Each run of the plan is in one of three states (`run_state`): finished (final.json: kept, never
trained again), cut mid-way (checkpoints but no final.json: the Trainer resumes from the newest
checkpoint, which on the CPU ends with the same weights as an uninterrupted run), or not started
(no checkpoint: trained from the beginning; a run killed before its first checkpoint holds nothing
worth keeping). Finished and cut runs are checked against the plan's recipe from their newest
checkpoint before any training (a finished run kept without checkpoints, as a study brought home
from another machine may be, from the config.yaml it wrote), so a run trained with another recipe
is refused, not mixed in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..io.checkpoint import CheckpointError, config_differences, list_checkpoints, load_checkpoint
from ..io.run_folder import CONFIG_FILE, FINAL_FILE
from ..io.study_files import StudyFolder, StudyPlan
from ..report.builder import read_finished_runs
from ..train.config import read_yaml_mapping
from .plan import check_plan, train_config

FINISHED, CUT, NOT_STARTED = "finished", "cut", "not started"

# TrainConfig fields that may differ between the sessions of one study: they change how a run uses
# the machine or where it reads the data, never what it computes.
SESSION_FIELDS = ("data_dir", "threads", "num_workers", "eval_batch_size", "keep_checkpoints", "checkpoint_every",
                  "checkpoint_every_steps", "max_bad_steps")

# The fields of a plan that define the study (the rest records how and when it ran).
STUDY_FIELDS = ("preset", "dataset", "image_size", "seeds", "baseline", "variants", "train", "capacity", "cost",
                "explain", "evidence", "input_shape", "num_classes")


def run_state(run_dir) -> str:
    """FINISHED (final.json), CUT (checkpoints, no final.json) or NOT_STARTED; ValueError naming
    `run_dir` when it is a file (a run cannot be written there)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file; expected a run folder (or none, for a run not started)")
    if (run_dir / FINAL_FILE).is_file():
        return FINISHED
    return CUT if run_dir.is_dir() and list_checkpoints(run_dir) else NOT_STARTED


def study_differences(stored: StudyPlan, given: StudyPlan) -> list[str]:
    """'field: was X, now Y' for every study-defining field in which `given` differs from
    `stored` (recipe entries of SESSION_FIELDS and the plan's data_dir may differ)."""
    old, new = stored.to_dict(), given.to_dict()
    out = []
    for key in STUDY_FIELDS:
        a, b = old.get(key), new.get(key)
        if key == "train":
            a, b = _without(a or {}, SESSION_FIELDS), _without(b or {}, SESSION_FIELDS)
            out += [f"train.{k}: was {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif key == "variants":
            out += _variant_differences(a or [], b or [])
        elif a != b:
            out.append(f"{key}: was {a!r}, now {b!r}")
    return out


def open_study(run_dir, plan: Optional[StudyPlan] = None, data_dir=None) -> tuple[StudyFolder, StudyPlan]:
    """The study folder `run_dir` and its plan (from compare.json), checked as a new plan is (every
    variant builds, the data loads), and the runs trained so far against it (`check_runs_on_disk`;
    the files the report reads of the finished ones, `read_finished_runs`), before any work. `plan`, when given, is a plan checked already
    (made by `plan_compare`, or returned by this function): it must describe the same study
    (`study_differences`), and then the folder's plan is not checked a second time (it takes the
    given plan's data folder, where that plan's data was found). `data_dir` replaces the folder of
    the dataset's files (and the plan is checked with it). ValueError naming the folder and what was expected otherwise."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"cannot resume {str(run_dir)!r}: not a folder; expected a study folder made by "
                         "`attnlab compare`")
    folder = StudyFolder(root)
    if not folder.plan_file.is_file():
        raise ValueError(f"cannot resume {root}: it holds no compare.json; expected a study folder made by "
                         "`attnlab compare`")
    stored = folder.read_plan()
    if not stored.seeds or not stored.input_shape or not stored.train:
        raise ValueError(f"cannot resume {root}: its compare.json lists no seeds, input shape or recipe (train); "
                         "expected the plan `attnlab compare` writes")
    if plan is not None:
        changed = study_differences(stored, plan)
        if changed:
            raise ValueError(f"cannot resume {root}: the study changed ({'; '.join(changed)}); resume it as planned "
                             "(`--resume` alone), or start a new study")
    read_finished_runs(folder, stored)   # what the report will read of the runs kept (files only: first)
    if data_dir is not None:
        stored.data_dir = str(data_dir)
    elif plan is not None:
        stored.data_dir = plan.data_dir
    if plan is None or data_dir is not None:
        check_plan(stored)
    check_runs_on_disk(stored, folder)   # checked again under the study's lock, before training
    return folder, stored


def check_runs_on_disk(plan: StudyPlan, folder: StudyFolder) -> dict:
    """{(variant, seed): state} for every run of `plan`; ValueError naming the run and the field
    when a finished or cut run was trained with a recipe other than the plan's."""
    states = {}
    for v, seed in plan.runs():
        run_dir = folder.seed_dir(v.name, seed)
        state = states[(v.name, seed)] = run_state(run_dir)
        if state == NOT_STARTED:
            continue
        found = list_checkpoints(run_dir)
        expected = train_config(plan, v, seed).to_dict()
        ignore = SESSION_FIELDS + (("precision",) if expected.get("precision") == "auto" else ())
        try:
            if found:
                load_checkpoint(found[-1], expect_config=expected, ignore_fields=ignore, needs="resume")
            else:   # a finished run whose checkpoints were not kept (a study brought home without them)
                _check_recorded_config(run_dir, expected, ignore)
        except CheckpointError as err:
            raise ValueError(f"cannot resume {folder.root}: run {v.name} seed {seed} ({state}) does not fit the "
                             f"plan: {' '.join(str(err).split())}") from None
    return states


def _check_recorded_config(run_dir: Path, expected: dict, ignore: tuple[str, ...]) -> None:
    """A finished run without checkpoints is checked from the config.yaml it wrote (the config as
    run); CheckpointError naming the file and each field that differs from `expected`."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        stored = read_yaml_mapping(path, "run config")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: {' '.join(str(err).split())}; a finished run without checkpoints is "
                              "checked from its config.yaml") from None
    diff = config_differences(stored, expected, ignore)
    if diff:
        details = "; ".join(f"{k}: run {stored.get(k)!r} vs plan {expected.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path} records a different run configuration ({details})")


def _without(d: dict, keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _variant_differences(old: list, new: list) -> list[str]:
    names_old, names_new = [v.get("name") for v in old], [v.get("name") for v in new]
    if names_old != names_new:
        return [f"variants: was {names_old}, now {names_new}"]
    return [f"variant {a['name']}.{k}: was {a.get(k)!r}, now {b.get(k)!r}"
            for a, b in zip(old, new) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


__all__ = ["CUT", "FINISHED", "NOT_STARTED", "SESSION_FIELDS", "STUDY_FIELDS", "check_runs_on_disk", "open_study",
           "run_state", "study_differences"]
