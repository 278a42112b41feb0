"""torchrun / DistributedDataParallel (train.distributed): one 2-process gloo launch
(tests/train/distributed_worker.py) checked against single-process runs in this process.

Augmentation is off in the equivalence runs: rank r > 0 draws its crops and flips from its own
generator (seed + 1 + r * stride), so augmented images could not match the single-process run;
the data order, the batch statistics (SyncBatchNorm) and the gradient average do match.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.io.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from attnlab.study import presets as study_presets
from attnlab.study import run_compare
from attnlab.train import distributed
from attnlab.train.config import TrainConfig
from attnlab.train.distributed import DistributedContext, shard_permutation
from attnlab.train.trainer import Trainer

PER_RANK_BATCH = 128
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TINY_PRESET = """
description: tiny compare spread over ranks
dataset: digits
image_size: 8
model: resnet_cifar
model_kwargs: {depth: 8, width: 4}
seeds: [0, 1]
variants: [none, {name: se, attention_kwargs: {reduction: 4}}]
train: {epochs: 1, batch_size: 64, lr: 0.05, warmup_epochs: 0, channels_last: false, device: cpu, threads: 1}
cost: {large_batch: 4, train_batch: 4, repeats: 1, warmup: 0}
explain: false
workers: 1
"""
# threads: 1 in the recipe: left unset, each run follows the cores other processes leave free
# (train.process.FreeCores), and a different thread count changes float sums between the ranks
# and the single process.
# Measured on the machine (time, memory), not computed from the runs: left out of the comparison.
MEASURED_COLUMNS = ("latency", "train_step", "peak_", "seconds")


def ddp_config(batch_size: int, epochs: int, sync_bn: bool) -> TrainConfig:
    """The run of the equivalence test: no augmentation (see the module docstring); a constant
    learning rate, so that 1 epoch resumed to 2 follows the same schedule as 2 epochs at once."""
    return TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", image_size=8,
                       epochs=epochs, batch_size=batch_size, lr=0.01, warmup_epochs=0.0, schedule="constant", channels_last=False,
                       augment={"crop_padding": 0, "flip": False}, sync_bn=sync_bn, device="cpu", seed=3,
                       checkpoint_every=1, keep_checkpoints=3)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch of 2 gloo processes doing every distributed run of this file."""
    out = tmp_path_factory.mktemp("distributed")
    presets = tmp_path_factory.mktemp("presets")
    (presets / "tiny.yaml").write_text(TINY_PRESET)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(WORKER), str(out), str(presets)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, presets


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)   # as each torchrun rank (OMP_NUM_THREADS=1): same float summation order
    yield
    torch.set_num_threads(old)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- pure helpers
def test_shards_of_a_global_batch_are_the_single_process_batch():
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    steps, batch, world = 3, 4, 2
    shards = [shard_permutation(perm, batch, steps, DistributedContext(rank=r, world_size=world)) for r in range(world)]
    for step in range(steps):
        together = torch.cat([s[step * batch:(step + 1) * batch] for s in shards])
        assert torch.equal(together, perm[step * batch * world:(step + 1) * batch * world])
    assert shard_permutation(perm, batch, steps, distributed.SINGLE_PROCESS) is perm
    with pytest.raises(ValueError, match="cannot fill 7 global batches of 8"):
        shard_permutation(perm, batch, 7, DistributedContext(rank=0, world_size=world))


def test_seeds_and_defaults_without_torchrun(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_distributed("cpu") is distributed.SINGLE_PROCESS
    assert distributed.augment_seed(5, 0) == 6 and distributed.augment_seed(5, 1) != 6
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="RANK='zero' must be an integer"):
        distributed.init_distributed("cpu")
    with pytest.raises(ValueError, match="backend must be"):
        distributed.init_distributed("cpu", backend="mpi")


def test_cpu_sync_batchnorm_keeps_parameters_and_equals_batchnorm_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    reference = torch.nn.Sequential(*[m for m in model])   # same modules before the conversion
    weight = model[1].weight
    x = torch.randn(6, 3, 7, 5)
    expected = torch.nn.functional.batch_norm(model[0](x), None, None, weight, model[1].bias, training=True)
    converted = distributed.convert_cpu_sync_batchnorm(model)
    assert converted is model and isinstance(model[1], distributed.CpuSyncBatchNorm)
    assert model[1].weight is weight and reference[1] is not model[1]
    assert torch.allclose(model(x), expected.relu(), atol=1e-6)   # no process group: plain BatchNorm
    with pytest.raises(ValueError, match="root module is itself a BatchNorm"):
        distributed.wrap_model(torch.nn.BatchNorm2d(4), torch.device("cpu"),
                               DistributedContext(rank=0, world_size=2), sync_bn=True)


# ------------------------------------------------------------------------------- torchrun runs
@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_double_batch(launched, tmp_path, one_thread):
    out, _ = launched
    single = Trainer(ddp_config(2 * PER_RANK_BATCH, epochs=2, sync_bn=False), tmp_path / "one", progress=False)
    single.fit()
    two = load_checkpoint(out / "ddp").model_state()
    one = load_checkpoint(tmp_path / "one").model_state()
    assert two.keys() == one.keys()
    for name in one:
        assert torch.allclose(two[name].double(), one[name].double(), rtol=1e-4, atol=1e-5), name
    ddp_rows, one_rows = _rows(out / "ddp" / "metrics.jsonl"), _rows(tmp_path / "one" / "metrics.jsonl")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows]   # one row per epoch: rank 0 alone wrote
    for a, b in zip(ddp_rows, one_rows):   # metrics summed over ranks = the whole batch's / test set's
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=2e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2e-3)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3)
    final = json.loads((out / "ddp" / "final.json").read_text())
    assert final == json.loads((out / "ddp_rank0.json").read_text()) and final["epochs"] == 2


def test_checkpoint_of_two_ranks_resumes_in_two_ranks_only(launched, tmp_path):
    out, _ = launched
    found = list_checkpoints(out / "ddp")
    assert len(found) == 2   # epoch 1 (first launch) and epoch 2 (the resumed run)
    state = load_checkpoint(found[-1]).state
    assert state["world_size"] == 2 and state["epoch"] == 2
    per_rank = state["rng"]["per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["augment"], per_rank[1]["augment"])
    assert not list((out / "ddp").glob("*.tmp*"))
    config = ddp_config(PER_RANK_BATCH, epochs=3, sync_bn=True)
    with pytest.raises(CheckpointError, match="written by a run of 2 process.*this run has 1.*world size changed"):
        Trainer(config, out / "ddp", progress=False).fit(resume=True)


def test_compare_spread_over_two_ranks_gives_the_single_process_table(launched, tmp_path, one_thread):
    out, presets = launched
    spread = [p for p in (out / "compare").iterdir() if p.is_dir()]
    assert len(spread) == 1, spread   # rank 0 made the folder, rank 1 used it
    old = study_presets.PRESET_DIR
    study_presets.PRESET_DIR = presets
    try:
        alone = run_compare("tiny", out_root=tmp_path, progress=False)
    finally:
        study_presets.PRESET_DIR = old
    assert json.loads((spread[0] / "compare.json").read_text())["ranks"] == 2
    with open(spread[0] / "results.csv") as fh:
        spread_rows = list(csv.DictReader(fh))
    with open(alone / "results.csv") as fh:
        alone_rows = list(csv.DictReader(fh))
    assert len(spread_rows) == len(alone_rows) == 2
    assert {"acc_mean", "diff_mean", "params", "flops"} <= set(alone_rows[0])
    for a, b in zip(spread_rows, alone_rows):
        for key in b:
            if any(word in key for word in MEASURED_COLUMNS):
                continue
            assert a[key] == b[key], (key, a[key], b[key])
