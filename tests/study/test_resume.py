"""`attnlab compare --resume`: a study killed between runs, inside a run, and with its worker pool
running, continues where it stopped and ends with the same results.json as a study never
interrupted; a changed study is refused before any work.

The kills are real (SIGKILL of the study's process, from inside it at a chosen point), so each
session runs in its own Python process. A tiny study: ResNet-8 at width 4 on the 8x8 digits,
2 variants x 2 seeds x 2 epochs, one thread per run so that the arithmetic is the same in every
session and in the reference.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from attnlab import study
from attnlab.cli import main
from attnlab.io.run_folder import METRICS_FILE, lock_run_folder, read_metrics
from attnlab.io.study_files import StudyFolder
from attnlab.study import presets
from attnlab.study.resume import CUT, FINISHED, NOT_STARTED, check_runs_on_disk

TINY = """
description: tiny resumable study
dataset: digits
image_size: 8
model: resnet_cifar
model_kwargs: {depth: 8, width: 4}
seeds: [0, 1]
variants: [none, {name: se, attention_kwargs: {reduction: 2}}]
train: {epochs: 2, batch_size: 128, lr: 0.05, warmup_epochs: 0, channels_last: false, threads: 1}
cost: {large_batch: 8, train_batch: 8, repeats: 1, warmup: 0}
explain: false
workers: 1
"""
TIMED = re.compile(r"latency|train_step|seconds|verdict")   # measured times differ from run to run

# One session of a study in its own process. argv: plan.json, out_root or study folder, mode, workers.
# mode "new": start the study and SIGKILL it after the first finished run (between runs);
# "cut": resume it and SIGKILL it once the run given as 5th argument has written a checkpoint
# (inside that run); "first": resume it and SIGKILL it after its first finished run; "finish":
# resume it to the end.
SESSION = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    from attnlab.io.checkpoint import list_checkpoints
    from attnlab.study import run_compare

    plan_file, where, mode, workers = sys.argv[1:5]
    plan = json.load(open(plan_file))

    def kill_after_first_run(line):
        if line.startswith("training [1/"):
            os.kill(os.getpid(), signal.SIGKILL)

    def kill_inside(run_dir):
        while not list_checkpoints(run_dir):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)

    progress = kill_after_first_run if mode in ("new", "first") else False
    if mode == "new":
        run_compare(plan=plan, out_root=where, workers=int(workers), progress=progress)
    else:
        if mode == "cut":
            threading.Thread(target=kill_inside, args=(os.path.join(where, sys.argv[5]),), daemon=True).start()
        run_compare(resume=where, workers=int(workers), progress=progress)
""")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the plan as compare.json holds it, written to plan.json; results.json of an uninterrupted study)."""
    root = tmp_path_factory.mktemp("resume")
    (root / "tiny.yaml").write_text(TINY)
    old_dir = presets.PRESET_DIR
    presets.PRESET_DIR = root
    try:
        plan = study.plan_compare("tiny")
        reference = study.run_compare(plan=plan, out_root=root / "reference", progress=False)
    finally:
        presets.PRESET_DIR = old_dir
    plan_file = root / "plan.json"
    plan_file.write_text(plan.to_json())
    return plan_file, json.loads((reference / "results.json").read_text())


def _session(plan_file: Path, where: Path, mode: str, workers: int = 1, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SESSION, str(plan_file), str(where), mode, str(workers), *extra],
                          capture_output=True, text=True, timeout=600)


def _only_study(out_root: Path) -> StudyFolder:
    (folder,) = [p for p in out_root.iterdir() if p.is_dir()]
    return StudyFolder(folder)


def _comparable(results: dict) -> dict:
    """results.json without the measured times (latencies, seconds), which differ between runs."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not TIMED.search(k)}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return strip(results)


def _states(folder: StudyFolder) -> dict:
    return check_runs_on_disk(folder.read_plan(), folder)


@pytest.mark.slow
def test_killed_between_runs_inside_a_run_and_with_its_worker_pool_resumes_to_the_same_results(tiny, tmp_path):
    plan_file, reference = tiny
    out = tmp_path / "runs"
    first = _session(plan_file, out, "new")
    assert first.returncode == -9, first.stderr[-2000:]
    folder = _only_study(out)
    # seed by seed: the baseline's seed 0 finished first, nothing else started
    assert _states(folder) == {("none", 0): FINISHED, ("se", 0): NOT_STARTED, ("none", 1): NOT_STARTED,
                               ("se", 1): NOT_STARTED}
    kept = (folder.seed_dir("none", 0) / "final.json").read_bytes()

    second = _session(plan_file, folder.root, "cut", 1, "runs/se/seed0")
    assert second.returncode == -9, second.stderr[-2000:]
    states = _states(folder)
    assert states[("none", 0)] == FINISHED and states[("se", 0)] == CUT

    # Resumed in a pool of 2 workers (the cut run continues in a worker), killed after its first
    # finished run. The workers got SIGTERM when the study died: each run in flight checkpointed
    # and stopped, so every run folder's writer lock is free again (an orphan would hold it while
    # it trains).
    pooled = _session(plan_file, folder.root, "first", 2)
    assert pooled.returncode == -9, pooled.stderr[-2000:]
    deadline = time.time() + 120
    for v, s in [("none", 0), ("se", 0), ("none", 1), ("se", 1)]:
        run_dir = folder.seed_dir(v, s)
        while run_dir.is_dir():
            try:
                lock_run_folder(run_dir).release()
                break
            except ValueError:
                assert time.time() < deadline, f"{run_dir} is still locked by an orphaned worker"
                time.sleep(0.2)
    assert FINISHED in {state for key, state in _states(folder).items() if key != ("none", 0)}

    last = _session(plan_file, folder.root, "finish")
    assert last.returncode == 0, last.stderr[-2000:]
    assert set(_states(folder).values()) == {FINISHED}
    # nothing trained twice: the finished run is untouched, the cut run has each epoch once
    assert (folder.seed_dir("none", 0) / "final.json").read_bytes() == kept
    epochs = [r["epoch"] for r in read_metrics(folder.seed_dir("se", 0) / METRICS_FILE)]
    assert epochs == [1, 2]
    assert _comparable(json.loads(folder.results_json.read_text())) == _comparable(reference)
    plan = json.loads(folder.plan_file.read_text())
    assert len(plan["resumed"]) == 3 and plan["finished"]
    # A study brought home without checkpoints (only its small files): each finished run is then
    # checked from the config.yaml it wrote, and one trained with another recipe is still refused.
    for ckpt in folder.seed_dir("se", 1).glob("checkpoints/*"):
        ckpt.unlink()
    assert _states(folder)[("se", 1)] == FINISHED
    config = folder.seed_dir("se", 1) / "config.yaml"
    config.write_text(config.read_text().replace("\nlr: ", "\nlr: 0.5\nold_lr: "))
    with pytest.raises(ValueError, match=r"run se seed 1 \(finished\).*config\.yaml.*\blr: run 0\.5"):
        _states(folder)


def test_a_changed_study_is_refused_before_any_work(tiny, capsys):
    plan_file, _ = tiny
    folder = _only_study(plan_file.parent / "reference")
    before = sorted(p.relative_to(folder.root) for p in folder.root.rglob("*"))
    changed = study.StudyPlan.from_dict(json.loads(plan_file.read_text()))
    changed.train["epochs"] = 3
    with pytest.raises(ValueError, match=r"the study changed \(train\.epochs: was 2, now 3\)"):
        study.run_compare(plan=changed, resume=folder.root, progress=False)
    assert main(["compare", "--resume", str(folder.root), "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the study changed" in err and "Traceback" not in err
    assert sorted(p.relative_to(folder.root) for p in folder.root.rglob("*")) == before


@pytest.mark.parametrize("args, message", [
    (["--resume", "{missing}"], "is not a folder"),
    (["--resume", "{empty}"], "holds no compare.json"),
    (["--resume", "{empty}", "--out", "x"], "cannot be combined with --resume"),
    (["--jobs", "0"], "--jobs 0 is not a positive number"),
])
def test_bad_resume_requests_get_one_line(args, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in args]
    assert main(["compare", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
