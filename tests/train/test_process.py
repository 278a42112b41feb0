"""train.process: `fit` sets the process-wide settings (threads, flushed denormals, deterministic
algorithms, signal handlers) for the run and puts back what was there before, after a normal end
and after an error; malloc's setting, which cannot be put back, is applied only on request."""
from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

from attnlab.data.datasets import load_dataset
from attnlab.train import Trainer, TrainConfig, process
from attnlab.train.process import denormals_flushed


class Recorder(nn.Module):
    """A tiny classifier that records the settings it runs under; it can fail on its first step."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fc = nn.Linear(1, 10)
        self.fail, self.seen = fail, []

    def forward(self, x):
        if self.training:
            self.seen.append((torch.get_num_threads(), denormals_flushed(), torch.are_deterministic_algorithms_enabled()))
            if self.fail:
                raise RuntimeError("failing on purpose")
        return self.fc(x.mean(dim=(1, 2, 3))[:, None])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def denormal_state():
    """Leaves denormal flushing off after the test, whatever the test set."""
    yield
    torch.set_flush_denormal(False)


def _fit(digits, model, **config):
    cfg = TrainConfig(model="recorder", dataset="digits", batch_size=512, epochs=1, channels_last=False, **config)
    return Trainer(cfg, None, progress=False, data=digits, model=model).fit()


def test_the_denormal_probe_tells_the_state():
    torch.set_flush_denormal(False)
    assert not denormals_flushed()
    if torch.set_flush_denormal(True):         # False where the CPU cannot flush
        assert denormals_flushed()
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("fail", [False, True], ids=["normal end", "error"])
@pytest.mark.parametrize("threads", [None, 2])
@pytest.mark.parametrize("flushed_before", [False, True])
def test_fit_puts_every_setting_back(digits, denormal_state, flushed_before, threads, fail):
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(flushed_before)
    flushed_before = denormals_flushed()
    threads_before = torch.get_num_threads()
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    deterministic_before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                            torch.backends.cudnn.benchmark)
    model = Recorder(fail)
    if fail:
        with pytest.raises(RuntimeError, match="failing on purpose"):
            _fit(digits, model, threads=threads, deterministic=True)
    else:
        _fit(digits, model, threads=threads, deterministic=True)
    assert model.seen and all(s == (threads or threads_before, supported, True) for s in model.seen)
    assert torch.get_num_threads() == threads_before
    assert denormals_flushed() == flushed_before
    assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == deterministic_before


@pytest.mark.parametrize("env, applied", [(None, False), ("0", False), ("1", True)])
def test_malloc_is_left_alone_unless_asked(digits, denormal_state, monkeypatch, env, applied):
    calls = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: calls.append(1) or True)
    if env is None:
        monkeypatch.delenv(process.KEEP_FREED_MEMORY_ENV, raising=False)
    else:
        monkeypatch.setenv(process.KEEP_FREED_MEMORY_ENV, env)
    _fit(digits, Recorder())
    assert bool(calls) == applied
