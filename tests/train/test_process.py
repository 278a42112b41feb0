"""train.process: `fit` sets the process-wide settings (threads, deterministic algorithms, signal
handlers) for the run and puts back what was there before, after a normal end and after an error;
malloc's setting, which cannot be put back, is applied only on request. FreeCores: the thread count
left by the other processes."""
from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

from attnlab.data.datasets import load_dataset
from attnlab.train import Trainer, TrainConfig, process
from attnlab.train.process import FreeCores


class Recorder(nn.Module):
    """A tiny classifier that records the settings it runs under; it can fail on its first step."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fc = nn.Linear(1, 10)
        self.fail, self.seen = fail, []

    def forward(self, x):
        if self.training:
            self.seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
            if self.fail:
                raise RuntimeError("failing on purpose")
        return self.fc(x.mean(dim=(1, 2, 3))[:, None])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _fit(digits, model, **config):
    cfg = TrainConfig(model="recorder", dataset="digits", batch_size=512, epochs=1, channels_last=False, **config)
    return Trainer(cfg, None, progress=False, data=digits, model=model).fit()


@pytest.mark.parametrize("fail", [False, True], ids=["normal end", "error"])
@pytest.mark.parametrize("threads", [None, 2])
@pytest.mark.parametrize("deterministic", [True, False])
def test_fit_puts_every_setting_back(digits, threads, fail, deterministic, monkeypatch):
    monkeypatch.setattr(FreeCores, "threads", lambda self: 1)   # what auto picks (deterministic runs: never asked)
    threads_before = torch.get_num_threads()
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    deterministic_before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                            torch.backends.cudnn.benchmark)
    model = Recorder(fail)
    if fail:
        with pytest.raises(RuntimeError, match="failing on purpose"):
            _fit(digits, model, threads=threads, deterministic=deterministic)
    else:
        _fit(digits, model, threads=threads, deterministic=deterministic)
    expected = threads or (threads_before if deterministic else 1)
    assert model.seen and all(s == (expected, deterministic) for s in model.seen)
    assert torch.get_num_threads() == threads_before
    assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == deterministic_before


@pytest.mark.parametrize("env, applied", [(None, False), ("0", False), ("1", True)])
def test_malloc_is_left_alone_unless_asked(digits, monkeypatch, env, applied):
    calls = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: calls.append(1) or True)
    if env is None:
        monkeypatch.delenv(process.KEEP_FREED_MEMORY_ENV, raising=False)
    else:
        monkeypatch.setenv(process.KEEP_FREED_MEMORY_ENV, env)
    _fit(digits, Recorder())
    assert bool(calls) == applied


def _fake_machine(monkeypatch, cores, samples):
    """FreeCores on a fake machine: `samples` are (seconds, busy ticks of all cores, own CPU seconds)."""
    from attnlab.train import process as proc

    feed = iter(samples)
    current = {}

    def sample(self):
        current["now"] = next(feed)
        return current["now"]

    monkeypatch.setattr(proc.FreeCores, "_sample", sample)
    monkeypatch.setattr(proc.time, "sleep", lambda s: None)
    free = proc.FreeCores()
    free.cores, free.ticks_per_second = cores, 100
    return free


def test_free_cores_subtracts_what_the_others_keep_busy(monkeypatch):
    # 1 s windows: 150 ticks busy while this process used 0.5 s of CPU -> others kept 1.0 core busy
    free = _fake_machine(monkeypatch, 2, [(0.0, 0, 0.0), (1.0, 150, 0.5), (2.0, 350, 1.5), (3.0, 410, 2.1)])
    assert free.others_busy() == pytest.approx(1.0)
    assert free.others_busy() == pytest.approx(1.0)            # 200 ticks, own 1.0 s
    assert free.others_busy() == pytest.approx(0.0)            # only this process ran
    free = _fake_machine(monkeypatch, 2, [(0.0, 0, 0.0), (1.0, 150, 0.5), (2.0, 200, 0.5)])
    assert free.threads() == 1                                 # one core busy elsewhere: one thread
    assert free.threads() == 2                                 # 0.5 core busy elsewhere: rounds to both


def test_free_cores_keeps_one_thread_on_a_saturated_machine_and_all_without_proc_stat(monkeypatch):
    free = _fake_machine(monkeypatch, 4, [(0.0, 0, 0.0), (1.0, 900, 0.1)])
    assert free.threads() == 1
    from attnlab.train import process as proc

    monkeypatch.undo()
    monkeypatch.setattr(proc, "_cpu_jiffies", lambda cpus: None)
    plain = proc.FreeCores()
    assert plain.others_busy() is None and plain.threads() == plain.cores


def test_free_cores_reads_this_machine():
    free = FreeCores(first_window=0.05)
    busy = free.others_busy()
    assert busy is None or 0.0 <= busy <= free.cores
    assert 1 <= free.threads() <= free.cores
