"""The Trainer's progress: a bar redrawn in place only on a terminal; in a pipe or a log file one
plain line per epoch (train loss and accuracy, test accuracy, img/s, elapsed) and no carriage
returns; on a terminal each finished epoch leaves the same line."""
from __future__ import annotations

import io
import os
import re
import sys

import pytest
import torch
from torch import nn

from attnlab.data.datasets import load_dataset
from attnlab.train import Trainer, TrainConfig
from attnlab.train.progress import ProgressBar

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): train loss [\d.]+, train acc [\d.]+%, test acc [\d.]+%, "
                        r"[\d,]+ img/s, elapsed \d+:\d\d:\d\d(, ETA \d+:\d\d:\d\d)?$")


# The line a run prints before its first epoch: the arithmetic and compilation it chose.
SETUP_LINE = re.compile(r"precision (fp32|bf16|fp16) \(.+\); compile (on|off) \(.+\)")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def screen(text: str) -> list[str]:
    """The lines a terminal shows for `text`: each line is what follows its last carriage return."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]


class TinyNet(nn.Module):
    def __init__(self, fail_at_step: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        self.fail_at_step, self.steps = fail_at_step, 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == self.fail_at_step:
                raise RuntimeError("a failure in the middle of an epoch")
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def trainer(digits, epochs=2, fail_at_step=0):
    cfg = TrainConfig(model="tiny", dataset="digits", epochs=epochs, batch_size=256, optimizer="adamw", lr=0.02,
                      channels_last=False)
    return Trainer(cfg, None, progress=True, data=digits, model=TinyNet(fail_at_step))


def test_bar_draws_nothing_per_step_off_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(10, "epoch 1/1", stream=stream, interval=0.0)
    for _ in range(10):
        bar.update(1, 32, loss=0.5)
    assert stream.getvalue() == ""
    bar.finish("epoch 1/1: done")
    assert stream.getvalue() == "epoch 1/1: done\n"


def test_bar_on_a_terminal_is_redrawn_then_replaced_by_the_epoch_line():
    stream = Terminal()
    bar = ProgressBar(10, "epoch 1/1", stream=stream, interval=0.0)
    for _ in range(10):
        bar.update(1, 32, loss=0.5)
    assert stream.getvalue().count("\r") == 10 and "\n" not in stream.getvalue() and "10/10" in stream.getvalue()
    bar.finish("epoch 1/1: done")
    bar.close()                                          # after finish: nothing more
    assert screen(stream.getvalue()) == ["epoch 1/1: done", ""]


def test_disabled_bar_writes_nothing():
    stream = Terminal()
    bar = ProgressBar(3, "x", enabled=False, stream=stream, interval=0.0)
    bar.update(3, 3)
    bar.finish("line")
    bar.close()
    assert stream.getvalue() == ""


def test_training_into_a_pipe_writes_one_plain_line_per_epoch(digits, monkeypatch):
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as pipe:
        monkeypatch.setattr(sys, "stderr", pipe)
        result = trainer(digits, epochs=3).fit()
        monkeypatch.undo()
    with os.fdopen(read_fd) as fh:
        text = fh.read()
    assert "\r" not in text
    setup, *lines = text.splitlines()
    assert SETUP_LINE.fullmatch(setup), setup
    assert len(lines) == 3, text
    for k, line in enumerate(lines, 1):
        match = EPOCH_LINE.match(line)
        assert match and match.group(1, 2) == (str(k), "3"), line
    assert f"test acc {100 * result['test_acc']:.2f}%" in lines[-1]


def test_training_on_a_terminal_leaves_one_line_per_epoch(digits, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    trainer(digits, epochs=2).fit()
    monkeypatch.undo()
    text = terminal.getvalue()
    assert "\r" in text and "[" in text                 # the bar was drawn
    setup, *shown = [line for line in screen(text) if line]
    assert SETUP_LINE.fullmatch(setup), setup
    assert len(shown) == 2 and all(EPOCH_LINE.match(line) for line in shown), shown


def test_an_error_in_the_middle_of_an_epoch_ends_the_bar_line(digits, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(RuntimeError, match="middle of an epoch"):
        trainer(digits, epochs=1, fail_at_step=3).fit()
    monkeypatch.undo()
    assert terminal.getvalue().endswith("\n") and "2/5" in terminal.getvalue()


def test_no_progress_writes_nothing(digits, capsys):
    cfg = TrainConfig(model="tiny", dataset="digits", epochs=1, batch_size=256, channels_last=False)
    Trainer(cfg, None, progress=False, data=digits, model=TinyNet()).fit()
    assert capsys.readouterr().err == ""
