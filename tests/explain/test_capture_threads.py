"""attnlab.capture on one model from several threads at once: each recording holds only the
forward passes of the thread that entered it, with its own query points; a thread without a
capture records nothing; the model is left as it was."""
from __future__ import annotations

import threading

import torch
from torch import nn

from attnlab.attention import SqueezeExcite
from attnlab.attention.base import AttentionModule
from attnlab.explain.capture import capture

C = 8


class InputProbe(AttentionModule):
    """Records its input and the query points its recorder hands it (the non-local and
    self-attention modules read them the same way)."""

    observables = ("input", "points")

    def forward(self, x):
        if self.recorder is not None:
            self.observe("input", x)
            points = getattr(self.recorder, "query_points", None) or [(0.5, 0.5)]
            self.observe("points", torch.tensor(points).expand(x.shape[0], -1, -1))
        return x


def _model():
    torch.manual_seed(0)
    return nn.Sequential(InputProbe(3), nn.Conv2d(3, C, 3, padding=1), SqueezeExcite(C, reduction=2))


def _run_threads(model, plans, steps=6):
    """Each plan: (thread id, capture or not, query points). All threads forward their own
    inputs in lock step (a barrier before every call), so their calls interleave."""
    barrier = threading.Barrier(len(plans))
    results, errors = {}, []

    def work(tid, capturing, points):
        try:
            inputs = [torch.full((1 + tid, 3, 5, 5), float(100 * tid + step)) for step in range(steps)]
            if capturing:
                with capture(model, query_points=points) as rec:
                    barrier.wait()                  # every capture is active before anyone runs
                    for x in inputs:
                        barrier.wait()
                        model(x)
                    barrier.wait()                  # nobody leaves while the others still run
            else:
                barrier.wait()
                for x in inputs:
                    barrier.wait()
                    model(x)
                barrier.wait()
                rec = None
            results[tid] = (inputs, rec)
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=work, args=plan) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_two_threads_capturing_one_model_each_get_only_their_own_inputs():
    model = _model()
    results = _run_threads(model, [(1, True, [(0.0, 0.0)]), (2, True, [(1.0, 1.0), (0.25, 0.5)]),
                                   (3, False, None)])
    for tid, points in ((1, [(0.0, 0.0)]), (2, [(1.0, 1.0), (0.25, 0.5)])):
        inputs, rec = results[tid]
        chunks = rec.chunks("0", "input")
        assert len(chunks) == len(inputs)
        for got, sent in zip(chunks, inputs):
            assert torch.equal(got, sent)           # its own inputs, in its order, nobody else's
        assert rec["0"]["points"].shape == (len(inputs) * (1 + tid), len(points), 2)
        assert torch.equal(rec["0"]["points"][0], torch.tensor(points))
        with capture(model) as alone:               # the SE gates are those of its own inputs
            model(torch.cat(inputs))
        torch.testing.assert_close(rec["2"]["gate"], alone["2"]["gate"])
    assert all(m.recorder is None for m in model.modules() if isinstance(m, AttentionModule))


def test_a_thread_without_capture_records_nothing_while_another_captures():
    model = _model()
    results = _run_threads(model, [(1, True, None), (2, False, None)], steps=4)
    inputs, rec = results[1]
    assert [c.shape[0] for c in rec.chunks("0", "input")] == [2] * 4      # batch 2: thread 1's only
    assert all(torch.equal(g, s) for g, s in zip(rec.chunks("0", "input"), inputs))


def test_captures_left_in_another_order_restore_the_model():
    model = _model()
    entered, release_first = threading.Event(), threading.Event()
    recs = {}

    def first():
        with capture(model) as rec:
            entered.set()
            release_first.wait(30)
            model(torch.ones(1, 3, 4, 4))
        recs["first"] = rec

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(30)
    with capture(model, modules="2") as mine:
        model(torch.zeros(3, 3, 4, 4))
        release_first.set()
        t.join(30)                                   # the first capture ends while this one is open
        assert model[0].recorder is None             # nothing watches the probe any more
        model(torch.zeros(2, 3, 4, 4))
    assert [c.shape[0] for c in mine.chunks("2", "gate")] == [3, 2]
    assert [c.shape[0] for c in recs["first"].chunks("2", "gate")] == [1]
    assert all(m.recorder is None for m in model.modules() if isinstance(m, AttentionModule))


def test_a_recorder_set_by_hand_keeps_recording_for_other_threads_and_comes_back():
    model = _model()
    seen = []
    model[2].recorder = lambda module, name, value: seen.append(value.shape[0])
    done = threading.Event()

    def other():
        with capture(model) as rec:
            model(torch.zeros(5, 3, 4, 4))
        assert rec["2"]["gate"].shape[0] == 5
        done.set()

    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    assert done.is_set() and seen == []              # the capture took this thread's calls
    model(torch.zeros(4, 3, 4, 4))
    assert seen == [4]
    model[2].recorder = None


def test_capture_of_a_compiled_model_records_each_call_and_changes_no_output():
    model = _model()
    compiled = torch.compile(model, backend="eager")       # dynamo's tracing is what routing meets
    x = torch.randn(2, 3, 5, 5)
    with capture(model) as rec:
        y = compiled(x)
        compiled(x + 1)
    torch.testing.assert_close(y, model(x))
    assert [c.shape[0] for c in rec.chunks("2", "gate")] == [2, 2]
    assert torch.equal(rec.chunks("0", "input")[1], x + 1)
    with capture(model) as alone:
        model(x)
    torch.testing.assert_close(rec.chunks("2", "gate")[0], alone["2"]["gate"])
