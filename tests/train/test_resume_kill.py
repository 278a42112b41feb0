"""A training run killed at any moment loses nothing: `attnlab train` subprocesses are stopped by
SIGKILL at a random step and in the middle of writing a checkpoint, by SIGTERM and by
SIGINT, resumed each time, and must end with weights bit-identical (torch.equal) to an
uninterrupted run of the same seed (deterministic mode, CPU, one thread)."""
from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from attnlab.train.checkpoint import list_checkpoints, load_checkpoint

# The CLI, plus a line "step N" on stdout after every optimizer step (so that the test knows
# where the run is) and, with ATTNLAB_TEST_DIE_IN_WRITE=k, a SIGKILL of itself in the k-th
# atomic write after the temporary file is written and before it is renamed.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from attnlab.train import checkpoint as _ck, trainer as _tr

    _step = _tr.Trainer.train_step
    def train_step(self, xb, yb):
        out = _step(self, xb, yb)
        sys.stdout.write(f"step {self.global_step + 1}\\n"); sys.stdout.flush()
        return out
    _tr.Trainer.train_step = train_step

    die_at = int(os.environ.get("ATTNLAB_TEST_DIE_IN_WRITE", "0"))
    _replace, _calls = os.replace, [0]
    def replace(src, dst):
        _calls[0] += 1
        if _calls[0] == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst)
    _ck.os.replace = replace

    from attnlab.cli import main
    raise SystemExit(main(sys.argv[1:]))
""")

STEPS_PER_EPOCH = 1437 // 64      # digits train split, batch 64: 22 steps
TOTAL_STEPS = 2 * STEPS_PER_EPOCH


def train_args(out) -> list[str]:
    return ["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset", "digits",
            "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--seed", "3", "--deterministic",
            "--checkpoint-every-steps", "5", "--keep-checkpoints", "2", "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    path = tmp_path_factory.mktemp("driver") / "driver.py"
    path.write_text(DRIVER)
    return path


def start(driver, args, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(driver), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment)


def run_until(proc, step: int, sig: int) -> tuple[int, str]:
    """Read the step lines until `step`, send `sig`; returns (exit status, stderr)."""
    for line in proc.stdout:
        if line.startswith("step ") and int(line.split()[1]) >= step:
            proc.send_signal(sig)
            break
    proc.stdout.read()
    return proc.wait(timeout=120), proc.stderr.read()


def final_weights(run_dir) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[-1]).model_state()


def newest_step(run_dir) -> int:
    return load_checkpoint(list_checkpoints(run_dir)[-1]).state["step"]


def test_killed_and_signalled_runs_resume_bit_identical(driver, tmp_path):
    reference = start(driver, train_args(tmp_path / "reference"))       # runs alongside the interrupted one
    run = tmp_path / "run"
    rng = random.Random(7)
    # 1. SIGKILL at a random step of epoch 1.
    first = rng.randint(8, 18)
    status, err = run_until(start(driver, train_args(run)), first, signal.SIGKILL)
    assert status == -signal.SIGKILL, err
    resumed_from = newest_step(run)
    assert 5 <= resumed_from <= first + 5
    # 2. SIGKILL inside a checkpoint write, after the temporary file is written and before the
    #    rename: the 3rd..6th atomic write of the resumed run (each checkpoint is two writes,
    #    tensors then the JSON commit record), picked at random.
    die_in = rng.randint(3, 6)
    status, err = run_until(start(driver, [*train_args(run), "--resume"], ATTNLAB_TEST_DIE_IN_WRITE=str(die_in)),
                            TOTAL_STEPS + 1, signal.SIGKILL)
    assert status == -signal.SIGKILL, err
    assert any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())      # died mid-write
    assert newest_step(run) > resumed_from                                       # the first commit landed
    # 3. SIGTERM a few steps later: finish the step, checkpoint, exit 130 naming the exact
    #    command to resume.
    before = newest_step(run)
    target = min(before + rng.randint(1, 4), TOTAL_STEPS - 2)
    status, err = run_until(start(driver, [*train_args(run), "--resume"]), target, signal.SIGTERM)
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in err
    command = shlex.split(lines[0].split("resume with: ")[1])
    assert command[0] == "attnlab" and command[1:] == [*train_args(run), "--resume"]
    assert newest_step(run) > before                             # the checkpoint written on the signal
    # 4. SIGINT (Ctrl-C) during the run resumed with that command.
    before = newest_step(run)
    target = min(before + rng.randint(1, 4), TOTAL_STEPS - 2)
    status, err = run_until(start(driver, command[1:]), target, signal.SIGINT)
    assert status == 130 and "SIGINT" in err and "resume with: attnlab train" in err, err
    command = shlex.split(err.strip().split("resume with: ")[1])
    assert newest_step(run) > before
    # 5. Finish with the printed command, then compare with the uninterrupted run.
    finished = start(driver, command[1:])
    out, err = finished.communicate(timeout=120)
    assert finished.returncode == 0, err
    out_ref, err_ref = reference.communicate(timeout=120)
    assert reference.returncode == 0, err_ref
    assert newest_step(run) == newest_step(tmp_path / "reference") == TOTAL_STEPS
    want, got = final_weights(tmp_path / "reference"), final_weights(run)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # Rotation kept the last 2 and the best; nothing but checkpoints and leftover temporary files.
    assert 2 <= len(list_checkpoints(run)) <= 3
