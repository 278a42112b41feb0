"""Where a study's training runs execute: in this process, in a pool of spawned worker
processes, or spread over the ranks of a torchrun launch.

* Workers: `workers` processes with one intra-op thread each (default: one per CPU core, 1 on
  CUDA). Small models train faster side by side, one thread each, than one after another with
  every thread (two single-threaded ResNet-8 runs on 2 cores finish in about half the time of
  two runs with two threads each), and single-threaded runs do not fight over the cores of a
  shared machine. The workers are spawned processes, so a script that calls `run_compare`
  needs the usual ``if __name__ == "__main__":`` guard; ``workers=1`` trains in this process.
  A run's error reaches the caller as the same exception as in one process, and the pool stops
  at the first failure. On Linux a worker gets SIGTERM when the study's process dies (even by
  SIGKILL): its run writes a checkpoint and stops, so no orphan keeps training and the study
  resumes from there (`compare --resume`). On a GPU the workers share the device (`--jobs N`).
* torchrun (`torchrun --nproc_per_node=N -m attnlab compare ...`): the runs are dealt
  round-robin to the N ranks (train.distributed.spread_jobs), each run single-process; the
  output folder must be on a filesystem all ranks share.
"""
from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

from ..data.datasets import load_dataset, resolve_dataset_name
from ..io.run_folder import FINAL_FILE
from ..io.study_files import StudyFolder, StudyPlan
from ..train import distributed
from ..train.config import TrainConfig
from ..train.trainer import Trainer
from .plan import train_config
from .progress import Phase
from .resume import CUT, FINISHED

PR_SET_PDEATHSIG = 1                   # prctl(2) option: the signal a process gets when its parent dies
SPREAD_TIMEOUT_MINUTES = 7 * 24 * 60   # ranks wait for each other's share of runs: allow long studies

_DATA_CACHE: dict = {}


def train_runs(plan: StudyPlan, folder: StudyFolder, workers: int, context, progress, then: str,
               states: Optional[dict] = None) -> None:
    """Train every run of `plan` into `folder`: here when `workers` is 1 (this rank's share
    under torchrun), else in a pool of `workers` spawned processes; one progress line per run.
    `states` ({(variant, seed): state} of study.resume, for a resumed study): finished runs are
    kept, cut runs continue from their newest checkpoint, the others start afresh."""
    states = states or {}
    jobs = [(v, s, states.get((v.name, s)) == CUT) for v, s in plan.runs() if states.get((v.name, s)) != FINISHED]
    mine = list(distributed.spread_jobs(jobs, context)) if workers == 1 else jobs
    kept = len(plan.runs()) - len(jobs)
    resumed = sum(1 for *_, resume in jobs if resume)
    what = f"training {len(mine)} runs" + (f" ({kept} finished runs kept, {resumed} resumed from their checkpoints)"
                                           if states else "")
    training = Phase(progress, "training", len(mine), what, then=then)

    def done(v, s, result) -> None:
        training.step(f"{v.name} seed {s}: test acc {100 * result['test_acc']:.2f}% in {result['seconds']:.1f} s")

    if workers == 1:
        for v, s, resume in mine:
            done(v, s, run_one(train_config(plan, v, s), folder.seed_dir(v.name, s), bool(progress), resume))
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_start,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_train_worker, train_config(plan, v, s).to_dict(), str(folder.seed_dir(v.name, s)), 1,
                               resume): (v, s) for v, s, resume in jobs}
        for fut in as_completed(futures):
            v, s = futures[fut]
            done(v, s, fut.result())
    except BaseException:
        # The first failed run, or an interrupt, stops the study as in one process: queued runs
        # are dropped (not started after the error), running ones end with their worker.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_one(config: TrainConfig, out_dir, progress: bool, resume: bool = False) -> dict:
    """Train one run (continue it from its newest checkpoint with `resume`); the dataset is
    loaded once per process (every seed sees the same splits: seeds change only the synthetic
    set, which is keyed by seed)."""
    synthetic = resolve_dataset_name(config.dataset)[1] == "synthetic"
    size = tuple(config.image_size) if isinstance(config.image_size, list) else config.image_size
    key = (config.dataset, config.data_dir, size, config.seed if synthetic else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time is enough
        _DATA_CACHE[key] = load_dataset(config.dataset, config.data_dir, seed=config.seed, image_size=config.image_size)
    # Always one process per run, also inside a torchrun launch (there the ranks share the runs).
    return Trainer(config, out_dir, progress, data=_DATA_CACHE[key],
                   dist_context=distributed.SINGLE_PROCESS).fit(resume=resume)


def _worker_start(parent: int) -> None:
    """Start of a worker process: on Linux, ask the kernel to send SIGTERM when the parent dies,
    so that a killed study leaves no orphan training on (the Trainer answers SIGTERM by writing a
    checkpoint and stopping, and the run resumes from it); exit at once if the parent is gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):   # not Linux: the worker ends when its pool's queue breaks
        pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="attnlab-parent-watch", daemon=True).start()


def _exit_with_parent(parent: int, poll_s: float = 0.5, grace_s: float = 10.0) -> None:
    """End this worker once its parent has died. SIGTERM (above) lets a run in flight write its
    checkpoint; without this watch the worker would then wait forever for its next run, since the
    other workers keep the pool's queue open (an orphan, and a pipe held open for whoever reads the
    study's output). `grace_s` leaves the checkpoint time to finish; its writes are atomic, so an
    exit during one leaves the previous checkpoint intact."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    time.sleep(grace_s)
    os._exit(1)


def _train_worker(config: dict, out_dir: str, threads: Optional[int], resume: bool = False) -> dict:
    """One training run in a worker process (module-level so that it pickles). An error reaches
    the parent as the same exception (type and message) that the run raised in one process."""
    import torch

    from ..train.process import keep_freed_memory

    keep_freed_memory()   # the worker is a process of attnlab's own: the setting ends with it
    if threads:
        torch.set_num_threads(threads)
        if config.get("threads") is None:   # the pool's share of the cores, not the Trainer's own choice
            config = {**config, "threads": threads}
    try:
        return run_one(TrainConfig.from_dict(config), out_dir, progress=False, resume=resume)
    except Exception as err:  # noqa: BLE001 - only made portable here, handled by the parent
        raise portable_error(err) from None


def portable_error(err: BaseException) -> BaseException:
    """`err` if it survives pickling into the parent process unchanged, else a RuntimeError with
    its type and message (an exception whose constructor needs more than its message would
    otherwise break the process pool)."""
    try:
        back = pickle.loads(pickle.dumps(err))
        if type(back) is type(err) and str(back) == str(err):
            return err
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a plain copy
        pass
    return RuntimeError(f"{type(err).__name__}: {err}")


def gather_spread_runs(context, plan: StudyPlan, folder: StudyFolder) -> None:
    """Wait for every rank's share of runs; rank 0 checks that it sees every run's final.json
    (the output folder must be shared by all ranks) and names the missing ones."""
    jobs = plan.runs()
    context.gather_objects(len(distributed.spread_jobs(jobs, context)))
    if context.is_main:
        missing = [str(d) for d in (folder.seed_dir(v.name, s) for v, s in jobs) if not (Path(d) / FINAL_FILE).exists()]
        if missing:
            raise RuntimeError(f"compare over {context.world_size} ranks: rank 0 cannot see {len(missing)} run(s), "
                               f"e.g. {missing[0]}; the output folder must be on a filesystem every rank shares")


__all__ = ["SPREAD_TIMEOUT_MINUTES", "gather_spread_runs", "portable_error", "run_one", "train_runs"]
