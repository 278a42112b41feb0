"""A training run killed at any moment loses nothing: `attnlab train` processes are stopped by
SIGKILL at a random step and in the middle of writing a checkpoint, by SIGTERM and by
SIGINT, resumed each time, and must end with weights bit-identical (torch.equal) to an
uninterrupted run of the same seed (deterministic mode, CPU, one thread)."""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from attnlab.io.checkpoint import list_checkpoints, load_checkpoint

# A "zygote" process imports attnlab once and forks one child per `attnlab train` run (each
# child is a real, separate training process that the test signals by its pid; forking saves
# the ~3 s of imports per run). In the children: a line "step N" goes to stdout after every
# optimizer step, so that the test knows where the run is, and with ATTNLAB_TEST_DIE_IN_WRITE=k
# the child SIGKILLs itself in its k-th atomic write of a checkpoint file, after the temporary
# file is written and before it is renamed (the run's other files, config.yaml and metrics.jsonl,
# are written atomically too, and are not counted).
ZYGOTE = textwrap.dedent("""
    import json, os, signal, sys
    from attnlab.cli import main
    from attnlab.io import checkpoint as _ck
    from attnlab.train import trainer as _tr
    import attnlab.data.datasets, torch._dynamo  # warm imports, shared by the children (the optimizer imports dynamo)

    _step = _tr.Trainer.train_step
    def train_step(self, xb, yb):
        out = _step(self, xb, yb)
        sys.stdout.write(f"step {self.global_step + 1}\\n"); sys.stdout.flush()
        return out
    _tr.Trainer.train_step = train_step

    _replace, _calls = os.replace, [0]
    def replace(src, dst):
        if not os.path.basename(dst).startswith("ckpt-"):
            return _replace(src, dst)
        _calls[0] += 1
        if _calls[0] == int(os.environ.get("ATTNLAB_TEST_DIE_IN_WRITE", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst)
    _ck.os.replace = replace

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ.update(request["env"])
            for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY), fd)
            sys.stdout, sys.stderr = os.fdopen(1, "w"), os.fdopen(2, "w")
            try:
                code = main(request["argv"])
            finally:
                sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        sys.__stdout__.write(json.dumps({"pid": pid}) + "\\n"); sys.__stdout__.flush()
        _, status = os.waitpid(pid, 0)
        sys.__stdout__.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\\n"); sys.__stdout__.flush()
""")

STEPS_PER_EPOCH = 1437 // 64      # digits train split, batch 64: 22 steps
TOTAL_STEPS = 2 * STEPS_PER_EPOCH


def train_args(out) -> list[str]:
    return ["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset", "digits",
            "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--seed", "3", "--deterministic",
            "--checkpoint-every-steps", "5", "--keep-checkpoints", "2", "--no-progress", "--out", str(out)]


class Runner:
    """Starts `attnlab ARGV` runs as children of the zygote, one at a time."""

    def __init__(self, folder):
        self.folder, self.count = folder, 0
        script = folder / "zygote.py"
        script.write_text(ZYGOTE)
        self.zygote = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})

    def run(self, argv, signal_at: int = 0, sig: int = 0, **env) -> tuple[int, str]:
        """Run to the end, or send `sig` once step `signal_at` is done; returns (exit status, stderr)."""
        self.count += 1
        fifo, err = self.folder / f"out-{self.count}", self.folder / f"err-{self.count}"
        os.mkfifo(fifo)
        err.write_text("")
        request = {"argv": [str(a) for a in argv], "env": env, "stdout": str(fifo), "stderr": str(err)}
        self.zygote.stdin.write(json.dumps(request) + "\n")
        self.zygote.stdin.flush()
        pid = json.loads(self.zygote.stdout.readline())["pid"]
        with open(fifo) as out:
            for line in out:
                if signal_at and line.startswith("step ") and int(line.split()[1]) >= signal_at:
                    os.kill(pid, sig)
                    signal_at = 0
        return json.loads(self.zygote.stdout.readline())["status"], err.read_text()

    def close(self):
        self.zygote.stdin.close()
        self.zygote.wait(timeout=60)


@pytest.fixture
def runner(tmp_path):
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def final_weights(run_dir) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[-1]).model_state()


def newest_step(run_dir) -> int:
    return load_checkpoint(list_checkpoints(run_dir)[-1]).state["step"]


@pytest.mark.slow
def test_killed_and_signalled_runs_resume_bit_identical(runner, tmp_path):
    run = tmp_path / "run"
    rng = random.Random(7)
    # 1. SIGKILL at a random step of epoch 1.
    first = rng.randint(8, 18)
    status, err = runner.run(train_args(run), first, signal.SIGKILL)
    assert status == -signal.SIGKILL, err
    resumed_from = newest_step(run)
    assert 5 <= resumed_from <= first + 5
    # 2. SIGKILL inside a checkpoint write, after the temporary file is written and before the
    #    rename: the 3rd..6th atomic write of the resumed run (each checkpoint is two writes,
    #    tensors then the JSON commit record), picked at random.
    die_in = rng.randint(3, 6)
    status, err = runner.run([*train_args(run), "--resume"], ATTNLAB_TEST_DIE_IN_WRITE=str(die_in))
    assert status == -signal.SIGKILL, err
    assert any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())      # died mid-write
    assert newest_step(run) > resumed_from                                       # the first commit landed
    # 3. SIGTERM a few steps later: finish the step, checkpoint, exit 130 naming the exact
    #    command to resume.
    before = newest_step(run)
    target = min(before + rng.randint(1, 4), TOTAL_STEPS - 2)
    status, err = runner.run([*train_args(run), "--resume"], target, signal.SIGTERM)
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in err
    command = shlex.split(lines[0].split("resume with: ")[1])
    assert command[0] == "attnlab" and command[1:] == [*train_args(run), "--resume"]
    assert newest_step(run) > before                             # the checkpoint written on the signal
    assert not any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())   # the dead writer's, removed
    # 4. SIGINT (Ctrl-C) during the run resumed with that command.
    before = newest_step(run)
    target = min(before + rng.randint(1, 4), TOTAL_STEPS - 2)
    status, err = runner.run(command[1:], target, signal.SIGINT)
    assert status == 130 and "SIGINT" in err and "resume with: attnlab train" in err, err
    command = shlex.split(err.strip().split("resume with: ")[1])
    assert newest_step(run) > before
    # 5. Finish with the printed command; run the same training uninterrupted; compare.
    status, err = runner.run(command[1:])
    assert status == 0, err
    status, err = runner.run(train_args(tmp_path / "reference"))
    assert status == 0, err
    assert newest_step(run) == newest_step(tmp_path / "reference") == TOTAL_STEPS
    want, got = final_weights(tmp_path / "reference"), final_weights(run)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # Rotation kept the last 2 and the best (an epoch-end checkpoint) and nothing else.
    assert 2 <= len(list_checkpoints(run)) <= 3
